#!/usr/bin/env bash
# The benchmark harness behind `make bench` (see tests/bench/README.md).
#
#   BUILD=build tests/bench/run.sh
#
# Starts a private RabbitMQ + Redis in $BUILD/bench-servers on the 2367x ports,
# runs the sections below, prints a header and a table per section, and stops
# everything it started on exit, error or signal. A section whose program is
# not built is printed as "skipped (not built yet)". Every program runs under
# timeout(1); the whole run stays under ~3 minutes. Exit 0 unless a program
# crashed (died from SIGSEGV/SIGABRT/SIGBUS/SIGFPE/SIGILL) or the servers did
# not start.
#
#   1. RPC ping: libbus vs baseline   (baseline_rpc_* vs bus-alliances + bench_rpc)
#   2. HTTP edge                      (bus-gateway under wrk; 1,000 idle keep-alive connections)
#   3. Schema validation              (bench_schema)
#   4. Store                          (bench_store)
#   5. Contention                     (bench_joins against 1-3 bus-alliances processes)
#   6. Scheduled events               (bench_events against 3 bus-events processes)
#   7. Notifications                  (bench_notifications against 1 and 3 bus-notifications processes)
#   8. Verification                   (bench_verification: its own bus-verification processes + fake game API)
#   9. Audit trail                    (bench_audit against bus-audit; raw publish+consume beside it)
#   Report with plots                 (tests/bench/report.sh: build/bench/report.md and PNGs)
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
BENCH_BIN=$BUILD/tests/bench
SRV_DIR=$BUILD/bench-servers
LOGS=$SRV_DIR/logs
export BUS_LOCAL_AMQP_PORT=23672 BUS_LOCAL_DIST_PORT=23673 BUS_LOCAL_STREAM_PORT=23674 BUS_LOCAL_REDIS_PORT=23679
export BUS_AMQP_URL="amqp://guest:guest@127.0.0.1:$BUS_LOCAL_AMQP_PORT/"
export BUS_REDIS_URL="redis://127.0.0.1:$BUS_LOCAL_REDIS_PORT/0"
HTTP_ADDR=127.0.0.1:23080
SECONDS_PER_RUN=${BENCH_SECONDS:-5}   # measured seconds per load run (BENCH_SECONDS overrides)
INFLIGHTS="1 64"
mkdir -p "$LOGS"
ulimit -n 4096 2>/dev/null || true   # the gateway must hold 1,000+ connections

CRASHED=0
WRAPS=()          # pids of the timeout(1) wrappers of background programs
SERVERS_STARTED=0

# ---------------------------------------------------------------- helpers

cleanup() {
    local w c
    for w in "${WRAPS[@]}"; do
        kill -0 "$w" 2>/dev/null || continue
        for c in $(pgrep -P "$w"); do kill -TERM "$c" 2>/dev/null; done
        kill -TERM "$w" 2>/dev/null
    done
    for _ in $(seq 1 30); do
        local alive=0
        for w in "${WRAPS[@]}"; do kill -0 "$w" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for w in "${WRAPS[@]}"; do
        kill -0 "$w" 2>/dev/null || continue
        for c in $(pgrep -P "$w"); do kill -KILL "$c" 2>/dev/null; done
        kill -KILL "$w" 2>/dev/null
    done
    if [ $SERVERS_STARTED = 1 ]; then
        deploy/local/servers.sh stop "$SRV_DIR" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# forget PID: drop a reaped wrapper from WRAPS (its pid may be reused later)
forget() {
    local keep=() w
    for w in "${WRAPS[@]}"; do [ "$w" = "$1" ] || keep+=("$w"); done
    WRAPS=("${keep[@]}")
}

section() { printf '\n=== %s ===\n' "$1"; }
note() { printf '  %s\n' "$*"; }

# check_rc NAME RC: reports a failed or crashed program; a crash fails the run
check_rc() {
    local name=$1 rc=$2
    case $rc in
        0) ;;
        124|137) note "$name: timed out (killed)" ;;
        132|134|135|136|139) note "$name: CRASHED (signal $((rc - 128)))"; CRASHED=1 ;;
        143) note "$name: ended by SIGTERM without a clean exit" ;;
        *) note "$name: exited with status $rc" ;;
    esac
}

