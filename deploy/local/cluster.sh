#!/usr/bin/env bash
# A private RabbitMQ cluster of N nodes on this machine, for `make test-cluster`
# and for trying the platform against a cluster (BUS_QUEUE_TYPE=quorum).
#
#   deploy/local/cluster.sh start  N [DIR]   start N nodes (1..5) in DIR (default var/cluster), join
#                                            nodes 2..N to node 1 with `rabbitmqctl join_cluster`
#   deploy/local/cluster.sh stop   N [DIR]   stop every node started in DIR, then their epmd
#   deploy/local/cluster.sh status N [DIR]   which nodes run (pid, port), and the cluster as node 1 sees it
#   deploy/local/cluster.sh env    N [DIR]   print BUS_AMQP_URL (every node, comma-separated) and friends
#   deploy/local/cluster.sh kill-node  I [DIR]   SIGKILL node I (a crash; chaos tests)
#   deploy/local/cluster.sh start-node I [DIR]   start node I again; it rejoins from its own data
#   deploy/local/cluster.sh ctl I DIR ARGS...     rabbitmqctl against node I
#
# Ports (loopback only), from BUS_CLUSTER_PORT_BASE=B (default 22000, below the ephemeral range): node I
# listens for AMQP on B+10*(I-1), Erlang distribution on +1, streams on +2,
# rabbitmqctl's own distribution ports on +3..+7; the cluster's epmd, shared by
# its nodes and nobody else, on B+59. Nothing here touches port 4369 or a
# system service: every file lives below DIR.
#
# It signals only processes it started and recorded below DIR (each pid is
# checked against the process's command line before any signal), never a
# process found by name.
set -euo pipefail

cmd=${1:-}
arg=${2:-}
dir=${3:-var/cluster}
RABBIT=/usr/lib/rabbitmq/bin

