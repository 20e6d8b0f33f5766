#!/usr/bin/env bash
#
# Runs the swift-gnet benchmark suite and regenerates BENCHMARKS.md (see Benchmarks/README.md).
#
#   Benchmarks/run.sh                  full run: 3 rounds, medians, writes BENCHMARKS.md (< 40 min)
#   Benchmarks/run.sh --quick          smoke test: 1 round, short runs (~3 min)
#
# Each server runs pinned to one core and its load generator to another (taskset), one event
# loop per server. Within a round every scenario is run against every server in turn (the
# order rotates from round to round), each server freshly started on a free port and stopped
# afterwards. The report gives medians over rounds, ratios to the SwiftNIO peer and to the C
# floor, and the server's own CPU time, so that where the load tool saturates first the
# messages per server-CPU-second still compare the servers.
#
# A server whose binary is missing or that does not start is skipped with a note in the
# report, so gnet servers that do not exist yet are picked up once they do.
#
# Every load tool runs under `timeout`; traffic goes to 127.0.0.1 only; the script stops only
# the processes it started, by PID.
#
# This file holds the options, the settings and the order of things; lib/processes.sh starts
# and stops servers, lib/load.sh runs the load sections, lib/efficiency.sh the efficiency one,
# and report.py writes the report.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: Benchmarks/run.sh [options]
  --quick              1 round, 1 s runs, fewer messages and idle connections (~3 minutes)
  --only SECTION       echo, udp, tls, http, https, redis or efficiency; repeat or comma-separate for several
  --rounds N           rounds per scenario (default 3, quick 1); medians are reported
  --duration SECS      measured seconds per echo and HTTP run (default 2 echo / 3 HTTP, quick 1)
  --warmup SECS        unmeasured seconds before each run (default 1, quick 0.3)
  --pollers LIST       gnet backends to run (default: epoll,libevent,libevent-poll,dispatch)
  --no-build           use the binaries already built (the C programs are always compiled)
  --gnet-bin DIR       take gnet-echo, gnet-http, gnet-redis from DIR instead of building them
                       in the main package (.build/release)
  --report PATH        where to write the report (default: BENCHMARKS.md for a full run of every
                       section, Benchmarks/results/BENCHMARKS-partial.md otherwise)
  --server-cpu N       core for servers (default 0)
  --load-cpu N         core for load generators (default 1)
EOF
    exit "${1:-0}"
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
COMMAND="Benchmarks/run.sh${*:+ $*}"

QUICK=0 ONLY="" ROUNDS="" DURATION="" WARMUP="" BUILD=1 REPORT="" GNET_BIN=""
POLLERS="epoll libevent libevent-poll dispatch"
SERVER_CPU=0 LOAD_CPU=1
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --only) ONLY="$ONLY ${2//,/ }"; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --pollers) POLLERS=${2//,/ }; shift ;;
        --no-build) BUILD=0 ;;
        --gnet-bin) GNET_BIN=$(cd "$2" && pwd) || exit 2; shift ;;
        --report) REPORT=$2; shift ;;
        --server-cpu) SERVER_CPU=$2; shift ;;
        --load-cpu) LOAD_CPU=$2; shift ;;
        -h | --help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
    shift || usage 2
done
for section in $ONLY; do
    case $section in echo | udp | tls | http | https | redis | efficiency) ;; *) echo "unknown section: $section" >&2; usage 2 ;; esac
done
wants() { [[ -z $ONLY || " $ONLY " == *" $1 "* ]]; }

# ---- settings ------------------------------------------------------------------------------
if ((QUICK)); then
    ROUNDS=${ROUNDS:-1} ECHO_DURATION=${DURATION:-1} HTTP_DURATION=${DURATION:-1} WARMUP=${WARMUP:-0.3}
    REDIS_SECONDS=0.5 REDIS_PROBE=5000
    ALLOC_MESSAGES=20000 STRACE_MESSAGES=5000 IDLE_CONNS=2000
else
    ROUNDS=${ROUNDS:-3} ECHO_DURATION=${DURATION:-2} HTTP_DURATION=${DURATION:-3} WARMUP=${WARMUP:-1}
    REDIS_SECONDS=2 REDIS_PROBE=10000
    ALLOC_MESSAGES=100000 STRACE_MESSAGES=20000 IDLE_CONNS=10000
