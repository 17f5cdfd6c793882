// deploy/*.yaml: the example Kubernetes manifests parse, have the shape the issue asks for
// (target Deployment + Service with 3260/6060/9500 and probes, replicas as a StatefulSet of raw
// block PVCs spread over nodes, a ServiceMonitor), and only use flags and variables that exist.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../fixtures/exec.js';
import { loadTargetConfig } from '../../src/target/config.js';
import { parseSize } from '../../src/shared/cli-values.js';
import { REPLICA_USAGE } from '../../src/replica/config.js';

// Parsed YAML is untyped; the assertions below are the type check.
type Obj = Record<string, any>;

const DEPLOY = join(REPO_ROOT, 'deploy');
const docs: { file: string; doc: Obj }[] = [];
for (const file of readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml')).sort()) {
  for (const d of parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'))) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const doc = d.toJS() as Obj | null;
    if (doc !== null) docs.push({ file, doc });
  }
}

function find(kind: string, name: string): Obj {
  const hit = docs.find((d) => d.doc['kind'] === kind && d.doc['metadata']?.['name'] === name);
  if (hit === undefined) throw new Error(`no ${kind} ${name} in deploy/`);
  return hit.doc;
}

function flagsOf(words: readonly string[]): string[] {
  return words.flatMap((w) => [...w.matchAll(/(?:^|\s)(--[a-z][a-z-]*)/g)].map((m) => m[1]!));
}

/** Flags documented in a usage text ("  --flag ..." lines). */
function documentedFlags(usage: string): Set<string> {
  return new Set([...usage.matchAll(/^\s+(--[a-z][a-z-]*)/gm)].map((m) => m[1]!));
}

