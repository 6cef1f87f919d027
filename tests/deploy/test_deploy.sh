#!/usr/bin/env bash
# The deployment files under deploy/ are checked, not just written:
#   systemd     every template unit, instantiated for every program, passes
#               `systemd-analyze verify` with no message at all (an unknown key
#               is only a warning there: any output fails), with the hardening
#               options this project promises; the program each instance runs
#               exists in the build.
# Prints one line per check and "test_deploy.sh: N passed, N failed" last
# (the format tests/run.sh adds up). BUILD (default build) holds the programs.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
DOMAINS="verification alliances events notifications audit"
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check() { # name command...: ok when the command succeeds
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok   test_deploy.sh: $name"
        passed=$((passed + 1))
    else
        echo "FAIL test_deploy.sh: $name"
        printf '%s\n' "$out" | head -20 | sed 's/^/  /'
        failed=$((failed + 1))
    fi
}

# ---- systemd ---------------------------------------------------------------
HARDENING="DynamicUser=yes NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes
PrivateDevices=yes ProtectKernelTunables=yes ProtectKernelModules=yes ProtectControlGroups=yes
RestrictAddressFamilies= RestrictNamespaces=yes LockPersonality=yes MemoryDenyWriteExecute=yes
SystemCallFilter=@system-service CapabilityBoundingSet="

# verify_unit TEMPLATE INSTANCE: a copy of the template whose programs are
# the build's (systemd-analyze checks that ExecStart's program exists)
verify_unit() {
    local template=$1 instance=$2 name out
    name=$(basename "$template" | sed "s/@\.service$/@$instance.service/")
    sed "s|/usr/local/bin/|$(pwd)/$BUILD/|g" "$template" > "$tmp/$name"
    out=$(systemd-analyze verify "$tmp/$name" 2>&1)
    [ -z "$out" ] || { echo "$out"; return 1; }
}
has_hardening() { # unit
    local opt missing=
    for opt in $HARDENING; do grep -q "^$opt" "$1" || missing="$missing $opt"; done
    [ -z "$missing" ] || { echo "$1 lacks:$missing"; return 1; }
}
# The program bus@<instance> runs: the instance up to its first '-' (what
# ExecStart's shell expansion does), which must be a built program.
instance_program() { # instance
    local i=$1
    [ -x "$BUILD/bus-${i%%-*}" ] || { echo "bus@$i would run $BUILD/bus-${i%%-*}, which does not exist"; return 1; }
    grep -q "exec /usr/local/bin/bus-\"\$\${1%%%%-\*}\"' bus %i" deploy/systemd/bus@.service ||
        { echo "bus@.service's ExecStart is not the one this check knows"; return 1; }
}

if command -v systemd-analyze >/dev/null; then
    for d in $DOMAINS; do
        check "systemd: bus@$d verifies" verify_unit deploy/systemd/bus@.service "$d"
        check "systemd: bus@$d-2 runs bus-$d" instance_program "$d-2"
    done
    check "systemd: bus-gateway@1 verifies" verify_unit deploy/systemd/bus-gateway@.service 1
    for u in deploy/systemd/*.service; do check "systemd: $(basename "$u") is hardened" has_hardening "$u"; done
else
    echo "skip test_deploy.sh: systemd-analyze is not installed"
fi

echo "test_deploy.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
