#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests.
#
#   bash scripts/slurm.sh start    # write slurm.conf, start slurmctld + slurmd, wait for an idle node
#   bash scripts/slurm.sh status   # daemons, sinfo, squeue
#   bash scripts/slurm.sh stop     # stop both daemons (state dir is kept)
#
# Needs Debian's `slurm-wlm` (slurmctld, slurmd, client commands) and root. Authentication is
# auth/none + cred/none, so no munge daemon is needed. Everything lives in a state directory
# (default /tmp/matdx-slurm, override with MATDX_SLURM_DIR): slurm.conf, StateSaveLocation,
# SlurmdSpoolDir, logs, pid files and the jobcomp/filetxt log. Nothing is written to /etc/slurm;
# the client commands find the configuration through SLURM_CONF, which `start` prints and writes
# to .ci/slurm.env (`source .ci/slurm.env`).
#
# Slurm's time limits have a one-minute granularity (--time=00:00:05 means one minute) and
# slurmctld checks them every 30 s, so a job that overruns its limit ends in state TIMEOUT
# between 60 and ~95 s after it started (KillWait=5).
set -euo pipefail
cd "$(dirname "$0")/.."

ACTION="${1:-start}"
STATE="${MATDX_SLURM_DIR:-/tmp/matdx-slurm}"
CONF="$STATE/slurm.conf"
CPUS="${MATDX_SLURM_CPUS:-2}"
export SLURM_CONF="$CONF"

log() { echo "slurm.sh: $*" >&2; }

pid_alive() {  # pid_alive FILE NAME: the pid in FILE is a running process called NAME
  local f="$1" name="$2" pid
  [ -s "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

ctld_up() { pid_alive "$STATE/slurmctld.pid" slurmctld && scontrol ping 2>/dev/null | grep -q 'is UP'; }
slurmd_up() { pid_alive "$STATE/slurmd.pid" slurmd; }
node_state() { sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1; }

write_conf() {
  mkdir -p "$STATE/state" "$STATE/spool" "$STATE/log"
  local hw mem topo="" field
  # RealMemory (and the socket/core layout, when the CPU count matches) as slurmd itself
  # measures them: a larger RealMemory would drain the node.
  hw="$(slurmd -C 2>/dev/null | head -n1 || true)"
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
  mem="${mem:-1000}"
  if grep -q " CPUs=$CPUS " <<<"$hw"; then
    for field in SocketsPerBoard CoresPerSocket ThreadsPerCore; do
      topo="$topo $(grep -o "$field=[0-9]*" <<<"$hw" || true)"
    done
    topo="${topo//SocketsPerBoard=/Sockets=}"
  fi
  cat > "$CONF.tmp" <<EOF
# Written by scripts/slurm.sh: single-node test cluster, see that script.
ClusterName=matdx
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
PlugStackConfig=$STATE/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName=localhost CPUs=$CPUS$topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  : > "$STATE/plugstack.conf"   # no SPANK plugins (Debian's /etc/slurm one includes a directory)
}

write_env() {
  mkdir -p .ci
  echo "export SLURM_CONF=$CONF" > .ci/slurm.env
}

wait_for() {  # wait_for SECONDS CMD...
  local t="$1"; shift
  local end=$((SECONDS + t))
  while [ "$SECONDS" -lt "$end" ]; do "$@" && return 0; sleep 0.5; done
  "$@"
}

node_idle() { case "$(node_state)" in idle*|mixed*|allocated*) return 0 ;; *) return 1 ;; esac; }

start() {
  for b in slurmctld slurmd sinfo scontrol; do
    command -v "$b" >/dev/null || { log "$b not found: apt-get install slurm-wlm"; exit 1; }
  done
  [ "$(id -u)" = 0 ] || { log "must run as root (SlurmUser=root)"; exit 1; }
  if ctld_up && slurmd_up && node_idle; then
    log "already running"
  else
    write_conf
    if ! ctld_up; then
      pid_alive "$STATE/slurmctld.pid" slurmctld && kill "$(cat "$STATE/slurmctld.pid")" && sleep 1
      slurmctld -f "$CONF"        # daemonises; pid in $STATE/slurmctld.pid
      wait_for 30 ctld_up || { log "slurmctld did not come up:"; tail -n 30 "$STATE/log/slurmctld.log" >&2; exit 1; }
    fi
    if ! slurmd_up; then
      slurmd -f "$CONF" -N localhost
      wait_for 15 slurmd_up || { log "slurmd did not start:"; tail -n 30 "$STATE/log/slurmd.log" >&2; exit 1; }
    fi
    wait_for 30 node_idle || true
    if ! node_idle; then
      log "node is '$(node_state)', resuming it"
      scontrol update nodename=localhost state=resume 2>/dev/null || true
      wait_for 20 node_idle || {
        log "node did not become idle: $(node_state)"; sinfo -R >&2 || true
        tail -n 20 "$STATE/log/slurmd.log" >&2; exit 1; }
    fi
  fi
  write_env
  sinfo >&2
  echo "SLURM_CONF=$CONF"
}

stop() {
  local f
  for d in slurmd slurmctld; do
    f="$STATE/$d.pid"
    if pid_alive "$f" "$d"; then
      kill "$(cat "$f")"
      for _ in $(seq 1 40); do pid_alive "$f" "$d" || break; sleep 0.25; done
      pid_alive "$f" "$d" && kill -9 "$(cat "$f")" 2>/dev/null || true
      log "stopped $d"
    fi
  done
}

status() {
  local rc=0
  if pid_alive "$STATE/slurmctld.pid" slurmctld; then echo "slurmctld: running (pid $(cat "$STATE/slurmctld.pid"))"; else echo "slurmctld: not running"; rc=1; fi
  if slurmd_up; then echo "slurmd: running (pid $(cat "$STATE/slurmd.pid"))"; else echo "slurmd: not running"; rc=1; fi
  echo "SLURM_CONF=$CONF"
  if [ "$rc" = 0 ]; then sinfo; squeue; fi
  return "$rc"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: scripts/slurm.sh start|stop|status|restart" >&2; exit 2 ;;
esac
