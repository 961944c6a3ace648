#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try (and test) `python -m nmt.study run FILE --launcher slurm`:
#   scripts/slurm_cluster.sh start    # install slurmd/slurmctld/munge where missing (apt), start the three daemons
#   scripts/slurm_cluster.sh status   # which of its daemons run, and what sinfo says
#   scripts/slurm_cluster.sh stop     # end exactly the daemons it started (by their PID files)
# Everything lives in a folder of its own, NMT_SLURM_DIR (default /var/tmp/nmt-slurm): slurm.conf, the munge key
# and socket, state, spool, logs, PID files. Nothing under /etc is written. Clients find the cluster through
#   export SLURM_CONF=$NMT_SLURM_DIR/slurm.conf
# The cluster: one node (this machine's CPUs), partition "debug", proctrack/pgid, task/none, select/cons_tres with
# CR_CPU, no accounting, requeue allowed. Ports: NMT_SLURM_PORT (slurmctld, default 6817) and the next (slurmd).
# Needs root (slurmd runs jobs as their users); exit 2 with the reason where it cannot run.
set -euo pipefail
DIR=${NMT_SLURM_DIR:-/var/tmp/nmt-slurm}
PORT=${NMT_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
DAEMONS=(slurmd slurmctld munged)  # the order they are stopped in
export SLURM_CONF=$CONF

die() { echo "slurm_cluster.sh: $*" >&2; exit 2; }

alive() {  # alive NAME: its PID file names a live process of that name
  local pid
  pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]
}

install_packages() {
  local missing=()
  for cmd in slurmctld:slurmctld slurmd:slurmd munged:munge sbatch:slurm-client; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd#*:}")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 || die "needs ${missing[*]} and there is no apt-get to install them"
  echo "== slurm_cluster: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$DIR/apt.log" 2>&1 \
    || { apt-get update -q >>"$DIR/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
           "${missing[@]}" >>"$DIR/apt.log" 2>&1; } \
    || die "apt-get install ${missing[*]} failed; its output: $DIR/apt.log"
}

port_free() {  # port_free PORT: nothing listens on it (where ss can tell)
  command -v ss >/dev/null 2>&1 || return 0
  ! ss -ltnH "sport = :$1" 2>/dev/null | grep -q .
}

write_config() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # MB, below what slurmd measures
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node cluster for trying nmt's SLURM launcher.
ClusterName=nmt
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  [[ $(id -u) -eq 0 ]] || die "start needs root (slurmd runs each job as its user); run it with sudo"
  mkdir -p "$DIR"
  install_packages
  if alive munged && alive slurmctld && alive slurmd; then
    echo "== slurm_cluster: already running ($DIR)"
  else
    for p in "$PORT" $((PORT + 1)); do
      port_free "$p" || alive slurmctld || alive slurmd || die "port $p is in use by another program; set NMT_SLURM_PORT"
    done
    write_config
    if ! alive munged; then
      [[ -s "$DIR/munge/munge.key" ]] || { head -c 1024 /dev/urandom >"$DIR/munge/munge.key"; }
      chmod 700 "$DIR/munge" && chmod 400 "$DIR/munge/munge.key"
      munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start; its log: $DIR/munged.log"
    fi
    alive slurmctld || slurmctld -f "$CONF" || die "slurmctld did not start; its log: $DIR/slurmctld.log"
    alive slurmd || slurmd -f "$CONF" || die "slurmd did not start; its log: $DIR/slurmd.log"
  fi
  for _ in $(seq 60); do
    if [[ "$(sinfo -h -o %T 2>/dev/null)" == idle* ]]; then
      echo "== slurm_cluster: node $(hostname -s) idle; export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.5
  done
  die "the node did not become idle in 30 s (sinfo: $(sinfo -h -o '%T %E' 2>&1 | head -1)); logs in $DIR"
}

stop() {
  local pid
  for d in "${DAEMONS[@]}"; do
    if alive "$d"; then
      pid=$(cat "$DIR/$d.pid")
      kill "$pid"
      for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
      [[ -d /proc/$pid ]] && { kill -9 "$pid" 2>/dev/null || true; }
      echo "== slurm_cluster: stopped $d ($pid)"
    fi
    rm -f "$DIR/$d.pid"
  done
}

status() {
  local rc=0
  for d in munged slurmctld slurmd; do
    if alive "$d"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: not running"; rc=1; fi
  done
  [[ $rc -eq 0 ]] && sinfo
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: scripts/slurm_cluster.sh start|stop|status (got '${1:-}')" ;;
esac
