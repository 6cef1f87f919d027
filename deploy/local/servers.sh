#!/usr/bin/env bash
# Start or stop a private RabbitMQ and Redis for `make run` and `make test`.
#
#   deploy/local/servers.sh start [DIR]   start both in DIR (default var/local), wait until they answer
#   deploy/local/servers.sh stop  [DIR]   stop both, remove nothing but their pid files
#   deploy/local/servers.sh env   [DIR]   print the BUS_* variables that point at them
#
# Ports are loopback-only and overridable: BUS_LOCAL_AMQP_PORT (default 5672),
# BUS_LOCAL_DIST_PORT (25672), BUS_LOCAL_STREAM_PORT (5552), BUS_LOCAL_REDIS_PORT (6379).
# This never touches a system service: every file lives below DIR.
set -euo pipefail

cmd=${1:-}
dir=${2:-var/local}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
amqp_port=${BUS_LOCAL_AMQP_PORT:-5672}
dist_port=${BUS_LOCAL_DIST_PORT:-25672}
stream_port=${BUS_LOCAL_STREAM_PORT:-5552}
redis_port=${BUS_LOCAL_REDIS_PORT:-6379}
node="bus${amqp_port}@localhost"

rabbit_env() {
    export HOME="$dir/rabbitmq"
    export RABBITMQ_NODENAME="$node"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$amqp_port"
    export RABBITMQ_DIST_PORT="$dist_port"
    export RABBITMQ_MNESIA_BASE="$dir/rabbitmq/mnesia"
    export RABBITMQ_LOG_BASE="$dir/rabbitmq/log"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/rabbitmq/enabled_plugins"
    export RABBITMQ_PID_FILE="$dir/rabbitmq/rabbitmq.pid"
    export ERL_EPMD_ADDRESS=127.0.0.1
    # This broker shares its cores with the platform's own processes (and with
    # wrk in `make bench`): Erlang's default binds each scheduler thread to one
    # core, so a scheduler whose core is busy waits even when the other core
    # is idle. Unbound, the kernel places them: on 2 cores the whole RPC path
    # through the edge cost about a quarter less CPU per request.
    export RABBITMQ_SCHEDULER_BIND_TYPE="${RABBITMQ_SCHEDULER_BIND_TYPE:-u}"
    export RABBITMQ_CTL_DIST_PORT_MIN=$((dist_port + 10000))
    export RABBITMQ_CTL_DIST_PORT_MAX=$((dist_port + 10010))
}

write_rabbit_config() {
    mkdir -p "$dir/rabbitmq/log" "$dir/rabbitmq/mnesia"
    cat > "$dir/rabbitmq/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$amqp_port
stream.listeners.tcp.1 = 127.0.0.1:$stream_port
loopback_users = none
heartbeat = 10
log.console = false
log.file.level = warning
vm_memory_high_watermark.relative = 0.3
disk_free_limit.absolute = 50MB
CONF
    echo '[rabbitmq_stream].' > "$dir/rabbitmq/enabled_plugins"
    # a stable cookie inside DIR so rabbitmqctl can talk to this node only
    [ -f "$dir/rabbitmq/.erlang.cookie" ] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/rabbitmq/.erlang.cookie"; chmod 400 "$dir/rabbitmq/.erlang.cookie"; }
}

amqp_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; }

start_rabbit() {
    rabbit_env
    if [ -f "$RABBITMQ_PID_FILE" ] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; then
        echo "rabbitmq already running (pid $(cat "$RABBITMQ_PID_FILE"))"; return 0
    fi
    write_rabbit_config
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$dir/rabbitmq/log/console.log" 2>&1 < /dev/null &
    echo $! > "$dir/rabbitmq/launcher.pid"
    for _ in $(seq 1 120); do
        if /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$node" await_startup --timeout 1 >/dev/null 2>&1; then
            echo "rabbitmq up on 127.0.0.1:$amqp_port (node $node, dir $dir/rabbitmq)"; return 0
        fi
        sleep 0.5
    done
    echo "rabbitmq did not start; see $dir/rabbitmq/log" >&2
    tail -20 "$dir/rabbitmq/log/console.log" >&2 || true
    return 1
}

beam_pids() { pgrep -f -- "-home $dir/rabbitmq " || true; }

stop_rabbit() {
    rabbit_env
    /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$node" stop >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do [ -z "$(beam_pids)" ] && break; sleep 0.25; done
    local pids; pids=$(beam_pids)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    rm -f "$dir/rabbitmq/launcher.pid"
    # epmd is started by the node; stop it when no Erlang node is left on this machine
    pgrep -x beam.smp >/dev/null || pkill -x epmd 2>/dev/null || true
}

pause_rabbit() {  # the broker hangs: it reads and answers nothing (chaos tests)
    local pids; pids=$(beam_pids)
    [ -n "$pids" ] && kill -STOP $pids
}
resume_rabbit() {
    local pids; pids=$(beam_pids)
    [ -n "$pids" ] && kill -CONT $pids
}

kill_rabbit() {  # the broker dies at once, as on a crash (chaos tests)
    local pids; pids=$(beam_pids)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    for _ in $(seq 1 40); do amqp_answers || break; sleep 0.1; done
}

start_redis() {
    mkdir -p "$dir/redis"
    if [ -f "$dir/redis/redis.pid" ] && kill -0 "$(cat "$dir/redis/redis.pid")" 2>/dev/null; then
        echo "redis already running"; return 0
    fi
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" \
        --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" \
        --daemonize yes --save '' --appendonly no
    for _ in $(seq 1 50); do
        if redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
            echo "redis up on 127.0.0.1:$redis_port"; return 0
        fi
        sleep 0.1
    done
    echo "redis did not start; see $dir/redis/redis.log" >&2; return 1
}

stop_redis() {
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$dir/redis/redis.pid"
}

print_env() {
    echo "export BUS_AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp_port/"
    echo "export BUS_REDIS_URL=redis://127.0.0.1:$redis_port/0"
    echo "export BUS_LOCAL_DIR=$dir"
    echo "export BUS_RABBIT_NODE=$node"
}

case "$cmd" in
    start) start_redis; start_rabbit ;;
    stop) stop_rabbit; stop_redis ;;
    start-rabbit) start_rabbit ;;
    stop-rabbit) stop_rabbit ;;
    kill-rabbit) kill_rabbit ;;
    pause-rabbit) pause_rabbit ;;
    resume-rabbit) resume_rabbit ;;
    start-redis) start_redis ;;
    stop-redis) stop_redis ;;
    ctl) shift 2; rabbit_env; exec /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" "$@" ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|start-rabbit|stop-rabbit|kill-rabbit|pause-rabbit|resume-rabbit|start-redis|stop-redis|env [DIR] | ctl DIR ARGS..." >&2; exit 2 ;;
esac
