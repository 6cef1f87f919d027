#!/usr/bin/env bash
# `make run`: the whole platform on this machine, in the foreground.
# A private RabbitMQ and Redis (var/local), the five domain workers and the
# HTTP edge; logs in var/log/. Ctrl-C stops everything cleanly: the programs
# it started (by their pids) and the servers (deploy/local/servers.sh stop,
# which ends only what it started); nothing else on the machine is signalled.
#
# Ports (override with the same variables; README "Ports"): BUS_LOCAL_AMQP_PORT=5672,
# BUS_LOCAL_DIST_PORT=25672, BUS_LOCAL_STREAM_PORT=5552, BUS_LOCAL_EPMD_PORT
# (AMQP port + 3), BUS_LOCAL_REDIS_PORT=6379, BUS_HTTP_ADDR=127.0.0.1:8080,
# BUS_LOCAL_METRICS_PORT=9101 (the five workers' /metrics on 9101..9105).
# BUS_RUN_DIR=var is where the servers, the logs and the SQLite store live.
# BUS_API_KEYS_FILE (from the environment: BUS_API_KEYS_FILE=keys.jsonl make run)
# turns API keys on at the edge.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export BUS_LOCAL_AMQP_PORT=${BUS_LOCAL_AMQP_PORT:-5672}
export BUS_LOCAL_REDIS_PORT=${BUS_LOCAL_REDIS_PORT:-6379}
export BUS_HTTP_ADDR=${BUS_HTTP_ADDR:-127.0.0.1:8080}
metrics_port=${BUS_LOCAL_METRICS_PORT:-9101}
run_dir=${BUS_RUN_DIR:-var}
mkdir -p "$run_dir/log"

# SIGINT sent to make alone (kill -INT <make>; Ctrl-C reaches the whole
# foreground group, us included) is caught by make, which then waits for us
# and would wait forever. Make's handler resets SIGINT to its default before
# it waits: a parent make that caught SIGINT and no longer does
# (/proc/PID/status SigCgt, bit 2) was interrupted, and we stop. Whether make
# catches it is read here, first: a SIGINT that comes while the servers start
# must still be seen as one.
parent=$PPID
catches_int() {
    local m
    m=$(awk '/^SigCgt/ {print $2}' "/proc/$parent/status" 2>/dev/null) || return 1
    [ -n "$m" ] && (( (16#$m >> 1) & 1 ))
}
watch_make=0
[ "$(cat "/proc/$parent/comm" 2>/dev/null)" = make ] && catches_int && watch_make=1

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if port_busy "$BUS_LOCAL_AMQP_PORT" && [ ! -f "$run_dir/local/rabbitmq/launcher.pid" ]; then
    echo "port $BUS_LOCAL_AMQP_PORT is taken by another program; pick another: BUS_LOCAL_AMQP_PORT=5673 make run" >&2
    exit 1
fi

pids=()
stopping=0
stop_all() {
    stopping=1
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    deploy/local/servers.sh stop "$run_dir/local" >/dev/null 2>&1 || true
    echo "stopped."
}
trap stop_all INT TERM EXIT

deploy/local/servers.sh start "$run_dir/local"
eval "$(deploy/local/servers.sh env "$run_dir/local")"
export BUS_STORE=${BUS_STORE:-sqlite:$run_dir/bus.db}
export BUS_SCHEMAS_DIR=${BUS_SCHEMAS_DIR:-schemas}

metrics_addrs=()
for d in verification alliances events notifications audit; do
    BUS_METRICS_ADDR=127.0.0.1:$metrics_port "$BUILD/bus-$d" >> "$run_dir/log/$d.log" 2>&1 &
    pids+=($!)
    metrics_addrs+=("$d=http://127.0.0.1:$metrics_port/metrics")
    metrics_port=$((metrics_port + 1))
done
"$BUILD/bus-gateway" >> "$run_dir/log/gateway.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 50); do
    "$BUILD/busctl" call alliances ping --timeout 500 >/dev/null 2>&1 && break
    sleep 0.2
done

if [ -n "${BUS_API_KEYS_FILE:-}" ]; then
    keys="API keys REQUIRED (BUS_API_KEYS_FILE=$BUS_API_KEYS_FILE): send X-API-Key"
    key_hint="-H 'X-API-Key: <secret>' "
else
    keys="open access on loopback: no BUS_API_KEYS_FILE, API keys are NOT in force"
    key_hint=
fi
cat <<MSG

The platform is up:
  RabbitMQ   $BUS_AMQP_URL   (private, in $run_dir/local/rabbitmq)
  Redis      $BUS_REDIS_URL  (private, in $run_dir/local/redis)
  store      $BUS_STORE
  workers    bus-verification bus-alliances bus-events bus-notifications bus-audit   (logs: $run_dir/log/)
  HTTP edge  http://$BUS_HTTP_ADDR   ($keys)
  metrics    http://$BUS_HTTP_ADDR/metrics (edge, with dead letters per service); workers: ${metrics_addrs[*]}

In another terminal, first:
  export BUS_AMQP_URL=$BUS_AMQP_URL BUS_REDIS_URL=$BUS_REDIS_URL BUS_HTTP_ADDR=$BUS_HTTP_ADDR
then try:
  $BUILD/busctl status
  $BUILD/busctl call alliances ping
  curl -s http://$BUS_HTTP_ADDR/api/v1/health
  curl -s -X POST http://$BUS_HTTP_ADDR/api/v1/rpc/alliances/create $key_hint-H 'Content-Type: application/json' \\
       -d '{"name":"Frost Wolves","tag":"FWS","state":2630,"leader":"discord:409449988"}'
  $BUILD/busctl publish user.forgotten '{"user":"discord:409449988"}'
  $BUILD/bus-alliances &     # one more alliances instance: it shares the work at once

Ctrl-C stops everything.
MSG
status=0
while :; do
    exited=
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { exited=$p; break; }; done
    if [ -n "$exited" ]; then wait "$exited" || status=$?; break; fi
    if [ "$watch_make" = 1 ] && { ! kill -0 "$parent" 2>/dev/null || ! catches_int; }; then
        stop_all
        exit 0
    fi
    sleep 0.5
done
# A program that exits by itself is worth a look. But Ctrl-C reaches the
# programs too: they drain and exit 0, and bash then drops its own SIGINT
# (a child that handled the signal "consumed" it), so the INT trap may never
# run. A clean exit while every other program is ending as well is that.
sleep 0.3
alive=0
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
if [ "$stopping" = 0 ] && { [ "$status" != 0 ] || [ "$alive" -gt 0 ]; }; then
    echo "a program stopped by itself (status $status); stopping the others; see $run_dir/log/" >&2
fi
