# shellcheck shell=bash
# The load sections: echo (loadgen), HTTP (wrk), Redis (redis-benchmark).
# Sourced by run.sh, whose settings (paths, durations, cores) it uses.

# ---- echo ------------------------------------------------------------------------------------
echo_run() {   # scenario conns size depth server [category]
    local scenario=$1 conns=$2 size=$3 depth=$4 server=$5 category=${6:-echo} note
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then
        record "$category" "$scenario" "$server" skip "note=${note:-${DEAD[$server]}}"
        return
    fi
    local out=$RAW/$category-$scenario-${server//\//_}-r$ROUND.txt
    local c0 c1 t0 t1 rc
    c0=$(cpu_ticks "$SERVER_PID") t0=$(date +%s%N)
    timeout "$LOAD_TIMEOUT" taskset -c "$LOAD_CPU" "$LOADGEN" --host 127.0.0.1 --port "$SERVER_PORT" \
        --conns "$conns" --size "$size" --depth "$depth" --duration "$ECHO_DURATION" --warmup "$WARMUP" $(loadgen_flags "$server") \
        >"$out" 2>&1
    rc=$?
    c1=$(cpu_ticks "$SERVER_PID") t1=$(date +%s%N)
    local crashed=0
    alive "$SERVER_PID" || crashed=1
    stop_server
    local cpu wall rate
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    rate=$(result_field "$out" msgs_per_s)
    if ((rc != 0 || crashed)) || [[ -z $rate ]]; then
        local why="loadgen exit $rc"
        ((rc == 124)) && why="loadgen timed out"
        ((crashed)) && why="server died; $why"
        record "$category" "$scenario" "$server" fail "note=$why: $(first_error "$out")"
        say "$category r$ROUND $scenario $server: FAILED ($why)"
        return
    fi
    record "$category" "$scenario" "$server" ok "rate=$rate" "work=$(result_field "$out" total_msgs)" \
        "cpu_s=$cpu" "wall_s=$wall" "p50_us=$(result_field "$out" p50_us)" \
        "p99_us=$(result_field "$out" p99_us)" "p999_us=$(result_field "$out" p999_us)"
    say "$category r$ROUND $scenario $server: $rate msgs/s, server CPU ${cpu}s of ${wall}s"
}

run_echo() {
    local scenario name conns size depth server order
    for scenario in "${ECHO_SCENARIOS[@]}"; do
        read -r name conns size depth <<<"$scenario"
        mapfile -t order < <(rotate $((ROUND - 1)) "${ECHO_SERVERS[@]}")
        for server in "${order[@]}"; do
            is_variant "$server" && [[ $VARIANT_SCENARIOS != *" $name "* ]] && continue
            echo_run "$name" "$conns" "$size" "$depth" "$server"
        done
    done
}

# TLS echo: the echo scenarios through TLS (loadgen --tls), GNetTLS against swift-nio-ssl.
run_tls() {
    local scenario name conns size depth server order
    for scenario in "${TLS_SCENARIOS[@]}"; do
        read -r name conns size depth <<<"$scenario"
        mapfile -t order < <(rotate $((ROUND - 1)) "${TLS_SERVERS[@]}")
        for server in "${order[@]}"; do echo_run "$name" "$conns" "$size" "$depth" "$server" tls; done
    done
}

# ---- UDP echo --------------------------------------------------------------------------------
UDPGEN=$CBIN/udpgen
udp_run() {   # scenario sockets size depth server
    local scenario=$1 socks=$2 size=$3 depth=$4 server=$5 note
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then
        record udp "$scenario" "$server" skip "note=${note:-${DEAD[$server]}}"
        return
    fi
    local out=$RAW/udp-$scenario-${server//\//_}-r$ROUND.txt
    local c0 c1 t0 t1 rc
    c0=$(cpu_ticks "$SERVER_PID") t0=$(date +%s%N)
    timeout "$LOAD_TIMEOUT" taskset -c "$LOAD_CPU" "$UDPGEN" --host 127.0.0.1 --port "$SERVER_PORT" \
        --socks "$socks" --size "$size" --depth "$depth" --duration "$ECHO_DURATION" --warmup "$WARMUP" >"$out" 2>&1
    rc=$?
    c1=$(cpu_ticks "$SERVER_PID") t1=$(date +%s%N)
    local crashed=0
    alive "$SERVER_PID" || crashed=1
    stop_server
    local cpu wall rate lost
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    rate=$(result_field "$out" msgs_per_s)
    lost=$(result_field "$out" lost)
    if ((rc != 0 || crashed)) || [[ -z $rate ]]; then
        local why="udpgen exit $rc"
        ((rc == 124)) && why="udpgen timed out"
        ((crashed)) && why="server died; $why"
        record udp "$scenario" "$server" fail "note=$why: $(head -n 1 "$out" | cut -c1-120)"
        say "udp r$ROUND $scenario $server: FAILED ($why)"
        return
    fi
    local extra=()
    [[ -n $lost && $lost != 0 ]] && extra=("note=$lost datagrams lost")
    record udp "$scenario" "$server" ok "rate=$rate" "work=$(result_field "$out" total_msgs)" \
        "cpu_s=$cpu" "wall_s=$wall" "p50_us=$(result_field "$out" p50_us)" \
        "p99_us=$(result_field "$out" p99_us)" "p999_us=$(result_field "$out" p999_us)" "${extra[@]}"
    say "udp r$ROUND $scenario $server: $rate datagrams/s (lost ${lost:-?}), server CPU ${cpu}s of ${wall}s"
}

run_udp() {
    local scenario name socks size depth server order
    for scenario in "${UDP_SCENARIOS[@]}"; do
        read -r name socks size depth <<<"$scenario"
        mapfile -t order < <(rotate $((ROUND - 1)) "${UDP_SERVERS[@]}")
        for server in "${order[@]}"; do udp_run "$name" "$socks" "$size" "$depth" "$server"; done
    done
}

# ---- HTTP ------------------------------------------------------------------------------------
# Three requests, pipelined, the last split across writes: three complete, correct responses?
http_check() {   # port [tls-ca-file]
    python3 - "$1" "${2:-}" <<'EOF'
import socket, ssl, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
if sys.argv[2]:
    s = ssl.create_default_context(cafile=sys.argv[2]).wrap_socket(s, server_hostname="localhost")
s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\nGET / HTTP/1.1\r\nHost: bench\r\n\r\nGET / HTTP/1.1\r\nHo")
time.sleep(0.05)
s.sendall(b"st: bench\r\n\r\n")
data, deadline = b"", time.time() + 3
while data.count(b"Hello, World!") < 3 and time.time() < deadline:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
ok = data.count(b"HTTP/1.1 200 OK\r\n") == 3 and data.count(b"Hello, World!") == 3 and b"\r\nDate: " in data.replace(b"\r\ndate: ", b"\r\nDate: ")
sys.exit(0 if ok else 1)
EOF
}

# wrk latency "1.23ms" -> microseconds; nothing for a zero (wrk prints 0.00us for a percentile
# it has too few samples for).
wrk_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 0
        if (n * f > 0) printf "%.1f", n * f }'
}

