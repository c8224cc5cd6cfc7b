#!/usr/bin/env bash
# A real single-host SLURM 22.05 (Debian slurm-wlm) + slurmdbd accounting + an MLflow tracking server, for running
# the cluster path on one machine: `slurm-box.sh start | stop | status`. Needs root and apt (no systemd, no
# cgroups: the daemons are started by hand). Idempotent: `start` on a running box leaves it running.
#   nodes:      box1, box2 (two slurmd on this host, own ports; Debian's build supports multiple slurmd)
#   partition:  cpu (both nodes, 2 CPUs and BOX_NODE_MEM_MB each, no GPUs)
#   accounting: slurmdbd on MariaDB (sacct works, so the slurm plugin's default status command works)
#   MLflow:     http://127.0.0.1:$BOX_MLFLOW_PORT, sqlite backend store, artifacts served through the server
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${BOX_STATE:-/var/lib/mot-slurm-box}
CLUSTER=motbox
ACCOUNT=motbox
NODE_CPUS=${BOX_NODE_CPUS:-2}
NODE_MEM_MB=${BOX_NODE_MEM_MB:-16000}  # a scheduling number (no cgroups): what a job's mem_mb is checked against
MLFLOW_PORT=${BOX_MLFLOW_PORT:-5055}
MLFLOW=${BOX_MLFLOW:-$REPO/.venv/bin/mlflow}
HOST=$(hostname -s)
LOG=/var/log/slurm

say() { echo "slurm-box: $*"; }
die() { echo "slurm-box: error: $*" >&2; exit 1; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Write $1 from stdin only when its content changes (so a re-run does not touch a running box's files).
put() {
    local tmp; tmp=$(mktemp)
    cat > "$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
    install -m "${2:-644}" "$tmp" "$1"; rm -f "$tmp"; return 0
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    die "$what did not come up in ${seconds}s (logs: $LOG, $STATE)"
}

install_packages() {
    [[ $(id -u) == 0 ]] || die "needs root (apt-get, daemons)"
    local missing=()
    for cmd in slurmctld:slurm-wlm slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
        command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
    done
    if ((${#missing[@]})); then
        say "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
    fi
    [[ -x $MLFLOW ]] || die "$MLFLOW not found: run \`make install\` first"
}

write_configs() {
    mkdir -p /etc/slurm "$STATE"/{ctld,slurmd,mlflow/artifacts} "$LOG"
    local changed=0
    put /etc/slurm/slurm.conf <<EOF && changed=1 || true
# written by workflow/cluster/slurm-box.sh
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# no systemd/cgroups here: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# the configured CPUs/memory, not the probed ones (two slurmd share one host)
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=/run/slurmctld-box.pid
SlurmdPidFile=/run/slurmd-box-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldPort=6817
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# sacct shows the plugin's --comment (rule_{rule}_wildcards_{...}): the job table names each job's rule
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# squeue keeps a finished job for 5 min too (>= 120 s: the slurm plugin's squeue status command works as well)
MinJobAge=300
KillWait=5
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=100000
NodeName=box1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
NodeName=box2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
PartitionName=cpu Nodes=box1,box2 Default=YES MaxTime=INFINITE State=UP
EOF
    put /etc/slurm/slurmdbd.conf 600 <<EOF || true
# written by workflow/cluster/slurm-box.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=motbox
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd-box.pid
LogFile=$LOG/slurmdbd.log
EOF
    echo $changed
}

start() {
    install_packages
    local changed; changed=$(write_configs)
    # munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        [[ -s /etc/munge/munge.key ]] || mungekey --create
        mkdir -p /run/munge && chown munge:munge /run/munge /etc/munge/munge.key
        runuser -u munge -- /usr/sbin/munged
        wait_for 10 munged bash -c 'munge -n | unmunge'
    fi
    # MariaDB for slurmdbd
    if ! mysqladmin ping >/dev/null 2>&1; then
        /etc/init.d/mariadb start >/dev/null
        wait_for 30 mariadb mysqladmin ping
    fi
    mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'motbox';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    if ! alive /run/slurmdbd-box.pid; then
        slurmdbd
        wait_for 30 slurmdbd sacctmgr -n show cluster
    fi
    sacctmgr -n -P show cluster format=cluster | grep -qx $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
    sacctmgr -n -P show account format=account | grep -qx $ACCOUNT || sacctmgr -i add account $ACCOUNT Cluster=$CLUSTER >/dev/null
    sacctmgr -n -P show assoc user=root format=account | grep -qx $ACCOUNT \
        || sacctmgr -i add user root Account=$ACCOUNT DefaultAccount=$ACCOUNT >/dev/null
    # slurmctld and the two slurmd
    if ! alive /run/slurmctld-box.pid; then
        slurmctld
        wait_for 30 slurmctld scontrol ping
    elif [[ $changed == 1 ]]; then
        scontrol reconfigure
    fi
    for node in box1 box2; do
        alive /run/slurmd-box-$node.pid || slurmd -N $node
    done
    wait_for 60 "nodes box1 box2" bash -c '[[ $(sinfo -h -N -p cpu -t idle,mix,alloc -o %N | sort -u | wc -l) == 2 ]]'
    # MLflow tracking server: a real backend store, artifacts uploaded and served over HTTP
    if ! alive "$STATE/mlflow.pid"; then
        setsid nohup "$MLFLOW" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
            --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
            --artifacts-destination "$STATE/mlflow/artifacts" --serve-artifacts \
            > "$LOG/mlflow-server.log" 2>&1 &
        echo $! > "$STATE/mlflow.pid"
        wait_for 60 "mlflow server" curl -sf "http://127.0.0.1:$MLFLOW_PORT/health"
    fi
    status
}

stop() {
    if scontrol ping >/dev/null 2>&1; then scontrol shutdown >/dev/null 2>&1 || true; fi  # slurmctld + every slurmd
    for pidfile in /run/slurmd-box-box1.pid /run/slurmd-box-box2.pid /run/slurmctld-box.pid /run/slurmdbd-box.pid \
                   "$STATE/mlflow.pid"; do
        if alive "$pidfile"; then
            # mlflow server: its whole process group (setsid: uvicorn workers and huey job consumers, which outlive
            # a TERM), KILLed after 10 s; the daemons: their pid
            if [[ $pidfile == "$STATE/mlflow.pid" ]]; then
                local group; group=$(cat "$pidfile")
                kill -- -"$group" 2>/dev/null || true
                for _ in $(seq 20); do kill -0 -- -"$group" 2>/dev/null || break; sleep 0.5; done
                kill -KILL -- -"$group" 2>/dev/null || true
            else kill "$(cat "$pidfile")" 2>/dev/null || true; fi
        fi
        rm -f "$pidfile"
    done
    if mysqladmin ping >/dev/null 2>&1; then /etc/init.d/mariadb stop >/dev/null || true; fi
    if [[ -f /run/munge/munged.pid ]]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
    say "stopped (state kept in $STATE; remove it for a fresh box)"
}

status() {
    say "MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
    sinfo -o "%P %D %N %c %m %G %T"
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
