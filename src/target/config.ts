// Command-line configuration of the target process (`npm start -- FLAGS`).
// Pure: no I/O, no process.exit, so every flag and every error message is unit-testable;
// main.ts decides what to print and how to exit.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { isUuid, parseHostPort, parseSize } from '../shared/cli-values.js';
import { explainFlagError, mergeConfigFlags, volumeConfigFlags, VolumeConfigError, type ConfigFlag } from './volume-config.js';
import { errorMessage } from '../shared/errors.js';

export { parseSize };

export interface ChapCredentials {
  readonly user: string;
  readonly secret: string;
}

export interface TargetConfig {
  readonly portal: { readonly host: string; readonly port: number };
  /** Absolute path (resolved against the cwd at parse time so later chdir cannot move it). */
  readonly dataDir: string;
  readonly sizeBytes: bigint;
  readonly blockSize: 512 | 4096;
  readonly iqn: string;
  /** One-way CHAP: the initiator proves it knows this secret. */
  readonly chap?: ChapCredentials;
  /** Mutual CHAP: the target proves itself to the initiator with these. */
  readonly mutualChap?: ChapCredentials;
  /** Empty = every initiator name is allowed. Normalised (see normalizeIscsiName). */
  readonly allowInitiators: readonly string[];
  readonly logLevel: string;
  /** Idle seconds before a NOP-In ping (0 = no pings), and seconds to wait for its answer. */
  readonly nopInIntervalS: number;
  readonly nopInTimeoutS: number;
  /** Where replicas dial in (cStor's replica-management port; port 0 = any free port). */
  readonly replicaPort: { readonly host: string; readonly port: number };
  /** Seconds before a replica process that exited is started again. */
  readonly restartDelayS: number;
  /** Seconds I/O waits for a replica before failing with CHECK CONDITION. */
  readonly replicaHoldS: number;
  /** Replica processes (k); writes complete at a majority. */
  readonly replicas: number;
  /** Rebuild rate limit in MiB/s (0 = unlimited). */
  readonly rebuildRateMiBs: number;
  /** false: the rebuild rate stays at --rebuild-rate; absent/true: adapted to foreground load, capped by it. */
  readonly rebuildAdaptive?: boolean;
  /**
   * Replicas are started by someone else (Kubernetes: a StatefulSet dialing the replica port); the
   * target waits for r1..rK to dial in instead of running replica processes.
   */
  readonly externalReplicas: boolean;
  /** The volume's UUID when the operator assigns it (external replicas are formatted with it). */
  readonly volumeUuid?: string;
  /** The volume name replicas record (cStor: the PV name); default: the IQN's part after the last ':'. */
  readonly volumeName: string;
  /** Ids of the replicas this volume is made of (default r1..rK). */
  readonly replicaIds: readonly string[];
  /** Healthy acknowledgements a write needs (cStor's consistency factor; default and minimum ⌊k/2⌋+1). */
  readonly writeQuorum: number;
  /** Seconds a replica may take to answer a request before it is ejected (and rebuilt later). */
  readonly replicaTimeoutS: number;
  /** /metrics, /healthz and /readyz (cStor's exporter port); undefined = off. */
  readonly metricsPort: { readonly host: string; readonly port: number } | undefined;
  /** The gRPC management service (port 0 = any free port; tools find it in <data-dir>/state/endpoints.json). */
  readonly managementPort: { readonly host: string; readonly port: number };
}

/**
 * `help: true` means --help was given: print `error` (the usage text) to stdout and exit 0.
 * Otherwise print `error` to stderr and exit with a usage status (64).
 */
export type ParseTargetConfigResult =
  | { readonly ok: true; readonly config: TargetConfig }
  | { readonly ok: false; readonly error: string; readonly help?: true };

