#!/usr/bin/env bash
# The test runner behind `make test`, `make sanitize`, `make unit` and `make fuzz`.
#
#   tests/run.sh unit   unit tests only (no servers)
#   tests/run.sh all    unit tests, then private RabbitMQ + Redis, integration and chaos tests, a short fuzz run
#   tests/run.sh fuzz   every fuzz target for FUZZ_SECONDS (default 60) each
#
# Every test program prints "name: N passed, N failed, N skipped" last; this
# script adds them up, lists the skipped tests with their reasons and closes
# with "total: N passed, N failed, N skipped". A skipped test (SKIP in
# tests/test.h: it could not run here) is never counted as passed. A program
# that dies without its summary counts as one failure.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
BUILD=${BUILD:-build}
export BUS_TEST_BUILD=$BUILD
passed=0
failed=0
skipped=0
failed_programs=()
skipped_tests=()

run_program() { # path
    local prog=$1 out rc line p f s
    out=$(mktemp)
    echo "== $prog"
    "$prog" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out" | tail -1)
    if [ -n "$line" ]; then
        p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
        f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
        s=0
        [[ "$line" =~ ,\ ([0-9]+)\ skipped$ ]] && s=${BASH_REMATCH[1]}
        passed=$((passed + p))
        failed=$((failed + f))
        skipped=$((skipped + s))
        while IFS= read -r line; do skipped_tests+=("${line#skip }"); done < <(grep -E '^skip [^ ]+: ' "$out")
        [ "$f" -ne 0 ] || [ "$rc" -ne 0 ] && failed_programs+=("$prog")
        if [ "$f" -eq 0 ] && [ "$rc" -ne 0 ]; then failed=$((failed + 1)); fi
    else
        echo "!! $prog ended (exit $rc) without its summary line"
        failed=$((failed + 1))
        failed_programs+=("$prog")
    fi
    rm -f "$out"
}

run_dir() { # tests/unit etc.
    local dir=$1 prog
    for prog in "$BUILD/$dir"/test_*; do
        [ -x "$prog" ] || continue
        run_program "$prog"
    done
}

servers_dir=$(pwd)/$BUILD/test-servers
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_servers() {
    # 27672.. by default; when another run holds them, the next free block of ten
    local base=${BUS_TEST_PORT_BASE:-27670}
    for _ in 1 2 3 4 5 6 7 8; do
        port_busy $((base + 2)) || port_busy $((base + 3)) || port_busy $((base + 5)) || port_busy $((base + 9)) || break
        echo "ports $((base + 2))/$((base + 9)) are taken; trying $((base + 12))"
        base=$((base + 10))
    done
    export BUS_LOCAL_AMQP_PORT=${BUS_TEST_AMQP_PORT:-$((base + 2))}
    export BUS_LOCAL_DIST_PORT=${BUS_TEST_DIST_PORT:-$((base + 3))}
    export BUS_LOCAL_STREAM_PORT=${BUS_TEST_STREAM_PORT:-$((base + 4))}
    export BUS_LOCAL_REDIS_PORT=${BUS_TEST_REDIS_PORT:-$((base + 9))}
    export BUS_LOCAL_EPMD_PORT=${BUS_TEST_EPMD_PORT:-$((BUS_LOCAL_AMQP_PORT + 3))}   # the broker's own epmd (servers.sh)
    rm -rf "$servers_dir"
    mkdir -p "$servers_dir"
    trap stop_servers EXIT
    trap 'exit 130' INT TERM
    deploy/local/servers.sh start "$servers_dir" || { echo "could not start the private servers"; exit 1; }
    export BUS_AMQP_URL="amqp://guest:guest@127.0.0.1:$BUS_LOCAL_AMQP_PORT/"
    export BUS_REDIS_URL="redis://127.0.0.1:$BUS_LOCAL_REDIS_PORT/0"
    export BUS_LOCAL_DIR=$servers_dir
    export BUS_TEST_TMPDIR=$servers_dir/tmp
    export BUS_SCHEMAS_DIR=$(pwd)/schemas
    export BUS_VALIDATE_REPLIES=1   # every worker reply in the tests is checked against its result schema
    mkdir -p "$BUS_TEST_TMPDIR"
}
stop_servers() {
    deploy/local/servers.sh stop "$servers_dir" >/dev/null 2>&1 || true
}

run_fuzz() { # seconds per target
    local secs=$1 t
    for t in "$BUILD"/fuzz/fuzz_*; do
        [ -x "$t" ] || continue
        local corpus="$BUILD/fuzz-corpus/$(basename "$t")"
        local seeds="tests/fuzz/corpus/$(basename "$t" | sed 's/^fuzz_//')"   # committed seeds and regressions
        mkdir -p "$corpus"
        [ -d "$seeds" ] || seeds=
        echo "== $t for ${secs}s"
        if "$t" -max_total_time="$secs" -print_final_stats=0 -close_fd_mask=3 "$corpus" $seeds > "$BUILD/fuzz-$(basename "$t").log" 2>&1; then
            echo "ok   fuzz: $(basename "$t") (${secs}s, $(grep -c '' "$BUILD/fuzz-$(basename "$t").log") log lines)"
            passed=$((passed + 1))
        else
            echo "FAIL fuzz: $(basename "$t"): see $BUILD/fuzz-$(basename "$t").log"
            tail -30 "$BUILD/fuzz-$(basename "$t").log"
            failed=$((failed + 1))
            failed_programs+=("$t")
        fi
    done
}

case "$mode" in
unit)
    run_dir tests/unit
    ;;
all)
    run_dir tests/unit
    start_servers
    run_dir tests/integration
    run_dir tests/chaos
    if [ -z "${BUS_SANITIZE:-}" ] && [ -z "${BUS_SKIP_FUZZ:-}" ]; then
        if make --no-print-directory -j2 BUILD=build fuzz-build >/dev/null; then
            BUILD=build run_fuzz "${FUZZ_SECONDS:-10}"
        else
            echo "FAIL fuzz: the fuzz targets did not build"
            failed=$((failed + 1))
        fi
    fi
    ;;
fuzz)
    run_fuzz "${FUZZ_SECONDS:-60}"
    ;;
*)
    echo "usage: $0 unit|all|fuzz" >&2
    exit 2
    ;;
esac

if [ ${#skipped_tests[@]} -gt 0 ]; then
    echo "skipped (not run here, not counted as passed):"
    for t in "${skipped_tests[@]}"; do echo "  $t"; done
fi
if [ ${#failed_programs[@]} -gt 0 ]; then
    echo "failed: ${failed_programs[*]}"
fi
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