http_run() {   # scenario depth server [category]
    local scenario=$1 depth=$2 server=$3 category=${4:-http} note
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then
        record "$category" "$scenario" "$server" skip "note=${note:-${DEAD[$server]}}"
        return
    fi
    local ca="" scheme=http
    [[ $category == https ]] && ca=$TLS_DIR/ca.pem scheme=https
    if ! http_check "$SERVER_PORT" "$ca" 2>/dev/null; then
        stop_server
        DEAD[$server]="wrong HTTP response"
        record "$category" "$scenario" "$server" skip "note=${DEAD[$server]}"
        return
    fi
    local url=$scheme://127.0.0.1:$SERVER_PORT/ script=()
    ((depth > 1)) && script=(-s "$HERE/wrk/pipeline.lua")
    local out=$RAW/$category-$scenario-${server//\//_}-r$ROUND.txt
    local args=(-t1 -c"$HTTP_CONNS" --timeout 2s --latency "${script[@]}" "$url")
    ((depth > 1)) && args+=(-- "$depth")
    if ((HTTP_WARMUP_SECONDS > 0)); then
        timeout 60 taskset -c "$LOAD_CPU" wrk -d"${HTTP_WARMUP_SECONDS}s" "${args[@]}" >/dev/null 2>&1
    fi
    local c0 c1 t0 t1 rc
    c0=$(cpu_ticks "$SERVER_PID") t0=$(date +%s%N)
    timeout $((HTTP_SECONDS + 60)) taskset -c "$LOAD_CPU" wrk -d"${HTTP_SECONDS}s" "${args[@]}" >"$out" 2>&1
    rc=$?
    c1=$(cpu_ticks "$SERVER_PID") t1=$(date +%s%N)
    local crashed=0
    alive "$SERVER_PID" || crashed=1
    stop_server
    local cpu wall rate work non2xx sockerr p50 p99
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    rate=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    work=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    p50=$(wrk_us "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(wrk_us "$(awk '$1 == "99%" { print $2 }' "$out")")
    if ((rc != 0 || crashed)) || [[ -z $rate || -n $non2xx ]]; then
        local why="wrk exit $rc"
        [[ -n $non2xx ]] && why="$non2xx non-2xx responses"
        ((crashed)) && why="server died; $why"
        record "$category" "$scenario" "$server" fail "note=$why"
        say "$category r$ROUND $scenario $server: FAILED ($why)"
        return
    fi
    local extra=()
    [[ -n $sockerr && $sockerr != 0 ]] && extra=("note=$sockerr socket errors")
    record "$category" "$scenario" "$server" ok "rate=$rate" "work=$work" "cpu_s=$cpu" "wall_s=$wall" \
        "p50_us=$p50" "p99_us=$p99" "${extra[@]}"
    say "$category r$ROUND $scenario $server: $rate req/s, server CPU ${cpu}s of ${wall}s"
}

run_http() {
    local server scenario depth order
    for scenario in "c$HTTP_CONNS 1" "c$HTTP_CONNS-P$PIPELINE $PIPELINE"; do
        read -r scenario depth <<<"$scenario"
        mapfile -t order < <(rotate $((ROUND - 1)) "${HTTP_SERVERS[@]}")
        for server in "${order[@]}"; do http_run "$scenario" "$depth" "$server"; done
    done
}

# ---- HTTPS and TLS handshakes -----------------------------------------------------------------
# New connections per second, each a TLS handshake: full ones (`openssl s_time -new`, scenario
# "handshakes"), or TLS 1.2 ones resuming the first connection's session (`-reuse -tls1_2`,
# "resumed-tls12": s_time takes its session before TLS 1.3's tickets arrive, so it cannot resume
# 1.3), on the load core for HTTP_SECONDS; the server's CPU time over the run.
handshake_run() {   # server new|reuse
    local server=$1 mode=$2 note scenario=handshakes flags=(-new)
    [[ $mode == reuse ]] && scenario=resumed-tls12 flags=(-reuse -tls1_2)
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then
        record https "$scenario" "$server" skip "note=${note:-${DEAD[$server]}}"
        return
    fi
    local out=$RAW/https-$scenario-${server//\//_}-r$ROUND.txt c0 c1 t0 t1 rc
    c0=$(cpu_ticks "$SERVER_PID") t0=$(date +%s%N)
    timeout $((HTTP_SECONDS + 60)) taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$SERVER_PORT" "${flags[@]}" \
        -time "$HTTP_SECONDS" -CAfile "$TLS_DIR/ca.pem" >"$out" 2>&1
    rc=$?
    c1=$(cpu_ticks "$SERVER_PID") t1=$(date +%s%N)
    stop_server
    local cpu wall n secs rate
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    # "648 connections in 3 real seconds, 0 bytes read per connection" (the other line counts
    # s_time's own CPU seconds)
    read -r n secs < <(awk '/connections in [0-9.]+ real seconds/ { print $1, $4; exit }' "$out")
    if ((rc != 0)) || [[ -z ${n:-} ]]; then
        record https "$scenario" "$server" fail "note=s_time exit $rc: $(tail -n 1 "$out" | cut -c1-100)"
        return
    fi
    # s_time prints a character per connection: `r` resumed, `*` full.
    if [[ $mode == reuse ]] && (($(tr -cd '*' <"$out" | wc -c) > n / 100 + 1)); then
        record https "$scenario" "$server" fail "note=$(tr -cd '*' <"$out" | wc -c) of $n connections were not resumed"
        return
    fi
    rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    record https "$scenario" "$server" ok "rate=$rate" "work=$n" "cpu_s=$cpu" "wall_s=$wall"
    say "https r$ROUND $scenario $server: $rate handshakes/s, server CPU ${cpu}s of ${wall}s"
}

run_https() {
    local server scenario depth order mode
    for scenario in "c$HTTP_CONNS 1" "c$HTTP_CONNS-P$PIPELINE $PIPELINE"; do
        read -r scenario depth <<<"$scenario"
        mapfile -t order < <(rotate $((ROUND - 1)) "${HTTPS_SERVERS[@]}")
        for server in "${order[@]}"; do http_run "$scenario" "$depth" "$server" https; done
    done
    for mode in new reuse; do
        mapfile -t order < <(rotate $((ROUND - 1)) "${HANDSHAKE_SERVERS[@]}")
        for server in "${order[@]}"; do handshake_run "$server" "$mode"; done
    done
}

# ---- Redis -----------------------------------------------------------------------------------
redis_check() {
    local port=$1
    [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null) == PONG ]] &&
        [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$port" SET bench:check v1 2>/dev/null) == OK ]] &&
        [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$port" GET bench:check 2>/dev/null) == v1 ]]
}

# "rps p50_us p99_us" of the first test in redis-benchmark's --csv output (a header naming the
# columns, then one row per test).
redis_csv() {
    awk -F, '
        { gsub(/"/, "") }
        $1 == "test" { for (i = 1; i <= NF; i++) col[$i] = i; next }
        ("rps" in col) && NF > 2 { print $col["rps"], $col["p50_latency_ms"] * 1000, $col["p99_latency_ms"] * 1000; exit }
    ' "$1"
}

redis_run() {   # pipeline server
    local pipeline=$1 server=$2 note test
    local suffix="" probe=$REDIS_PROBE
    ((pipeline > 1)) && suffix="-P$pipeline" probe=$((REDIS_PROBE * pipeline))
    local tests="ping_mbulk set get"
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then
        for test in $tests; do record redis "$test$suffix" "$server" skip "note=${note:-${DEAD[$server]}}"; done
        return
    fi
    if ! redis_check "$SERVER_PORT"; then
        stop_server
        DEAD[$server]="wrong reply to PING/SET/GET"
        for test in $tests; do record redis "$test$suffix" "$server" skip "note=${DEAD[$server]}"; done
        return
    fi
    for test in $tests; do
        local out=$RAW/redis-$test$suffix-${server//\//_}-r$ROUND.txt
        local c0 c1 t0 t1 rc requests
        # redis-benchmark runs a request count, not a time: a short probe (which also warms up)
        # sizes the measured run to about REDIS_SECONDS whatever this server's speed.
        timeout 60 taskset -c "$LOAD_CPU" redis-benchmark -h 127.0.0.1 -p "$SERVER_PORT" -c "$REDIS_CONNS" \
            -n "$probe" -P "$pipeline" -t "$test" --csv >"$out.probe" 2>&1
        requests=$(redis_csv "$out.probe" | awk -v s="$REDIS_SECONDS" -v p="$probe" \
            '{ n = int($1 * s); print (n < p ? p : n > 20000000 ? 20000000 : n) }')
        requests=${requests:-$probe}
        c0=$(cpu_ticks "$SERVER_PID") t0=$(date +%s%N)
        timeout 90 taskset -c "$LOAD_CPU" redis-benchmark -h 127.0.0.1 -p "$SERVER_PORT" -c "$REDIS_CONNS" \
            -n "$requests" -P "$pipeline" -t "$test" --csv >"$out" 2>&1
        rc=$?
        c1=$(cpu_ticks "$SERVER_PID") t1=$(date +%s%N)
        local cpu wall
        cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
        local parsed
        parsed=$(redis_csv "$out")
        if ((rc != 0)) || [[ -z $parsed ]] || ! alive "$SERVER_PID"; then
            record redis "$test$suffix" "$server" fail "note=redis-benchmark exit $rc"
            say "redis r$ROUND $test$suffix $server: FAILED (exit $rc)"
            alive "$SERVER_PID" || break
            continue
        fi
        local rate p50 p99
        read -r rate p50 p99 <<<"$parsed"
        rate=$(awk -v r="$rate" 'BEGIN { printf "%.0f", r }')
        record redis "$test$suffix" "$server" ok "rate=$rate" "work=$requests" "cpu_s=$cpu" "wall_s=$wall" \
            "p50_us=$p50" "p99_us=$p99"
        say "redis r$ROUND $test$suffix $server: $rate req/s, server CPU ${cpu}s of ${wall}s"
    done
    stop_server
}

run_redis() {
    if ! command -v redis-benchmark >/dev/null; then
        say "redis-benchmark not installed (apt-get install redis-tools); skipping Redis"
        return
    fi
    local server pipeline order
    for pipeline in 1 "$PIPELINE"; do
        mapfile -t order < <(rotate $((ROUND - 1)) "${REDIS_SERVERS[@]}")
        for server in "${order[@]}"; do redis_run "$pipeline" "$server"; done
    done
}
