#!/usr/bin/env bash
# Stop the cluster started by start.sh: cancel its jobs, then end exactly the recorded PIDs
# (SIGTERM, up to 15 s, then SIGKILL) and remove their PID files. Config files and the accounting
# database (in $STATE/mysql) stay.
set -euo pipefail

STATE=${PTXSEG_SLURM_STATE:-/tmp/ptxseg-slurm}
PIDS=$STATE/pids

# The PID recorded for $1 when it is alive and runs the program named $1, else nothing.
recorded_pid() {
  local file=$PIDS/$1.pid pid
  [[ -s $file ]] || return 0
  pid=$(<"$file")
  if [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$1" ]]; then
    echo "$pid"
  fi
}

# Jobs first, while slurmctld and slurmd still run, so no job step outlives the cluster.
if [[ -n $(recorded_pid slurmctld) ]] && command -v scancel >/dev/null; then
  scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 1 20); do
    [[ -z $(timeout 10 squeue -h 2>/dev/null) ]] && break
    sleep 0.5
  done
fi

# True while $1 runs (a zombie, dead but not yet reaped, counts as gone).
running() {
  [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# slurmdbd before its database, munged last: the others authenticate through it.
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  pid=$(recorded_pid "$name")
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      running "$pid" || break
      sleep 0.5
    done
    if running "$pid"; then
      echo "stop.sh: $name (pid $pid) ignored SIGTERM; sending SIGKILL" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
done
