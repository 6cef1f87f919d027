// Validates Kubernetes resources against the Kubernetes schemas of the npm
// package kubernetes-models (and @kubernetes-models/keda for KEDA's kinds).
// Input: a JSON array of {file, doc} on stdin (tests/deploy/test_deploy.sh
// turns the YAML into it). Prints one line per resource; exits 1 when any
// resource is invalid or of a kind with no schema here, except the kinds in
// NO_SCHEMA, whose required fields are checked below by hand.
// NODE_PATH-free: run from tests/deploy/npm (where deps.sh installs them).
import { readFileSync } from "node:fs";

const NO_SCHEMA = {
  // the RabbitMQ Cluster Operator publishes no npm models
  "rabbitmq.com/v1beta1/RabbitmqCluster": (d) => {
    const s = d.spec || {};
    if (!Number.isInteger(s.replicas) || s.replicas < 1) throw new Error("spec.replicas must be a positive integer");
    if (s.replicas % 2 === 0) throw new Error("spec.replicas must be odd (quorum queues keep a majority)");
    if (s.image !== undefined && typeof s.image !== "string") throw new Error("spec.image must be a string");
    if (s.rabbitmq && s.rabbitmq.additionalPlugins && !Array.isArray(s.rabbitmq.additionalPlugins))
      throw new Error("spec.rabbitmq.additionalPlugins must be a list");
    if (!d.metadata || !d.metadata.name) throw new Error("metadata.name is required");
  },
};

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  const paths = [];
  if (group === "keda.sh") paths.push(`@kubernetes-models/keda/keda.sh/${version}/${kind}`);
  else if (group) paths.push(`kubernetes-models/${group}/${version}/${kind}`);
  else paths.push(`kubernetes-models/${version}/${kind}`);
  for (const p of paths) {
    try {
      const m = await import(p);
      return m[kind];
    } catch (e) {
      if (e.code !== "ERR_MODULE_NOT_FOUND") throw e;
    }
  }
  return null;
}

const items = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const { file, doc } of items) {
  const id = `${file}: ${doc.kind}/${doc.metadata && doc.metadata.name}`;
  try {
    const key = `${doc.apiVersion}/${doc.kind}`;
    if (NO_SCHEMA[key]) {
      NO_SCHEMA[key](doc);
      console.log(`ok   ${id} (no published schema: required fields checked)`);
      continue;
    }
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) throw new Error(`no schema for ${key}`);
    new Model(doc).validate();
    console.log(`ok   ${id}`);
  } catch (e) {
    bad++;
    console.log(`FAIL ${id}: ${e.message}`);
  }
}
process.exit(bad ? 1 : 0);