export const DEFAULT_PORTAL = '127.0.0.1:3260';
export const DEFAULT_DATA_DIR = './data';
export const DEFAULT_SIZE = '1GiB';
export const DEFAULT_IQN = 'iqn.2016-09.com.openebs.cstor:vol1';
export const DEFAULT_NOP_IN_INTERVAL_S = 5;
export const DEFAULT_NOP_IN_TIMEOUT_S = 30;
export const DEFAULT_REPLICA_PORT = '127.0.0.1:6060';
export const DEFAULT_RESTART_DELAY_S = 2;
export const DEFAULT_REPLICA_HOLD_S = 30;
export const DEFAULT_REPLICAS = 3;
export const DEFAULT_REBUILD_RATE_MIBS = 200;
export const DEFAULT_REPLICA_TIMEOUT_S = 5;
export const DEFAULT_METRICS_PORT = '127.0.0.1:9500';
export const DEFAULT_MANAGEMENT_PORT = '127.0.0.1:0';
/** cStor's IQN prefix: the default IQN is this plus the volume name. */
export const IQN_PREFIX = 'iqn.2016-09.com.openebs.cstor:';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const MIN_SIZE = 1n << 20n;
// Node's fs APIs take sizes/offsets as JS numbers or bigint up to 2^63-1; anything bigger
// cannot be backed by a file anyway.
const MAX_SIZE = (1n << 63n) - 1n;
// RFC 7143 §12.1.3 / RFC 3720 §8.2.1: CHAP secrets of at least 96 bits (12 bytes).
const MIN_SECRET_BYTES = 12;
// Initiators (open-iscsi, LIO) cap CHAP strings at 255/256 bytes; longer ones can never work.
const MAX_CHAP_BYTES = 255;
// RFC 3720 §3.2.6.1: iSCSI names are at most 223 bytes (UTF-8).
const MAX_NAME_BYTES = 223;

export const TARGET_USAGE = `usage: cstor-target [options]

  --portal HOST:PORT         listen address (default ${DEFAULT_PORTAL}; port 0 = any free port;
                             IPv6 as [ADDR]:PORT)
  --data-dir DIR             where the volume data lives (default ${DEFAULT_DATA_DIR})
  --size SIZE                volume size: bytes or K/M/G/T (binary, optional iB/B suffix),
                             e.g. 512M, 1GiB, 10G (default ${DEFAULT_SIZE}; at least 1 MiB,
                             a multiple of the block size)
  --block-size 512|4096      logical block size (default 512)
  --iqn NAME                 target name, iqn./eui./naa. format (default ${DEFAULT_IQN})
  --chap-user USER           require one-way CHAP with this user name ...
  --chap-secret SECRET       ... and this secret (12..255 bytes; or env CHAP_SECRET)
  --mutual-chap-user USER    also authenticate the target to the initiator (needs one-way CHAP) ...
  --mutual-chap-secret S     ... with this secret (or env MUTUAL_CHAP_SECRET); must differ
                             from the one-way secret
  --allow-initiator NAME     only admit this initiator name (repeatable; default: any)
  --log-level LEVEL          ${LOG_LEVELS.join('|')} (default: env LOG_LEVEL or info)
  --nop-in-interval SEC      ping an idle initiator with NOP-In after SEC seconds (default ${DEFAULT_NOP_IN_INTERVAL_S}; 0 = never)
  --nop-in-timeout SEC       drop a connection whose ping goes unanswered for SEC seconds (default ${DEFAULT_NOP_IN_TIMEOUT_S})
  --replica-port HOST:PORT   where replica processes dial in (default ${DEFAULT_REPLICA_PORT}; port 0 = any)
  --restart-delay SEC        restart a replica process that exited after SEC seconds (default ${DEFAULT_RESTART_DELAY_S})
  --replica-hold SEC         I/O waits this long for a replica to (re)connect before failing (default ${DEFAULT_REPLICA_HOLD_S})
  --replicas K               replica processes, 1..5 (default ${DEFAULT_REPLICAS}); writes complete at a majority
  --rebuild-rate MIB         rebuild rate limit in MiB/s per replica (default ${DEFAULT_REBUILD_RATE_MIBS}; 0 = unlimited)
  --rebuild-adaptive on|off  on (default): lower the rebuild rate below --rebuild-rate while foreground
                             I/O would drop under ~0.5x its level without a rebuild; off: a fixed rate
  --external-replicas        start no replica processes: wait for replicas r1..rK to dial the replica port
                             (how it runs under Kubernetes)
  --volume-uuid UUID         the volume's UUID (default: generated on first start and kept in
                             <data-dir>/volume.json; a data dir holding another UUID is refused)
  --volume-name NAME         the volume name replicas record (default: the IQN's last ':' part;
                             without --iqn the IQN becomes ${IQN_PREFIX}NAME)
  --replica-ids A,B,C        the replica ids of this volume (default r1..rK); sets K when --replicas is absent
  --write-quorum W           healthy acknowledgements a write needs (cStor's consistency factor;
                             default and minimum a majority of K)
  --replica-timeout SEC      a replica not answering a request within SEC seconds is ejected and
                             rebuilt later (default ${DEFAULT_REPLICA_TIMEOUT_S}; decimals allowed)
  --metrics-port HOST:PORT   Prometheus /metrics, /healthz, /readyz (default ${DEFAULT_METRICS_PORT};
                             port 0 = any; 'off' = none)
  --management-port HOST:PORT
                             gRPC management service for cstor-ctl (default ${DEFAULT_MANAGEMENT_PORT}: any
                             free port, published in <data-dir>/state/endpoints.json)
  --chap-secret-file FILE    read the one-way CHAP secret from FILE (a mounted Secret; trailing newline dropped)
  --config FILE              a CStorVolume-shaped YAML volume config; env CSTOR_* variables override
                             it, command-line flags override both (see README)
  --help                     print this text

The volume's data lives in replica processes on <data-dir>/replica-N.img; each start is printed as
  replica rN pid <PID>
Before waiting for replicas: replicas listening <HOST>:<PORT>
When listening, one line is printed to stdout: ready iqn=<IQN> portal=<HOST>:<PORT>
Logs (JSON) go to stderr.`;

