#!/usr/bin/env bash
# Setup for the alliances rows of `make bench` (called by tests/bench/run.sh
# with the BUS_* environment and BENCH_HTTP_URL, bus-alliances running).
#
# Creates an alliance with a leader and two members through busctl, makes one
# member R2, and prints the bodies wrk sends repeatedly:
#   get_body=      params of alliances.get (a read)
#   set_rank_body= params of alliances.set_rank: the leader sets the member to
#                  R2, the rank they already have. Setting a rank a member
#                  already has is a success with no change and no event, so
#                  every repetition is a full state-changing request (marker
#                  look-up, rule checks on fresh reads) that succeeds.
# Users are random per run, so a bench database reused across runs is fine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
busctl() { timeout 15 "$BUILD/busctl" "$@"; }
compact() { tr -d '\n\t '; }

n="$$$RANDOM"
leader="discord:9${n}1"
officer="discord:9${n}2"
member="telegram:9${n}3"
out=$(busctl call alliances create "{\"name\":\"Bench $n\",\"tag\":\"BEN\",\"state\":1,\"leader\":\"$leader\"}" | compact)
id=$(printf '%s' "$out" | sed -n 's/.*"data":{"id":"\([^"]*\)".*/\1/p')
if [ -z "$id" ]; then
    echo "alliances_setup: create failed: $out" >&2
    exit 1
fi
for u in "$officer" "$member"; do
    busctl call alliances join "{\"id\":\"$id\",\"user\":\"$u\"}" >/dev/null
done
busctl call alliances set_rank "{\"actor\":\"$leader\",\"user\":\"$officer\",\"rank\":\"R4\"}" >/dev/null
busctl call alliances set_rank "{\"actor\":\"$leader\",\"user\":\"$member\",\"rank\":\"R2\"}" >/dev/null
echo "get_body={\"id\":\"$id\"}"
echo "set_rank_body={\"actor\":\"$leader\",\"user\":\"$member\",\"rank\":\"R2\"}"