# start_bg LOG SECS CMD...: starts CMD in the background under timeout(1).
# Sets BG_WRAP (the wrapper's pid) and BG_PID (the program's own pid, for /proc).
start_bg() {
    local log=$1 secs=$2
    shift 2
    timeout -k 3 "$secs" "$@" >"$log" 2>&1 &
    BG_WRAP=$!
    WRAPS+=("$BG_WRAP")
    BG_PID=
    for _ in $(seq 1 100); do
        BG_PID=$(pgrep -P "$BG_WRAP" | head -1)
        [ -n "$BG_PID" ] && break
        kill -0 "$BG_WRAP" 2>/dev/null || break
        sleep 0.02
    done
}

# stop_bg NAME WRAP PID: SIGTERM, up to 10 s for a clean exit, then SIGKILL
stop_bg() {
    local name=$1 wrap=$2 pid=$3 rc
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$wrap" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$wrap" 2>/dev/null; then
        note "$name: did not exit within 10 s of SIGTERM; killing it"
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$wrap"
    rc=$?
    forget "$wrap"
    check_rc "$name" "$rc"
}

# run_fg NAME SECS OUT CMD...: runs CMD under timeout(1), stdout to OUT, stderr to OUT.err
run_fg() {
    local name=$1 secs=$2 out=$3 rc
    shift 3
    # in the background + wait, so a signal to this script is handled at once
    # (bash runs traps only between foreground commands; timeout(1) runs its
    # command in a process group of its own, out of the terminal's Ctrl-C)
    timeout -k 3 "$secs" "$@" >"$out" 2>"$out.err" </dev/null &
    local wrap=$!
    WRAPS+=("$wrap")
    wait "$wrap"
    rc=$?
    forget "$wrap"
    check_rc "$name" "$rc"
    if [ $rc != 0 ] && [ -s "$out.err" ]; then tail -3 "$out.err" | sed 's/^/    | /'; fi
    return $rc
}

