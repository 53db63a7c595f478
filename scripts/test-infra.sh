#!/usr/bin/env bash
# Start (or reuse) the Docker engines, loopback registries and Debian base image the tests use.
#
# Idempotent: a second run finds the services recorded in the state file alive and only rewrites
# the file. Everything binds to 127.0.0.1. The state file ($IMAGED_TEST_INFRA, default
# <repo>/.imaged-test-infra.json) is what tests/infra.py reads.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${IMAGED_TEST_INFRA:-$REPO/.imaged-test-infra.json}
PYTHON=${PYTHON:-python3}
if [[ $(id -u) == 0 ]]; then
    IS_ROOT=1
    RUN_DIR=${IMAGED_TEST_RUN_DIR:-/var/tmp/imaged-test-infra}
    CACHE_DIR=${IMAGED_TEST_CACHE_DIR:-/var/cache/imaged-test}
else
    IS_ROOT=0
    RUN_DIR=${IMAGED_TEST_RUN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imaged-test-infra}
    CACHE_DIR=${IMAGED_TEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imaged-test}
fi
BASE_NAME=python
BASE_PY=3.11
BASE_SUFFIX=slim-bookworm
BASE_ROOTFS_TAR=$CACHE_DIR/bookworm-python$BASE_PY-rootfs.tar
BASE_PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
AUTH_USER=imaged
REMOTE_NS=imaged-remote
# The remote engine gets its own bridge: with --bridge=none, BuildKit RUN steps on the default
# network fail with "network bridge not found". docker0 belongs to the first engine.
REMOTE_BRIDGE=imaged-rb0
REMOTE_SUBNET=10.213.7
START=$SECONDS

log() { printf '[test-infra %3ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.25 s until it succeeds or time runs out.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
}

# pid_is PID NAME: PID is alive and its command line mentions NAME (guards against pid reuse).
pid_is() {
    [[ -n $1 && -r /proc/$1/cmdline ]] && tr '\0' ' ' </proc/"$1"/cmdline | grep -q -- "$2"
}

# stop_stale PID NAME: stop a recorded process that is alive but no longer answers.
stop_stale() {
    pid_is "$1" "$2" || return 0
    log "stopping stale $2 (pid $1)"
    kill "$1" 2>/dev/null || true
    wait_until 20 eval "! kill -0 $1" || kill -9 "$1" 2>/dev/null || true
}

# pids_using TEXT: processes whose command line contains TEXT (a path only this script uses).
pids_using() {
    local cmdline
    for cmdline in /proc/[0-9]*/cmdline; do
        { tr '\0' ' ' <"$cmdline"; } 2>/dev/null | grep -qF -- "$1" && basename "$(dirname "$cmdline")"
    done
    return 0
}

# reap_orphans NAME KEEP: stop registries in $RUN_DIR/NAME.* other than KEEP (left by a lost
# state file or an interrupted run) and delete their folders.
reap_orphans() {
    local dir pid
    for dir in "$RUN_DIR/$1".*; do
        [[ -d $dir && $dir != "$2" ]] || continue
        for pid in $(pids_using "$dir/config.yml"); do stop_stale "$pid" docker-registry; done
        rm -rf -- "$dir"
    done
}

# wait_alive SECONDS PID COMMAND...: like wait_until, but give up as soon as PID exits.
wait_alive() {
    local deadline=$((SECONDS + $1)) pid=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.25
    done
}

http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" || true
}

registry_ok() { [[ $(http_status "http://$1/v2/") == 200 ]]; }

auth_registry_ok() {
    [[ $(http_status "http://$1/v2/") == 401 && $(http_status -u "$2:$3" "http://$1/v2/") == 200 ]]
}

engine_ok() { DOCKER_HOST=$1 "$DOCKER_CLI" version >/dev/null 2>&1; }

local_engine_ok() {
    if [[ -n $LOCAL_DOCKER_HOST ]]; then
        DOCKER_HOST=$LOCAL_DOCKER_HOST docker version >/dev/null 2>&1
    else
        env -u DOCKER_HOST docker version >/dev/null 2>&1
    fi
}

