#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for tests/test_slurm.py.
#
# slurmctld + slurmd (one node, every core, 2 fake GPUs backed by character devices),
# slurmdbd with a private MariaDB (so that `sacct` works), and munge. The script installs the
# Debian packages when they are missing, writes the configuration, starts only the daemons
# that are not running yet, records the PIDs of the daemons it started, and waits until the
# node is idle. Running it again is a no-op while everything runs; after a configuration
# change it restarts the daemons it owns. Stop with tests/slurm/stop_slurm.sh.
#
# Needs root on Debian 12 (apt-get, no systemd needed). State (spool, logs, database, PIDs)
# lives under $TASKGROUP_SLURM_STATE; the configuration goes to /etc/slurm, where the daemons
# and the client commands look for it, and an existing configuration not written by this
# script is never overwritten.
#
# Knobs (environment):
#   TASKGROUP_SLURM_STATE      state directory                [/var/tmp/taskgroup-slurm]
#   TASKGROUP_SLURM_PARTITION  the partition                  [debug]
#   TASKGROUP_SLURM_ACCOUNT    the account root is put in     [taskgroup]
#   TASKGROUP_SLURM_GPUS       fake GPUs on the node, 0..4    [2]
#   TASKGROUP_SLURM_DB_PORT    port of the private MariaDB    [3307]
#   TASKGROUP_SLURM_CGROUP     1 = proctrack/cgroup + task/cgroup (memory limits enforced);
#                              0 = proctrack/linuxproc + task/none, independent of the kernel [0]
#   TASKGROUP_SLURM_TIMEOUT    seconds to wait for each daemon / the node [120]
set -euo pipefail

STATE=${TASKGROUP_SLURM_STATE:-/var/tmp/taskgroup-slurm}
PARTITION=${TASKGROUP_SLURM_PARTITION:-debug}
ACCOUNT=${TASKGROUP_SLURM_ACCOUNT:-taskgroup}
GPUS=${TASKGROUP_SLURM_GPUS:-2}
DB_PORT=${TASKGROUP_SLURM_DB_PORT:-3307}
CGROUP=${TASKGROUP_SLURM_CGROUP:-0}
TIMEOUT=${TASKGROUP_SLURM_TIMEOUT:-120}
CLUSTER=taskgroup
CONF_DIR=/etc/slurm
MARKER="# Written by taskgroup tests/slurm/start_slurm.sh; removed by stop_slurm.sh --purge-state."
HERE=$(cd "$(dirname "$0")" && pwd)
T0=$(date +%s)

