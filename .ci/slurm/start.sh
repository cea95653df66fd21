#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for the CI tests of profiles/slurm:
# munged, mariadbd, slurmdbd, slurmctld and slurmd run as root in the background, their PIDs in
# $STATE/pids (stop.sh ends exactly those). Idempotent: a daemon whose recorded PID still runs is
# kept. The cluster has accounting (slurmdbd on a MariaDB database whose files and socket live in
# $STATE), so `sacct` answers and the SLURM plugin's efficiency report can be checked.
#
# Environment: PTXSEG_SLURM_STATE (state folder, default /tmp/ptxseg-slurm), PTXSEG_SLURM_GPUS
# (fake GPUs on the node, default 2: two GPU jobs at once), PTXSEG_SLURM_PARTITION (default debug),
# PTXSEG_SLURM_GPU_PARTITION (default gpu): the node is in both, as profiles/slurm/partitions.yaml says.
# PTXSEG_SLURM_DB_PORT (MariaDB's TCP port on 127.0.0.1, default 3307: not a system MySQL's 3306).
set -euo pipefail

STATE=${PTXSEG_SLURM_STATE:-/tmp/ptxseg-slurm}
GPUS=${PTXSEG_SLURM_GPUS:-2}
PARTITION=${PTXSEG_SLURM_PARTITION:-debug}
GPU_PARTITION=${PTXSEG_SLURM_GPU_PARTITION:-gpu}
DB_PORT=${PTXSEG_SLURM_DB_PORT:-3307}
CLUSTER=ptxseg-ci
DB_DIR=$STATE/mysql
DB_SOCKET=$STATE/run/mysqld.sock
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
# Accounting: slurmdbd and its database. Debian's postinst may start a system MariaDB (where
# services can start); ours is a separate one, on its own port and data folder.
if ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
  || ! command -v mariadb-install-db >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmdbd mariadb-server >/dev/null
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
ClusterName=$CLUSTER
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
# No cgroups: processes are tracked and measured from /proc (jobacct_gather/linux, sampled
# every 2 s so that jobs of seconds get a MaxRSS), their figures stored through slurmdbd, which
# sacct reads. Profiles still ask squeue for job states: sacct may be missing on a user's cluster.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# sacct shows each job's --comment, where the SLURM plugin puts the rule (its efficiency report's
# RuleName column; without this flag the report drops the column with a warning).
AccountingStoreFlags=job_comment
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

# 4. Accounting: MariaDB (data folder and socket in $STATE; TCP on 127.0.0.1:$DB_PORT for
# slurmdbd), the database and its user, then slurmdbd, then the cluster, an account and root in
# it: slurmctld registers with slurmdbd when it starts, so all this comes before it.
sql() { timeout 30 mariadb --no-defaults --socket="$DB_SOCKET" -uroot "$@"; }
if [[ ! -d $DB_DIR/mysql ]]; then
  rm -rf "$DB_DIR"  # a half-made folder from an interrupted start
  mariadb-install-db --no-defaults --datadir="$DB_DIR" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >>"$LOGS/mariadb-install-db.out" 2>&1 || {
    echo "start.sh: mariadb-install-db failed; see $LOGS/mariadb-install-db.out" >&2
    exit 1
  }
fi
start_daemon mariadbd mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
  --socket="$DB_SOCKET" --pid-file="$STATE/run/mariadbd.pid" --bind-address=127.0.0.1 \
  --port="$DB_PORT" --skip-name-resolve --log-error="$LOGS/mariadbd.log" \
  --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
wait_for 60 timeout 5 mariadb-admin --no-defaults --socket="$DB_SOCKET" -uroot ping || {
  echo "start.sh: MariaDB does not answer; see $LOGS/mariadbd.log" >&2
  exit 1
}
password_file=$STATE/slurmdbd.password
if [[ ! -s $password_file ]]; then
  (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$password_file")
fi
password=$(<"$password_file")
sql <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
if ! alive slurmdbd; then
  # Read by slurmdbd only: mode 600, owned by its SlurmUser (root), since it holds the password.
  (umask 077 && cat >/etc/slurm/slurmdbd.conf <<CONF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
CONF
  )
  chown root:root /etc/slurm/slurmdbd.conf
  chmod 600 /etc/slurm/slurmdbd.conf
fi
start_daemon slurmdbd slurmdbd -D
wait_for 60 timeout 5 sacctmgr -n list cluster || {
  echo "start.sh: slurmdbd does not answer; see $LOGS/slurmdbd.log" >&2
  exit 1
}
# sacctmgr -i: no confirmation; each added only when missing, so a second start changes nothing.
if [[ -z $(timeout 10 sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
  timeout 30 sacctmgr -i add cluster "$CLUSTER"
fi
if [[ -z $(timeout 10 sacctmgr -n -P list account ptxseg format=account) ]]; then
  timeout 30 sacctmgr -i add account ptxseg cluster="$CLUSTER" description="ptxseg CI"
fi
if [[ -z $(timeout 10 sacctmgr -n -P list assoc cluster="$CLUSTER" account=ptxseg user=root format=user) ]]; then
  timeout 30 sacctmgr -i add user root account=ptxseg cluster="$CLUSTER"
fi

# 5. slurmctld (-c: clear state left by an earlier cluster), then slurmd.
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

# 6. Wait for the node: idle (or busy with jobs); a drained or down node is resumed.
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
# 7. Accounting answers (sacct waits for slurmdbd without end where it does not: a timeout).
timeout 20 sacct -n -X >/dev/null || {
  echo "start.sh: sacct does not answer; see $LOGS/slurmdbd.log" >&2
  exit 1
}
sinfo
