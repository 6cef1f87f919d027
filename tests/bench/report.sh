#!/usr/bin/env bash
# The bench report with plots: build/bench/report.md (or $BUILD/bench/) and
# PNGs drawn by gnuplot. Called at the end of tests/bench/run.sh, with its
# private broker still up (BUS_AMQP_URL exported there); it can also run alone
# against any broker:
#
#   BUILD=build BUS_AMQP_URL=amqp://... tests/bench/report.sh
#
# One sweep over the number of calls in flight (REPORT_INFLIGHTS, default
# "1 4 16 64"), REPORT_SECONDS (default 3) measured seconds each:
#   - libbus RPC (bench_rpc -> bus-alliances alliances.ping) and the HTTP edge
#     (wrk with as many connections -> bus-gateway -> bus-alliances) beside the
#     plain rabbitmq-c baseline (baseline_rpc_client -> baseline_rpc_server)
#     in the same run: throughput.png, latency.png (p50 and p99)
#   - how throughput grows with 1-4 bus-alliances processes (bench_rpc, ping
#     and get at 64 in flight): scaling.png
#   - the RSS of bus-alliances, bus-gateway and the baseline server, sampled
#     every 0.5 s through the whole run: rss.png
#   - events per second through the audit path, read from the output of
#     tests/bench/run.sh's section 9 (REPORT_AUDIT_OUT, when given): audit.png
# It starts and stops its own servers (by pid) and nothing else; the edge on
# REPORT_HTTP_ADDR (default 127.0.0.1:23081).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
BIN=$BUILD/tests/bench
OUT=$BUILD/bench
INFLIGHTS=${REPORT_INFLIGHTS:-1 4 16 64}
SECS=${REPORT_SECONDS:-3}
HTTP_ADDR=${REPORT_HTTP_ADDR:-127.0.0.1:23081}
AUDIT_OUT=${REPORT_AUDIT_OUT:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/logs
mkdir -p "$LOG"
: "${BUS_AMQP_URL:?BUS_AMQP_URL must name the broker}"

for p in "$BIN/bench_rpc" "$BIN/baseline_rpc_client" "$BIN/baseline_rpc_server" "$BUILD/bus-alliances" "$BUILD/busctl"; do
    [ -x "$p" ] || { echo "report: $p is not built; no report"; exit 0; }
done
command -v gnuplot >/dev/null || { echo "report: gnuplot is not installed (deploy/local/deps.sh installs it); no report"; exit 0; }

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# the edge and the audit rows are optional: drawn when their programs exist
HAVE_EDGE=1
{ [ -x "$BUILD/bus-gateway" ] && command -v wrk >/dev/null; } || HAVE_EDGE=0

kv() { awk -v k="$2" '{for(i=1;i<=NF;i++) if(index($i,k"=")==1){print substr($i,length(k)+2); f=1; exit}} END{if(!f) print "NaN"}' <<<"$1"; }
rss_kb() { awk '$1=="VmRSS:"{print $2; f=1} END{if(!f) print "NaN"}' "/proc/$1/status" 2>/dev/null || echo NaN; }

# the two servers
"$BIN/baseline_rpc_server" bench.report.rpc > "$LOG/baseline_server.log" 2>&1 &
base_pid=$!
PIDS+=("$base_pid")
BUS_STORE="sqlite:$OUT/report.db" BUS_LOG_LEVEL=warn "$BUILD/bus-alliances" > "$LOG/alliances.log" 2>&1 &
alli_pid=$!
PIDS+=("$alli_pid")
for _ in $(seq 1 150); do grep -q '^ready' "$LOG/baseline_server.log" 2>/dev/null && break; sleep 0.1; done
# alliances answers ping once it consumes
for _ in $(seq 1 30); do
    timeout 10 "$BIN/bench_rpc" --service alliances --method ping --inflight 1 --seconds 1 > /dev/null 2>&1 && break
    sleep 0.5
done

gw_pid=
if [ $HAVE_EDGE = 1 ]; then
    BUS_HTTP_ADDR=$HTTP_ADDR BUS_STORE="sqlite:$OUT/report-gw.db" BUS_RATE_LIMIT=1000000000 BUS_LOG_LEVEL=warn \
        "$BUILD/bus-gateway" > "$LOG/gateway.log" 2>&1 &
    gw_pid=$!
    PIDS+=("$gw_pid")
    up=0
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}' \
            "http://$HTTP_ADDR/api/v1/rpc/alliances/ping" 2>/dev/null)
        [ "$code" = 200 ] && { up=1; break; }
        sleep 0.1
    done
    [ $up = 1 ] || { echo "report: bus-gateway did not answer on $HTTP_ADDR; no edge rows (see $LOG/gateway.log)"; HAVE_EDGE=0; }
    # one unreported second: the fresh gateway fills its caches
    [ $HAVE_EDGE = 1 ] && wrk -t2 -c16 -d1s -s tests/bench/post_ping.lua "http://$HTTP_ADDR/api/v1/rpc/alliances/ping" > /dev/null 2>&1
