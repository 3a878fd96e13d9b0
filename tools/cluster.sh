#!/usr/bin/env bash
# A small HPC site on this one machine: Slurm (munge, slurmctld, two slurmd),
# JupyterHub with configurable-http-proxy and batchspawner's SlurmSpawner,
# a "shared file system" holding nbsandbox and a site pack, and ordinary users.
#
#   tools/cluster.sh install   apt/pip/npm packages, the shared nbsandbox, the site pack
#   tools/cluster.sh up        install, then start everything (state under build/cluster/run)
#   tools/cluster.sh check     the end-to-end check through the Hub (tools/cluster_check.py)
#   tools/cluster.sh down      stop everything; no process, job, user or run file is left
#   tools/cluster.sh status    what is running
#
# Must run as root (it starts daemons and creates users).  Nodes:
#   node1  this host as it is (user namespaces available)         partition "main"
#   node2  a slurmd inside a user namespace whose max_user_namespaces
#          is 0 (no user namespaces for its jobs; hostname node2)  partition "nouserns"
# Ports (all on 127.0.0.1) start at $NBSANDBOX_CLUSTER_PORT (default 18000).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
BASE=${NBSANDBOX_CLUSTER_DIR:-$TOP/build/cluster}
SHARED=$BASE/shared                 # the "shared file system" (made by install)
NBS_ENV=$SHARED/nbsandbox           # nbsandbox for the nodes and the Hub (a venv)
SITE=$SHARED/site                   # site policy and kernelspecs (nbsandbox site install)
PACKS=$SHARED/packs                 # unpacked packs, read-only
CHP_DIR=$BASE/chp                   # configurable-http-proxy (npm, project-local prefix)
RUN=$BASE/run                       # everything up makes; down removes it
PORT=${NBSANDBOX_CLUSTER_PORT:-18000}
USERS=(nbsc-alice nbsc-bob)
TOKEN_FILE=$RUN/api_token

APT_PACKAGES=(slurm-wlm munge sudo)   # and nodejs, npm where node, npm are missing
PIP_PACKAGES=(jupyterhub batchspawner jupyter_server ipykernel)

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root: it starts Slurm's daemons and creates users (sudo $0 $1)"
}

check_readable() {
    # Users' jobs run nbsandbox from $SHARED: every directory above it must be traversable.
    local d=$BASE
    while [[ $d != / ]]; do
        # Others' search bit: "x", or "t" for a sticky directory such as /tmp.
        if [[ -e $d ]] && ! [[ $(stat -c %A "$d") == d*[xt] ]]; then
            die "$d is not traversable by other users, so jobs cannot reach $SHARED; use a" \
                "world-readable checkout or set NBSANDBOX_CLUSTER_DIR"
        fi
        d=$(dirname "$d")
    done
}

# -- install -------------------------------------------------------------------------------

do_install() {
    need_root install
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # Node may come from elsewhere (e.g. NodeSource's nodejs, which includes npm).
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    mkdir -p "$BASE"
    chmod 755 "$BASE"
    check_readable
    if [[ ! -x $CHP_DIR/node_modules/.bin/configurable-http-proxy ]]; then
        say "installing configurable-http-proxy into $CHP_DIR"
        npm install --silent --no-audit --no-fund --prefix "$CHP_DIR" configurable-http-proxy >/dev/null
    fi
    mkdir -p "$SHARED" "$PACKS"
    chmod 755 "$SHARED" "$PACKS"
    local stamp=$NBS_ENV/.nbsandbox-source
    local src
    src=$(find nbsandbox native setup.py pyproject.toml -type f \( -name '*.py' -o -name '*.[ch]' \
              -o -name '*.toml' \) -not -path '*/build/*' -print0 | sort -z | xargs -0 sha256sum \
          | sha256sum | cut -c1-16)
    if [[ ! -f $stamp || $(cat "$stamp") != "$src" ]]; then
        say "installing nbsandbox, JupyterHub, batchspawner into $NBS_ENV"
        [[ -x $NBS_ENV/bin/python ]] || /usr/bin/python3 -m venv "$NBS_ENV"
        "$NBS_ENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" \
            "$TOP" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
        "$NBS_ENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall \
            --no-deps "$TOP" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
        "$NBS_ENV/bin/python" -c 'import jupyterhub, batchspawner, nbsandbox._native' \
            || die "the shared environment $NBS_ENV is incomplete (see pip's messages above)"
        chmod -R a+rX "$NBS_ENV"
        rm -rf "$PACKS/site"
        echo "$src" > "$stamp"
    fi
    if [[ ! -d $PACKS/site ]]; then
        # The site pack: the same environment, relocatable, so that the single-user
        # server and its kernels run from it on nodes that have nothing installed.
        say "packing the site environment into $PACKS/site"
        "$NBS_ENV/bin/nbsandbox" pack --python "$NBS_ENV" -o "$PACKS/site.tmp" >/dev/null
        chmod -R a+rX,a-w "$PACKS/site.tmp"
        chmod u+w "$PACKS/site.tmp"
        mv "$PACKS/site.tmp" "$PACKS/site"
        chmod u-w "$PACKS/site"
    fi
    # The site's policy and kernelspecs (the product command a site runs).
    rm -rf "$SITE"
    "$NBS_ENV/bin/nbsandbox" site install --site "$SITE" --root "site=$PACKS/site" \
        --engines userns,fakechroot --engine performance --isolate-home --lock engine
}