usage() {
    echo "usage: $0 start|stop|status|env N [DIR] | kill-node|start-node I [DIR] | ctl I DIR ARGS..." >&2
    exit 2
}
[ -n "$cmd" ] && [[ "$arg" =~ ^[1-5]$ ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# the cluster keeps the ports it started with (recorded in DIR)
base=$(cat "$dir/port_base" 2>/dev/null || echo "${BUS_CLUSTER_PORT_BASE:-22000}")
[ "$cmd" = start ] && base=${BUS_CLUSTER_PORT_BASE:-$base}
epmd_port=$((base + 59))

amqp_port() { echo $((base + 10 * ($1 - 1))); }
node_name() { echo "c${base}n$1@localhost"; }
node_dir() { echo "$dir/n$1"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# true when process $1 is alive and its command line contains every other argument
pid_runs() {
    local pid=$1 cmdline want
    shift
    [ -n "$pid" ] || return 1
    { cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline"); } 2>/dev/null || return 1
    for want in "$@"; do [[ "$cmdline" == *"$want"* ]] || return 1; done
}

node_env() { # I
    local i=$1 nd p
    nd=$(node_dir "$i")
    p=$(amqp_port "$i")
    export HOME="$nd"
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node_name "$i")
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$p"
    export RABBITMQ_DIST_PORT=$((p + 1))
    export RABBITMQ_MNESIA_BASE="$nd/mnesia"
    export RABBITMQ_LOG_BASE="$nd/log"
    export RABBITMQ_CONFIG_FILE="$nd/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$nd/enabled_plugins"
    export RABBITMQ_PID_FILE="$nd/rabbitmq.pid"
    export RABBITMQ_CTL_DIST_PORT_MIN=$((p + 3))
    export RABBITMQ_CTL_DIST_PORT_MAX=$((p + 7))
    # our epmd only, and no Erlang program started here starts one of its own
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT="$epmd_port"
    export ERL_FLAGS="-start_epmd false"
    # Several nodes share two cores with the programs under test: schedulers
    # unbound, and no busy-waiting (a spinning idle scheduler takes the core
    # another node needs)
    export RABBITMQ_SCHEDULER_BIND_TYPE=u
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
}

ctl() { # I ARGS...
    local i=$1
    shift
    (node_env "$i" && "$RABBIT/rabbitmqctl" -n "$(node_name "$i")" "$@")
}

# The node's Erlang VM: the pid it wrote into its pid file while that process
# still runs with this node's home; before the file exists, the VM started
# with this home.
beam_pid() { # I
    local i=$1 nd pid
    nd=$(node_dir "$i")
    pid=$(cat "$nd/rabbitmq.pid" 2>/dev/null) || pid=
    if pid_runs "$pid" "-home $nd " beam; then echo "$pid"; return 0; fi
    pid=$(pgrep -f -- "-home $nd " | head -1) || true
    if pid_runs "$pid" "-home $nd " beam; then echo "$pid"; fi
}

write_node_config() { # I
    local i=$1 nd p
    nd=$(node_dir "$i")
    p=$(amqp_port "$i")
    mkdir -p "$nd/log" "$nd/mnesia"
    cat > "$nd/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$p
stream.listeners.tcp.1 = 127.0.0.1:$((p + 2))
loopback_users = none
heartbeat = 10
log.console = false
log.file.level = warning
vm_memory_high_watermark.absolute = 1GB
disk_free_limit.absolute = 50MB
CONF
    echo '[].' > "$nd/enabled_plugins"
    cp "$dir/.erlang.cookie" "$nd/.erlang.cookie"
    chmod 400 "$nd/.erlang.cookie"
}

epmd_pid_file() { echo "$dir/epmd.pid"; }
our_epmd() { pid_runs "$(cat "$(epmd_pid_file)" 2>/dev/null)" epmd "-port $epmd_port "; }
start_epmd() {
    our_epmd && return 0
    if port_busy "$epmd_port"; then
        echo "port $epmd_port is taken by a program this script did not start; pick another BUS_CLUSTER_PORT_BASE" >&2
        return 1
    fi
    setsid epmd -port "$epmd_port" -address 127.0.0.1 > "$dir/epmd.log" 2>&1 < /dev/null &
    echo $! > "$(epmd_pid_file)"
    for _ in $(seq 1 50); do port_busy "$epmd_port" && return 0; sleep 0.1; done
    echo "epmd did not start on port $epmd_port; see $dir/epmd.log" >&2
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

launch_node() { # I: starts the VM in the background, returns at once
    local i=$1 nd
    nd=$(node_dir "$i")
    if [ -n "$(beam_pid "$i")" ]; then return 0; fi
    if port_busy "$(amqp_port "$i")"; then
        echo "port $(amqp_port "$i") is taken by a program this script did not start" >&2
        return 1
    fi
    write_node_config "$i"
    (node_env "$i" && exec setsid "$RABBIT/rabbitmq-server" > "$nd/log/console.log" 2>&1 < /dev/null) &
    echo $! > "$nd/launcher.pid"
}

await_node() { # I
    local i=$1
    for _ in $(seq 1 240); do
        if ctl "$i" -q await_startup --timeout 2 >/dev/null 2>&1; then return 0; fi
        # the launcher gone and no VM: it failed (see its console log)
        [ -n "$(beam_pid "$i")" ] || pid_runs "$(cat "$(node_dir "$i")/launcher.pid" 2>/dev/null)" || break
        sleep 0.5
    done
    echo "node $i ($(node_name "$i")) did not start; see $(node_dir "$i")/log" >&2
    tail -20 "$(node_dir "$i")/log/console.log" >&2 || true
    return 1
}

start_cluster() { # N
    local n=$1 i
    echo "$n" > "$dir/nodes"
    echo "$base" > "$dir/port_base"
    [ -f "$dir/.erlang.cookie" ] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/.erlang.cookie"; chmod 400 "$dir/.erlang.cookie"; }
    start_epmd
    for i in $(seq 1 "$n"); do launch_node "$i"; done
    for i in $(seq 1 "$n"); do await_node "$i"; done
    for i in $(seq 2 "$n"); do
        [ -f "$(node_dir "$i")/joined" ] && continue
        ctl "$i" -q stop_app
        ctl "$i" -q join_cluster "$(node_name 1)"
        ctl "$i" -q start_app
        touch "$(node_dir "$i")/joined"
    done
    local running
    running=$(ctl 1 -q cluster_status --formatter json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
    if [ "$running" != "$n" ]; then
        echo "the cluster runs $running of $n nodes" >&2
        return 1
    fi
    echo "rabbitmq cluster of $n nodes up in $dir: AMQP on 127.0.0.1 ports $(for i in $(seq 1 "$n"); do printf '%s ' "$(amqp_port "$i")"; done)(epmd $epmd_port)"
}

kill_node() { # I: a crash
    local pid
    pid=$(beam_pid "$1")
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do port_busy "$(amqp_port "$1")" || break; sleep 0.1; done
    rm -f "$(node_dir "$1")/rabbitmq.pid"
}

stop_node() { # I
    local i=$1 pid
    [ -d "$(node_dir "$i")" ] || return 0
    if [ -n "$(beam_pid "$i")" ]; then ctl "$i" -q stop >/dev/null 2>&1 || true; fi
    for _ in $(seq 1 40); do [ -z "$(beam_pid "$i")" ] && break; sleep 0.25; done
    pid=$(beam_pid "$i")
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -f "$(node_dir "$i")/rabbitmq.pid" "$(node_dir "$i")/launcher.pid"
}

stop_cluster() {
    local i
    # every node ever started in DIR, whatever N says; the last first, so
    # the others do not wait for it
    for i in 5 4 3 2 1; do stop_node "$i"; done
    stop_epmd
}

status_cluster() { # N
    local n=$1 i pid state
    for i in $(seq 1 "$n"); do
        pid=$(beam_pid "$i")
        if [ -n "$pid" ]; then state="running (pid $pid)"; else state=down; fi
        echo "node $i $(node_name "$i") amqp 127.0.0.1:$(amqp_port "$i") $state"
    done
    for i in $(seq 1 "$n"); do
        if [ -n "$(beam_pid "$i")" ]; then
            ctl "$i" -q cluster_status --formatter json 2>/dev/null |
                python3 -c 'import json,sys; d=json.load(sys.stdin); print("cluster members:", " ".join(d["disk_nodes"])); print("running:", " ".join(d["running_nodes"]))' || true
            return 0
        fi
    done
}

print_env() { # N
    local n=$1 i urls=
    for i in $(seq 1 "$n"); do urls="$urls${urls:+,}amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/"; done
    echo "export BUS_AMQP_URL=$urls"
    echo "export BUS_QUEUE_TYPE=quorum"
    echo "export BUS_CLUSTER_DIR=$dir"
    echo "export BUS_CLUSTER_NODES=$n"
    echo "export BUS_CLUSTER_PORT_BASE=$base"
}

case "$cmd" in
    start) start_cluster "$arg" ;;
    stop) stop_cluster ;;
    status) status_cluster "$arg" ;;
    env) print_env "$arg" ;;
    kill-node) kill_node "$arg" ;;
    start-node) start_epmd; launch_node "$arg"; await_node "$arg" ;;
    ctl) shift 3; ctl "$arg" "$@" ;;
    *) usage ;;
esac