fi

# RSS over the whole run (NaN where a process is not running)
start=$(date +%s.%N)
( while kill -0 "$alli_pid" 2>/dev/null; do
      printf '%s %s %s %s\n' "$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}')" \
          "$(rss_kb "$alli_pid")" "$(rss_kb "$base_pid")" "$( [ -n "$gw_pid" ] && rss_kb "$gw_pid" || echo NaN)"
      sleep 0.5
  done ) > "$OUT/rss.dat" &
sampler=$!
PIDS+=("$sampler")

# wrk's latency distribution in ms: "50%" / "99%" lines of --latency
wrk_ms() { awk -v q="$2" '$1==q{v=$2; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000;
                                printf "%.3f", v; f=1} END{if(!f) print "NaN"}' "$1"; }
edge_row() {  # CONNS -> "rps p50 p99" of the edge at that many connections
    local c=$1 t=2 f=$LOG/wrk_$1.out
    [ "$c" -lt 2 ] && t=1
    if [ $HAVE_EDGE = 0 ] || ! timeout $((SECS + 20)) wrk -t$t -c"$c" -d"${SECS}s" --latency \
        -s tests/bench/post_ping.lua "http://$HTTP_ADDR/api/v1/rpc/alliances/ping" > "$f" 2>&1; then
        echo "NaN NaN NaN"
        return
    fi
    # a row with errors or non-2xx answers is not a throughput figure
    if grep -q 'Non-2xx\|Socket errors' "$f"; then echo "NaN NaN NaN"; return; fi
    echo "$(awk '/^Requests\/sec:/{print $2}' "$f") $(wrk_ms "$f" 50%) $(wrk_ms "$f" 99%)"
}

echo "# inflight base_rps base_p50 base_p99 lib_rps lib_p50 lib_p99 base_rss_kb lib_rss_kb edge_rps edge_p50 edge_p99" \
    > "$OUT/sweep.dat"
for n in $INFLIGHTS; do
    b=$(timeout $((SECS + 20)) "$BIN/baseline_rpc_client" --queue bench.report.rpc --inflight "$n" --seconds "$SECS" \
        --warmup 1 2>>"$LOG/baseline_client.err" | grep '^name=' | tail -1)
    l=$(timeout $((SECS + 20)) "$BIN/bench_rpc" --service alliances --method ping --inflight "$n" --seconds "$SECS" \
        2>>"$LOG/bench_rpc.err" | grep '^name=' | tail -1)
    e=$(edge_row "$n")
    echo "$n $(kv "$b" rps) $(kv "$b" p50_ms) $(kv "$b" p99_ms) $(kv "$l" rps) $(kv "$l" p50_ms) $(kv "$l" p99_ms)" \
         "$(kv "$b" rss_kb) $(kv "$l" rss_kb) $e" >> "$OUT/sweep.dat"
done

# 1-4 bus-alliances processes on one store, bench_rpc at 64 in flight: ping
# (the RPC path alone) and get (a store read on each call). The first process
# is the one above; the others start one at a time.
get_params=
if BENCH_HTTP_URL="http://$HTTP_ADDR" bash tests/bench/alliances_setup.sh > "$LOG/alliances_setup.out" 2>&1; then
    get_params=$(sed -n 's/^get_body=//p' "$LOG/alliances_setup.out" | tail -1)
