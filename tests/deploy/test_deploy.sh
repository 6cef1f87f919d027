#!/usr/bin/env bash
# The deployment files under deploy/ are checked, not just written:
#   systemd     every template unit, instantiated for every program, passes
#               `systemd-analyze verify` with no message at all (an unknown key
#               is only a warning there: any output fails), with the hardening
#               options this project promises; the program each instance runs
#               exists in the build.
#   compose     deploy/docker-compose.yml parses; it runs the broker, Redis,
#               MongoDB, every program (domains with replicas, two edges behind
#               one port), Prometheus and Grafana; Prometheus scrapes every program
#   kubernetes  yamllint, and every resource valid against the Kubernetes schemas
#               (npm kubernetes-models and @kubernetes-models/keda, installed by
#               deploy/local/deps.sh into tests/deploy/npm; the RabbitmqCluster has
#               no published schema: its required fields are checked by hand);
#               every program has a Deployment with probes and resources, and a
#               PodDisruptionBudget
#   dashboard   every metric a panel of deploy/grafana/bus-dashboard.json uses is
#               registered in the code (bus_counter/bus_gauge/bus_histogram, the
#               process_* set of bus/src/metrics.c) or is one of the broker's
#               rabbitmq_prometheus metrics listed below
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

# ---- docker compose --------------------------------------------------------
compose_check() {
    python3 - "$DOMAINS" <<'PY'
import sys, yaml
domains = sys.argv[1].split()
c = yaml.safe_load(open("deploy/docker-compose.yml"))
s = c["services"]
errs = []
for need in ["rabbitmq", "redis", "mongo", "prometheus", "grafana", "edge"]:
    if need not in s: errs.append("no service " + need)
for d in domains:
    svc = s.get(d)
    if not svc: errs.append("no service " + d); continue
    if svc.get("command") != ["bus-" + d]: errs.append(d + " does not run bus-" + d)
    if d != "audit" and svc.get("deploy", {}).get("replicas", 1) < 2: errs.append(d + " has no replicas")
    if svc.get("environment", {}).get("BUS_METRICS_ADDR") != "0.0.0.0:9100": errs.append(d + " serves no metrics")
gws = [n for n, v in s.items() if v.get("command") == ["bus-gateway"]]
if len(gws) < 2: errs.append("fewer than two edges: %s" % gws)
if len(s.get("edge", {}).get("ports", [])) != 1: errs.append("the edges are not behind one port")
conf = open("deploy/compose/nginx.conf").read()
for g in gws:
    if g + ":8080" not in conf: errs.append("nginx does not send to " + g)
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
for d in domains:
    j = jobs.get("bus-" + d)
    if not j or j["dns_sd_configs"][0]["names"] != [d] or j["dns_sd_configs"][0]["port"] != 9100:
        errs.append("prometheus does not scrape every replica of " + d)
targets = jobs.get("bus-gateway", {}).get("static_configs", [{}])[0].get("targets", [])
for g in gws:
    if g + ":9100" not in targets: errs.append("prometheus does not scrape " + g)
if "rabbitmq" not in jobs: errs.append("prometheus does not scrape the broker")
for v in ["./grafana/bus-dashboard.json", "./grafana/provisioning"]:
    if not any(m.startswith(v + ":") for m in s["grafana"].get("volumes", [])): errs.append("grafana lacks " + v)
print("\n".join(errs))
sys.exit(1 if errs else 0)
PY
}
check "compose: every service, replicas, two edges behind one port, every program scraped" compose_check

# ---- kubernetes --------------------------------------------------------------
if command -v yamllint >/dev/null; then
    check "kubernetes: yamllint" yamllint -s -d '{extends: relaxed, rules: {line-length: {max: 160}}}' \
        deploy/kubernetes deploy/docker-compose.yml deploy/prometheus deploy/grafana/provisioning
else
    echo "skip test_deploy.sh: yamllint is not installed (deploy/local/deps.sh installs it)"
