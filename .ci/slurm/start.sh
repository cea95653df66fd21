#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for the CI tests of profiles/slurm:
# munged, slurmctld and slurmd run as root in the background, their PIDs in $STATE/pids
# (stop.sh ends exactly those). Idempotent: a daemon whose recorded PID still runs is kept.
#
# Environment: PTXSEG_SLURM_STATE (state folder, default /tmp/ptxseg-slurm), PTXSEG_SLURM_GPUS
# (fake GPUs on the node, default 2: two GPU jobs at once), PTXSEG_SLURM_PARTITION (default debug),
# PTXSEG_SLURM_GPU_PARTITION (default gpu): the node is in both, as profiles/slurm/partitions.yaml says.
set -euo pipefail

STATE=${PTXSEG_SLURM_STATE:-/tmp/ptxseg-slurm}
GPUS=${PTXSEG_SLURM_GPUS:-2}
PARTITION=${PTXSEG_SLURM_PARTITION:-debug}
GPU_PARTITION=${PTXSEG_SLURM_GPU_PARTITION:-gpu}
PIDS=$STATE/pids
LOGS=$STATE/log
HOST=$(hostname -s)
MARKER="# written by ptxseg .ci/slurm/start.sh"

if [[ $(id -u) -ne 0 ]]; then
  echo "start.sh: must run as root (the daemons run as root)" >&2
  exit 1
fi

# 1. Packages, only when missing.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v munged >/dev/null || ! command -v sinfo >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$PIDS" "$LOGS" "$STATE/spool/ctld" "$STATE/spool/slurmd" "$STATE/run"

# True when the PID recorded for $1 runs the program named $1 (a zombie counts as dead).
alive() {
  local file=$PIDS/$1.pid pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$1" ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# Start "$@" (a daemon kept in the foreground) in its own session; record its PID as $name.
start_daemon() {
  local name=$1
  shift
  if alive "$name"; then
    echo "$name already running (pid $(<"$PIDS/$name.pid"))"
    return
  fi
  setsid "$@" </dev/null >>"$LOGS/$name.out" 2>&1 &
  echo "$!" >"$PIDS/$name.pid"
  sleep 0.5
  if ! alive "$name"; then
    echo "start.sh: $name did not start; its output:" >&2
    tail -n 20 "$LOGS/$name.out" >&2 || true
    exit 1
  fi
  echo "started $name (pid $(<"$PIDS/$name.pid"))"
}

# Poll "$@" every half second for up to $timeout seconds.
wait_for() {
  local timeout=$1
  shift
  local end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.5
  done
}

# 2. Config: written only while slurmctld is down, so a running cluster keeps its own.
if ! alive slurmctld; then
  cpus=$(nproc)
  # A bit below the machine's memory: slurmd drains a node that has less than RealMemory.
  memory=$(($(free -m | awk '/^Mem:/ {print $2}') * 9 / 10))
  mkdir -p /etc/slurm
  if [[ -f /etc/slurm/slurm.conf ]] && ! grep -qF "$MARKER" /etc/slurm/slurm.conf; then
    cp /etc/slurm/slurm.conf "$STATE/slurm.conf.before"  # someone else's: keep a copy
  fi
  cat >/etc/slurm/slurm.conf <<CONF
$MARKER
ClusterName=ptxseg-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups, no accounting: only squeue answers job states (profiles use squeue).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes.
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
CONF
  # Fake GPUs, so --gpus=N is scheduled (torch then finds no CUDA and runs on the CPU): one
  # device file each, a copy of the null device (two GRES lines on one file are fatal).
  {
    echo "$MARKER"
    for ((i = 0; i < GPUS; i++)); do
      device=/dev/fakegpu$i
      if [[ ! -e $device ]] && ! mknod -m 666 "$device" c 1 3 2>/dev/null; then
        ((GPUS == 1)) || { echo "start.sh: cannot create $device" >&2; exit 1; }
        device=/dev/null  # one GPU needs no file of its own
      fi
      echo "NodeName=$HOST Name=gpu File=$device"
    done
  } >/etc/slurm/gres.conf
fi

# 3. Munge: a key (munge-owned, mode 400), then munged as root.
key=/etc/munge/munge.key
if [[ ! -s $key ]]; then
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$key"
  else
    dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
  fi
fi
chown munge:munge "$key" 2>/dev/null || true
chmod 400 "$key"
mkdir -p /run/munge /var/lib/munge /var/log/munge
start_daemon munged munged --force --foreground
wait_for 20 sh -c 'munge -n </dev/null | unmunge' || {
  echo "start.sh: munge does not answer" >&2
  exit 1
}

# 4. slurmctld (-c: clear state left by an earlier cluster), then slurmd.
if alive slurmctld; then
  echo "slurmctld already running (pid $(<"$PIDS/slurmctld.pid"))"
else
  start_daemon slurmctld slurmctld -D -c
fi
wait_for 30 sh -c 'scontrol ping | grep -q UP' || {
  echo "start.sh: slurmctld does not answer; see $LOGS/slurmctld.log" >&2
  exit 1
}
start_daemon slurmd slurmd -D

# 5. Wait for the node: idle (or busy with jobs); a drained or down node is resumed.
node_ready() {
  local state
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)
  case $state in
    idle | mixed | allocated | completing) return 0 ;;
    drain* | down* | fail*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
  esac
  return 1
}
if ! wait_for 60 node_ready; then
  echo "start.sh: node $HOST is not idle: $(sinfo -h -n "$HOST" -o '%T %E')" >&2
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
  exit 1
fi
sinfo
