#!/usr/bin/env bash
# `make test-cluster`: a private RabbitMQ cluster (deploy/local/cluster.sh) of
# BUS_CLUSTER_NODES nodes (default 3) on ports from BUS_CLUSTER_PORT_BASE
# (default 22100, below the kernel's ephemeral ports), the cluster tests against it with BUS_QUEUE_TYPE=quorum,
# then the cluster stopped. Arguments are passed to the test program (a test
# name runs only that test).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
nodes=${BUS_CLUSTER_NODES:-3}
dir=$(pwd)/$BUILD/test-cluster
export BUS_CLUSTER_PORT_BASE=${BUS_CLUSTER_PORT_BASE:-22100}
deploy/local/cluster.sh stop "$nodes" "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir/tmp"
trap 'deploy/local/cluster.sh stop "$nodes" "$dir" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
started=$(date +%s)
deploy/local/cluster.sh start "$nodes" "$dir" || { echo "could not start the cluster"; exit 1; }
echo "cluster started in $(( $(date +%s) - started )) s"
eval "$(deploy/local/cluster.sh env "$nodes" "$dir")"
export BUS_TEST_BUILD=$BUILD BUS_TEST_TMPDIR=$dir/tmp BUS_SCHEMAS_DIR=$(pwd)/schemas BUS_LOG_LEVEL=${BUS_LOG_LEVEL:-warn}
"$BUILD/tests/cluster/test_cluster" "$@"
