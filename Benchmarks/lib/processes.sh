# shellcheck shell=bash
# The processes run.sh starts, the servers it knows, and where results are written.
# Sourced by run.sh, whose settings (paths, durations, cores) it uses.

# ---- processes -------------------------------------------------------------------------------
STARTED=()   # every PID this script started and has not reaped yet

forget() {
    local keep=() pid
    for pid in "${STARTED[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    STARTED=("${keep[@]}")
}

# True while $1 exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.2
    for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# user+system CPU of process $1 in clock ticks (fields 14 and 15 of /proc/PID/stat).
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -r -a fields <<<"${stat##*) }"
    echo $((fields[11] + fields[12]))
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Ports below the ephemeral range, so no client socket takes one between the check and bind.
NEXT_PORT=$((20000 + RANDOM % 10000))
pick_port() {
    while :; do
        NEXT_PORT=$((NEXT_PORT + 1))
        ((NEXT_PORT >= 32000)) && NEXT_PORT=20001
        if ! ss -Htan "( sport = :$NEXT_PORT or dport = :$NEXT_PORT )" 2>/dev/null | grep -q .; then
            PORT=$NEXT_PORT
            return
        fi
    done
}

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# Waits up to $3 seconds for a line matching $2 in file $1 while process $4 lives.
wait_for_line() {
    local file=$1 pattern=$2 deadline=$(($(date +%s) + $3)) pid=$4
    while (($(date +%s) < deadline)); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        alive "$pid" || { grep -q "$pattern" "$file" 2>/dev/null; return; }
        sleep 0.02
    done
    return 1
}

# ---- servers ---------------------------------------------------------------------------------
declare -A DEAD      # server -> why it is skipped for the rest of the run
declare -A UNBUILT   # binary -> why its (possibly stale) build is not used

server_bin() {
    case $1 in
        gnet-echo-framed/* | gnet-echo-metrics/* | gnet-echo-udp/*) echo "${GNET_BIN:-$ROOT/.build/release}/gnet-echo" ;;
        gnet-https/*) echo "${GNET_BIN:-$ROOT/.build/release}/gnet-http" ;;
        nio-https) echo "$HERE/.build/release/nio-http" ;;
        gnet-echo-tls/*) echo "${GNET_BIN:-$ROOT/.build/release}/gnet-echo" ;;
        nio-tls-echo) echo "$HERE/.build/release/nio-echo" ;;
        gnet-*) echo "${GNET_BIN:-$ROOT/.build/release}/${1%%/*}" ;;
        nio-*) echo "$HERE/.build/release/$1" ;;
        c-*) echo "$CBIN/$1" ;;
        redis-server) command -v redis-server || echo /usr/bin/redis-server ;;
    esac
}

# The loadgen flags a server needs: length-prefixed frames for the framed echo.
loadgen_flags() {   # name
    case $1 in
        gnet-echo-framed/*) echo --framed ;;
        gnet-echo-tls/* | nio-tls-echo | c-tls-echo) echo --tls ;;
    esac
}

server_command() {   # name port -> CMD
    local bin
    bin=$(server_bin "$1")
    case $1 in
        gnet-echo-framed/*) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1 --poller "${1#*/}" --framed) ;;
        gnet-echo-metrics/*) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1 --poller "${1#*/}" --metrics) ;;
        gnet-echo-udp/*) CMD=("$bin" --addr "udp://127.0.0.1:$2" --loops 1 --poller "${1#*/}") ;;
        gnet-echo-tls/*) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1 --poller "${1#*/}"
            --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key") ;;
        nio-tls-echo | c-tls-echo) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1
            --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key") ;;
        gnet-https/*) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1 --poller "${1#*/}"
            --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key") ;;
        nio-https) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1
            --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key") ;;
        gnet-*/*) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1 --poller "${1#*/}") ;;
        redis-server) CMD=("$bin" --port "$2" --bind 127.0.0.1 --save "" --appendonly no
            --protected-mode no --daemonize no --loglevel warning) ;;
        *) CMD=("$bin" --host 127.0.0.1 --port "$2" --loops 1) ;;
    esac
}