fi
k8s_json() {
    python3 -c '
import yaml, json, sys, glob
out = []
for f in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    for d in yaml.safe_load_all(open(f)):
        if d: out.append({"file": f.split("/")[-1], "doc": d})
json.dump(out, sys.stdout)'
}
k8s_schemas() {
    local json
    json=$(k8s_json) || return 1
    cp tests/deploy/validate_k8s.mjs tests/deploy/npm/validate_k8s.mjs
    (cd tests/deploy/npm && node validate_k8s.mjs <<<"$json")
}
if [ -d tests/deploy/npm/node_modules/kubernetes-models ] && command -v node >/dev/null; then
    check "kubernetes: every resource valid against the Kubernetes schemas" k8s_schemas
else
    echo "skip test_deploy.sh: tests/deploy/npm/node_modules/kubernetes-models is missing (deploy/local/deps.sh installs it)"
fi
k8s_programs() {
    k8s_json | python3 -c '
import json, sys
domains = sys.argv[1].split() + ["gateway"]
docs = [i["doc"] for i in json.load(sys.stdin)]
errs = []
kinds = lambda k: [d for d in docs if d["kind"] == k]
for dom in domains:
    deps = [d for d in kinds("Deployment") if d["spec"]["template"]["spec"]["containers"][0]["command"] == ["bus-" + dom]]
    if not deps: errs.append("no Deployment runs bus-" + dom); continue
    c = deps[0]["spec"]["template"]["spec"]["containers"][0]
    for k in ["livenessProbe", "readinessProbe", "resources"]:
        if k not in c: errs.append("bus-%s lacks %s" % (dom, k))
    labels = deps[0]["spec"]["selector"]["matchLabels"]
    if not any(p["spec"]["selector"]["matchLabels"] == labels for p in kinds("PodDisruptionBudget")):
        errs.append("bus-%s has no PodDisruptionBudget" % dom)
for d in kinds("ScaledObject"):
    if not any(x["metadata"]["name"] == d["spec"]["scaleTargetRef"]["name"] for x in kinds("Deployment")):
        errs.append("ScaledObject %s scales no Deployment" % d["metadata"]["name"])
if not kinds("ScaledObject"): errs.append("no scaling on backlog")
if not kinds("RabbitmqCluster"): errs.append("no RabbitmqCluster")
print("\n".join(errs))
sys.exit(1 if errs else 0)' "$DOMAINS"
}
check "kubernetes: every program has a Deployment with probes and resources, and a PodDisruptionBudget" k8s_programs

# ---- dashboard ---------------------------------------------------------------
# the broker's rabbitmq_prometheus metrics the dashboard may use (per-queue
# "detailed" families scraped by deploy/prometheus/prometheus.yml)
BROKER_METRICS="rabbitmq_detailed_queue_messages_ready rabbitmq_detailed_queue_messages rabbitmq_detailed_queue_consumers"
dashboard_metrics() {
    { grep -rhoE 'bus_(counter|gauge|histogram)\("[a-z_]+"' bus gateway workers |
          sed -E 's/bus_(counter|gauge|histogram)\("([a-z_]+)"/\1 \2/'
      grep -oE '# TYPE process_[a-z_]+' bus/src/metrics.c | sed 's/# TYPE/gauge/'
      for m in $BROKER_METRICS; do echo "gauge $m"; done; } | sort -u > "$tmp/known"
    python3 - "$tmp/known" <<'PY'
import json, re, sys
known = set()
for line in open(sys.argv[1]):
    kind, name = line.split()
    known.add(name)
    if kind == "histogram": known.update({name + "_bucket", name + "_sum", name + "_count"})
d = json.load(open("deploy/grafana/bus-dashboard.json"))
errs, used = [], set()
for p in d["panels"]:
    for t in p.get("targets", []):
        names = set(re.findall(r"\b((?:bus|process|rabbitmq)_[a-z_]+)\b", t["expr"]))
        if not names: errs.append("panel %r: no metric in %r" % (p["title"], t["expr"]))
        for n in sorted(names - known): errs.append("panel %r uses %s, which nothing exports" % (p["title"], n))
        used |= names
for want in ["bus_rpc_handler_seconds_count", "bus_rpc_errors_total", "bus_gateway_requests_total",
             "bus_gateway_rate_limited_total", "process_resident_memory_bytes", "bus_messages_dead_lettered_total",
             "rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_consumers"]:
    if want not in used: errs.append("no panel shows " + want)
print("\n".join(errs))
sys.exit(1 if errs else 0)
PY
}
check "dashboard: every metric of every panel is exported" dashboard_metrics

echo "test_deploy.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
