#!/usr/bin/env bash
# `make soak SOAK_MIN=10`: a mixed load over every domain for SOAK_MIN minutes
# (default 10) against a private RabbitMQ + Redis, then a verdict.
#
#   - the five domain programs and the edge run for the whole soak;
#   - every minute, each domain takes RPC calls (bench_rpc, 8 in flight each,
#     all five at once: alliances.ping, verification.ping, ...) and events
#     are published (busctl publish) and the edge is asked /api/v1/health; the p99 of each domain is printed per
#     minute;
#   - the RSS and open fds of every program are read at the start (after one
#     warm-up minute of the same load) and at the end.
# It fails when a program died, when calls failed, or on growth: RSS more than
# SOAK_RSS_PCT percent (default 20) plus 2 MB above its start, or more than
# SOAK_FDS (default 8) fds above its start.
# Ports: BUS_SOAK_PORT_BASE (default 22300, below the ephemeral range: AMQP +0, dist +1, stream +2, Redis +7).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
MIN=${SOAK_MIN:-10}
RSS_PCT=${SOAK_RSS_PCT:-20}
FDS=${SOAK_FDS:-8}
base=${BUS_SOAK_PORT_BASE:-22300}
DIR=$(pwd)/$BUILD/soak
DOMAINS="verification alliances events notifications audit"
export BUS_LOCAL_AMQP_PORT=$base BUS_LOCAL_DIST_PORT=$((base + 1)) BUS_LOCAL_STREAM_PORT=$((base + 2))
export BUS_LOCAL_REDIS_PORT=$((base + 7))
export BUS_AMQP_URL=amqp://guest:guest@127.0.0.1:$base/ BUS_REDIS_URL=redis://127.0.0.1:$((base + 7))/0
export BUS_SCHEMAS_DIR=$(pwd)/schemas BUS_LOG_LEVEL=warn

rm -rf "$DIR"
mkdir -p "$DIR/logs"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    deploy/local/servers.sh stop "$DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deploy/local/servers.sh start "$DIR" > "$DIR/logs/servers.log" 2>&1 || { echo "soak: the servers did not start"; exit 1; }

declare -A PID
for d in $DOMAINS; do
    BUS_STORE="sqlite:$DIR/soak.db" "$BUILD/bus-$d" > "$DIR/logs/$d.log" 2>&1 &
    PID[$d]=$!
    PIDS+=("$!")
done
BUS_HTTP_ADDR=127.0.0.1:$((base + 8)) "$BUILD/bus-gateway" > "$DIR/logs/gateway.log" 2>&1 &
PID[gateway]=$!
PIDS+=("$!")
for d in $DOMAINS; do
    ok=0
    for _ in $(seq 1 60); do
        "$BUILD/busctl" call "$d" ping > /dev/null 2>&1 && { ok=1; break; }
        sleep 0.5
    done
    [ $ok = 1 ] || { echo "soak: $d does not answer ping; see $DIR/logs/$d.log"; exit 1; }
done

kv() { awk -v k="$2" '{for(i=1;i<=NF;i++) if(index($i,k"=")==1){print substr($i,length(k)+2); f=1; exit}} END{if(!f) print "-"}' <<<"$1"; }
rss_kb() { awk '$1=="VmRSS:"{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

errors=0 events_failed=0 http_failed=0
# one minute of load: every domain at once, and events; prints the p99s
minute() { # label
    local d line loads=()
    for d in $DOMAINS; do
        timeout 90 "$BUILD/tests/bench/bench_rpc" --service "$d" --method ping --inflight 8 --seconds 58 --warmup 1 \
            > "$DIR/logs/minute.$d" 2>&1 &
        loads+=("$!")
    done
    for i in $(seq 1 20); do
        for _ in 1 2 3 4 5; do   # the edge too
            curl -sf -o /dev/null "http://127.0.0.1:$((base + 8))/api/v1/health" || http_failed=$((http_failed + 1))
        done
        "$BUILD/busctl" publish user.forgotten "{\"user\":\"telegram:9$RANDOM$i\"}" > /dev/null 2>&1 || events_failed=$((events_failed + 1))
        sleep 2
    done
    wait "${loads[@]}"   # these only: the programs run in the background too
    printf '  %-8s' "$1"
    for d in $DOMAINS; do
        line=$(grep '^name=' "$DIR/logs/minute.$d" | tail -1)
        printf ' %s %7s ms' "$d" "$(kv "$line" p99_ms)"
        [ "$(kv "$line" errors)" = 0 ] || errors=$((errors + 1))
    done
    echo
}

echo "soak: $MIN minute(s) of load over $DOMAINS (p99 per minute), then RSS and fds compared"
minute warmup
declare -A RSS0 FD0
for p in "${!PID[@]}"; do RSS0[$p]=$(rss_kb "${PID[$p]}"); FD0[$p]=$(fds "${PID[$p]}"); done
for m in $(seq 1 "$MIN"); do minute "min $m"; done

fail=0
printf '  %-14s %10s %10s %6s %6s\n' program rss0_kB rss_kB fds0 fds
for p in $(printf '%s\n' "${!PID[@]}" | sort); do
    pid=${PID[$p]}
    if ! kill -0 "$pid" 2>/dev/null; then echo "  $p DIED; see $DIR/logs/$p.log"; fail=1; continue; fi
    r=$(rss_kb "$pid") f=$(fds "$pid")
    printf '  %-14s %10s %10s %6s %6s\n' "$p" "${RSS0[$p]}" "$r" "${FD0[$p]}" "$f"
    if [ "$r" -gt $(( ${RSS0[$p]} * (100 + RSS_PCT) / 100 + 2048 )) ]; then echo "  $p: RSS grew"; fail=1; fi
    if [ "$f" -gt $(( ${FD0[$p]} + FDS )) ]; then echo "  $p: fds grew"; fail=1; fi
done
[ $errors = 0 ] || { echo "  calls failed in $errors domain-minutes"; fail=1; }
[ $events_failed = 0 ] || { echo "  $events_failed events were not confirmed"; fail=1; }
[ $http_failed = 0 ] || { echo "  $http_failed requests to the edge failed"; fail=1; }
if [ $fail = 1 ]; then echo "soak: FAILED"; exit 1; fi
echo "soak: passed (RSS within ${RSS_PCT}% + 2 MB, fds within $FDS of their start)"