fi
echo "# processes ping_rps ping_p99 get_rps get_p99" > "$OUT/scaling.dat"
for k in 1 2 3 4; do
    if [ "$k" -gt 1 ]; then
        BUS_STORE="sqlite:$OUT/report.db" BUS_LOG_LEVEL=warn "$BUILD/bus-alliances" >> "$LOG/alliances_$k.log" 2>&1 &
        PIDS+=("$!")
        # ready when busctl status counts k instances (consumers of rpc.alliances)
        for _ in $(seq 1 100); do
            [ "$("$BUILD/busctl" status | awk '$1=="alliances"{print $2}')" -ge "$k" ] 2>/dev/null && break
            sleep 0.1
        done
    fi
    p=$(timeout $((SECS + 20)) "$BIN/bench_rpc" --service alliances --method ping --inflight 64 --seconds "$SECS" \
        2>>"$LOG/bench_rpc.err" | grep '^name=' | tail -1)
    g=
    [ -n "$get_params" ] && g=$(timeout $((SECS + 20)) "$BIN/bench_rpc" --service alliances --method get \
        --body "$get_params" --inflight 64 --seconds "$SECS" 2>>"$LOG/bench_rpc.err" | grep '^name=' | tail -1)
    echo "$k $(kv "$p" rps) $(kv "$p" p99_ms) $(kv "$g" rps) $(kv "$g" p99_ms)" >> "$OUT/scaling.dat"
done
sleep 1
kill "$sampler" 2>/dev/null

# the audit path: section 9's result lines ("raw ... eps=", "raw_quorum ...",
# "audit ... eps=")
have_audit=0
if [ -n "$AUDIT_OUT" ] && [ -s "$AUDIT_OUT" ]; then
    raw=$(grep '^raw ' "$AUDIT_OUT" | tail -1) aud=$(grep '^audit ' "$AUDIT_OUT" | tail -1)
    rawq=$(grep '^raw_quorum ' "$AUDIT_OUT" | tail -1)
    if [ -n "$raw" ] && [ -n "$aud" ]; then
        have_audit=1
        { echo "# path events_per_s"
          echo "\"raw, classic\" $(kv "$raw" eps)"
          echo "\"audit path\" $(kv "$aud" eps)"
          if [ -n "$rawq" ]; then echo "\"raw, quorum\" $(kv "$rawq" eps)"; fi; } > "$OUT/audit.dat"
        audit_cpu=$(kv "$aud" cpu_us_per_event)
        rawq_eps=$(kv "$rawq" eps)
    fi
fi

gnuplot <<GP 2> "$LOG/gnuplot.err"
set terminal pngcairo size 800,480 noenhanced
set grid
set key top left
set logscale x 2
set xlabel "calls in flight"
set output "$OUT/throughput.png"
set title "RPC throughput: libbus vs plain rabbitmq-c (same broker, same run)"
set ylabel "calls per second"
plot "$OUT/sweep.dat" using 1:2 with linespoints title "baseline (rabbitmq-c)", \
     "" using 1:5 with linespoints title "libbus (bench_rpc -> bus-alliances)", \
     "" using 1:10 with linespoints title "HTTP edge (wrk -> bus-gateway -> bus-alliances)"
set output "$OUT/latency.png"
set title "RPC latency: p50 and p99"
set ylabel "milliseconds"
plot "$OUT/sweep.dat" using 1:3 with linespoints title "baseline p50", \
     "" using 1:4 with linespoints title "baseline p99", \
     "" using 1:6 with linespoints title "libbus p50", \
     "" using 1:7 with linespoints title "libbus p99", \
     "" using 1:11 with linespoints title "edge p50", \
     "" using 1:12 with linespoints title "edge p99"
unset logscale x
set output "$OUT/scaling.png"
set title "Throughput with 1-4 bus-alliances processes (64 in flight, $(nproc) CPUs)"
set xlabel "bus-alliances processes"
set ylabel "calls per second"
set xtics 1
set yrange [0:*]
plot "$OUT/scaling.dat" using 1:2 with linespoints title "ping", \
     "" using 1:4 with linespoints title "get (a store read per call)"