# start_server NAME [VAR=value ...]: starts NAME pinned to the server core with the given
# environment, and waits (10 s at most) for its `listening on` line or its listening socket.
# Sets SERVER_PID and SERVER_PORT; on failure marks NAME dead and returns 1.
SERVER_PID="" SERVER_PORT=""
start_server() {
    local name=$1 bin tag i
    shift
    SERVER_PID="" SERVER_PORT=""
    [[ -n ${DEAD[$name]:-} ]] && return 1
    if [[ -n ${UNBUILT[${name%%/*}]:-} ]]; then
        DEAD[$name]=${UNBUILT[${name%%/*}]}
        return 1
    fi
    bin=$(server_bin "$name")
    if [[ ! -x $bin ]]; then
        DEAD[$name]="not built"
        return 1
    fi
    pick_port
    server_command "$name" "$PORT"
    tag=${name//\//_}
    SERVER_LOG=$RAW/server-$tag
    # Truncate here, not only in the child's redirection: that happens after the fork, and the
    # wait below must never read the previous start's `listening on` line.
    : >"$SERVER_LOG.out"
    : >"$SERVER_LOG.err"
    env "$@" taskset -c "$SERVER_CPU" "${CMD[@]}" >"$SERVER_LOG.out" 2>"$SERVER_LOG.err" </dev/null &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    for ((i = 0; i < 500; i++)); do
        if ! alive "$SERVER_PID"; then
            wait "$SERVER_PID" 2>/dev/null
            local status=$?
            forget "$SERVER_PID"
            SERVER_PID=""
            DEAD[$name]="exited at start (status $status): $(tail -n 1 "$SERVER_LOG.err" | cut -c1-100)"
            return 1
        fi
        if grep -q "^listening on .*:$PORT\b" "$SERVER_LOG.out" || listening "$PORT"; then
            SERVER_PORT=$PORT
            return 0
        fi
        sleep 0.02
    done
    stop_server
    DEAD[$name]="not listening within 10 s"
    return 1
}

stop_server() {
    [[ -z $SERVER_PID ]] && return
    local i
    kill -TERM "$SERVER_PID" 2>/dev/null
    for ((i = 0; i < 150; i++)); do alive "$SERVER_PID" || break; sleep 0.02; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    forget "$SERVER_PID"
    SERVER_PID=""
}

# ---- bookkeeping -----------------------------------------------------------------------------
ROUND=0
# record CATEGORY SCENARIO SERVER STATUS [key=value ...]
record() {
    local line
    line=$(printf '%s\t%s\t%s\t%s\t%s' "$1" "$2" "$3" "$ROUND" "$4")
    shift 4
    local kv
    for kv in "$@"; do line+=$'\t'"${kv//$'\t'/ }"; done
    printf '%s\n' "$line" >>"$SAMPLES"
}

efficiency() {   # CATEGORY SERVER key=value ...
    local line=$1$'\t'$2 kv
    shift 2
    for kv in "$@"; do line+=$'\t'"${kv//$'\t'/ }"; done
    printf '%s\n' "$line" >>"$EFFICIENCY"
}

# Value of key $2 in a `RESULT k=v ...` line in file $1.
result_field() { sed -n 's/^RESULT .*\b'"$2"'=\([^ ]*\).*/\1/p' "$1" | tail -n 1; }

first_error() { grep -m1 -E 'loadgen:|error|Error' "$1" | cut -c1-120; }

# Rotates array words by $1 positions.
rotate() {
    local n=$1
    shift
    local items=("$@") count=$#
    local i
    for ((i = 0; i < count; i++)); do printf '%s\n' "${items[(i + n) % count]}"; done
}

skip_note() {   # SERVER -> why it is skipped, or empty
    if over_budget; then echo "time budget exhausted"; return; fi
    echo "${DEAD[$1]:-}"
}