t.test('every document is a well-formed Kubernetes object', async (t) => {
  t.ok(docs.length >= 7, `${docs.length} documents`);
  for (const { file, doc } of docs) {
    t.type(doc['apiVersion'], 'string', `${file}: apiVersion`);
    t.type(doc['kind'], 'string', `${file}: kind`);
    t.match(doc['metadata']?.['name'], /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${file}: ${doc['kind']} has a DNS-1123 name`);
  }
});

t.test('target: Deployment + Service on 3260/6060/9500 with probes', async (t) => {
  const deployment = find('Deployment', 'vol1-target');
  const pod = deployment['spec']['template'];
  t.same(deployment['spec']['selector']['matchLabels'],
    Object.fromEntries(Object.entries(pod['metadata']['labels']).filter(([k]) => k in deployment['spec']['selector']['matchLabels'])),
    'the selector matches the pod labels');
  const [container] = pod['spec']['containers'] as Obj[];
  const ports = Object.fromEntries((container!['ports'] as Obj[]).map((p) => [p['name'], p['containerPort']]));
  t.same(ports, { iscsi: 3260, replica: 6060, metrics: 9500 });
  t.equal(container!['livenessProbe']['httpGet']['path'], '/healthz');
  t.equal(container!['readinessProbe']['httpGet']['path'], '/readyz');
  t.equal(container!['args'][0], 'target', 'the image runs the target role');
  t.ok(pod['spec']['securityContext']['runAsNonRoot'], 'the target runs as non-root');

  const service = find('Service', 'vol1-target');
  const selector = service['spec']['selector'] as Obj;
  for (const [k, v] of Object.entries(selector)) t.equal(pod['metadata']['labels'][k], v, `Service selects the target pod by ${k}`);
  t.same((service['spec']['ports'] as Obj[]).map((p) => p['port']).sort(), [3260, 6060, 9500]);
});

t.test('replicas: a StatefulSet of raw block PVCs, never two on one node', async (t) => {
  const sts = find('StatefulSet', 'vol1-replica');
  const pod = sts['spec']['template'];
  t.equal(sts['spec']['replicas'], 3);
  const [claim] = sts['spec']['volumeClaimTemplates'] as Obj[];
  t.equal(claim!['spec']['volumeMode'], 'Block', 'raw block PVC');
  const [container] = pod['spec']['containers'] as Obj[];
  t.equal(container!['volumeDevices'][0]['name'], claim!['metadata']['name'], 'the container uses the claim as a device');
  const anti = pod['spec']['affinity']['podAntiAffinity']['requiredDuringSchedulingIgnoredDuringExecution'] as Obj[];
  t.equal(anti[0]!['topologyKey'], 'kubernetes.io/hostname');
  for (const [k, v] of Object.entries(anti[0]!['labelSelector']['matchLabels'])) {
    t.equal(pod['metadata']['labels'][k], v, `anti-affinity selects the replica pods by ${k}`);
  }
  t.ok((pod['spec']['securityContext']['supplementalGroups'] as number[]).includes(6), 'the disk group opens the block device');
});

t.test('the target pod\'s config loads as the target would load it; the replica command uses known flags', async (t) => {
  const env = find('ConfigMap', 'vol1-env')['data'] as Record<string, string>;
  const configMap = find('ConfigMap', 'vol1-config')['data'] as Record<string, string>;
  const secret = find('Secret', 'vol1-chap')['stringData'] as Record<string, string>;
  const pod = find('Deployment', 'vol1-target')['spec']['template']['spec'] as Obj;
  const container = pod['containers'][0] as Obj;
  t.same((container['envFrom'] as Obj[]).map((e) => e['configMapRef']?.['name']), ['vol1-env']);
  // Files as the kubelet mounts them: each volume's keys under its mountPath.
  const files = new Map<string, string>();
  for (const mount of container['volumeMounts'] as Obj[]) {
    const volume = (pod['volumes'] as Obj[]).find((v) => v['name'] === mount['name'])!;
    const data = volume['configMap'] !== undefined ? configMap : volume['secret'] !== undefined ? secret : {};
    t.ok(volume['configMap'] === undefined || volume['configMap']['name'] === 'vol1-config');
    t.ok(volume['secret'] === undefined || volume['secret']['secretName'] === 'vol1-chap');
    for (const [k, v] of Object.entries(data)) files.set(`${mount['mountPath']}/${k}`, v);
  }
  const args = container['args'] as string[];
  t.equal(args[0], 'target');
  const loaded = loadTargetConfig(args.slice(1), env, (path) => {
    const text = files.get(path);
    if (text === undefined) throw new Error(`ENOENT: ${path} is not mounted`);
    return text;
  });
  t.ok(loaded.ok, loaded.ok ? 'the target accepts its config' : loaded.error);
  if (loaded.ok) {
    const c = loaded.config;
    t.equal(c.volumeName, 'vol1');
    t.equal(c.iqn, 'iqn.2016-09.com.openebs.cstor:vol1', "cStor's IQN for the volume");
    t.equal(c.volumeUuid, env['CSTOR_VOLUME_UUID']);
    t.equal(c.sizeBytes, 10n << 30n);
    t.equal(c.replicas, 3);
    t.equal(c.writeQuorum, 2);
    t.ok(c.externalReplicas, 'replicas come from the StatefulSet');
    t.same(c.portal, { host: '0.0.0.0', port: 3260 });
    t.same(c.replicaPort, { host: '0.0.0.0', port: 6060 });
    t.same(c.metricsPort, { host: '0.0.0.0', port: 9500 }, 'probes reach the pod IP');
    t.same(c.chap, { user: 'vol1-initiator', secret: secret['CHAP_SECRET'] }, 'the CHAP secret comes from the mounted Secret');
    t.equal(c.dataDir, '/var/lib/cstor');
    t.ok((container['volumeMounts'] as Obj[]).some((m) => m['mountPath'] === c.dataDir), 'the data dir is a mounted volume');
  }

  const replica = find('StatefulSet', 'vol1-replica')['spec']['template']['spec']['containers'][0] as Obj;
  const script = (replica['args'] as string[]).join(' ');
  const replicaFlags = documentedFlags(REPLICA_USAGE);
  for (const flag of flagsOf([script])) t.ok(replicaFlags.has(flag), `cstor-replica knows ${flag}`);
  const replicaEnv = new Set([...Object.keys(env), ...(replica['env'] as Obj[]).map((e) => e['name'] as string), 'HOSTNAME']);
  for (const v of script.matchAll(/\$\{?([A-Z_]+)/g)) t.ok(replicaEnv.has(v[1]!), `$${v[1]} is set in the replica container`);
  t.match(script, /--target vol1-target:6060/, 'replicas dial the target Service');
  // The replica formats with the volume's size as the target reads it.
  t.equal(parseSize(env['CSTOR_CAPACITY']!), 10n << 30n);
});

t.test('the ServiceMonitor scrapes the target Service on its metrics port', async (t) => {
  const monitor = find('ServiceMonitor', 'vol1-target');
  const service = find('Service', 'vol1-target');
  for (const [k, v] of Object.entries(monitor['spec']['selector']['matchLabels'])) t.equal(service['metadata']['labels'][k], v);
  const port = (monitor['spec']['endpoints'] as Obj[])[0]!;
  t.ok((service['spec']['ports'] as Obj[]).some((p) => p['name'] === port['port']), 'the endpoint names a Service port');
  t.equal(port['path'], '/metrics');
});