const OPTIONS = {
  portal: { type: 'string' },
  'data-dir': { type: 'string' },
  size: { type: 'string' },
  'block-size': { type: 'string' },
  iqn: { type: 'string' },
  'chap-user': { type: 'string' },
  'chap-secret': { type: 'string' },
  'mutual-chap-user': { type: 'string' },
  'mutual-chap-secret': { type: 'string' },
  'allow-initiator': { type: 'string', multiple: true },
  'log-level': { type: 'string' },
  'nop-in-interval': { type: 'string' },
  'nop-in-timeout': { type: 'string' },
  'replica-port': { type: 'string' },
  'restart-delay': { type: 'string' },
  'replica-hold': { type: 'string' },
  replicas: { type: 'string' },
  'rebuild-rate': { type: 'string' },
  'rebuild-adaptive': { type: 'string' },
  'external-replicas': { type: 'boolean' },
  'volume-uuid': { type: 'string' },
  'volume-name': { type: 'string' },
  'replica-ids': { type: 'string' },
  'write-quorum': { type: 'string' },
  'replica-timeout': { type: 'string' },
  'metrics-port': { type: 'string' },
  'management-port': { type: 'string' },
  'chap-secret-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

class ConfigError extends Error {}

function fail(flag: string, message: string): never {
  throw new ConfigError(`--${flag}: ${message}`);
}

/**
 * `readFile` reads --chap-secret-file (injected so parsing stays testable without files); a read
 * failure is reported as that flag's error.
 */
export function parseTargetConfig(argv: readonly string[], env: NodeJS.ProcessEnv, readFile: (path: string) => string = noFiles): ParseTargetConfigResult {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false, tokens: true });
  } catch (err) {
    // parseArgs messages already name the option ("Unknown option '--foo'", "Option '--size <value>' argument missing").
    return { ok: false, error: errorMessage(err) };
  }
  const { values, tokens } = parsed;
  if (values.help === true) return { ok: false, help: true, error: TARGET_USAGE };

  try {
    // parseArgs silently keeps the last of a repeated single-valued flag; a repeated
    // --size or --chap-secret is almost certainly a scripting mistake, so refuse it.
    const seen = new Set<string>();
    for (const token of tokens) {
      if (token.kind !== 'option') continue;
      const spec = OPTIONS[token.name as keyof typeof OPTIONS];
      if ('multiple' in spec && spec.multiple) continue;
      if (seen.has(token.name)) fail(token.name, 'given more than once');
      seen.add(token.name);
    }

    const portal = parsePortal(values.portal ?? DEFAULT_PORTAL);

    const dataDirRaw = values['data-dir'] ?? DEFAULT_DATA_DIR;
    if (dataDirRaw.trim() === '') fail('data-dir', 'must not be empty');
    if (dataDirRaw.includes('\0')) fail('data-dir', 'must not contain NUL');

    const blockSizeRaw = values['block-size'] ?? '512';
    let blockSize: 512 | 4096;
    if (blockSizeRaw === '512') blockSize = 512;
    else if (blockSizeRaw === '4096') blockSize = 4096;
    else fail('block-size', `'${blockSizeRaw}' is not a supported block size (use 512 or 4096)`);

    const sizeRaw = values.size ?? DEFAULT_SIZE;
    const sizeBytes = parseSize(sizeRaw);
    if (sizeBytes === undefined) fail('size', `'${sizeRaw}' is not a size (use bytes or K/M/G/T suffixes)`);
    if (sizeBytes < MIN_SIZE) fail('size', `'${sizeRaw}' is smaller than the minimum of 1 MiB`);
    if (sizeBytes > MAX_SIZE) fail('size', `'${sizeRaw}' is larger than the maximum of 2^63-1 bytes`);
    if (sizeBytes % BigInt(blockSize) !== 0n) {
      fail('size', `'${sizeRaw}' (${sizeBytes} bytes) is not a multiple of the block size ${blockSize}`);
    }

    const volumeNameRaw = values['volume-name'];
    if (volumeNameRaw !== undefined && !/^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/.test(volumeNameRaw)) {
      fail('volume-name', `'${volumeNameRaw}' must be 1..63 lower-case letters, digits, '-' or '.' (a Kubernetes name)`);
    }
    const iqnRaw = values.iqn ?? (volumeNameRaw !== undefined ? `${IQN_PREFIX}${volumeNameRaw}` : DEFAULT_IQN);
    const iqnProblem = iscsiNameProblem(iqnRaw);
    if (iqnProblem !== undefined) fail('iqn', `'${iqnRaw}' ${iqnProblem}`);
    const volumeName = volumeNameRaw ?? volumeNameOf(normalizeIscsiName(iqnRaw));

    let secretFromFile: string | undefined;
    const secretFile = values['chap-secret-file'];
    if (secretFile !== undefined) {
      if (values['chap-secret'] !== undefined) fail('chap-secret-file', 'give the secret once: --chap-secret or --chap-secret-file');
      try {
        secretFromFile = readFile(secretFile).replace(/\r?\n$/, '');
      } catch (err) {
        fail('chap-secret-file', `cannot read ${secretFile}: ${(err as Error).message}`);
      }
    }
    const chap = chapPair(
      'chap-user', values['chap-user'],
      'chap-secret', values['chap-secret'] ?? secretFromFile, 'CHAP_SECRET', env['CHAP_SECRET'],
    );
    const mutualChap = chapPair(
      'mutual-chap-user', values['mutual-chap-user'],
      'mutual-chap-secret', values['mutual-chap-secret'], 'MUTUAL_CHAP_SECRET', env['MUTUAL_CHAP_SECRET'],
    );
    if (mutualChap !== undefined && chap === undefined) {
      fail('mutual-chap-user', 'mutual CHAP needs one-way CHAP too (--chap-user and --chap-secret)');
    }
    // RFC 3720 §8.2.1: a secret used to authenticate initiators MUST NOT also authenticate
    // targets, otherwise a reflection attack lets an attacker answer the target's own challenge.
    if (chap !== undefined && mutualChap !== undefined && chap.secret === mutualChap.secret) {
      fail('mutual-chap-secret', 'must differ from the one-way CHAP secret (RFC 3720 8.2.1)');
    }

    const allowInitiators: string[] = [];
    for (const name of values['allow-initiator'] ?? []) {
      const problem = iscsiNameProblem(name);
      if (problem !== undefined) fail('allow-initiator', `'${name}' ${problem}`);
      const normalized = normalizeIscsiName(name);
      if (!allowInitiators.includes(normalized)) allowInitiators.push(normalized);
    }

    const logLevel = values['log-level'] ?? env['LOG_LEVEL'] ?? 'info';
    if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
      const flag = values['log-level'] !== undefined ? '--log-level' : 'LOG_LEVEL';
      return { ok: false, error: `${flag}: '${logLevel}' is not a log level (use ${LOG_LEVELS.join(', ')})` };
    }

    const seconds = (flag: 'nop-in-interval' | 'nop-in-timeout' | 'restart-delay' | 'replica-hold', fallback: number, min: number): number => {
      const raw = values[flag];
      if (raw === undefined) return fallback;
      if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > 3600) {
        fail(flag, `'${raw}' is not a whole number of seconds from ${min} to 3600`);
      }
      return Number(raw);
    };
    const nopInIntervalS = seconds('nop-in-interval', DEFAULT_NOP_IN_INTERVAL_S, 0);
    const nopInTimeoutS = seconds('nop-in-timeout', DEFAULT_NOP_IN_TIMEOUT_S, 1);
    const restartDelayS = seconds('restart-delay', DEFAULT_RESTART_DELAY_S, 0);
    const replicaHoldS = seconds('replica-hold', DEFAULT_REPLICA_HOLD_S, 1);
    let replicaIds: string[] | undefined;
    if (values['replica-ids'] !== undefined) {
      replicaIds = values['replica-ids'].split(',').map((id) => id.trim());
      const bad = replicaIds.find((id) => !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(id));
      if (bad !== undefined) fail('replica-ids', `'${bad}' is not a replica id (letters, digits, '.', '_', '-'; at most 64)`);
      if (new Set(replicaIds).size !== replicaIds.length) fail('replica-ids', 'lists an id twice');
    }
    const replicasRaw = values.replicas ?? String(replicaIds?.length ?? DEFAULT_REPLICAS);
    if (!/^[1-5]$/.test(replicasRaw)) fail('replicas', `'${replicasRaw}' must be a whole number from 1 to 5`);
    const k = Number(replicasRaw);
    if (replicaIds !== undefined && replicaIds.length !== k) fail('replica-ids', `names ${replicaIds.length} replicas, --replicas is ${k}`);
    const majority = Math.floor(k / 2) + 1;
    const quorumRaw = values['write-quorum'] ?? String(majority);
    if (!/^\d$/.test(quorumRaw) || Number(quorumRaw) < majority || Number(quorumRaw) > k) {
      fail('write-quorum', `'${quorumRaw}' must be from ${majority} (a majority of ${k}) to ${k}: below a majority two targets' writes could both succeed`);
    }
    const timeoutRaw = values['replica-timeout'] ?? String(DEFAULT_REPLICA_TIMEOUT_S);
    if (!/^\d+(\.\d+)?$/.test(timeoutRaw) || Number(timeoutRaw) < 0.1 || Number(timeoutRaw) > 600) {
      fail('replica-timeout', `'${timeoutRaw}' is not a number of seconds from 0.1 to 600`);
    }
    const metricsRaw = values['metrics-port'] ?? DEFAULT_METRICS_PORT;
    const metricsPort = metricsRaw === 'off' ? undefined : parseHostPort(metricsRaw, 9500);
    if (typeof metricsPort === 'string') fail('metrics-port', metricsPort);
    const managementPort = parseHostPort(values['management-port'] ?? DEFAULT_MANAGEMENT_PORT, 0);
    if (typeof managementPort === 'string') fail('management-port', managementPort);
    const rebuildRaw = values['rebuild-rate'] ?? String(DEFAULT_REBUILD_RATE_MIBS);
    if (!/^\d{1,6}$/.test(rebuildRaw)) fail('rebuild-rate', `'${rebuildRaw}' is not a whole number of MiB/s`);
    const adaptiveRaw = values['rebuild-adaptive'];
    if (adaptiveRaw !== undefined && adaptiveRaw !== 'on' && adaptiveRaw !== 'off') fail('rebuild-adaptive', `'${adaptiveRaw}' is not on or off`);
    const replicaPort = parseHostPort(values['replica-port'] ?? DEFAULT_REPLICA_PORT, 6060);
    if (typeof replicaPort === 'string') fail('replica-port', replicaPort);
    const volumeUuidRaw = values['volume-uuid'];
    // The canonical dashed form only: it is compared as a string with what replicas announce.
    if (volumeUuidRaw !== undefined && !isUuid(volumeUuidRaw)) {
      fail('volume-uuid', `'${volumeUuidRaw}' is not a UUID (8-4-4-4-12 hex digits)`);
    }

    const config: TargetConfig = {
      portal,
      dataDir: resolve(dataDirRaw),
      sizeBytes,
      blockSize,
      iqn: normalizeIscsiName(iqnRaw),
      ...(chap !== undefined ? { chap } : {}),
      ...(mutualChap !== undefined ? { mutualChap } : {}),
      allowInitiators,
      logLevel,
      nopInIntervalS,
      nopInTimeoutS,
      replicaPort,
      restartDelayS,
      replicaHoldS,
      replicas: k,
      replicaIds: replicaIds ?? Array.from({ length: k }, (_, i) => `r${i + 1}`),
      writeQuorum: Number(quorumRaw),
      replicaTimeoutS: Number(timeoutRaw),
      metricsPort,
      managementPort,
      volumeName,
      rebuildRateMiBs: Number(rebuildRaw),
      ...(adaptiveRaw !== undefined ? { rebuildAdaptive: adaptiveRaw === 'on' } : {}),
      externalReplicas: values['external-replicas'] === true,
      ...(volumeUuidRaw !== undefined ? { volumeUuid: volumeUuidRaw.toLowerCase() } : {}),
    };
    return { ok: true, config };
  } catch (err) {
    if (err instanceof ConfigError) return { ok: false, error: err.message };
    throw err;
  }
}