# -- up ------------------------------------------------------------------------------------

installed() {
    [[ -x $CHP_DIR/node_modules/.bin/configurable-http-proxy && -d $PACKS/site \
       && -x $NBS_ENV/bin/jupyterhub && -d $SITE ]] && command -v slurmctld >/dev/null
}

write_configs() {
    local host
    host=$(hostname -s)
    mkdir -p "$RUN"/{etc,log,munge,slurmctld,spool,home,hub}
    chmod 755 "$RUN" "$RUN/etc" "$RUN/home"
    # munge: a fresh key, its own socket
    chown munge:munge "$RUN/munge"
    chmod 700 "$RUN/munge"
    head -c 1024 /dev/urandom > "$RUN/munge/munge.key"
    chown munge:munge "$RUN/munge/munge.key"
    chmod 400 "$RUN/munge/munge.key"
    chmod 711 "$RUN/munge"
    local cpus mem
    cpus=4
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 4 ))
    cat > "$RUN/etc/slurm.conf" <<EOF
# generated by tools/cluster.sh
ClusterName=nbsandbox
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$((PORT + 17))
SlurmdPort=$((PORT + 18))
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$RUN/slurmctld
SlurmdSpoolDir=$RUN/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=120
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
NodeName=node1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 18)) CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=node2 NodeHostname=node2 NodeAddr=127.0.0.1 Port=$((PORT + 19)) CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=node1 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=nouserns Nodes=node2 MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    chmod 644 "$RUN/etc/slurm.conf"
    "$NBS_ENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN_FILE"
    chmod 600 "$TOKEN_FILE"
    local password
    password=$("$NBS_ENV/bin/python" -c 'import secrets; print(secrets.token_hex(8))')
    sed -e "s|@RUN@|$RUN|g" -e "s|@PORT@|$PORT|g" -e "s|@HUBPORT@|$((PORT + 1))|g" \
        -e "s|@PROXYPORT@|$((PORT + 2))|g" -e "s|@TOKEN@|$(cat "$TOKEN_FILE")|g" \
        -e "s|@PASSWORD@|$password|g" \
        -e "s|@CHP@|$CHP_DIR/node_modules/.bin/configurable-http-proxy|g" \
        -e "s|@NBSANDBOX@|$NBS_ENV/bin/nbsandbox|g" -e "s|@SITE@|$SITE|g" \
        tools/cluster/jupyterhub_config.py > "$RUN/hub/jupyterhub_config.py"
    chmod 600 "$RUN/hub/jupyterhub_config.py"
}

