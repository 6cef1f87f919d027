#!/usr/bin/env bash
# Start or stop a private RabbitMQ and Redis for `make run` and `make test`.
#
#   deploy/local/servers.sh start [DIR]   start both in DIR (default var/local), wait until they answer
#   deploy/local/servers.sh stop  [DIR]   stop both, remove nothing but their pid files
#   deploy/local/servers.sh env   [DIR]   print the BUS_* variables that point at them
#
# Ports are loopback-only and overridable: BUS_LOCAL_AMQP_PORT (default 5672),
# BUS_LOCAL_DIST_PORT (25672), BUS_LOCAL_STREAM_PORT (5552), BUS_LOCAL_REDIS_PORT (6379),
# BUS_LOCAL_EPMD_PORT (the AMQP port + 3: the broker's own epmd, never the shared 4369).
# This never touches a system service: every file lives below DIR.
#
# It signals only processes it started and recorded below DIR (pid files of
# the broker, its epmd and Redis, each checked against the process's command
# line before any signal), never a process found by name: another broker,
# epmd or Redis on this machine is left alone, even one on our ports.
set -euo pipefail

cmd=${1:-}
dir=${2:-var/local}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
amqp_port=${BUS_LOCAL_AMQP_PORT:-5672}
dist_port=${BUS_LOCAL_DIST_PORT:-25672}
stream_port=${BUS_LOCAL_STREAM_PORT:-5552}
redis_port=${BUS_LOCAL_REDIS_PORT:-6379}
epmd_port=${BUS_LOCAL_EPMD_PORT:-$((amqp_port + 3))}
# The ports the servers in DIR were started with (written by every start):
# the other commands use them whatever this call's environment says, so that
# `stop` without the start's BUS_LOCAL_* still finds and stops them.
ports_file=$dir/ports
case "$cmd" in
    start | start-rabbit | start-redis) ;;
    *) if [ -f "$ports_file" ]; then . "$ports_file"; fi ;;
esac
node="bus${amqp_port}@localhost"
save_ports() {
    printf 'amqp_port=%s\ndist_port=%s\nstream_port=%s\nredis_port=%s\nepmd_port=%s\n' \
        "$amqp_port" "$dist_port" "$stream_port" "$redis_port" "$epmd_port" > "$ports_file"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# true when process $1 is alive and its command line contains every other argument
pid_runs() {
    local pid=$1 cmd want
    shift
    [ -n "$pid" ] || return 1
    { cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline"); } 2>/dev/null || return 1
    for want in "$@"; do [[ "$cmd" == *"$want"* ]] || return 1; done
}

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
    # the node and rabbitmqctl find each other through our own epmd, and no
    # Erlang program started from here starts an epmd of its own (rabbitmqctl
    # would, as a daemon nobody stops, when ours is not running)
    export ERL_EPMD_PORT="$epmd_port"
    export ERL_FLAGS="-start_epmd false"
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
# the platform's message limit (README "Message size limits"): a larger
# publish is refused by the broker, which closes the publisher's channel
max_message_size = ${BUS_LOCAL_MAX_MESSAGE_BYTES:-4194304}
CONF
    echo '[rabbitmq_stream].' > "$dir/rabbitmq/enabled_plugins"
    # a stable cookie inside DIR so rabbitmqctl can talk to this node only
    [ -f "$dir/rabbitmq/.erlang.cookie" ] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/rabbitmq/.erlang.cookie"; chmod 400 "$dir/rabbitmq/.erlang.cookie"; }
}

amqp_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; }

# The broker's epmd: started here, on a port of its own, before the node
# (which then registers with it instead of starting one on 4369); its pid
# is recorded so that stop ends this one and nothing else.
epmd_pid_file() { echo "$dir/rabbitmq/epmd.pid"; }
our_epmd() { pid_runs "$(cat "$(epmd_pid_file)" 2>/dev/null)" epmd "-port $epmd_port "; }

start_epmd() {
    mkdir -p "$dir/rabbitmq/log"
    our_epmd && return 0
    rm -f "$(epmd_pid_file)"
    if port_busy "$epmd_port"; then
        # not ours (another program, or an epmd someone else runs there): the
        # node uses it, and stop leaves it alone
        echo "port $epmd_port already answers (not an epmd started here): the broker registers there; stop will leave it running"
        return 0
    fi
    setsid epmd -port "$epmd_port" -address 127.0.0.1 > "$dir/rabbitmq/log/epmd.log" 2>&1 < /dev/null &
    echo $! > "$(epmd_pid_file)"
    for _ in $(seq 1 50); do
        port_busy "$epmd_port" && return 0
        sleep 0.1
    done
    echo "epmd did not start on port $epmd_port; see $dir/rabbitmq/log/epmd.log" >&2
    return 1
}

