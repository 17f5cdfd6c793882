// The volume config file (`--config FILE`): a YAML document shaped after a CStorVolume, with
// environment variables overriding it the way a container spec sets them. Pure: it turns the
// document into the target's command-line flags, so there is one validation path (config.ts) and
// flags given on the command line still win. Errors name the field (and the variable) at fault.
import { parseDocument } from 'yaml';

export interface ConfigFlag {
  readonly flag: string;
  /** undefined for boolean flags. */
  readonly value: string | undefined;
  /** Where the value came from, for error messages: `spec.capacity` or `env CSTOR_CAPACITY`. */
  readonly source: string;
}

type FieldKind = 'string' | 'size' | 'integer' | 'number' | 'duration' | 'boolean' | 'address' | 'list';

interface FieldSpec {
  readonly path: string;
  readonly flag: string;
  readonly kind: FieldKind;
  readonly env?: string;
}

// Durations accept 500ms / 5s / 2m or a bare number of seconds (the flags take seconds).
const FIELDS: readonly FieldSpec[] = [
  { path: 'metadata.name', flag: '--volume-name', kind: 'string', env: 'CSTOR_VOLUME_NAME' },
  { path: 'metadata.uid', flag: '--volume-uuid', kind: 'string', env: 'CSTOR_VOLUME_UUID' },
  { path: 'spec.iqn', flag: '--iqn', kind: 'string', env: 'CSTOR_IQN' },
  { path: 'spec.capacity', flag: '--size', kind: 'size', env: 'CSTOR_CAPACITY' },
  { path: 'spec.blockSize', flag: '--block-size', kind: 'integer', env: 'CSTOR_BLOCK_SIZE' },
  { path: 'spec.replicationFactor', flag: '--replicas', kind: 'integer', env: 'CSTOR_REPLICATION_FACTOR' },
  { path: 'spec.consistencyFactor', flag: '--write-quorum', kind: 'integer', env: 'CSTOR_CONSISTENCY_FACTOR' },
  { path: 'spec.knownReplicas', flag: '--replica-ids', kind: 'list', env: 'CSTOR_KNOWN_REPLICAS' },
  { path: 'spec.externalReplicas', flag: '--external-replicas', kind: 'boolean', env: 'CSTOR_EXTERNAL_REPLICAS' },
  { path: 'spec.targetPortal', flag: '--portal', kind: 'address', env: 'CSTOR_TARGET_PORTAL' },
  { path: 'spec.replicaPort', flag: '--replica-port', kind: 'address', env: 'CSTOR_REPLICA_PORT' },
  { path: 'spec.metricsPort', flag: '--metrics-port', kind: 'address', env: 'CSTOR_METRICS_PORT' },
  { path: 'spec.managementPort', flag: '--management-port', kind: 'address', env: 'CSTOR_MANAGEMENT_PORT' },
  { path: 'spec.dataDir', flag: '--data-dir', kind: 'string', env: 'CSTOR_DATA_DIR' },
  { path: 'spec.chap.user', flag: '--chap-user', kind: 'string', env: 'CHAP_USER' },
  { path: 'spec.chap.secretFile', flag: '--chap-secret-file', kind: 'string', env: 'CHAP_SECRET_FILE' },
  { path: 'spec.timeouts.replicaIO', flag: '--replica-timeout', kind: 'duration', env: 'CSTOR_REPLICA_IO_TIMEOUT' },
  { path: 'spec.timeouts.quorumLossHold', flag: '--replica-hold', kind: 'duration', env: 'CSTOR_QUORUM_LOSS_HOLD' },
  { path: 'spec.rebuild.rateMiBps', flag: '--rebuild-rate', kind: 'number', env: 'CSTOR_REBUILD_RATE' },
  { path: 'spec.logLevel', flag: '--log-level', kind: 'string', env: 'LOG_LEVEL' },
];

/** Top-level keys a CStorVolume-like document may carry without meaning anything here. */
const IGNORED_PATHS = new Set(['apiVersion', 'kind', 'metadata.labels', 'metadata.annotations', 'metadata.namespace', 'status']);

export class VolumeConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VolumeConfigError';
  }
}

function durationSeconds(text: string, where: string): string {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(text.trim());
  if (m === null) throw new VolumeConfigError(`${where}: '${text}' is not a duration (e.g. 500ms, 5s, 2m)`);
  const n = Number(m[1]);
  const seconds = m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
  return String(seconds);
}

