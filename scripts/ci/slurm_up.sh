#!/usr/bin/env bash
# A one-node Slurm for CI and for trying the Slurm launcher presets on one machine.
#   bash scripts/ci/slurm_up.sh && export SLURM_CONF=${SLURM_CI_DIR:-/tmp/selfsup_vis_slurm}/slurm.conf
#   ... sbatch / python -m selfsup_vis -m hydra/launcher=slurm ... ;  bash scripts/ci/slurm_down.sh
# Installs Debian's slurm-wlm + munge when missing (root or sudo), writes slurm.conf for this
# host (its real CPUs and memory; proctrack/linuxproc, task/none: no cgroups, no systemd), starts
# munged, slurmctld and slurmd by hand with PID files and waits until the node is idle.
# Everything (config, state, logs, PID files, its own munge socket and ports) lives in
# $SLURM_CI_DIR, so a system Slurm/munge on the same host is never touched; slurm_down.sh stops
# only the processes whose PID files are there.
# Accounting: accounting_storage/none (no slurmdbd/MySQL), so `sacct` is unavailable; job states
# come from `scontrol show job` (finished jobs stay MinJobAge=1800 s) and jobcomp/filetxt
# ($SLURM_CI_DIR/jobcomp.txt, one line per finished job with its JobState and ExitCode).
set -euo pipefail
DIR=${SLURM_CI_DIR:-/tmp/selfsup_vis_slurm}
CTLD_PORT=${SLURM_CI_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_CI_SLURMD_PORT:-16818}
say() { echo "slurm_up: $*" >&2; }

alive() { [[ -f $DIR/run/$1.pid ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
if alive slurmctld || alive slurmd || alive munged; then
    say "already running from $DIR (run slurm_down.sh first)"; exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    say "installing slurm-wlm munge"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

rm -rf "$DIR"
mkdir -p "$DIR"/{run,log,state/ctld,state/d}
chmod 700 "$DIR"
HOST=$(hostname -s)
CPUS=$(nproc --all)
MEM_MB=$(( $(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
USER_NAME=$(id -un)

dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge.key"

cat > "$DIR/slurm.conf" <<CONF
ClusterName=selfsupvisci
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid
SlurmdPidFile=$DIR/run/slurmd.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MinJobAge=1800
DefMemPerCPU=1024
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$DIR/slurm.conf

start() {  # name, command...: run in the foreground of its own session, remember its PID
    local name=$1; shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$DIR/run/$name.pid"
}
start munged munged --foreground --force --key-file="$DIR/munge.key" --socket="$DIR/run/munge.socket" \
    --pid-file="$DIR/run/munged.daemon.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/state/munged.seed"
for _ in $(seq 50); do [[ -S $DIR/run/munge.socket ]] && break; sleep 0.2; done
[[ -S $DIR/run/munge.socket ]] || { say "munged did not start:"; cat "$DIR/log/munged.out" "$DIR/log/munged.log" >&2; exit 1; }
start slurmctld slurmctld -D -c -f "$DIR/slurm.conf"
start slurmd slurmd -D -f "$DIR/slurm.conf" -N "$HOST"

state=
for _ in $(seq 120); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ $state != idle ]]; then
    say "node not idle (state '${state:-no answer}'); logs in $DIR/log"
    tail -n 20 "$DIR"/log/slurm*.log >&2 || true
    exit 1
fi
say "up: node $HOST ($CPUS CPUs, $MEM_MB MB) idle; export SLURM_CONF=$SLURM_CONF"
