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
#   - libbus RPC (bench_rpc -> bus-alliances alliances.ping) beside the plain
#     rabbitmq-c baseline (baseline_rpc_client -> baseline_rpc_server) in the
#     same run: throughput.png, latency.png (p50 and p99)
#   - the RSS of bus-alliances and of the baseline server, sampled every
#     0.5 s through the whole sweep: rss.png
# It starts and stops its own two servers (by pid) and nothing else.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
BIN=$BUILD/tests/bench
OUT=$BUILD/bench
INFLIGHTS=${REPORT_INFLIGHTS:-1 4 16 64}
SECS=${REPORT_SECONDS:-3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/logs
mkdir -p "$LOG"
: "${BUS_AMQP_URL:?BUS_AMQP_URL must name the broker}"

for p in "$BIN/bench_rpc" "$BIN/baseline_rpc_client" "$BIN/baseline_rpc_server" "$BUILD/bus-alliances"; do
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

# RSS over the whole sweep
start=$(date +%s.%N)
( while kill -0 "$alli_pid" 2>/dev/null; do
      printf '%s %s %s\n' "$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}')" \
          "$(rss_kb "$alli_pid")" "$(rss_kb "$base_pid")"
      sleep 0.5
  done ) > "$OUT/rss.dat" &
sampler=$!
PIDS+=("$sampler")

echo "# inflight base_rps base_p50 base_p99 lib_rps lib_p50 lib_p99 base_rss_kb lib_rss_kb" > "$OUT/sweep.dat"
for n in $INFLIGHTS; do
    b=$(timeout $((SECS + 20)) "$BIN/baseline_rpc_client" --queue bench.report.rpc --inflight "$n" --seconds "$SECS" \
        --warmup 1 2>>"$LOG/baseline_client.err" | grep '^name=' | tail -1)
    l=$(timeout $((SECS + 20)) "$BIN/bench_rpc" --service alliances --method ping --inflight "$n" --seconds "$SECS" \
        2>>"$LOG/bench_rpc.err" | grep '^name=' | tail -1)
    echo "$n $(kv "$b" rps) $(kv "$b" p50_ms) $(kv "$b" p99_ms) $(kv "$l" rps) $(kv "$l" p50_ms) $(kv "$l" p99_ms)" \
         "$(kv "$b" rss_kb) $(kv "$l" rss_kb)" >> "$OUT/sweep.dat"
done
sleep 1
kill "$sampler" 2>/dev/null

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
     "" using 1:5 with linespoints title "libbus (bench_rpc -> bus-alliances)"
set output "$OUT/latency.png"
set title "RPC latency: p50 and p99"
set ylabel "milliseconds"
plot "$OUT/sweep.dat" using 1:3 with linespoints title "baseline p50", \
     "" using 1:4 with linespoints title "baseline p99", \
     "" using 1:6 with linespoints title "libbus p50", \
     "" using 1:7 with linespoints title "libbus p99"
unset logscale x
set output "$OUT/rss.png"
set title "RSS during the sweep"
set xlabel "seconds"
set ylabel "kB"
plot "$OUT/rss.dat" using 1:2 with lines title "bus-alliances", \
     "" using 1:3 with lines title "baseline_rpc_server"
GP
gp_rc=$?

{
    echo "# Bench report"
    echo
    echo "$(date -u +%FT%TZ), $(nproc) CPUs, broker ${BUS_AMQP_URL##*@}, ${SECS} s per point."
    echo "Produced by \`tests/bench/report.sh\` (run by \`make bench\`)."
    echo
    echo "| in flight | baseline calls/s | p50 ms | p99 ms | libbus calls/s | p50 ms | p99 ms | client RSS kB (base/libbus) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    grep -v '^#' "$OUT/sweep.dat" | while read -r n br b50 b99 lr l50 l99 brss lrss; do
        echo "| $n | $br | $b50 | $b99 | $lr | $l50 | $l99 | $brss / $lrss |"
    done
    echo
    echo "![throughput](throughput.png)"
    echo
    echo "![latency](latency.png)"
    echo
    echo "![RSS](rss.png)"
    echo
    echo "RSS of bus-alliances: first $(head -1 "$OUT/rss.dat" | awk '{print $2}') kB, last $(tail -1 "$OUT/rss.dat" | awk '{print $2}') kB."
} > "$OUT/report.md"

missing=0
for f in throughput latency rss; do [ -s "$OUT/$f.png" ] || missing=1; done
if [ $gp_rc != 0 ] || [ $missing = 1 ]; then
    echo "report: gnuplot failed; see $LOG/gnuplot.err"
    exit 1
fi
echo "report: $OUT/report.md (throughput.png, latency.png, rss.png)"