log() { echo "start_slurm: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts daemons)"
[[ $GPUS =~ ^[0-4]$ ]] || die "TASKGROUP_SLURM_GPUS must be 0..4, not '$GPUS'"

# ---------------------------------------------------------------------------------------------
# 1. Packages (Debian 12: SLURM 22.05, munge, MariaDB 10.11).
# ---------------------------------------------------------------------------------------------
install_packages() {
    local missing=() pair
    for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client sacct:slurm-client \
        slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server mariadb:mariadb-server; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    [[ ${#missing[@]} == 0 ]] && return
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}"
    # No systemd here, and the packages' init scripts must not start daemons we do not track:
    # a policy-rc.d that forbids starting services, only for the time of the install.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq || rc=$?
    [[ $rc == 0 ]] && { timeout 900 apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || rc=$?; }
    [[ $own_policy == 1 ]] && rm -f "$policy"
    [[ $rc == 0 ]] || die "apt-get failed ($rc)"
}
export PATH=$PATH:/usr/sbin:/sbin
install_packages

# ---------------------------------------------------------------------------------------------
# 2. Configuration, generated into $STATE/conf and installed into /etc/slurm.
# ---------------------------------------------------------------------------------------------
NODE=$(hostname -s)
mkdir -p "$STATE"/{conf,pids,run,log,spool/slurmctld,spool/slurmd,munge,mysql-run}
chmod 755 "$STATE"
chown slurm:slurm "$STATE"/{run,log,spool/slurmctld}
chown munge:munge "$STATE/munge" && chmod 700 "$STATE/munge"
chown mysql:mysql "$STATE/mysql-run"

# Node layout from slurmd -C; RealMemory 90 % of the machine so the daemons keep some.
layout=$(slurmd -C | head -1 | grep -o 'CPUs=[0-9]* Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*')
[[ -n $layout ]] || die "slurmd -C gave no node layout"
memory=$(($(free -m | awk '/^Mem:/{print $2}') * 9 / 10))
devices=(/dev/null /dev/zero /dev/full /dev/urandom)
gres_line="" node_gres=""
if ((GPUS > 0)); then
    node_gres=" Gres=gpu:$GPUS"
    gres_line="NodeName=$NODE Name=gpu File=$(IFS=,; echo "${devices[*]:0:GPUS}")"
fi
if [[ $CGROUP == 1 ]]; then
    proctrack=proctrack/cgroup task=task/cgroup
else
    proctrack=proctrack/linuxproc task=task/none
fi
[[ -s $STATE/db_password ]] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/db_password"; chmod 600 "$STATE/db_password"; }
DB_PASSWORD=$(cat "$STATE/db_password")

cat >"$STATE/conf/slurm.conf" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=$proctrack
TaskPlugin=$task
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmdSpoolDir=$STATE/spool/slurmd
StateSaveLocation=$STATE/spool/slurmctld
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that asks for no memory gets the whole node and blocks the others.
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
# Keep sbatch --comment (Snakemake puts the rule name there) in the accounting database.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=300
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 $layout RealMemory=$memory$node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

{ echo "$MARKER"; [[ -n $gres_line ]] && echo "$gres_line"; true; } >"$STATE/conf/gres.conf"

# Used only with TASKGROUP_SLURM_CGROUP=1. ConstrainDevices=yes breaks every job step here
# (devices.allow cannot be written in this sandbox), so it stays off.
cat >"$STATE/conf/cgroup.conf" <<EOF
$MARKER
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=no
EOF

cat >"$STATE/conf/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF

# Refuse to touch a SLURM configuration that someone else wrote.
mkdir -p "$CONF_DIR"
changed=0
for name in slurm.conf gres.conf cgroup.conf slurmdbd.conf; do
    target=$CONF_DIR/$name
    if [[ -e $target ]] && [[ $(head -1 "$target") != "$MARKER" ]]; then
        die "$target exists and was not written by this script; not touching it"
    fi
    cmp -s "$STATE/conf/$name" "$target" 2>/dev/null || changed=1
done

# ---------------------------------------------------------------------------------------------
# 3. Daemons. A recorded PID counts only while it is alive and runs the expected program.
# ---------------------------------------------------------------------------------------------
ours_running() { # NAME -> 0 if the daemon we recorded under NAME is alive
    local pidfile=$STATE/pids/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(cat "$pidfile")
    [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$1" ]]
}

if [[ $changed == 1 ]]; then
    if ours_running slurmctld || ours_running slurmd || ours_running slurmdbd; then
        log "configuration changed: restarting the daemons started by this script"
        bash "$HERE/stop_slurm.sh"
    fi
    for name in slurm.conf gres.conf cgroup.conf slurmdbd.conf; do
        install -m 644 "$STATE/conf/$name" "$CONF_DIR/$name"
    done
    chown slurm:slurm "$CONF_DIR/slurmdbd.conf" && chmod 600 "$CONF_DIR/slurmdbd.conf"
fi

wait_for() { # DESCRIPTION COMMAND... -> polls COMMAND until it succeeds or TIMEOUT passes
    local what=$1 deadline=$(($(date +%s) + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.3
    done
}

record() { # NAME PIDFILE -> copy the daemon's PID into $STATE/pids/NAME.pid
    wait_for "$1 to write $2" test -s "$2"
    local pid
    pid=$(cat "$2")
    wait_for "$1 (pid $pid)" test -r "/proc/$pid/comm"
    echo "$pid" >"$STATE/pids/$1.pid"
    log "started $1 (pid $pid)"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# munge: reuse a munged that already answers (e.g. the system's own), else start ours.
munge_works() { munge -n </dev/null | unmunge >/dev/null; }
if ! ours_running munged && ! munge_works 2>/dev/null; then
    install -d -o munge -g munge -m 755 /run/munge
    rm -f "$STATE/munge/munged.pid"
    runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    record munged "$STATE/munge/munged.pid"
    wait_for "munge" munge_works
fi

# MariaDB: a private instance (own datadir, socket and port); the system one is left alone.
DB_SOCKET=$STATE/mysql-run/mysqld.sock
# shellcheck disable=SC2120  # (arguments come through wait_for)
db() { mariadb --no-defaults -S "$DB_SOCKET" -u root "$@"; }
if ! ours_running mariadbd; then
    if port_open "$DB_PORT"; then
        die "port $DB_PORT is taken by a process this script did not start (set TASKGROUP_SLURM_DB_PORT)"
    fi
    if [[ ! -d $STATE/mysql/mysql ]]; then
        log "initialising the accounting database in $STATE/mysql"
        mkdir -p "$STATE/mysql" && chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $STATE/log/mariadb-install.log"
    fi
    rm -f "$STATE/mysql-run/mariadbd.pid"
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$DB_SOCKET" \
        --pid-file="$STATE/mysql-run/mariadbd.pid" --log-error="$STATE/log/mariadb.log" \
        --skip-name-resolve --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    record mariadbd "$STATE/mysql-run/mariadbd.pid"
    wait_for "MariaDB on port $DB_PORT" db -e "SELECT 1"
fi
db <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF

start_slurm_daemon() { # NAME PORT
    if ours_running "$1"; then return; fi
    if port_open "$2"; then
        die "port $2 is taken by a $1 this script did not start; stop it first"
    fi
    rm -f "$STATE/run/$1.pid"
    "$1"
    record "$1" "$STATE/run/$1.pid"
    wait_for "$1 on port $2" port_open "$2"
}

start_slurm_daemon slurmdbd 6819
start_slurm_daemon slurmctld 6817
wait_for "slurmctld to answer" bash -c "scontrol ping | grep -q UP"

# Accounting: the cluster (slurmctld usually registers it itself), the account, root in it.
if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null) ]]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
fi
if [[ -z $(sacctmgr -n -P list account "$ACCOUNT" format=account) ]]; then
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=taskgroup-tests \
        Organization=taskgroup >/dev/null
fi
if ! sacctmgr -n -P -s list user root format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
fi

start_slurm_daemon slurmd 6818

# The node: idle, resumed once if it came up drained/down (a drain reason survives restarts).
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1; }
resumed=0 deadline=$(($(date +%s) + TIMEOUT))
while :; do
    state=$(node_state)
    case $state in
    idle | mixed | allocated) break ;;
    *drain* | *down* | *inval* | *fail*)
        if [[ $resumed == 0 ]]; then
            log "node $NODE is $state: resuming it"
            scontrol update NodeName="$NODE" State=RESUME || true
            resumed=1
        fi ;;
    esac
    (($(date +%s) < deadline)) || die "node $NODE is '$state' after ${TIMEOUT}s; see $STATE/log/slurmd.log and $STATE/log/slurmctld.log"
    sleep 0.5
done

# Smoke check: a job step runs, and a GPU job sees its fake GPU.
if ((GPUS > 0)); then
    visible=$(timeout 60 srun -A "$ACCOUNT" -p "$PARTITION" -N1 -t 1 --mem 100 --gpus=1 \
        printenv CUDA_VISIBLE_DEVICES) || die "srun of a GPU job step failed"
    [[ $visible == 0 ]] || die "GPU job step saw CUDA_VISIBLE_DEVICES='$visible', expected 0"
else
    timeout 60 srun -A "$ACCOUNT" -p "$PARTITION" -N1 -t 1 --mem 100 true || die "srun failed"
fi

log "SLURM is up: cluster $CLUSTER, node $NODE ($layout, ${GPUS} GPU), partition $PARTITION, account $ACCOUNT; state in $STATE ($(($(date +%s) - T0)) s)"