function noFiles(path: string): string {
  throw new Error(`reading ${path} is not available here`);
}

/** The volume name replicas record: the part of the IQN after the last ':' (cStor: the PV name). */
function volumeNameOf(iqn: string): string {
  const name = iqn.slice(iqn.lastIndexOf(':') + 1);
  return name.length > 0 && Buffer.byteLength(name) <= 255 ? name : 'volume';
}

function parsePortal(raw: string): { host: string; port: number } {
  const parsed = parseHostPort(raw, 3260);
  if (typeof parsed === 'string') fail('portal', parsed);
  return parsed;
}

function chapPair(
  userFlag: string, user: string | undefined,
  secretFlag: string, secretFromFlag: string | undefined,
  envName: string, secretFromEnv: string | undefined,
): ChapCredentials | undefined {
  // The env variable exists so secrets stay out of argv (visible in ps); it only applies
  // when the matching user flag is given, so a stray exported variable cannot turn CHAP on.
  if (user === undefined) {
    if (secretFromFlag !== undefined) fail(secretFlag, `needs --${userFlag}`);
    return undefined;
  }
  if (user === '') fail(userFlag, 'must not be empty');
  if (Buffer.byteLength(user) > MAX_CHAP_BYTES) fail(userFlag, `is longer than ${MAX_CHAP_BYTES} bytes`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(user)) fail(userFlag, 'must not contain control characters');
  const secret = secretFromFlag ?? secretFromEnv;
  const where = secretFromFlag !== undefined ? `--${secretFlag}` : envName;
  if (secret === undefined || secret === '') {
    fail(userFlag, `needs a secret (--${secretFlag} or env ${envName})`);
  }
  const bytes = Buffer.byteLength(secret);
  if (bytes < MIN_SECRET_BYTES) {
    throw new ConfigError(
      `${where}: secret is ${bytes} bytes; CHAP secrets must be at least ${MIN_SECRET_BYTES} bytes (96 bits, RFC 7143 12.1.3)`,
    );
  }
  if (bytes > MAX_CHAP_BYTES) throw new ConfigError(`${where}: secret is longer than ${MAX_CHAP_BYTES} bytes`);
  return { user, secret };
}

