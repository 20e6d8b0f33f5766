# shellcheck shell=bash
# The efficiency section: allocations, system calls and resident memory per server.
# Sourced by run.sh, whose settings (paths, durations, cores) it uses.

# ---- efficiency ------------------------------------------------------------------------------
# Starts the loadgen in the background with --hold; sets LG_PID and LG_OUT.
start_held_loadgen() {   # out-file loadgen-args...
    LG_OUT=$1
    shift
    taskset -c "$LOAD_CPU" "$LOADGEN" --host 127.0.0.1 --port "$SERVER_PORT" "$@" >"$LG_OUT" 2>&1 &
    LG_PID=$!
    STARTED+=("$LG_PID")
}

finish_loadgen() {   # waits for the loadgen (it gives up holding by itself); returns its status
    local i
    for ((i = 0; i < 3000; i++)); do alive "$LG_PID" || break; sleep 0.02; done
    kill -TERM "$LG_PID" 2>/dev/null
    wait "$LG_PID"
    local rc=$?
    forget "$LG_PID"
    return $rc
}

counter() { od -An -tu8 -N8 "$1" 2>/dev/null | tr -d ' ' || echo 0; }

# Heap allocations per echoed message, in a steady state: counted between the two holds.
eff_allocs() {
    local server=$1 note file=$RAW/malloccount-${1//\//_}
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server" "MALLOCCOUNT_FILE=$file" "LD_PRELOAD=$SHIM"; then
        efficiency echo "$server" "note=${note:-${DEAD[$server]}}"
        return
    fi
    local out=$RAW/eff-allocs-${server//\//_}.txt a b
    start_held_loadgen "$out" $(loadgen_flags "$server") --conns 100 --size 64 --depth 1 --warmup "$WARMUP" \
        --messages "$ALLOC_MESSAGES" --duration 20 --hold 60
    if wait_for_line "$out" '^HOLD warm' 60 "$LG_PID"; then
        a=$(counter "$file")
        kill -USR1 "$LG_PID"
        if wait_for_line "$out" '^HOLD done' 90 "$LG_PID"; then
            b=$(counter "$file")
            kill -USR1 "$LG_PID"
        fi
    fi
    finish_loadgen
    local rc=$? msgs
    stop_server
    msgs=$(result_field "$out" window_msgs)
    if ((rc != 0)) || [[ -z ${b:-} || -z $msgs || $msgs == 0 ]]; then
        efficiency echo "$server" "allocs_note=failed: $(first_error "$out")"
        return
    fi
    local per
    per=$(awk -v a="$a" -v b="$b" -v m="$msgs" 'BEGIN { printf "%.3f", (b - a) / m }')
    efficiency echo "$server" "allocs_per_msg=$per"
    say "efficiency $server: $per allocations per message ($((b - a)) for $msgs)"
}

# System calls per echoed message: strace -c -f attached to the server between the two holds.
eff_syscalls() {
    local server=$1 note
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then return; fi
    local out=$RAW/eff-syscalls-${server//\//_}.txt trace=$RAW/strace-${server//\//_}.txt st=""
    start_held_loadgen "$out" $(loadgen_flags "$server") --conns 100 --size 64 --depth 1 --warmup "$WARMUP" \
        --messages "$STRACE_MESSAGES" --duration 20 --hold 60
    if wait_for_line "$out" '^HOLD warm' 60 "$LG_PID"; then
        strace -f -c -p "$SERVER_PID" -o "$trace" 2>"$trace.err" &
        st=$!
        STARTED+=("$st")
        wait_for_line "$trace.err" 'attached' 10 "$st"
        sleep 0.2
        kill -USR1 "$LG_PID"
        if wait_for_line "$out" '^HOLD done' 150 "$LG_PID"; then
            kill -INT "$st"
            wait "$st" 2>/dev/null
            kill -USR1 "$LG_PID"
        fi
        kill -INT "$st" 2>/dev/null
        wait "$st" 2>/dev/null
        forget "$st"
    fi
    finish_loadgen
    local rc=$? msgs
    stop_server
    msgs=$(result_field "$out" window_msgs)
    if ((rc != 0)) || [[ -z $st || -z $msgs || $msgs == 0 ]] || ! grep -q ' total$' "$trace" 2>/dev/null; then
        efficiency echo "$server" "syscalls_note=failed: $(first_error "$out")"
        return
    fi
    # strace -c: "% time seconds usecs/call calls [errors] syscall"; calls is field 4.
    local summary
    summary=$(awk -v m="$msgs" '
        $NF == "total" { total = $4 }
        NF >= 5 && $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
        END {
            printf "syscalls_per_msg=%.3f\t", total / m
            n = 0; top = ""
            while (n < 3) {
                best = ""; for (s in calls) if (best == "" || calls[s] > calls[best]) best = s
                if (best == "") break
                top = top (n ? ", " : "") best " " sprintf("%.2f", calls[best] / m); delete calls[best]; n++
            }
            printf "syscalls_top=%s", top
        }' "$trace")
    local -a kv
    IFS=$'\t' read -r -a kv <<<"$summary"
    efficiency echo "$server" "${kv[@]}"
    say "efficiency $server: ${kv[0]} (${kv[1]#syscalls_top=})"
}

# Resident memory with many idle connections, each having echoed one message.
eff_rss() {
    local server=$1 note
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server"; then return; fi
    local out=$RAW/eff-rss-${server//\//_}.txt base full=""
    sleep 0.3
    base=$(rss_kb "$SERVER_PID")
    start_held_loadgen "$out" $(loadgen_flags "$server") --idle --conns "$IDLE_CONNS" --connect-timeout 60 --hold 30
    if wait_for_line "$out" '^HOLD idle' 90 "$LG_PID"; then
        sleep 0.5
        full=$(rss_kb "$SERVER_PID")
        kill -USR1 "$LG_PID"
    fi
    finish_loadgen
    local rc=$?
    stop_server
    if ((rc != 0)) || [[ -z $full ]]; then
        efficiency echo "$server" "rss_note=failed: $(first_error "$out")"
        return
    fi
    efficiency echo "$server" "rss_base_kb=$base" "rss_idle_kb=$full" "idle_conns=$IDLE_CONNS"
    say "efficiency $server: RSS ${base} KiB idle, ${full} KiB with $IDLE_CONNS connections"
}

# Heap allocations per HTTP request (no pipelining) in a steady state. wrk opens its connections
# afresh each run, so two runs of different lengths are counted and differenced: what setting
# up and tearing down the connections costs is the same in both and cancels out.
eff_http_allocs() {
    local server=$1 note file=$RAW/malloccount-${1//\//_}
    note=$(skip_note "$server")
    if [[ -n $note ]] || ! start_server "$server" "MALLOCCOUNT_FILE=$file" "LD_PRELOAD=$SHIM"; then
        efficiency http "$server" "note=${note:-${DEAD[$server]}}"
        return
    fi
    local args=(-t1 -c"$HTTP_CONNS" --timeout 2s "http://127.0.0.1:$SERVER_PORT/")
    local seconds allocs=() requests=() a b out
    for seconds in 1 $((HTTP_SECONDS + 1)); do
        out=$RAW/eff-allocs-${server//\//_}-${seconds}s.txt
        a=$(counter "$file")
        timeout 60 taskset -c "$LOAD_CPU" wrk -d"${seconds}s" "${args[@]}" >"$out" 2>&1
        b=$(counter "$file")
        allocs+=($((b - a)))
        requests+=("$(awk '/requests in/ { print $1 }' "$out")")
    done
    stop_server
    if [[ -z ${requests[0]} || -z ${requests[1]} ]] || ((requests[1] <= requests[0])); then
        efficiency http "$server" "allocs_note=failed: wrk made too few requests"
        return
    fi
    local per
    per=$(awk -v a0="${allocs[0]}" -v a1="${allocs[1]}" -v r0="${requests[0]}" -v r1="${requests[1]}" \
        'BEGIN { v = (a1 - a0) / (r1 - r0); printf "%.3f", v < 0 ? 0 : v }')
    efficiency http "$server" "allocs_per_req=$per"
    say "efficiency $server: $per allocations per request (${allocs[*]} for ${requests[*]} requests)"
}

run_efficiency() {
    local server
    for server in "${ECHO_SERVERS[@]}"; do
        eff_allocs "$server"
        eff_syscalls "$server"
        eff_rss "$server"
    done
    for server in "${HTTP_SERVERS[@]}"; do
        [[ $server == gnet-http/* && $server != "gnet-http/${POLLERS%% *}" ]] && continue
        eff_http_allocs "$server"
    done
}