# Read the previous state into OLD_* shell variables (empty when absent or null).
load_state() {
    local key
    for key in registry auth_registry auth_user auth_password remote_docker_host \
        {pids,logs,dirs}_{dockerd,registry,auth_registry,remote_dockerd}; do
        printf -v "OLD_$key" '%s' ""
    done
    [[ -f $STATE ]] || return 0
    eval "$("$PYTHON" - "$STATE" <<'PY'
import json, shlex, sys
try:
    with open(sys.argv[1]) as f:
        state = json.load(f)
except (OSError, ValueError):
    state = {}
flat = {k: v for k, v in state.items() if not isinstance(v, dict)}
for group in ("pids", "logs", "dirs"):
    flat.update({f"{group}_{k}": v for k, v in (state.get(group) or {}).items()})
for key, value in flat.items():
    text = "" if value is None else str(value)
    print(f"OLD_{key}={shlex.quote(text)}")
PY
)"
}

# ---------------------------------------------------------------- steps

ensure_packages() {
    local -A wanted=([dockerd]=docker.io [docker-registry]=docker-registry [debootstrap]=debootstrap [skopeo]=skopeo)
    local missing=() cmd
    for cmd in "${!wanted[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
    done
    if ((${#missing[@]} == 0)); then return 0; fi
    if ((IS_ROOT)) && [[ -f /etc/debian_version ]]; then
        log "installing ${missing[*]} with apt"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        log "missing (install them yourself if needed): ${missing[*]}"
    fi
    command -v docker-registry >/dev/null 2>&1 || die "docker-registry is required"
    command -v docker >/dev/null 2>&1 || die "a docker CLI is required"
}

ensure_bcrypt() {
    "$PYTHON" -c 'import bcrypt' 2>/dev/null && return 0
    log "installing bcrypt with pip"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q bcrypt
}

ensure_local_engine() {
    LOCAL_DOCKER_HOST=${DOCKER_HOST:-}
    DOCKERD_PID=""
    DOCKERD_LOG=""
    if local_engine_ok; then
        # Keep the pid only if it is the dockerd this script started earlier.
        if pid_is "$OLD_pids_dockerd" dockerd; then DOCKERD_PID=$OLD_pids_dockerd; DOCKERD_LOG=$OLD_logs_dockerd; fi
        return 0
    fi
    [[ -z $LOCAL_DOCKER_HOST ]] || die "DOCKER_HOST=$LOCAL_DOCKER_HOST does not answer"
    ((IS_ROOT)) || die "no Docker engine answers and only root can start dockerd here"
    DOCKERD_LOG=$RUN_DIR/dockerd.log
    log "starting dockerd (log $DOCKERD_LOG)"
    PATH=$PATH:/usr/sbin:/sbin setsid dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    DOCKERD_PID=$!
    wait_alive 60 "$DOCKERD_PID" local_engine_ok || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
}

# Prefer a CLI with the buildx plugin; else a pre-23 CLI, whose built-in BuildKit works.
choose_cli() {
    local c path major
    DOCKER_BUILDX=false
    for c in docker /usr/bin/docker; do
        path=$(command -v "$c" 2>/dev/null) || continue
        if "$path" buildx version >/dev/null 2>&1; then DOCKER_CLI=$path; DOCKER_BUILDX=true; return 0; fi
    done
    for c in /usr/bin/docker docker; do
        path=$(command -v "$c" 2>/dev/null) || continue
        major=$("$path" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
        if [[ $major =~ ^[0-9]+$ ]] && ((major < 23)); then DOCKER_CLI=$path; return 0; fi
    done
    DOCKER_CLI=$(command -v docker)
    log "WARNING: no docker CLI with BuildKit found; using $DOCKER_CLI"
}

# write_registry_config FILE PORT STORAGE [HTPASSWD]
write_registry_config() {
    {
        printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n'
        printf 'storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$3"
        printf 'http:\n  addr: 127.0.0.1:%s\n' "$2"
        if [[ -n ${4:-} ]]; then
            printf 'auth:\n  htpasswd:\n    realm: imaged-test\n    path: %s\n' "$4"
        fi
    } >"$1"
}

write_htpasswd() {
    "$PYTHON" - "$1" "$AUTH_USER" "$2" <<'PY'
import sys, bcrypt
path, user, password = sys.argv[1:]
hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
with open(path, "w") as f:
    f.write(f"{user}:{hashed}\n")
PY
}

# start_registry NAME [auth]: sets REG_ADDR REG_PID REG_LOG REG_DIR (and AUTH_PASSWORD for auth).
start_registry() {
    local name=$1 auth=${2:-} port htpasswd="" attempt
    [[ -z ${REG_DIR:-} || ! -d $REG_DIR ]] || rm -rf -- "$REG_DIR"
    REG_DIR=$(mktemp -d "$RUN_DIR/$name.XXXXXX")
    REG_LOG=$REG_DIR/registry.log
    if [[ -n $auth ]]; then
        AUTH_PASSWORD=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))')
        htpasswd=$REG_DIR/htpasswd
        write_htpasswd "$htpasswd" "$AUTH_PASSWORD"
    fi
    for attempt in 1 2 3; do
        port=$(free_port)
        REG_ADDR=127.0.0.1:$port
        write_registry_config "$REG_DIR/config.yml" "$port" "$REG_DIR/storage" "$htpasswd"
        setsid docker-registry serve "$REG_DIR/config.yml" </dev/null >>"$REG_LOG" 2>&1 9>&- &
        REG_PID=$!
        if [[ -n $auth ]]; then
            wait_alive 15 "$REG_PID" auth_registry_ok "$REG_ADDR" "$AUTH_USER" "$AUTH_PASSWORD" &&
                return 0
        else
            wait_alive 15 "$REG_PID" registry_ok "$REG_ADDR" && return 0
        fi
        kill "$REG_PID" 2>/dev/null || true
        log "registry $name did not come up on $REG_ADDR (attempt $attempt); see $REG_LOG"
    done
    die "could not start registry $name"
}

ensure_registries() {
    if pid_is "$OLD_pids_registry" docker-registry && registry_ok "$OLD_registry"; then
        REGISTRY=$OLD_registry; REGISTRY_PID=$OLD_pids_registry
        REGISTRY_LOG=$OLD_logs_registry; REGISTRY_DIR=$OLD_dirs_registry
    else
        stop_stale "$OLD_pids_registry" docker-registry
        REG_DIR=$OLD_dirs_registry
        start_registry registry
        REGISTRY=$REG_ADDR; REGISTRY_PID=$REG_PID; REGISTRY_LOG=$REG_LOG; REGISTRY_DIR=$REG_DIR
        log "started registry on $REGISTRY"
    fi
    if pid_is "$OLD_pids_auth_registry" docker-registry &&
        auth_registry_ok "$OLD_auth_registry" "$OLD_auth_user" "$OLD_auth_password"; then
        AUTH_REGISTRY=$OLD_auth_registry; AUTH_PASSWORD=$OLD_auth_password
        AUTH_REGISTRY_PID=$OLD_pids_auth_registry; AUTH_REGISTRY_LOG=$OLD_logs_auth_registry
        AUTH_REGISTRY_DIR=$OLD_dirs_auth_registry
    else
        stop_stale "$OLD_pids_auth_registry" docker-registry
        REG_DIR=$OLD_dirs_auth_registry
        start_registry auth-registry auth
        AUTH_REGISTRY=$REG_ADDR; AUTH_REGISTRY_PID=$REG_PID; AUTH_REGISTRY_LOG=$REG_LOG
        AUTH_REGISTRY_DIR=$REG_DIR
        log "started auth registry on $AUTH_REGISTRY (user $AUTH_USER)"
    fi
    reap_orphans registry "$REGISTRY_DIR"
    reap_orphans auth-registry "$AUTH_REGISTRY_DIR"
}

# ensure_rule TABLE RULE...: append an iptables rule unless it is already there.
ensure_rule() {
    local table=$1
    shift
    iptables -t "$table" -C "$@" 2>/dev/null || iptables -t "$table" -A "$@"
}

# The remote engine's own bridge with NAT, so its containers reach apt and PyPI like docker0's.
ensure_remote_bridge() {
    command -v ip >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1 || return 1
    if ! ip link show "$REMOTE_BRIDGE" >/dev/null 2>&1; then
        ip link add "$REMOTE_BRIDGE" type bridge || return 1
        ip addr add "$REMOTE_SUBNET.1/24" dev "$REMOTE_BRIDGE"
    fi
    ip link set "$REMOTE_BRIDGE" up
    ensure_rule nat POSTROUTING -s "$REMOTE_SUBNET.0/24" ! -o "$REMOTE_BRIDGE" -j MASQUERADE
    ensure_rule filter FORWARD -i "$REMOTE_BRIDGE" -j ACCEPT
    ensure_rule filter FORWARD -o "$REMOTE_BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
}

port_free() {
    "$PYTHON" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# remote_engine_current PID: PID is a remote dockerd started with today's options.
remote_engine_current() {
    pid_is "$1" "--bridge=$REMOTE_BRIDGE" || { pid_is "$1" "--bridge=none" && ! command -v ip >/dev/null; }
}

# A second engine on loopback TCP with its own roots, namespaces, bridge and managed containerd.
ensure_remote_engine() {
    REMOTE_DOCKER_HOST=""; REMOTE_PID=""; REMOTE_LOG=""; REMOTE_DIR=""; REMOTE_NETWORK=""
    if [[ -n $OLD_remote_docker_host ]] && remote_engine_current "$OLD_pids_remote_dockerd" &&
        engine_ok "$OLD_remote_docker_host"; then
        REMOTE_DOCKER_HOST=$OLD_remote_docker_host; REMOTE_PID=$OLD_pids_remote_dockerd
        REMOTE_LOG=$OLD_logs_remote_dockerd; REMOTE_DIR=$OLD_dirs_remote_dockerd
        pid_is "$REMOTE_PID" "--bridge=none" && REMOTE_NETWORK=host
        return 0
    fi
    if ((!IS_ROOT)); then
        log "not root: no remote engine (remote_docker_host = null)"
        return 0
    fi
    REMOTE_DIR=$RUN_DIR/remote-engine
    local pid
    for pid in $(pids_using "--data-root $REMOTE_DIR/data"); do stop_stale "$pid" dockerd; done
    mkdir -p "$REMOTE_DIR/data" "$REMOTE_DIR/exec"
    REMOTE_LOG=$REMOTE_DIR/dockerd.log
    local port=${OLD_remote_docker_host##*:} bridge=$REMOTE_BRIDGE
    [[ $port =~ ^[0-9]+$ ]] && port_free "$port" || port=$(free_port)
    REMOTE_DOCKER_HOST=tcp://127.0.0.1:$port
    if ! ensure_remote_bridge; then
        log "WARNING: no bridge for the remote engine; its builds need --network host"
        bridge=none REMOTE_NETWORK=host
    fi
    log "starting remote engine on $REMOTE_DOCKER_HOST (log $REMOTE_LOG)"
    PATH=$PATH:/usr/sbin:/sbin setsid dockerd --host "$REMOTE_DOCKER_HOST" \
        --data-root "$REMOTE_DIR/data" --exec-root "$REMOTE_DIR/exec" \
        --pidfile "$REMOTE_DIR/dockerd.pid" --bridge="$bridge" --iptables=false \
        --containerd-namespace "$REMOTE_NS" --containerd-plugins-namespace "$REMOTE_NS-plugins" \
        </dev/null >>"$REMOTE_LOG" 2>&1 9>&- &
    REMOTE_PID=$!
    wait_alive 60 "$REMOTE_PID" engine_ok "$REMOTE_DOCKER_HOST" ||
        die "remote engine did not answer within 60 s; see $REMOTE_LOG"
}

base_exists() {
    skopeo inspect --tls-verify=false "docker://$DEBIAN_BASE" >/dev/null 2>&1
}

build_rootfs_tar() {
    local rootfs
    mkdir -p "$CACHE_DIR"
    rootfs=$(mktemp -d "$RUN_DIR/rootfs.XXXXXX")
    log "debootstrap bookworm into $rootfs (about a minute)"
    PATH=$PATH:/usr/sbin:/sbin debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >"$RUN_DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $RUN_DIR/debootstrap.log"
    rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$BASE_ROOTFS_TAR.part" .
    mv "$BASE_ROOTFS_TAR.part" "$BASE_ROOTFS_TAR"
    rm -rf -- "$rootfs"
}

push_base_from_tar() {
    log "importing $BASE_ROOTFS_TAR as $DEBIAN_BASE"
    docker_local import --change "ENV PATH=$BASE_PATH_ENV" "$BASE_ROOTFS_TAR" "$DEBIAN_BASE" >/dev/null
    docker_local push -q "$DEBIAN_BASE" >/dev/null
}

# Without root (a laptop) there is no debootstrap, but Docker Hub is usually reachable.
push_base_from_hub() {
    local public=python:$BASE_PY-$BASE_SUFFIX
    log "pulling $public to mirror it as $DEBIAN_BASE"
    docker_local pull -q "$public" >/dev/null && docker_local tag "$public" "$DEBIAN_BASE" &&
        docker_local push -q "$DEBIAN_BASE" >/dev/null
}

docker_local() {
    if [[ -n $LOCAL_DOCKER_HOST ]]; then
        DOCKER_HOST=$LOCAL_DOCKER_HOST "$DOCKER_CLI" "$@"
    else
        env -u DOCKER_HOST "$DOCKER_CLI" "$@"
    fi
}

ensure_base_image() {
    DEBIAN_BASE_TEMPLATE="$REGISTRY/$BASE_NAME:{major}.{minor}-$BASE_SUFFIX"
    DEBIAN_BASE="$REGISTRY/$BASE_NAME:$BASE_PY-$BASE_SUFFIX"
    base_exists && return 0
    if [[ ! -s $BASE_ROOTFS_TAR ]] && ((IS_ROOT)) && command -v debootstrap >/dev/null 2>&1; then
        build_rootfs_tar
    fi
    if [[ -s $BASE_ROOTFS_TAR ]]; then
        push_base_from_tar
    else
        push_base_from_hub || die "no way to make a Debian Python base image without root"
    fi
    base_exists || die "$DEBIAN_BASE is not in the registry after pushing it"
}

write_state() {
    local ca_bundle=""
    [[ ! -f /etc/ssl/certs/ca-certificates.crt ]] || ca_bundle=/etc/ssl/certs/ca-certificates.crt
    STATE_registry=$REGISTRY STATE_auth_registry=$AUTH_REGISTRY STATE_auth_user=$AUTH_USER \
    STATE_auth_password=$AUTH_PASSWORD STATE_docker_host=$LOCAL_DOCKER_HOST \
    STATE_remote_docker_host=$REMOTE_DOCKER_HOST STATE_remote_build_network=$REMOTE_NETWORK \
    STATE_docker_cli=$DOCKER_CLI \
    STATE_docker_buildx=$DOCKER_BUILDX STATE_debian_base_template=$DEBIAN_BASE_TEMPLATE \
    STATE_debian_base=$DEBIAN_BASE STATE_ca_bundle=$ca_bundle \
    STATE_pids_dockerd=$DOCKERD_PID STATE_pids_registry=$REGISTRY_PID \
    STATE_pids_auth_registry=$AUTH_REGISTRY_PID STATE_pids_remote_dockerd=$REMOTE_PID \
    STATE_logs_dockerd=$DOCKERD_LOG STATE_logs_registry=$REGISTRY_LOG \
    STATE_logs_auth_registry=$AUTH_REGISTRY_LOG STATE_logs_remote_dockerd=$REMOTE_LOG \
    STATE_dirs_registry=$REGISTRY_DIR STATE_dirs_auth_registry=$AUTH_REGISTRY_DIR \
    STATE_dirs_remote_dockerd=$REMOTE_DIR \
        "$PYTHON" - "$STATE" <<'PY'
import json, os, sys
env = {k[6:]: v for k, v in os.environ.items() if k.startswith("STATE_")}
state: dict = {"version": 1}
for key, value in sorted(env.items()):
    group, _, sub = key.partition("_")
    if group in ("pids", "logs", "dirs"):
        state.setdefault(group, {})[sub] = (int(value) if group == "pids" else value) if value else None
    elif key == "docker_buildx":
        state[key] = value == "true"
    else:
        state[key] = value or None
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(state, f, indent=2, sort_keys=True)
    f.write("\n")
os.chmod(tmp, 0o600)
os.replace(tmp, sys.argv[1])
PY
}

summary() {
    log "ready in $((SECONDS - START)) s; state in $STATE"
    printf '  registry         %s\n' "$REGISTRY"
    printf '  auth registry    %s (user %s)\n' "$AUTH_REGISTRY" "$AUTH_USER"
    printf '  local engine     %s (cli %s, buildx %s)\n' "${LOCAL_DOCKER_HOST:-default}" "$DOCKER_CLI" "$DOCKER_BUILDX"
    printf '  remote engine    %s\n' "${REMOTE_DOCKER_HOST:-none}"
    printf '  debian base      %s\n' "$DEBIAN_BASE"
}

main() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/lock"
    flock -w 600 9 || die "another test-infra.sh run holds $RUN_DIR/lock"
    load_state
    ensure_packages
    ensure_bcrypt
    ensure_local_engine
    choose_cli
    ensure_registries
    ensure_remote_engine
    ensure_base_image
    write_state
    summary
}

main "$@"
