#!/usr/bin/env bash
# cluster.sh: N `larder serve` nodes behind one twemproxy (nutcracker), all on
# 127.0.0.1, for trying the scale-out and for the tests that check it.
#
#   cluster.sh start   DIR [NODES] [BASEPORT]  start NODES (3) nodes and the proxy
#   cluster.sh stop    DIR                     stop everything (SIGTERM: nodes close cleanly)
#   cluster.sh kill    DIR N                   kill -9 node N (a crash)
#   cluster.sh term    DIR N                   SIGTERM node N and wait (a clean stop)
#   cluster.sh restart DIR N                   start node N again on its data (warm)
#   cluster.sh status  DIR
#
# Ports: the proxy on BASEPORT (22120), node N on BASEPORT+N, nutcracker's stats
# on BASEPORT+NODES+1. Node N keeps its data in DIR/node-N/data and logs to
# DIR/node-N/log; nutcracker's config is DIR/nutcracker.yml (the configuration
# docs/scaling.md explains). LARDER names the larder binary (default: `larder`
# on PATH, else target/release/larder); LARDER_ARGS adds flags to every node
# (e.g. "--memory-mib 256 --disk-mib 4096"). Processes are stopped by the PIDs
# recorded at start, never by name.
set -euo pipefail

die() { echo "cluster.sh: $*" >&2; exit 2; }
usage() { sed -n '4,10p' "$0" >&2; exit 2; }

ACTION=${1:-}; DIR=${2:-}
[ -n "$ACTION" ] && [ -n "$DIR" ] || usage
HOST=127.0.0.1
NUTCRACKER=$(command -v nutcracker || echo /usr/sbin/nutcracker)

larder_bin() {
    if [ -n "${LARDER:-}" ]; then echo "$LARDER"; return; fi
    command -v larder && return
    local here; here=$(cd "$(dirname "$0")/.." && pwd)
    [ -x "$here/target/release/larder" ] && { echo "$here/target/release/larder"; return; }
    die "no larder binary: set LARDER, or cargo build --release -p larder-cli"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ping() { # ping PORT: a PING (as an array: twemproxy drops inline commands) answers PONG
    (
        exec 3<>"/dev/tcp/$HOST/$1" || exit 1
        printf '*1\r\n$4\r\nPING\r\n' >&3
        read -r -t 2 line <&3 && [ "${line%$'\r'}" = "+PONG" ]
    ) 2>/dev/null
}

wait_port() { # wait_port PORT: until a PING answers (10 s)
    local i
    for ((i = 0; i < 200; i++)); do
        ping "$1" && return 0
        sleep 0.05
    done
    return 1
}

load() {
    [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (start one first)"
    # shellcheck disable=SC1091
    . "$DIR/cluster.env"
}

start_node() { # start_node N
    local n=$1 port=$((BASEPORT + $1)) nd="$DIR/node-$1"
    mkdir -p "$nd/data"
    alive "$nd/pid" && die "node $n is running"
    # shellcheck disable=SC2086
    setsid "$LARDER_BIN" serve --listen "$HOST:$port" --disk-dir "$nd/data" ${LARDER_ARGS:-} \
        >>"$nd/log" 2>&1 </dev/null &
    echo $! >"$nd/pid"
    wait_port "$port" || die "node $n (port $port) did not answer; see $nd/log"
}

write_config() {
    {
        echo "# Written by scripts/cluster.sh; docs/scaling.md explains each line."
        echo "larder:"
        echo "  listen: $HOST:$BASEPORT"
        echo "  redis: true"
        echo "  hash: fnv1a_64"
        echo "  distribution: ketama"
        echo "  hash_tag: \"{}\""
        echo "  auto_eject_hosts: true"
        echo "  server_failure_limit: ${NC_FAILURE_LIMIT:-1}"
        echo "  server_retry_timeout: ${NC_RETRY_MS:-1000}"
        echo "  timeout: ${NC_TIMEOUT_MS:-1000}"
        echo "  preconnect: true"
        echo "  server_connections: 1"
        echo "  servers:"
        for ((n = 1; n <= NODES; n++)); do
            # The name (not the address) places a node on the ring: a node
            # restarted elsewhere keeps its keys.
            echo "   - $HOST:$((BASEPORT + n)):1 node$n"
        done
    } >"$DIR/nutcracker.yml"
    "$NUTCRACKER" -t -c "$DIR/nutcracker.yml" >/dev/null 2>&1 || die "nutcracker rejects $DIR/nutcracker.yml"
}

do_start() {
    NODES=${3:-3}; BASEPORT=${4:-22120}
    [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive number"
    [[ "$BASEPORT" =~ ^[0-9]+$ ]] || die "BASEPORT must be a number"
    [ -x "$NUTCRACKER" ] || die "nutcracker is not installed (apt-get install nutcracker)"
    mkdir -p "$DIR"
    LARDER_BIN=$(larder_bin)
    printf 'NODES=%q\nBASEPORT=%q\nLARDER_BIN=%q\nLARDER_ARGS=%q\n' \
        "$NODES" "$BASEPORT" "$LARDER_BIN" "${LARDER_ARGS:-}" >"$DIR/cluster.env"
    for ((n = 1; n <= NODES; n++)); do start_node "$n"; done
    write_config
    setsid "$NUTCRACKER" -c "$DIR/nutcracker.yml" -a "$HOST" -s $((BASEPORT + NODES + 1)) \
        -o "$DIR/nutcracker.log" -v 4 </dev/null >/dev/null 2>&1 &
    echo $! >"$DIR/nutcracker.pid"
    wait_port "$BASEPORT" || die "nutcracker did not answer; see $DIR/nutcracker.log"
    echo "proxy $HOST:$BASEPORT, nodes $HOST:$((BASEPORT + 1))..$((BASEPORT + NODES))"
}

stop_pid() { # stop_pid FILE SIGNAL: signal, wait up to 10 s, then KILL
    local f=$1 sig=$2 i
    alive "$f" || { rm -f "$f"; return 0; }
    kill "-$sig" "$(cat "$f")" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do alive "$f" || break; sleep 0.05; done
    alive "$f" && kill -KILL "$(cat "$f")" 2>/dev/null
    rm -f "$f"
}

case "$ACTION" in
    start) do_start "$@" ;;
    stop)
        load
        stop_pid "$DIR/nutcracker.pid" TERM
        for ((n = 1; n <= NODES; n++)); do stop_pid "$DIR/node-$n/pid" TERM; done ;;
    kill) load; stop_pid "$DIR/node-${3:?node}/pid" KILL ;;
    term) load; stop_pid "$DIR/node-${3:?node}/pid" TERM ;;
    restart) load; start_node "${3:?node}" ;;
    status)
        load
        alive "$DIR/nutcracker.pid" && echo "proxy $HOST:$BASEPORT up" || echo "proxy down"
        for ((n = 1; n <= NODES; n++)); do
            alive "$DIR/node-$n/pid" && echo "node$n $HOST:$((BASEPORT + n)) up" || echo "node$n down"
        done ;;
    *) usage ;;
esac
