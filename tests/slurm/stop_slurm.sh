#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start_slurm.sh started, and only those: the PIDs it
# recorded under $TASKGROUP_SLURM_STATE/pids, each checked against the program it must run
# (a recycled PID is left alone). Jobs still in the cluster's queue are cancelled first.
# Idempotent: with nothing running it does nothing.
#
#   stop_slurm.sh                 stop the daemons, keep packages, configuration and state
#                                 (the next start takes a few seconds)
#   stop_slurm.sh --purge-state   also delete the state directory (database, spool, logs)
#                                 and the files this script's twin wrote in /etc/slurm
set -euo pipefail

STATE=${TASKGROUP_SLURM_STATE:-/var/tmp/taskgroup-slurm}
CONF_DIR=/etc/slurm
MARKER="# Written by taskgroup tests/slurm/start_slurm.sh; removed by stop_slurm.sh --purge-state."
WAIT=${TASKGROUP_SLURM_STOP_WAIT:-30}
export PATH=$PATH:/usr/sbin:/sbin

purge=0
case ${1:-} in
--purge-state) purge=1 ;;
"") ;;
*) echo "usage: $0 [--purge-state]" >&2; exit 2 ;;
esac

log() { echo "stop_slurm: $*" >&2; }

recorded_pid() { # NAME -> the recorded PID if it is alive and runs NAME
    local pidfile=$STATE/pids/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(cat "$pidfile")
    [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$1" ]] || return 1
    echo "$pid"
}

stop() { # NAME
    local pid waited=0
    if pid=$(recorded_pid "$1"); then
        kill -TERM "$pid" 2>/dev/null || true
        while [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]; do
            if ((waited >= WAIT * 10)); then
                log "$1 (pid $pid) ignored SIGTERM for ${WAIT}s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$STATE/pids/$1.pid"
}

if [[ -d $STATE/pids ]]; then
    # Cancel what is left in the queue (e.g. after a test that was killed), while our
    # slurmctld and slurmd still run, so no job step outlives them.
    if recorded_pid slurmctld >/dev/null; then
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            log "cancelling jobs: ${jobs//$'\n'/ }"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 50); do
                [[ -z $(timeout 10 squeue -h -o %i 2>/dev/null) ]] && break
                sleep 0.2
            done
        fi
    fi
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        stop "$name"
    done
fi

if [[ $purge == 1 ]]; then
    for name in slurm.conf gres.conf cgroup.conf slurmdbd.conf; do
        if [[ -e $CONF_DIR/$name && $(head -1 "$CONF_DIR/$name") == "$MARKER" ]]; then
            rm -f "$CONF_DIR/$name"
        fi
    done
    if [[ -d $STATE ]]; then
        rm -rf "$STATE"
        log "removed $STATE"
    fi
fi
