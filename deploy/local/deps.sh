#!/usr/bin/env bash
# Install the Debian packages the project needs, only those missing.
set -euo pipefail
packages=(build-essential pkg-config clang libclang-rt-14-dev
          librabbitmq-dev libuv1-dev libcjson-dev libhiredis-dev libcurl4-openssl-dev
          libsqlite3-dev libmongoc-dev libpcre2-dev libssl-dev node-llhttp uthash-dev
          rabbitmq-server redis-server redis-tools amqp-tools curl wrk
          yamllint gnuplot-nox chromium)   # deploy/ checks (tests/deploy/test_deploy.sh), bench plots; chromium: the /api/docs test
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The Kubernetes schemas tests/deploy/test_deploy.sh validates against (npm
# packages, in tests/deploy/npm: not committed, installed once)
install_k8s_models() {
    [ -d tests/deploy/npm/node_modules/kubernetes-models ] && [ -d tests/deploy/npm/node_modules/@kubernetes-models/keda ] && return 0
    command -v npm >/dev/null || return 0
    (cd "$(dirname "$0")/../.." && mkdir -p tests/deploy/npm &&
        npm install --no-save --no-audit --no-fund --prefix tests/deploy/npm kubernetes-models@5 @kubernetes-models/keda@2 >/dev/null) ||
        echo "npm could not install kubernetes-models: the Kubernetes schema check will be skipped" >&2
}
if [ ${#missing[@]} -eq 0 ]; then install_k8s_models; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run as root: apt-get install -y ${missing[*]}   (or: sudo make deps)" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# the packaged rabbitmq/redis services must not start system-wide: we run private ones
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.bus && chmod +x /usr/sbin/policy-rc.d.bus
had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
[ $had_policy -eq 0 ] && cp /usr/sbin/policy-rc.d.bus /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ $had_policy -eq 0 ] && rm -f /usr/sbin/policy-rc.d
rm -f /usr/sbin/policy-rc.d.bus
install_k8s_models
