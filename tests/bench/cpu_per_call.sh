#!/usr/bin/env bash
# CPU per call of each process taking part in a load run: the measurement
# behind the table "Where the CPU of a round trip goes" in README.md.
#
#   tests/bench/cpu_per_call.sh NAME=PID [NAME=PID ...] -- COMMAND [ARGS...]
#
# Runs COMMAND (bench_rpc, baseline_rpc_client or wrk), reads the CPU time
# (user+system, /proc/PID/stat fields 14-15) of every PID before and after,
# and prints the microseconds of CPU per call of each, and of COMMAND itself.
# Calls are taken from COMMAND's output: "calls=N" (bench_rpc and the
# baseline) or wrk's "N requests in". Example, against a private broker:
#
#   tests/bench/cpu_per_call.sh broker=$(pgrep beam.smp) worker=$(pgrep bus-alliances) -- \
#       build/tests/bench/bench_rpc --service alliances --method ping --inflight 64 --seconds 4
set -euo pipefail
names=() pids=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    names+=("${1%%=*}") pids+=("${1#*=}")
    shift
done
[ "${1:-}" = "--" ] && [ $# -gt 1 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
shift
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=()
for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
out=$(mktemp)
trap 'rm -f "$out" "$out.t"' EXIT
/usr/bin/time -f "%U %S" -o "$out.t" "$@" >"$out"
calls=$(grep -o 'calls=[0-9]*' "$out" | tail -1 | cut -d= -f2 || true)
[ -n "$calls" ] || calls=$(awk '/requests in/{print $1}' "$out")
[ -n "$calls" ] && [ "$calls" -gt 0 ] || { cat "$out"; echo "no call count in the output" >&2; exit 1; }
hz=$(getconf CLK_TCK)
grep -E '^name=|Requests/sec' "$out" || true
printf '%-12s %8s us/call\n' "$(basename "$1")" "$(awk '{printf "%.1f", ($1 + $2) * 1e6 / '"$calls"'}' "$out.t")"
for i in "${!pids[@]}"; do
    t=$(($(ticks "${pids[$i]}") - before[i]))
    printf '%-12s %8s us/call\n' "${names[$i]}" "$(awk -v t="$t" -v hz="$hz" -v n="$calls" 'BEGIN{printf "%.1f", t * 1e6 / hz / n}')"
done