# Daemons keep no descriptor of ours (a caller reading our output would wait for them);
# they write their own logs under $RUN.

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local t=$1 what=$2
    shift 2
    local i
    for ((i = 0; i < t * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within $t s (logs: $RUN/log)"
}

export_slurm_env() {
    export SLURM_CONF=$RUN/etc/slurm.conf
}

do_up() {
    need_root up
    do_install   # idempotent: only what changed
    check_readable
    if [[ -e $RUN ]]; then
        say "an earlier cluster's state is in $RUN: taking it down first"
        do_down
    fi
    write_configs
    export_slurm_env
    local u
    for u in "${USERS[@]}"; do
        id "$u" >/dev/null 2>&1 || useradd --home-dir "$RUN/home/$u" --create-home --shell /bin/bash \
            --comment "nbsandbox cluster user" "$u"
        chmod 700 "$RUN/home/$u"
    done
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --key-file "$RUN/munge/munge.key" \
        --socket "$RUN/munge/munge.socket" --pid-file "$RUN/munge/munged.pid" \
        --log-file "$RUN/munge/munged.log" --seed-file "$RUN/munge/munged.seed" </dev/null >>"$RUN/log/daemons.log" 2>&1
    wait_for 10 munged test -S "$RUN/munge/munge.socket"
    chmod 755 "$RUN/munge"
    say "starting slurmctld, slurmd node1, slurmd node2 (no user namespaces)"
    slurmctld -f "$SLURM_CONF" </dev/null >>"$RUN/log/daemons.log" 2>&1
    slurmd -f "$SLURM_CONF" -N node1 </dev/null >>"$RUN/log/daemons.log" 2>&1
    # node2: the same host seen from a user namespace that maps every id to itself
    # (so slurmd keeps root's powers over files and users), where no further user
    # namespace may be made, with its own hostname: like a node with them disabled.
    /usr/bin/python3 tools/cluster/nouserns.py node2 slurmd -f "$SLURM_CONF" -N node2 </dev/null >>"$RUN/log/daemons.log" 2>&1
    wait_for 30 "Slurm's nodes" sh -c "sinfo -h -N -o '%N %t' | grep -c idle | grep -qx 2"
    say "starting JupyterHub on http://127.0.0.1:$PORT"
    # (it writes $RUN/hub/jupyterhub.pid itself)
    env -C "$RUN/hub" setsid "$NBS_ENV/bin/jupyterhub" -f "$RUN/hub/jupyterhub_config.py" \
        >"$RUN/log/jupyterhub.log" 2>&1 </dev/null &
    wait_for 60 JupyterHub curl -sf "http://127.0.0.1:$PORT/hub/api/"
    say "up: hub http://127.0.0.1:$PORT, users ${USERS[*]}, API token in $TOKEN_FILE"
}

# -- down ----------------------------------------------------------------------------------

kill_pidfile() {  # kill_pidfile FILE: TERM, then KILL, the process named by FILE
    local f=$1 pid i
    [[ -f $f ]] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

users_processes() {
    local u
    for u in "${USERS[@]}"; do
        id "$u" >/dev/null 2>&1 && ps -o pid= -u "$u" 2>/dev/null
    done
    true
}

do_down() {
    need_root down
    export_slurm_env
    if [[ -f $RUN/etc/slurm.conf ]] && [[ -S $RUN/munge/munge.socket ]]; then
        scancel --full --quiet --user "$(IFS=,; echo "${USERS[*]}")" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            [[ -z $(squeue -h -t running,pending,completing 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    kill_pidfile "$RUN/hub/jupyterhub.pid"
    kill_pidfile "$RUN/hub/jupyterhub-proxy.pid"
    local f
    for f in "$RUN"/slurmd-*.pid; do kill_pidfile "$f"; done
    kill_pidfile "$RUN/slurmctld.pid"
    kill_pidfile "$RUN/munge/munged.pid"
    local pid
    for pid in $(users_processes); do kill -KILL "$pid" 2>/dev/null || true; done
    local u uid
    for u in "${USERS[@]}"; do
        uid=$(id -u "$u" 2>/dev/null) || continue
        # what the users' programs may have left outside their homes
        find /tmp /var/tmp /dev/shm -mindepth 1 -maxdepth 1 -uid "$uid" -exec rm -rf {} + 2>/dev/null || true
        userdel "$u" 2>/dev/null || { sleep 1; userdel "$u"; }
    done
    rm -rf "$RUN"
}

do_status() {
    export_slurm_env
    [[ -d $RUN ]] || { say "down"; return 0; }
    sinfo -N -o '%N %P %t' || true
    squeue || true
    curl -sf "http://127.0.0.1:$PORT/hub/api/" && echo
}

do_check() {
    need_root check
    [[ -f $TOKEN_FILE ]] || die "the cluster is not up: run $0 up first"
    export_slurm_env
    "$NBS_ENV/bin/python" tools/cluster_check.py --hub "http://127.0.0.1:$PORT" \
        --token-file "$TOKEN_FILE" --users "${USERS[@]}" --run "$RUN" --site "$SITE" \
        --pack /gnu/store --nbsandbox "$NBS_ENV/bin/nbsandbox" "$@"
}

cmd=${1:-}
shift || true
case $cmd in
    install) do_install ;;
    up) do_up ;;
    check) do_check "$@" ;;
    down) do_down; say "down: no process, job, user or file of the cluster left" ;;
    status) do_status ;;
    *) echo "usage: $0 install|up|check|down|status" >&2; exit 2 ;;
esac