/** The value as the flag's text, checked for its kind. */
function flagValue(spec: FieldSpec, raw: unknown, where: string): string | undefined {
  const type = Array.isArray(raw) ? 'a list' : raw === null ? 'null' : typeof raw === 'object' ? 'a mapping' : `a ${typeof raw}`;
  switch (spec.kind) {
    case 'boolean':
      if (raw === true || raw === 'true') return 'true';
      if (raw === false || raw === 'false') return 'false';
      throw new VolumeConfigError(`${where}: expected true or false, got ${type} '${String(raw)}'`);
    case 'list': {
      const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',').map((s) => s.trim()) : undefined;
      if (items === undefined || items.length === 0 || items.some((i) => typeof i !== 'string' || i === '')) {
        throw new VolumeConfigError(`${where}: expected a non-empty list of replica ids, got ${type}`);
      }
      return items.join(',');
    }
    case 'integer':
    case 'number':
      if (typeof raw === 'number' || (typeof raw === 'string' && raw.trim() !== '' && Number.isFinite(Number(raw)))) return String(raw).trim();
      throw new VolumeConfigError(`${where}: expected a number, got ${type} '${String(raw)}'`);
    case 'duration':
      if (typeof raw === 'number') return String(raw);
      if (typeof raw === 'string') return durationSeconds(raw, where);
      throw new VolumeConfigError(`${where}: expected a duration, got ${type}`);
    case 'size':
      // YAML reads 10Gi as a string and 1073741824 as a number; both are sizes.
      if (typeof raw === 'number') return String(raw);
      if (typeof raw === 'string') return raw.trim();
      throw new VolumeConfigError(`${where}: expected a size such as 10Gi, got ${type}`);
    case 'address':
      // A bare port (metricsPort: 9500) listens on every address, as in a container.
      if (typeof raw === 'number') return `0.0.0.0:${raw}`;
      if (typeof raw === 'string' && raw.trim() !== '') return /^\d+$/.test(raw.trim()) ? `0.0.0.0:${raw.trim()}` : raw.trim();
      throw new VolumeConfigError(`${where}: expected HOST:PORT or a port, got ${type}`);
    case 'string':
      if (typeof raw === 'string' && raw !== '') return raw;
      throw new VolumeConfigError(`${where}: expected a non-empty string, got ${type}`);
  }
}

function lookup(doc: Record<string, unknown>, path: string): unknown {
  let node: unknown = doc;
  for (const key of path.split('.')) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** Every leaf path in the document, to refuse fields we do not know (a typo must not be ignored). */
function leafPaths(node: unknown, prefix: string, out: string[]): void {
  if (IGNORED_PATHS.has(prefix)) return;
  if (node !== null && typeof node === 'object' && !Array.isArray(node)) {
    const entries = Object.entries(node as Record<string, unknown>);
    if (entries.length === 0 && prefix !== '') out.push(prefix);
    for (const [k, v] of entries) leafPaths(v, prefix === '' ? k : `${prefix}.${k}`, out);
  } else if (prefix !== '') {
    out.push(prefix);
  }
}

/**
 * The flags a config file (and the environment) stand for, in a stable order. `text` undefined =
 * no file: only the environment applies. Throws VolumeConfigError naming the field.
 */
export function volumeConfigFlags(text: string | undefined, env: NodeJS.ProcessEnv, fileName = 'config'): ConfigFlag[] {
  let doc: Record<string, unknown> = {};
  if (text !== undefined) {
    const parsed = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (parsed.errors.length > 0) throw new VolumeConfigError(`${fileName}: ${parsed.errors[0]!.message}`);
    const js: unknown = parsed.toJS();
    if (js !== null && js !== undefined) {
      if (typeof js !== 'object' || Array.isArray(js)) throw new VolumeConfigError(`${fileName}: expected a mapping at the top level`);
      doc = js as Record<string, unknown>;
    }
    const kind = doc['kind'];
    if (kind !== undefined && kind !== 'CStorVolume') throw new VolumeConfigError(`${fileName}: kind: expected CStorVolume, got '${String(kind)}'`);
    const known = new Set(FIELDS.map((f) => f.path));
    const unknown: string[] = [];
    leafPaths(doc, '', unknown);
    for (const p of unknown) {
      if (!known.has(p) && ![...known].some((k) => p.startsWith(`${k}.`))) {
        throw new VolumeConfigError(`${fileName}: ${p}: unknown field (known: ${FIELDS.map((f) => f.path).join(', ')})`);
      }
    }
  }
  const flags: ConfigFlag[] = [];
  for (const spec of FIELDS) {
    const fromEnv = spec.env !== undefined ? env[spec.env] : undefined;
    const useEnv = fromEnv !== undefined && fromEnv !== '';
    const raw = useEnv ? fromEnv : lookup(doc, spec.path);
    if (raw === undefined || raw === null) continue;
    const source = useEnv ? `env ${spec.env}` : `${fileName}: ${spec.path}`;
    const value = flagValue(spec, raw, source);
    if (spec.kind === 'boolean') {
      if (value === 'true') flags.push({ flag: spec.flag, value: undefined, source });
    } else {
      flags.push({ flag: spec.flag, value, source });
    }
  }
  return flags;
}

/** The flags as argv, leaving out any the command line sets itself (the command line wins). */
export function mergeConfigFlags(config: readonly ConfigFlag[], argv: readonly string[]): string[] {
  const given = new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]));
  return [...config.filter((c) => !given.has(c.flag)).flatMap((c) => (c.value === undefined ? [c.flag] : [c.flag, c.value])), ...argv];
}

/** Rewrites a flag parser's error (`--size: ...`) to name the config field or variable it came from. */
export function explainFlagError(error: string, config: readonly ConfigFlag[], argv: readonly string[]): string {
  const m = /^(--[a-z-]+)/.exec(error);
  if (m === null) return error;
  const fromConfig = config.find((c) => c.flag === m[1]);
  const onCommandLine = argv.some((a) => a === m[1] || a.startsWith(`${m[1]}=`));
  return fromConfig !== undefined && !onCommandLine ? `${fromConfig.source} (${m[1]}): ${error.slice(m[1]!.length + 2)}` : error;
}