set autoscale y
set xtics autofreq
set output "$OUT/rss.png"
set title "RSS during the run"
set xlabel "seconds"
set ylabel "kB"
plot "$OUT/rss.dat" using 1:2 with lines title "bus-alliances (the first)", \
     "" using 1:3 with lines title "baseline_rpc_server", \
     "" using 1:4 with lines title "bus-gateway"
if ($have_audit) {
    set output "$OUT/audit.png"
    set title "Events per second: raw publish+consume vs the audit path (same run)"
    set style data histograms
    set style fill solid 0.6
    set boxwidth 0.6
    set yrange [0:*]
    unset xlabel
    set ylabel "events per second"
    plot "$OUT/audit.dat" using 2:xtic(1) title ""
}
GP
gp_rc=$?

{
    echo "# Bench report"
    echo
    echo "$(date -u +%FT%TZ), $(nproc) CPUs, broker ${BUS_AMQP_URL##*@}, ${SECS} s per point."
    echo "Produced by \`tests/bench/report.sh\` (run by \`make bench\`)."
    echo
    echo "RPC and the edge against the calls in flight (for the edge: wrk connections, one request each in flight)."
    echo
    echo "| in flight | baseline calls/s | p50 ms | p99 ms | libbus calls/s | p50 ms | p99 ms | edge req/s | p50 ms | p99 ms | client RSS kB (base/libbus) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    grep -v '^#' "$OUT/sweep.dat" | while read -r n br b50 b99 lr l50 l99 brss lrss er e50 e99; do
        echo "| $n | $br | $b50 | $b99 | $lr | $l50 | $l99 | $er | $e50 | $e99 | $brss / $lrss |"
    done
    echo
    echo "![throughput](throughput.png)"
    echo
    echo "![latency](latency.png)"
    echo
    echo "Throughput with 1-4 bus-alliances processes, bench_rpc at 64 in flight, on $(nproc) CPUs shared by"
    echo "the broker, the client and every process."
    echo
    echo "| processes | ping calls/s | p99 ms | get calls/s | p99 ms |"
    echo "|---:|---:|---:|---:|---:|"
    grep -v '^#' "$OUT/scaling.dat" | while read -r k pr p99 gr g99; do echo "| $k | $pr | $p99 | $gr | $g99 |"; done
    echo
    echo "![scaling](scaling.png)"
    echo
    echo "Here every process, the broker and the client share $(nproc) CPUs: a second process shares the load"
    echo "but adds a connection and a consumer for the broker to serve, and no CPU. More processes add"
    echo "throughput where there are cores to spare, or where a domain's handlers wait on I/O."
    echo
    if [ $have_audit = 1 ]; then
        echo "The audit path (section 9 of \`make bench\`): $(awk 'NR==3{print $NF}' "$OUT/audit.dat") events/s published"
        echo "with confirms, audited, chained, stored and on the stream, against $(awk 'NR==2{print $NF}' "$OUT/audit.dat")"
        echo "events/s of raw publish+consume through a classic queue (${rawq_eps:-"-"} through a quorum queue);"
        echo "bus-audit spent ${audit_cpu} us of CPU per event."
        echo
        echo "![audit](audit.png)"
        echo
    fi
    echo "![RSS](rss.png)"
    echo
    echo "RSS of bus-alliances: first $(head -1 "$OUT/rss.dat" | awk '{print $2}') kB, last $(tail -1 "$OUT/rss.dat" | awk '{print $2}') kB."
} > "$OUT/report.md"

missing=0
plots="throughput latency scaling rss"
[ $have_audit = 1 ] && plots="$plots audit"
for f in $plots; do [ -s "$OUT/$f.png" ] || missing=1; done
if [ $gp_rc != 0 ] || [ $missing = 1 ]; then
    echo "report: gnuplot failed; see $LOG/gnuplot.err"
    exit 1
fi
echo "report: $OUT/report.md ($(echo $plots | sed 's/\([a-z]*\)/\1.png/g; s/ /, /g'))"