/**
 * Why `name` is not a valid iSCSI name (RFC 3720 §3.2.6, RFC 3980 for naa.), or undefined when it is.
 * The text is phrased to follow the quoted name: "'X' is not ...".
 */
export function iscsiNameProblem(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `is longer than ${MAX_NAME_BYTES} bytes (RFC 3720 3.2.6.1)`;
  const lower = name.toLowerCase();
  if (lower.startsWith('iqn.')) {
    // iqn.YYYY-MM.reversed.domain[:anything]; after stringprep only lower-case ASCII letters,
    // digits, '-', '.', ':' remain in the ASCII range (non-ASCII letters are allowed).
    if (name !== lower) return 'must be lower case (iSCSI names are case-folded, RFC 3722)';
    const m = /^iqn\.(\d{4})-(\d{2})\.([^:]+)(?::(.*))?$/u.exec(name);
    if (m === null) return 'is not an iqn. name (iqn.YYYY-MM.reversed.domain[:unique], RFC 3720 3.2.6.3.1)';
    const month = Number(m[2]);
    if (month < 1 || month > 12) return `has month ${m[2]}, not 01..12`;
    const domain = m[3] ?? '';
    if (!domain.split('.').every(label => /^[\p{Ll}\p{Lo}\p{N}]([\p{Ll}\p{Lo}\p{N}-]*[\p{Ll}\p{Lo}\p{N}])?$/u.test(label))) {
      return `has '${domain}', which is not a reversed domain name`;
    }
    const rest = m[4];
    if (rest !== undefined) {
      if (rest === '') return "has nothing after ':'";
      if (!/^[\p{Ll}\p{Lo}\p{N}.:-]+$/u.test(rest)) {
        return "contains characters iSCSI names do not allow (only a-z, 0-9, '-', '.', ':')";
      }
    }
    return undefined;
  }
  if (lower.startsWith('eui.')) {
    return /^eui\.[0-9a-f]{16}$/i.test(name) ? undefined : 'is not an eui. name (eui. + 16 hex digits, RFC 3720 3.2.6.3.2)';
  }
  if (lower.startsWith('naa.')) {
    return /^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$/i.test(name)
      ? undefined
      : 'is not a naa. name (naa. + 16 or 32 hex digits, RFC 3980)';
  }
  return "is not an iSCSI name (must start with 'iqn.', 'eui.' or 'naa.')";
}

