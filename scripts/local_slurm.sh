#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for `make test-cluster` (tests/test_cluster_slurm.py) and for
# trying `make sweep LAUNCHER=slurm` without a cluster. Needs root and Debian's `slurmctld slurmd slurm-client munge`
# (apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge; .ci/run does it).
#
#   scripts/local_slurm.sh start     # idempotent: a running cluster is left as it is
#   eval "$(scripts/local_slurm.sh env)"   # SLURM_CONF and the sacct below, for sbatch/squeue/submitit
#   scripts/local_slurm.sh stop      # cancels the jobs, then stops the daemons it started, by their PIDs
#   scripts/local_slurm.sh status
#
# Everything lives in $LOCAL_SLURM_DIR (default /tmp/local-slurm): config, munge key and socket, state, spool,
# logs (log/slurmctld.log, log/slurmd.log), pid files. Ports $LOCAL_SLURM_PORT (slurmctld) and +1 (slurmd).
# Two partitions on the one node, for real preemption: `main` (the default) and `urgent` (higher PriorityTier); a job
# sent to `urgent` that needs the CPUs of a `main` job preempts it: USR2 at once (preempt_send_user_signal: the
# signal submitit asked for with --signal), GraceTime seconds to checkpoint, then requeued (PreemptMode=REQUEUE).
#
# No slurmdbd: `sacct` here is a shim ($DIR/bin/sacct) that answers submitit's one query (JobID, State, NodeList of
# its jobs) from the controller, which keeps finished jobs for MinJobAge (a day). Without any sacct submitit cannot
# see a job that was cancelled or died, and waits for it forever. slurmdbd would need a MySQL server and its
# database for that one query.
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
PORT=${LOCAL_SLURM_PORT:-6917}
GRACE_S=${LOCAL_SLURM_GRACE_S:-60}   # a preempted job's time to checkpoint before it is killed and requeued
NODE=$(hostname -s)
export SLURM_CONF=$DIR/slurm.conf

say() { echo "local_slurm: $*" >&2; }

# the pid in FILE if that process is alive and runs BINARY (a pid reused by another program is not ours)
alive_pid() {
  local file=$1 binary=$2 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ] || return 1   # a zombie: already dead
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(command -v "$binary")")" ] || return 1
  echo "$pid"
}

running() {
  alive_pid "$DIR/munge/munged.pid" munged >/dev/null && alive_pid "$DIR/slurmctld.pid" slurmctld >/dev/null &&
    alive_pid "$DIR/slurmd.pid" slurmd >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q UP
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every second until it succeeds
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || { say "timed out waiting for $what"; return 1; }
    sleep 1
  done
}

node_ready() { timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

write_config() {
  local cpus mem
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 8 / 10 ))   # RealMemory below what the node has
  cat >"$DIR/slurm.conf" <<EOF
# written by scripts/local_slurm.sh
ClusterName=local
SlurmctldHost=$NODE
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again after ~2x this (the default 120 s would make every requeue wait)
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MailProg=/bin/true
ReturnToService=2
# schedule every 2 s (default 60); remember finished jobs for a day (the sacct shim reads them from here)
SchedulerParameters=sched_interval=2
MinJobAge=86400
# job ids from the clock: a restarted cluster does not reuse the ids of earlier jobs, whose submitit folders
# (<sweep dir>/.submitit/<job id>, with their results) may still be there
FirstJobId=$(( $(date +%s) % 50000000 + 1 ))
# preemption by partition: a job of the higher tier requeues a running one, after GraceTime; the preempted job gets
# the user signal (--signal, USR2 with submitit) at once
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE PriorityTier=2 PreemptMode=OFF
EOF
}

write_sacct_shim() {
  mkdir -p "$DIR/bin"
  cat >"$DIR/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# sacct without slurmdbd (scripts/local_slurm.sh): submitit's query `sacct -o JobID,State,NodeList --parsable2 -j ID
# [-j ID ...]` answered from the controller (squeue remembers finished jobs for MinJobAge). Other queries: an error.
ids=()
while [ $# -gt 0 ]; do
  case $1 in
    -j|--jobs) ids+=("$2"); shift 2 ;;
    -o|--format) [ "$2" = JobID,State,NodeList ] || { echo "sacct shim: -o JobID,State,NodeList only" >&2; exit 1; }
                 shift 2 ;;
    --parsable2|-P) shift ;;
    *) echo "sacct shim (no slurmdbd here): unsupported argument $1" >&2; exit 1 ;;
  esac
done
echo "JobID|State|NodeList"
[ ${#ids[@]} -gt 0 ] || exit 0
# The controller's transient states are not sacct's: a job being signalled for a requeue shows SIGNALING, which
# submitit would take for a finished job (and then fail to find its result); sacct shows it RUNNING, then REQUEUED.
set -o pipefail
squeue -h --array --states=all -o '%i|%T|%N' -j "$(IFS=,; echo "${ids[*]}")" |
  sed -e 's/|SIGNALING|/|RUNNING|/' -e 's/|REQUEUE_FED|/|REQUEUED|/' -e 's/|REQUEUE_HOLD|/|REQUEUED|/'
EOF
  chmod 755 "$DIR/bin/sacct"
}

start() {
  [ "$(id -u)" = 0 ] || { say "needs root (slurmd starts jobs as their users)"; exit 1; }
  for b in munged slurmctld slurmd sbatch squeue scontrol srun; do
    command -v $b >/dev/null ||
      { say "$b missing: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"; exit 1; }
  done
  if running; then say "already running ($DIR)"; return 0; fi
  stop quiet   # whatever is left of an earlier start
  rm -rf "$DIR"
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log"
  chmod 755 "$DIR" "$DIR/munge"   # munged refuses a socket directory others may write to
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 600 "$DIR/munge/munge.key"
  munged --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" --force
  wait_for 20 munged test -S "$DIR/munge/munge.socket"
  write_config
  write_sacct_shim
  slurmctld -i   # -i: no saved state to recover (a fresh directory)
  wait_for 30 slurmctld bash -c 'timeout 5 scontrol ping 2>/dev/null | grep -q UP'
  slurmd
  if ! wait_for 60 "node $NODE to be idle" node_ready; then
    tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 1
  fi
  say "started in $DIR: $(sinfo -h -o '%P %T %c CPUs' | tr '\n' ';')"
}

stop() {
  local quiet=${1:-} pid b file
  if alive_pid "$DIR/slurmctld.pid" slurmctld >/dev/null; then
    # cancel the jobs first: slurmstepd and its job outlive slurmd
    local jobs
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || true
    if [ -n "${jobs// /}" ]; then
      timeout 10 scancel $jobs 2>/dev/null || true
      wait_for 60 "jobs to end" \
        bash -c '[ -z "$(timeout 5 squeue -h -t running,completing -o %A 2>/dev/null)" ]' || true
    fi
  fi
  for b in slurmd:"$DIR/slurmd.pid" slurmctld:"$DIR/slurmctld.pid" munged:"$DIR/munge/munged.pid"; do
    file=${b#*:}; b=${b%%:*}
    if pid=$(alive_pid "$file" "$b"); then
      kill "$pid"
      wait_for 30 "$b ($pid) to stop" bash -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status" ||
        kill -9 "$pid" 2>/dev/null || true
      [ -n "$quiet" ] || say "stopped $b ($pid)"
    fi
  done
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) if running; then sinfo; squeue; else say "not running ($DIR)"; exit 1; fi ;;
  env) echo "export SLURM_CONF=$DIR/slurm.conf PATH=$DIR/bin:\$PATH" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
