#!/usr/bin/env bash
# A/B of a worker's RPC path between two builds, in one run: bus-alliances
# from build A, then from build B, alternating ROUNDS times, each loaded by
# the same client (A's bench_rpc, ping at 64 in flight). The worker's CPU per
# call (utime+stime from /proc over the run) is the figure that holds on a
# busy machine; calls/s and latency move with the load.
#
#   BUS_AMQP_URL=... tests/bench/ab_worker.sh BUILD_A BUILD_B [ROUNDS]
#
# Needs a broker (e.g. deploy/local/servers.sh start) and both builds made
# (`make all build/tests/bench/bench_rpc` in each). Stops only the workers it started.
set -euo pipefail
a=$1 b=$2 rounds=${3:-4}
hz=$(getconf CLK_TCK)
tmp=$(mktemp -d)
for round in $(seq 1 "$rounds"); do
    for side in A B; do
        dir=$a; [ "$side" = B ] && dir=$b
        BUS_STORE="sqlite:$tmp/$side.db" BUS_LOG_LEVEL=warn "$dir/bus-alliances" >"$tmp/$side.log" 2>&1 &
        pid=$!
        sleep 2
        t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
        line=$("$a/tests/bench/bench_rpc" --service alliances --method ping --inflight 64 --seconds 4 --warmup 0)
        t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
        calls=$(sed -n 's/.*calls=\([0-9]*\).*/\1/p' <<<"$line")
        us=$(awk -v t=$((t1 - t0)) -v n="$calls" -v hz="$hz" 'BEGIN{ if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }')
        echo "round=$round build=$side worker_us_per_call=$us $line"
        kill -TERM "$pid"
        wait "$pid" || true
    done
done
rm -rf "$tmp"