fi
# wrk takes whole seconds.
HTTP_SECONDS=$(awk -v d="$HTTP_DURATION" 'BEGIN { s = int(d + 0.999); print (s < 1 ? 1 : s) }')
HTTP_WARMUP_SECONDS=$(awk -v d="$WARMUP" 'BEGIN { print int(d + 0.5) }')
LOAD_TIMEOUT=$(awk -v d="$ECHO_DURATION" -v w="$WARMUP" 'BEGIN { print int(d + w + 60) }')
HTTP_CONNS=100 REDIS_CONNS=50 PIPELINE=16
BUDGET_SECONDS=$((40 * 60))   # stop starting runs past this; the report says what was skipped

# Echo scenarios: name conns size depth.
ECHO_SCENARIOS=()
for conns in 1 100 1000; do
    for size in 64 512 16384; do
        label=$size; ((size == 16384)) && label=16K
        ECHO_SCENARIOS+=("c$conns-${label}B $conns $size 1")
    done
done
ECHO_SCENARIOS+=("c100-64B-d16 100 64 16")
# The echo variants (framed, metrics, async and its NIO peer) run where they differ most from
# the plain echo — small messages, many connections, pipelining — not in every scenario.
VARIANT_SCENARIOS=" c1-64B c100-64B c100-512B c1000-64B c100-64B-d16 "
is_variant() { [[ $1 == gnet-echo-framed/* || $1 == gnet-echo-metrics/* || $1 == gnet-echo-async/* || $1 == nio-async-echo ]]; }

ECHO_SERVERS=() HTTP_SERVERS=() REDIS_SERVERS=()
for p in $POLLERS; do
    ECHO_SERVERS+=("gnet-echo/$p") HTTP_SERVERS+=("gnet-http/$p") REDIS_SERVERS+=("gnet-redis/$p")
done
# The codec path (GNetCodec's length-field frames, `gnet-echo --framed`), on the first backend:
# compared with the plain echo on the same backend in the same run.
ECHO_SERVERS+=("gnet-echo-framed/${POLLERS%% *}")
# The plain echo with loop statistics, busy time and their publication on (`gnet-echo --metrics`).
ECHO_SERVERS+=("gnet-echo-metrics/${POLLERS%% *}")
# The async layer (GNetAsync, `gnet-echo-async`) beside SwiftNIO's NIOAsyncChannel echo.
ECHO_SERVERS+=("gnet-echo-async/${POLLERS%% *}" nio-async-echo)
ECHO_SERVERS+=(nio-echo c-echo)
HTTP_SERVERS+=(nio-http nio-http-raw c-http)
# UDP echo: name sockets size depth. Each socket keeps `depth` datagrams in flight (udpgen).
UDP_SCENARIOS=("s1-64B-d1 1 64 1" "s16-64B-d16 16 64 16" "s16-1400B-d8 16 1400 8")
UDP_SERVERS=()
for p in $POLLERS; do UDP_SERVERS+=("gnet-echo-udp/$p"); done
UDP_SERVERS+=(nio-udp-echo c-udp-echo)
# HTTPS (wrk over TLS) and full TLS handshakes per second: gnet-http with GNetTLS against
# nio-http with swift-nio-ssl, both with one shared context and the same throwaway certificate.
HTTPS_SERVERS=("gnet-https/${POLLERS%% *}" nio-https)
# Handshakes also against the C floor with the same OpenSSL (c-tls-echo: epoll and libssl, nothing
# else), which tells the library's cost from the engine's.
HANDSHAKE_SERVERS=("${HTTPS_SERVERS[@]}" c-tls-echo)
# TLS echo (loadgen --tls): name conns size depth.
TLS_SCENARIOS=("c1-64B 1 64 1" "c100-64B 100 64 1" "c100-16K 100 16384 1")
TLS_SERVERS=("gnet-echo-tls/${POLLERS%% *}" nio-tls-echo c-tls-echo)
REDIS_SERVERS+=(redis-server)

RESULTS=$HERE/results
RAW=$RESULTS/raw
CBIN=$HERE/.build/c
SAMPLES=$RESULTS/samples.tsv
EFFICIENCY=$RESULTS/efficiency.tsv
META=$RESULTS/meta.tsv
LOADGEN=$CBIN/loadgen
SHIM=$CBIN/malloccount.so

if [[ -z $REPORT ]]; then
    if ((QUICK == 0)) && [[ -z $ONLY ]]; then REPORT=$ROOT/BENCHMARKS.md; else REPORT=$RESULTS/BENCHMARKS-partial.md; fi
fi

mkdir -p "$RESULTS" "$CBIN"
# Throwaway certificates for the HTTPS section (scripts/tls-certs.sh: a CA and a localhost server).
TLS_DIR=$RESULTS/tls
rm -rf "$RAW"
mkdir -p "$RAW"
: >"$SAMPLES"
: >"$EFFICIENCY"

START_NS=$(date +%s%N)
elapsed() { echo $((($(date +%s%N) - START_NS) / 1000000000)); }
say() { printf '[%4ss] %s\n' "$(elapsed)" "$*"; }
over_budget() { (($(elapsed) > BUDGET_SECONDS)); }

# ---- the pieces ------------------------------------------------------------------------------
# shellcheck source=lib/processes.sh
source "$HERE/lib/processes.sh"
# shellcheck source=lib/load.sh
source "$HERE/lib/load.sh"
# shellcheck source=lib/efficiency.sh
source "$HERE/lib/efficiency.sh"

# ---- tools -----------------------------------------------------------------------------------
# A fresh Debian/Ubuntu machine lacks the load tools: install what is missing through apt (as
# root, or with sudo), and the libevent headers the main package needs (scripts/bootstrap.sh).
install_tools() {
    local need=() sudo=""
    command -v cc >/dev/null 2>&1 || need+=(gcc)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    command -v taskset >/dev/null 2>&1 || need+=(util-linux)
    command -v ss >/dev/null 2>&1 || need+=(iproute2)
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    command -v strace >/dev/null 2>&1 || need+=(strace)
    if ((${#need[@]})); then
        say "installing ${need[*]}"
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null || {
            echo "could not install ${need[*]}; install them and run again" >&2
            exit 1
        }
    fi
    "$ROOT/scripts/bootstrap.sh" || exit 1
    if { wants https || wants tls; } && [[ ! -s $TLS_DIR/server.pem ]]; then
        "$ROOT/scripts/tls-certs.sh" "$TLS_DIR" >/dev/null || { echo "could not make test certificates" >&2; exit 1; }
    fi
}

# ---- build -----------------------------------------------------------------------------------
build() {
    install_tools
    say "building the C programs"
    local cc=${CC:-cc}
    $cc -O2 -Wall -pthread -o "$CBIN/c-echo" "$HERE/C/echo.c" || exit 1
    $cc -O2 -Wall -pthread -o "$CBIN/c-http" "$HERE/C/http.c" || exit 1
    $cc -O2 -Wall -o "$CBIN/loadgen" "$HERE/C/loadgen.c" -lssl -lcrypto || exit 1
    $cc -O2 -Wall -o "$CBIN/c-udp-echo" "$HERE/C/udp-echo.c" || exit 1
    $cc -O2 -Wall -pthread -o "$CBIN/c-tls-echo" "$HERE/C/tls-echo.c" -lssl -lcrypto || exit 1
    $cc -O2 -Wall -o "$CBIN/udpgen" "$HERE/C/udpgen.c" -lm || exit 1
    $cc -O2 -Wall -shared -fPIC -o "$CBIN/malloccount.so" "$HERE/C/malloccount.c" || exit 1
    ((BUILD)) || return 0
    say "building the SwiftNIO peers (swift build -c release in Benchmarks/)"
    if ! (cd "$HERE" && swift build -c release) >"$RESULTS/build-benchmarks.log" 2>&1; then
        say "  failed (see Benchmarks/results/build-benchmarks.log); NIO servers will be skipped"
        UNBUILT[nio-echo]="build failed" UNBUILT[nio-http]="build failed" UNBUILT[nio-http-raw]="build failed" UNBUILT[nio-async-echo]="build failed" UNBUILT[nio-udp-echo]="build failed" UNBUILT[nio-https]="build failed" UNBUILT[nio-tls-echo]="build failed"
    fi
    [[ -n $GNET_BIN ]] && return 0
    local product
    : >"$RESULTS/build-main.log"
    for product in gnet-echo gnet-echo-async gnet-http gnet-redis; do
        local wanted=0
        case $product in
            gnet-echo) wants echo || wants udp || wants tls || wants efficiency && wanted=1 ;;
            gnet-echo-async) wants echo && wanted=1 ;;
            gnet-http) wants http || wants https || wants efficiency && wanted=1 ;;
            gnet-redis) wants redis && wanted=1 ;;
        esac
        ((wanted)) || continue
        if ! grep -q "\"$product\"" "$ROOT/Package.swift" 2>/dev/null; then
            say "  $product: no such product in Package.swift yet"
            UNBUILT[$product]="no such product yet"
            continue
        fi
        say "building $product (swift build -c release --product $product)"
        if ! (cd "$ROOT" && swift build -c release --product "$product") >>"$RESULTS/build-main.log" 2>&1; then
            say "  failed (see Benchmarks/results/build-main.log); it will be skipped"
            UNBUILT[$product]="build failed"
        fi
    done
}
# ---- main ------------------------------------------------------------------------------------
if (($(nproc) < 2)); then
    say "warning: fewer than 2 cores; server and load share one"
    LOAD_CPU=$SERVER_CPU
fi
# Both sides need a descriptor per connection (10,000 idle connections).
exec </dev/null   # no tool started below may read the terminal
unset GNET_POLLER  # it would override each server's --poller
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null

build

{
    printf 'command\t%s\n' "$COMMAND"
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'cpu\t%s\n' "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'loadavg_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'swift\t%s\n' "$(swift --version 2>/dev/null | head -n 1)"
    printf 'nio\t%s\n' "$(python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(next((p["state"].get("version", "?") for p in d.get("pins", []) if p["identity"] == "swift-nio"), "?"))' \
        "$HERE/Package.resolved" 2>/dev/null || echo '?')"
    printf 'commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
    printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -n 1 | awk '{ print $2 }')"
    printf 'redis\t%s\n' "$(redis-server --version 2>/dev/null | awk '{ print $3 }' | sed 's/v=//')"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'echo_duration\t%s\n' "$ECHO_DURATION"
    printf 'http_duration\t%s\n' "$HTTP_SECONDS"
    printf 'warmup\t%s\n' "$WARMUP"
    printf 'http_conns\t%s\n' "$HTTP_CONNS"
    printf 'redis_conns\t%s\n' "$REDIS_CONNS"
    printf 'redis_seconds\t%s\n' "$REDIS_SECONDS"
    printf 'pipeline\t%s\n' "$PIPELINE"
    printf 'alloc_messages\t%s\n' "$ALLOC_MESSAGES"
    printf 'strace_messages\t%s\n' "$STRACE_MESSAGES"
    printf 'idle_conns\t%s\n' "$IDLE_CONNS"
    printf 'server_cpu\t%s\n' "$SERVER_CPU"
    printf 'load_cpu\t%s\n' "$LOAD_CPU"
    printf 'quick\t%s\n' "$QUICK"
    printf 'sections\t%s\n' "${ONLY:-echo udp tls http https redis efficiency}"
    printf 'order_echo\t%s\n' "${ECHO_SERVERS[*]}"
    printf 'order_udp\t%s\n' "${UDP_SERVERS[*]}"
    printf 'order_https\t%s\n' "${HTTPS_SERVERS[*]}"
    printf 'order_handshakes\t%s\n' "${HANDSHAKE_SERVERS[*]}"
    printf 'order_tls\t%s\n' "${TLS_SERVERS[*]}"
    printf 'order_http\t%s\n' "${HTTP_SERVERS[*]}"
    printf 'order_redis\t%s\n' "${REDIS_SERVERS[*]}"
} >"$META"

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    say "round $ROUND of $ROUNDS"
    wants echo && run_echo
    wants udp && run_udp
    wants https && run_https
    wants tls && run_tls
    wants http && run_http
    wants redis && run_redis
done
ROUND=0
wants efficiency && run_efficiency

printf 'elapsed\t%s\n' "$(elapsed)" >>"$META"
printf 'loadavg_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$META"
for server in "${!DEAD[@]}"; do printf 'skipped\t%s\t%s\n' "$server" "${DEAD[$server]}" >>"$META"; done

python3 "$HERE/report.py" --results "$RESULTS" --output "$REPORT" || exit 1
say "report written to ${REPORT#"$ROOT"/}"
cat "$REPORT"