# wait_for_line FILE REGEX SECS
wait_for_line() {
    for _ in $(seq 1 $(($3 * 10))); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# kv LINE KEY: the value of KEY=VALUE in a result line ("-" if absent)
kv() { awk -v k="$2" '{for(i=1;i<=NF;i++) if(index($i,k"=")==1){print substr($i,length(k)+2); f=1; exit}} END{if(!f) print "-"}' <<<"$1"; }

# proc_kb PID FIELD: VmRSS / VmHWM of a live process in kB ("-" if gone)
proc_kb() { awk -v f="$2:" '$1==f{print $2; found=1} END{if(!found) print "-"}' "/proc/$1/status" 2>/dev/null || echo -; }

result_line() { grep '^name=' "$1" 2>/dev/null | tail -1; }

# consumers_on QUEUE: consumer count on a queue of the private broker (0 if unknown)
consumers_on() {
    deploy/local/servers.sh ctl "$SRV_DIR" list_queues -q --no-table-headers name consumers 2>/dev/null |
        awk -v q="$1" '$1==q{print $2; f=1} END{if(!f) print 0}'
}

# ---------------------------------------------------------------- servers

echo "bench: build=$BUILD broker=$BUS_AMQP_URL redis=$BUS_REDIS_URL cpus=$(nproc) ($(date -u +%FT%TZ))"
SERVERS_STARTED=1
timeout 90 deploy/local/servers.sh start "$SRV_DIR" >"$LOGS/servers.log" 2>&1 &
srv_wrap=$!
WRAPS+=("$srv_wrap")
wait "$srv_wrap"
srv_rc=$?
forget "$srv_wrap"
if [ $srv_rc != 0 ]; then
    echo "could not start the private RabbitMQ/Redis; see $LOGS/servers.log" >&2
    tail -5 "$LOGS/servers.log" >&2
    exit 1
fi

# ---------------------------------------------------------------- 1. RPC ping

section "1. RPC ping: libbus vs baseline"
declare -A BASE LIB
if [ -x "$BENCH_BIN/baseline_rpc_server" ] && [ -x "$BENCH_BIN/baseline_rpc_client" ]; then
    start_bg "$LOGS/baseline_server.log" 60 "$BENCH_BIN/baseline_rpc_server" bench.baseline.rpc
    bs_wrap=$BG_WRAP bs_pid=$BG_PID
    if wait_for_line "$LOGS/baseline_server.log" '^ready' 15; then
        for n in $INFLIGHTS; do
            run_fg "baseline_rpc_client (inflight $n)" $((SECONDS_PER_RUN + 15)) "$LOGS/baseline_$n.out" \
                "$BENCH_BIN/baseline_rpc_client" --queue bench.baseline.rpc --inflight "$n" \
                --seconds "$SECONDS_PER_RUN" --warmup 1 && BASE[$n]=$(result_line "$LOGS/baseline_$n.out")
        done
    else
        note "baseline_rpc_server did not become ready; see $LOGS/baseline_server.log"
    fi
    stop_bg baseline_rpc_server "$bs_wrap" "$bs_pid"
else
    note "baseline: skipped (not built yet)"
fi

ALLI_WRAP= ALLI_PID=
WORKER_IDLE=- WORKER_AFTER=- WORKER_PEAK=-
if [ -x "$BUILD/bus-alliances" ]; then
    # the worker also serves section 2 (the edge calls alliances.*) and the RPC
    # path rows; stopped after them. Its limit grows with BENCH_SECONDS: about
    # fourteen load runs (2 here, 7 at the edge, 3 on the RPC path, margin).
    start_bg "$LOGS/alliances.log" $((60 + 14 * (SECONDS_PER_RUN + 6))) \
        env BUS_STORE="sqlite:$SRV_DIR/bench.db" "$BUILD/bus-alliances"
    ALLI_WRAP=$BG_WRAP ALLI_PID=$BG_PID
    ready=0 deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$ALLI_WRAP" 2>/dev/null || break
        if [ "$(consumers_on rpc.alliances)" -gt 0 ] 2>/dev/null; then ready=1; break; fi
        sleep 0.5
    done
    if ! kill -0 "$ALLI_WRAP" 2>/dev/null; then
        note "bus-alliances exited at start-up; see $LOGS/alliances.log"
    elif [ $ready = 0 ]; then
        note "bus-alliances: no consumer on rpc.alliances after 15 s; see $LOGS/alliances.log"
    fi
    if kill -0 "$ALLI_WRAP" 2>/dev/null; then
        sleep 2
        WORKER_IDLE=$(proc_kb "$ALLI_PID" VmRSS)
    fi
fi
if [ -n "$ALLI_WRAP" ] && [ -x "$BENCH_BIN/bench_rpc" ]; then
    for n in $INFLIGHTS; do
        kill -0 "$ALLI_WRAP" 2>/dev/null || break
        run_fg "bench_rpc (inflight $n)" $((SECONDS_PER_RUN + 20)) "$LOGS/libbus_$n.out" \
            "$BENCH_BIN/bench_rpc" --service alliances --method ping --inflight "$n" \
            --seconds "$SECONDS_PER_RUN" && LIB[$n]=$(result_line "$LOGS/libbus_$n.out")
    done
    if kill -0 "$ALLI_WRAP" 2>/dev/null; then
        sleep 2
        WORKER_AFTER=$(proc_kb "$ALLI_PID" VmRSS)
        WORKER_PEAK=$(proc_kb "$ALLI_PID" VmHWM)
    fi
else
    note "libbus (bus-alliances + tests/bench/bench_rpc): skipped (not built yet)"
fi

printf '  %-8s | %-32s | %-32s | %-9s | %s\n' "" "baseline (plain rabbitmq-c)" "libbus" "rps" "p50"
printf '  %-8s | %10s %10s %10s | %10s %10s %10s | %-9s | %s\n' inflight rps p50_ms p99_ms rps p50_ms p99_ms \
    "lib/base" "lib-base ms"
for n in $INFLIGHTS; do
    b=${BASE[$n]:-} l=${LIB[$n]:-}
    br=$(kv "$b" rps) b50=$(kv "$b" p50_ms) b99=$(kv "$b" p99_ms)
    lr=$(kv "$l" rps) l50=$(kv "$l" p50_ms) l99=$(kv "$l" p99_ms)
    ratio=- diff=-
    if [ -n "$b" ] && [ -n "$l" ]; then
        ratio=$(awk -v a="$lr" -v b="$br" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "-" }')
        diff=$(awk -v a="$l50" -v b="$b50" 'BEGIN{ printf "%+.3f", a-b }')
    fi
    printf '  %-8s | %10s %10s %10s | %10s %10s %10s | %-9s | %s\n' "$n" "$br" "$b50" "$b99" "$lr" "$l50" "$l99" \
        "$ratio" "$diff"
done
for n in $INFLIGHTS; do
    printf '  client peak RSS (inflight %s): baseline %s kB, libbus %s kB\n' "$n" \
        "$(kv "${BASE[$n]:-}" rss_kb)" "$(kv "${LIB[$n]:-}" rss_kb)"
done
if [ -n "$ALLI_WRAP" ]; then
    printf '  bus-alliances RSS: idle %s kB, idle after load %s kB, peak (VmHWM) %s kB\n' \
        "$WORKER_IDLE" "$WORKER_AFTER" "$WORKER_PEAK"
fi

# ---------------------------------------------------------------- 2. HTTP edge

# wrk_report LABEL CONNS OUT: one table row from wrk --latency output
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0;
                              else if (v ~ /s$/) printf "%.3f", v*1000; else print "-" }'; }
