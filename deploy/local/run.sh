#!/usr/bin/env bash
# `make run`: the whole platform on this machine, in the foreground.
# A private RabbitMQ and Redis (var/local), the five domain workers and the
# HTTP edge; logs in var/log/. Ctrl-C stops everything cleanly: the programs
# it started (by their pids) and the servers (deploy/local/servers.sh stop,
# which ends only what it started); nothing else on the machine is signalled.
#
# Ports (override with the same variables): BUS_LOCAL_AMQP_PORT=5672,
# BUS_LOCAL_REDIS_PORT=6379, BUS_HTTP_ADDR=127.0.0.1:8080. BUS_RUN_DIR=var
# is where the servers, the logs and the SQLite store live.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export BUS_LOCAL_AMQP_PORT=${BUS_LOCAL_AMQP_PORT:-5672}
export BUS_LOCAL_REDIS_PORT=${BUS_LOCAL_REDIS_PORT:-6379}
export BUS_HTTP_ADDR=${BUS_HTTP_ADDR:-127.0.0.1:8080}
run_dir=${BUS_RUN_DIR:-var}
mkdir -p "$run_dir/log"

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

for d in verification alliances events notifications audit; do
    "$BUILD/bus-$d" >> "$run_dir/log/$d.log" 2>&1 &
    pids+=($!)
done
"$BUILD/bus-gateway" >> "$run_dir/log/gateway.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 50); do
    "$BUILD/busctl" call alliances ping --timeout 500 >/dev/null 2>&1 && break
    sleep 0.2
done

cat <<MSG

The platform is up:
  RabbitMQ   $BUS_AMQP_URL   (private, in $run_dir/local/rabbitmq)
  Redis      $BUS_REDIS_URL  (private, in $run_dir/local/redis)
  store      $BUS_STORE
  workers    bus-verification bus-alliances bus-events bus-notifications bus-audit   (logs: $run_dir/log/)
  HTTP edge  http://$BUS_HTTP_ADDR   (open access on loopback: no BUS_API_KEYS_FILE)

Try, in another terminal:
  $BUILD/busctl status
  $BUILD/busctl call alliances ping
  curl -s http://$BUS_HTTP_ADDR/api/v1/health
  curl -s -X POST http://$BUS_HTTP_ADDR/api/v1/rpc/alliances/create -H 'Content-Type: application/json' \\
       -d '{"name":"Frost Wolves","tag":"FWS","state":2630,"leader":"discord:409449988"}'
  $BUILD/busctl publish user.forgotten '{"user":"discord:409449988"}'
  $BUILD/bus-alliances &     # one more alliances instance: it shares the work at once

Ctrl-C stops everything.
MSG
status=0
wait -n "${pids[@]}" || status=$?
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
