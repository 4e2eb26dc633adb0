#!/usr/bin/env bash
# Stop the one-node Slurm of slurm_up.sh: cancel its jobs, then stop exactly the slurmd,
# slurmctld and munged whose PID files slurm_up.sh wrote in $SLURM_CI_DIR. Safe to run twice.
set -uo pipefail
DIR=${SLURM_CI_DIR:-/tmp/selfsup_vis_slurm}
[[ -d $DIR/run ]] || { echo "slurm_down: nothing started from $DIR" >&2; exit 0; }
export SLURM_CONF=$DIR/slurm.conf

if [[ -f $DIR/run/slurmctld.pid ]] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// } ]]; then
        scancel --full $jobs 2>/dev/null
        for _ in $(seq 30); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.5; done
    fi
fi

stop() {  # name, expected command: TERM, then KILL after 10 s, only if the PID is still ours
    local f=$DIR/run/$1.pid pid
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$2"; then
        kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$f"
}
stop slurmd slurmd
stop slurmctld slurmctld
stop munged munged
echo "slurm_down: stopped (logs kept in $DIR/log)" >&2