wrk_report() {
    local label=$1 conns=$2 out=$3 rps p50 p99 total non2xx errs
    rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
    p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
    p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    total=$(awk '/ requests in /{print $1}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    errs=$(awk '/Socket errors:/{gsub(/,/,""); print $4+$6+$8+$10}' "$out")
    printf '  %-10s %6s %10s %10s %10s %10s %9s %7s\n' "$label" "$conns" "${rps:--}" "$p50" "$p99" \
        "${total:--}" "${non2xx:-0}" "${errs:-0}"
}

IDLE_PY='
import resource, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
req = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n"
conns = []
for _ in range(n):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(req)
        conns.append(s)
    except OSError as e:
        print("connect_error=%s" % e.__class__.__name__, flush=True)
        break
answered = 0
for s in conns:  # read the one answer: from now on each is an idle keep-alive connection
    try:
        if s.recv(65536).startswith(b"HTTP/1."):
            answered += 1
    except OSError:
        pass
time.sleep(2)
alive = 0
for s in conns:
    s.setblocking(False)
    try:
        alive += 1 if s.recv(1) != b"" else 0
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
print("open=%d answered=%d alive=%d" % (len(conns), answered, alive), flush=True)
time.sleep(60)
'

section "2. HTTP edge"
if [ -x "$BUILD/bus-gateway" ]; then
    # default settings (access log, rate limiting through Redis), with a limit the load cannot reach
    start_bg "$LOGS/gateway.log" $((60 + 8 * (SECONDS_PER_RUN + 6))) env BUS_HTTP_ADDR=$HTTP_ADDR BUS_STORE="sqlite:$SRV_DIR/bench.db" BUS_RATE_LIMIT=1000000000 \
        "$BUILD/bus-gateway"
    gw_wrap=$BG_WRAP gw_pid=$BG_PID
    gw_up=0
    for _ in $(seq 1 100); do
        kill -0 "$gw_wrap" 2>/dev/null || break
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$HTTP_ADDR/" 2>/dev/null)
        if [ -n "$code" ] && [ "$code" != 000 ]; then gw_up=1; break; fi
        sleep 0.1
    done
    if [ $gw_up = 0 ]; then
        note "bus-gateway did not answer on $HTTP_ADDR within 10 s; see $LOGS/gateway.log"
    else
        [ -n "$ALLI_WRAP" ] || note "(bus-alliances is not running: the RPC calls below cannot succeed)"
        methods="ping"
        declare -A BODY=([ping]='{}')
        if [ -x tests/bench/alliances_setup.sh ] || [ -f tests/bench/alliances_setup.sh ]; then
            # alliances_setup.sh prints KEY=VALUE lines: get_body=, set_rank_body=, api_key=
            if BENCH_HTTP_URL="http://$HTTP_ADDR" run_fg alliances_setup.sh 30 "$LOGS/alliances_setup.out" \
                bash tests/bench/alliances_setup.sh; then
                methods="ping get set_rank"
                BODY[get]=$(sed -n 's/^get_body=//p' "$LOGS/alliances_setup.out" | tail -1)
                BODY[set_rank]=$(sed -n 's/^set_rank_body=//p' "$LOGS/alliances_setup.out" | tail -1)
                key=$(sed -n 's/^api_key=//p' "$LOGS/alliances_setup.out" | tail -1)
                [ -n "$key" ] && export BENCH_API_KEY=$key
            fi
        fi
        # one unreported second first, as the baseline's --warmup 1: the fresh
        # gateway's first requests fill its caches and grow its heap
        run_fg "wrk warm-up" 20 "$LOGS/wrk_warmup.out" wrk -t2 -c32 -d1s -s tests/bench/post_ping.lua \
            "http://$HTTP_ADDR/api/v1/rpc/alliances/ping" || true
        printf '  %-10s %6s %10s %10s %10s %10s %9s %7s\n' method conns rps p50_ms p99_ms requests non2xx errors
        for m in $methods; do
            for c in 32 1; do
                t=2; [ "$c" -lt 2 ] && t=1
                if BENCH_BODY=${BODY[$m]:-'{}'} run_fg "wrk $m -c$c" $((SECONDS_PER_RUN + 15)) \
                    "$LOGS/wrk_${m}_$c.out" wrk -t$t -c"$c" -d${SECONDS_PER_RUN}s --latency \
                    -s tests/bench/post_ping.lua "http://$HTTP_ADDR/api/v1/rpc/alliances/$m"; then
                    wrk_report "$m" "$c" "$LOGS/wrk_${m}_$c.out"
                fi
            done
        done
        printf '  bus-gateway peak RSS (VmHWM) after load: %s kB\n' "$(proc_kb "$gw_pid" VmHWM)"
        rss_before=$(proc_kb "$gw_pid" VmRSS)
        start_bg "$LOGS/idle_conns.out" 60 python3 -c "$IDLE_PY" "${HTTP_ADDR%:*}" "${HTTP_ADDR#*:}" 1000
        ic_wrap=$BG_WRAP ic_pid=$BG_PID
        if wait_for_line "$LOGS/idle_conns.out" '^open=' 30; then
            rss_idle=$(proc_kb "$gw_pid" VmRSS)
            printf '  1,000 idle keep-alive connections: %s; gateway VmRSS %s kB (before: %s kB)\n' \
                "$(grep '^open=' "$LOGS/idle_conns.out" | tail -1)" "$rss_idle" "$rss_before"
        else
            note "idle connection helper did not finish; see $LOGS/idle_conns.out"
        fi
        stop_bg idle_conns "$ic_wrap" "$ic_pid" >/dev/null
    fi
    stop_bg bus-gateway "$gw_wrap" "$gw_pid"
else
    note "skipped (not built yet)"
fi

# The store through a worker's RPC path (printed in section 4): the same
# methods through libbus at 64 in flight, with the worker's CPU per call.
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
RPC_PATH=()
if [ -n "$ALLI_WRAP" ] && [ -x "$BENCH_BIN/bench_rpc" ]; then
    for m in ${methods:-ping}; do
        kill -0 "$ALLI_WRAP" 2>/dev/null || break
        t0=$(proc_ticks "$ALLI_PID")
        if run_fg "bench_rpc $m" $((SECONDS_PER_RUN + 20)) "$LOGS/rpcpath_$m.out" "$BENCH_BIN/bench_rpc" \
            --service alliances --method "$m" --body "${BODY[$m]:-"{}"}" --inflight 64 --seconds "$SECONDS_PER_RUN"; then
            t1=$(proc_ticks "$ALLI_PID")
            alive=1
            kill -0 "$ALLI_PID" 2>/dev/null || alive=0 # died during the run: no CPU figure
            line=$(result_line "$LOGS/rpcpath_$m.out")
            us=$(awk -v t=$((t1 - t0)) -v n="$(kv "$line" calls)" -v hz="$(getconf CLK_TCK)" -v alive=$alive \
                'BEGIN{ if (alive && n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-" }')
            RPC_PATH+=("$(printf 'alliances.%-9s %9s calls/s  p50 %6s ms  p99 %6s ms  worker CPU %4s us/call' \
                "$m" "$(kv "$line" rps)" "$(kv "$line" p50_ms)" "$(kv "$line" p99_ms)" "$us")")
        fi
    done
fi

if [ -n "$ALLI_WRAP" ]; then stop_bg bus-alliances "$ALLI_WRAP" "$ALLI_PID"; fi

# ---------------------------------------------------------------- 3, 4. libbus micro-benchmarks

# run_simple TITLE PROGRAM: prints the program's output lines indented
run_simple() {
    section "$1"
    if [ -x "$BENCH_BIN/$2" ]; then
        if run_fg "$2" 90 "$LOGS/$2.out" "$BENCH_BIN/$2"; then
            sed 's/^/  /' "$LOGS/$2.out"
        fi
    else
        note "skipped (not built yet)"
    fi
}
run_simple "3. Schema validation" bench_schema
run_simple "4. Store" bench_store
if [ ${#RPC_PATH[@]} -gt 0 ]; then
    note "through a worker's RPC path (bench_rpc -> bus-alliances, 64 in flight; ping = no store,"
    note "get = 1 store read, set_rank = 4 reads: marker, 2 memberships, alliance; the rank is already so):"
    for l in "${RPC_PATH[@]}"; do note "  $l"; done
fi

# ---------------------------------------------------------------- 5. contention

# State-changing requests (alliances.join, a fresh user each) at 64 in
# flight, all on one alliance or spread over 64, with 1, 2 and 3
# bus-alliances processes on one store (bus/include/bus/op.h, "Contention").
section "5. Contention: alliances.join, 64 in flight, one alliance vs 64, 1-3 processes"
if [ -x "$BUILD/bus-alliances" ] && [ -x "$BENCH_BIN/bench_joins" ]; then
    JOIN_SECONDS=$(( SECONDS_PER_RUN > 3 ? 3 : SECONDS_PER_RUN ))
    printf '  %-9s | %-10s | %9s %9s %9s | %s
' processes alliances "rps" "p50_ms" "p99_ms" "refused/errors"
    for procs in 1 2 3; do
        pids=() wraps=()
        for i in $(seq 1 $procs); do
            start_bg "$LOGS/joins_worker_${procs}_$i.log" $((60 + 2 * (JOIN_SECONDS + 10))) \
                env BUS_STORE="sqlite:$SRV_DIR/bench-joins.db" BUS_LOG_LEVEL=warn "$BUILD/bus-alliances"
            wraps+=("$BG_WRAP") pids+=("$BG_PID")
        done
        for _ in $(seq 1 30); do [ "$(consumers_on rpc.alliances)" -ge "$procs" ] 2>/dev/null && break; sleep 0.5; done
        for k in 1 64; do
            if run_fg "bench_joins ($procs processes, $k alliances)" $((JOIN_SECONDS + 40)) \
                "$LOGS/joins_${procs}_$k.out" "$BENCH_BIN/bench_joins" --alliances "$k" --inflight 64 \
                --seconds "$JOIN_SECONDS"; then :; fi
            line=$(result_line "$LOGS/joins_${procs}_$k.out")
            printf '  %-9s | %-10s | %9s %9s %9s | %s/%s\n' "$procs" "$k" "$(kv "$line" rps)" "$(kv "$line" p50_ms)" \
                "$(kv "$line" p99_ms)" "$(kv "$line" refused)" "$(kv "$line" errors)"
        done
        for i in "${!wraps[@]}"; do stop_bg "bus-alliances (joins)" "${wraps[$i]}" "${pids[$i]}"; done
    done
else
    note "skipped (not built yet)"
fi

# ---------------------------------------------------------------- 6. scheduled events

# events.create per second at 64 in flight, then the firing lateness of as
# many reminders due within 10 s (1k: 100/s, 10k: 1,000/s), 3 bus-events
# processes on one SQLite store (workers/events/scheduler.c), with the
# store's default sync=full and with sync=normal (WAL: still safe against
# SIGKILL, not against power loss). 100k (due within 100 s) with
# BENCH_EVENTS_100K=1: about 2 x 50,000 creates, minutes on a small machine.
section "6. Scheduled events: creates/s and firing lateness, 3 bus-events processes"
if [ -x "$BUILD/bus-events" ] && [ -x "$BENCH_BIN/bench_events" ]; then
    printf '  %-9s | %-11s | %9s | %9s %9s %9s | %s\n' reminders store "creates/s" "late_p50" "late_p99" "late_max" \
        "fired/missing/twice"
    runs="1000:full:10 10000:full:10 10000:normal:10"
    [ "${BENCH_EVENTS_100K:-0}" = 1 ] && runs="$runs 100000:normal:100"
    for run in $runs; do
        IFS=: read -r n sync spread <<<"$run"
        db="$SRV_DIR/bench-events-$n-$sync.db"
        rm -f "$db" "$db-wal" "$db-shm"
        pids=() wraps=()
        for i in 1 2 3; do
            start_bg "$LOGS/events_worker_${n}_${sync}_$i.log" $((150 + n / 100)) \
                env BUS_STORE="sqlite:$db?sync=$sync" BUS_LOG_LEVEL=warn \
                BUS_EVENTS_MODERATORS=discord:1 "$BUILD/bus-events"
            wraps+=("$BG_WRAP") pids+=("$BG_PID")
        done
        for _ in $(seq 1 30); do [ "$(consumers_on rpc.events)" -ge 3 ] 2>/dev/null && break; sleep 0.5; done
        out="$LOGS/events_${n}_$sync.out"
        if run_fg "bench_events ($n, sync=$sync)" $((120 + n / 100)) "$out" \
            "$BENCH_BIN/bench_events" --reminders "$n" --inflight 64 --spread-s "$spread"; then :; fi
        line=$(result_line "$out")
        printf '  %-9s | %-11s | %9s | %9s %9s %9s | %s/%s/%s\n' "$n" "sync=$sync" "$(kv "$line" create_rps)" \
            "$(kv "$line" late_p50_ms)" "$(kv "$line" late_p99_ms)" "$(kv "$line" late_max_ms)" "$(kv "$line" fired)" \
            "$(kv "$line" missing)" "$(kv "$line" twice)"
        for i in "${!wraps[@]}"; do stop_bg "bus-events (bench)" "${wraps[$i]}" "${pids[$i]}"; done
    done
else
    note "skipped (not built yet)"
fi

# ---------------------------------------------------------------- 7. notifications (bus-notifications)

# One event.reminder fanned out to 1,000 subscriptions against the fake
# Discord/webhook endpoints, 1 and 3 processes: deliveries per second and
# the time from the publish to the last delivery (bench_notifications.c).
section "7. Notifications: one reminder to 1,000 subscriptions, 1 and 3 processes"
if [ -x "$BUILD/bus-notifications" ] && [ -x "$BENCH_BIN/bench_notifications" ]; then
    mkdir -p "$SRV_DIR/tmp"
    if BUS_TEST_TMPDIR="$SRV_DIR/tmp" BUS_TEST_BUILD="$BUILD" BUS_SCHEMAS_DIR="${BUS_SCHEMAS_DIR:-schemas}" \
        run_fg bench_notifications 240 "$LOGS/notifications.out" "$BENCH_BIN/bench_notifications"; then :; fi
    sed 's/^/  /' "$LOGS/notifications.out"
else
    note "skipped (not built yet)"
fi

# ---------------------------------------------------------------- 8. verification

# bus-verification against the fake game API (tests/support/fake_game_api.h):
# verifications per second with the game-API limit lifted, 1 and 3 processes;
# the shared limit's accuracy with 3 processes and 200 requests in flight
# (limit 20 per 1 s: the most calls the fake saw in any 1 s window, and the
# calls per window achieved). bench_verification starts the processes itself.
section "8. Verification: verify/s against the fake game API; the shared limit under 3 processes"
if [ -x "$BUILD/bus-verification" ] && [ -x "$BENCH_BIN/bench_verification" ]; then
    mkdir -p "$SRV_DIR/verification"
    if run_fg "bench_verification" 120 "$LOGS/verification.out" env BUS_TEST_TMPDIR="$SRV_DIR/verification" \
        BUS_TEST_BUILD="$BUILD" BUS_SCHEMAS_DIR=schemas "$BENCH_BIN/bench_verification"; then :; fi
    grep '^name=' "$LOGS/verification.out" | sed 's/^/  /'
else
    note "skipped (not built yet)"
fi

# ---------------------------------------------------------------- 9. audit trail (bench_audit)

# Events published with confirms onto bus.events, recorded by one bus-audit
# (hash-chained, stored, republished to the audit.log stream) until the last
# record is read back from the stream, against raw publish+consume of the
# same events in the same run; the worker's CPU per event from /proc.
section "9. Audit trail: events/s published, audited, chained, stored and streamed vs raw publish+consume"
if [ -x "$BUILD/bus-audit" ] && [ -x "$BENCH_BIN/bench_audit" ]; then
    AUDIT_EVENTS=${BENCH_AUDIT_EVENTS:-20000}
    rm -f "$SRV_DIR"/bench-audit.db*
    start_bg "$LOGS/audit_worker.log" 240 env BUS_STORE="sqlite:$SRV_DIR/bench-audit.db" \
        BUS_LOG_LEVEL=warn "$BUILD/bus-audit"
    au_wrap=$BG_WRAP au_pid=$BG_PID
    for _ in $(seq 1 30); do [ "$(consumers_on rpc.audit)" -ge 1 ] 2>/dev/null && break; sleep 0.5; done
    sleep 1   # the stream lease and the audit.log stream
    broker_pid=$(cat "$SRV_DIR/rabbitmq/rabbitmq.pid" 2>/dev/null || echo 0)
    if run_fg "bench_audit" 200 "$LOGS/audit.out" "$BENCH_BIN/bench_audit" --events "$AUDIT_EVENTS" \
        --worker-pid "$au_pid" --broker-pid "$broker_pid"; then :; fi
    raw=$(grep '^raw ' "$LOGS/audit.out") rawq=$(grep '^raw_quorum ' "$LOGS/audit.out")
    aud=$(grep '^audit ' "$LOGS/audit.out")
    printf '  %-38s | %9s | %9s | %-14s | %s\n' path events "events/s" "broker CPU/ev" "bus-audit CPU/ev"
    printf '  %-38s | %9s | %9s | %11s us | %s\n' "raw publish+consume (confirms), classic" "$(kv "$raw" events)" \
        "$(kv "$raw" eps)" "$(kv "$raw" broker_cpu_us_per_event)" -
    printf '  %-38s | %9s | %9s | %11s us | %s\n' "raw publish+consume (confirms), quorum" "$(kv "$rawq" events)" \
        "$(kv "$rawq" eps)" "$(kv "$rawq" broker_cpu_us_per_event)" -
    printf '  %-38s | %9s | %9s | %11s us | %s us\n' "published->recorded->on the stream" "$(kv "$aud" recorded)" \
        "$(kv "$aud" eps)" "$(kv "$aud" broker_cpu_us_per_event)" "$(kv "$aud" cpu_us_per_event)"
    stop_bg "bus-audit" "$au_wrap" "$au_pid"
else
    note "skipped (not built yet)"
fi

# ---------------------------------------------------------------- report with plots
# build/bench/report.md and its PNGs: a script of its own (tests/bench/report.sh);
# it plots section 9's audit figures from its output
section "Report with plots"
BUILD=$BUILD REPORT_AUDIT_OUT=$LOGS/audit.out tests/bench/report.sh || note "tests/bench/report.sh failed"

echo
if [ $CRASHED = 1 ]; then
    echo "bench: FAILED (a program crashed; logs in $LOGS)"
    exit 1
fi
echo "bench: done (logs in $LOGS)"
exit 0