stop_epmd() {
    local pid
    pid=$(cat "$(epmd_pid_file)" 2>/dev/null) || return 0
    if our_epmd; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do pid_runs "$pid" epmd || break; sleep 0.1; done
    fi
    rm -f "$(epmd_pid_file)"
}

start_rabbit() {
    rabbit_env
    if [ -n "$(beam_pids)" ]; then
        echo "rabbitmq already running (pid $(beam_pids))"; return 0
    fi
    write_rabbit_config
    start_epmd
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$dir/rabbitmq/log/console.log" 2>&1 < /dev/null &
    echo $! > "$dir/rabbitmq/launcher.pid"
    for _ in $(seq 1 120); do
        if /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$node" await_startup --timeout 1 >/dev/null 2>&1; then
            # bus.rpc's alternate exchange (bus/include/bus/topology.h): a
            # request for a service nobody declared is answered not_found
            /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$node" set_policy --apply-to exchanges bus-rpc-unrouted \
                '^bus\.rpc$' '{"alternate-exchange":"bus.rpc.unrouted"}' >/dev/null 2>&1 ||
                echo "could not set the bus-rpc-unrouted policy: unknown services will time out" >&2
            echo "rabbitmq up on 127.0.0.1:$amqp_port (node $node, epmd port $epmd_port, dir $dir/rabbitmq)"; return 0
        fi
        sleep 0.5
    done
    echo "rabbitmq did not start; see $dir/rabbitmq/log" >&2
    tail -20 "$dir/rabbitmq/log/console.log" >&2 || true
    return 1
}

# The broker's Erlang VM: the pid it wrote into RABBITMQ_PID_FILE, when
# that process is still this broker (its -home is our directory); before
# that file exists (the first seconds of a start), the VM that runs with
# our directory as its home.
beam_pids() {
    local pid
    pid=$(cat "$dir/rabbitmq/rabbitmq.pid" 2>/dev/null) || pid=
    if pid_runs "$pid" "-home $dir/rabbitmq "; then echo "$pid"; return 0; fi
    pgrep -f -- "-home $dir/rabbitmq " || true
}

stop_rabbit() {
    rabbit_env
    if [ -n "$(beam_pids)" ]; then
        /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$node" stop >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 40); do [ -z "$(beam_pids)" ] && break; sleep 0.25; done
    local pids; pids=$(beam_pids)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    rm -f "$dir/rabbitmq/launcher.pid" "$dir/rabbitmq/rabbitmq.pid"
    stop_epmd
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
    if pid_runs "$(cat "$dir/redis/redis.pid" 2>/dev/null)" redis-server "127.0.0.1:$redis_port "; then
        echo "redis already running"; return 0
    fi
    if port_busy "$redis_port"; then
        echo "port $redis_port is taken by a program this script did not start; pick another: BUS_LOCAL_REDIS_PORT=..." >&2
        return 1
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

# Ours only: the pid in our pid file, still a redis-server on our port.
stop_redis() {
    local pid
    pid=$(cat "$dir/redis/redis.pid" 2>/dev/null) || pid=
    if pid_runs "$pid" redis-server "127.0.0.1:$redis_port "; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do pid_runs "$pid" redis-server || break; sleep 0.1; done
    fi
    rm -f "$dir/redis/redis.pid"
}

print_env() {
    echo "export BUS_AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp_port/"
    echo "export BUS_REDIS_URL=redis://127.0.0.1:$redis_port/0"
    echo "export BUS_LOCAL_DIR=$dir"
    echo "export BUS_RABBIT_NODE=$node"
    echo "export BUS_LOCAL_EPMD_PORT=$epmd_port"
}

case "$cmd" in
    start) save_ports; start_redis; start_rabbit ;;
    stop) stop_rabbit; stop_redis ;;
    start-rabbit) save_ports; start_rabbit ;;
    stop-rabbit) stop_rabbit ;;
    kill-rabbit) kill_rabbit ;;
    pause-rabbit) pause_rabbit ;;
    resume-rabbit) resume_rabbit ;;
    start-redis) save_ports; start_redis ;;
    stop-redis) stop_redis ;;
    ctl) shift 2; rabbit_env; exec /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" "$@" ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|start-rabbit|stop-rabbit|kill-rabbit|pause-rabbit|resume-rabbit|start-redis|stop-redis|env [DIR] | ctl DIR ARGS..." >&2; exit 2 ;;
esac