/** Canonical form for comparisons: lower-case type prefix; eui./naa. hex in upper case as the RFCs write it. */
export function normalizeIscsiName(name: string): string {
  const lower = name.toLowerCase();
  if (lower.startsWith('eui.') || lower.startsWith('naa.')) return lower.slice(0, 4) + name.slice(4).toUpperCase();
  return lower;
}

/**
 * The whole configuration: `--config FILE` (a CStorVolume-shaped YAML document), then environment
 * variables over it, then the command line over both. Errors name the file field or variable a bad
 * value came from.
 */
export function loadTargetConfig(argv: readonly string[], env: NodeJS.ProcessEnv, readFile: (path: string) => string): ParseTargetConfigResult {
  const rest: string[] = [];
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a.startsWith('--config=')) {
      if (configFile !== undefined) return { ok: false, error: '--config: given more than once' };
      configFile = a === '--config' ? argv[++i] : a.slice('--config='.length);
      if (configFile === undefined || configFile === '') return { ok: false, error: '--config: needs a file name' };
    } else {
      rest.push(a);
    }
  }
  let fromConfig: ConfigFlag[];
  try {
    let text: string | undefined;
    if (configFile !== undefined) {
      try {
        text = readFile(configFile);
      } catch (err) {
        return { ok: false, error: `--config: cannot read ${configFile}: ${(err as Error).message}` };
      }
    }
    fromConfig = volumeConfigFlags(text, env, configFile ?? 'config');
  } catch (err) {
    if (err instanceof VolumeConfigError) return { ok: false, error: err.message };
    throw err;
  }
  if (rest.includes('--help') || rest.includes('-h')) return parseTargetConfig(rest, env, readFile);
  const result = parseTargetConfig(mergeConfigFlags(fromConfig, rest), env, readFile);
  return result.ok || result.help === true ? result : { ok: false, error: explainFlagError(result.error, fromConfig, rest) };
}
