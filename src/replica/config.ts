// Command-line configuration of the replica process. Pure: main.ts prints and exits.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { formatHostPort, isUuid, parseHostPort, parseSize } from '../shared/cli-values.js';

export interface ReplicaConfig {
  readonly device: string;
  readonly volumeName: string;
  readonly volumeUuid: string | undefined;
  readonly replicaId: string;
  /** The target's replica-management port this replica dials (cStor: 6060). */
  readonly target: { readonly host: string; readonly port: number };
  /** Where this replica's gRPC control server listens (port 0 = any). */
  readonly control: { readonly host: string; readonly port: number };
  /** The control address announced to the target and peer replicas (default: the bound one). */
  readonly advertise: string | undefined;
  readonly format: { readonly capacityBytes: number; readonly blockSize: 512 | 4096; readonly chunkSize: number; readonly force: boolean } | undefined;
  readonly logLevel: string;
}

export type ParseReplicaConfigResult =
  | { readonly ok: true; readonly config: ReplicaConfig }
  | { readonly ok: false; readonly error: string; readonly help?: true };

export const DEFAULT_REPLICA_TARGET = '127.0.0.1:6060';
export const DEFAULT_CONTROL = '127.0.0.1:0';

export const REPLICA_USAGE = `usage: cstor-replica --device PATH --volume NAME --replica-id ID [options]

Serves one replica of a volume from a file, zvol or raw block device (O_DIRECT), dialing the
target's replica port and reconnecting with backoff.

  --device PATH          file or block device holding this replica
  --volume NAME          volume name (must match the device's superblock)
  --volume-uuid UUID     volume UUID (required with --format; checked otherwise)
  --replica-id ID        this replica's id (must match the device's superblock)
  --target HOST:PORT     the target's replica port to dial (default ${DEFAULT_REPLICA_TARGET})
  --control HOST:PORT    where the gRPC control service listens (default ${DEFAULT_CONTROL})
  --advertise HOST:PORT  the control address the target and peer replicas dial (default: the bound
                         --control address; set it when listening on 0.0.0.0, e.g. to the pod IP)
  --format               initialise the device first if it holds no replica (idempotent for this replica)
  --size SIZE            with --format: volume capacity (e.g. 1GiB)
  --block-size 512|4096  with --format: logical block size (default 512)
  --chunk-size BYTES     with --format: bytes per checksum entry (default 4096)
  --force                with --format: overwrite another volume's or a damaged superblock
  --log-level LEVEL      fatal|error|warn|info|debug|trace|silent (default info, env LOG_LEVEL)
  --help`;

class ConfigError extends Error {}

function fail(flag: string, message: string): never {
  throw new ConfigError(`--${flag}: ${message}`);
}


export function parseReplicaConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ParseReplicaConfigResult {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        device: { type: 'string' },
        volume: { type: 'string' },
        'volume-uuid': { type: 'string' },
        'replica-id': { type: 'string' },
        target: { type: 'string' },
        control: { type: 'string' },
        advertise: { type: 'string' },
        format: { type: 'boolean' },
        size: { type: 'string' },
        'block-size': { type: 'string' },
        'chunk-size': { type: 'string' },
        force: { type: 'boolean' },
        'log-level': { type: 'string' },
        help: { type: 'boolean' },
      },
    }));
  } catch (err) {
    return { ok: false, error: `${(err as Error).message}\n${REPLICA_USAGE}` };
  }
  if (values.help === true) return { ok: false, error: REPLICA_USAGE, help: true };
  try {
    const device = values.device ?? fail('device', 'is required');
    const volumeName = values.volume ?? fail('volume', 'is required');
    if (volumeName === '' || Buffer.byteLength(volumeName) > 255) fail('volume', 'must be 1..255 bytes');
    const replicaId = values['replica-id'] ?? fail('replica-id', 'is required');
    if (replicaId === '' || Buffer.byteLength(replicaId) > 64) fail('replica-id', 'must be 1..64 bytes');
    const volumeUuid = values['volume-uuid'];
    if (volumeUuid !== undefined && !isUuid(volumeUuid)) fail('volume-uuid', `'${volumeUuid}' is not a UUID`);
    const target = parseHostPort(values.target ?? DEFAULT_REPLICA_TARGET, 6060);
    if (typeof target === 'string') fail('target', target);
    const control = parseHostPort(values.control ?? DEFAULT_CONTROL, 0);
    if (typeof control === 'string') fail('control', control);
    let advertise: string | undefined;
    if (values.advertise !== undefined) {
      const a = parseHostPort(values.advertise, 0);
      if (typeof a === 'string') fail('advertise', a);
      if (a.port === 0 || a.host === '0.0.0.0' || a.host === '::') fail('advertise', `'${values.advertise}' must name a reachable host and a port`);
      advertise = formatHostPort(a.host, a.port);
    }
    let format: ReplicaConfig['format'];
    if (values.format === true) {
      if (volumeUuid === undefined) fail('volume-uuid', 'is required with --format');
      const size = parseSize(values.size ?? fail('size', 'is required with --format'));
      if (size === undefined || size <= 0n || size > BigInt(Number.MAX_SAFE_INTEGER)) fail('size', `'${values.size}' is not a size`);
      const blockSize = Number(values['block-size'] ?? '512');
      if (blockSize !== 512 && blockSize !== 4096) fail('block-size', `'${values['block-size']}' must be 512 or 4096`);
      const chunkSize = Number(values['chunk-size'] ?? '4096');
      if (!Number.isInteger(chunkSize) || chunkSize < 4096 || chunkSize > 1 << 20 || (chunkSize & (chunkSize - 1)) !== 0) {
        fail('chunk-size', `'${values['chunk-size']}' must be a power of two from 4096 to 1048576`);
      }
      if (size % BigInt(chunkSize) !== 0n) fail('size', `${size} bytes is not a multiple of the ${chunkSize}-byte chunk size`);
      format = { capacityBytes: Number(size), blockSize, chunkSize, force: values.force === true };
    } else {
      for (const flag of ['size', 'block-size', 'chunk-size'] as const) {
        if (values[flag] !== undefined) fail(flag, 'only applies with --format');
      }
      if (values.force === true) fail('force', 'only applies with --format');
    }
    const logLevel = values['log-level'] ?? env['LOG_LEVEL'] ?? 'info';
    if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) fail('log-level', `'${logLevel}' is not a level`);
    return {
      ok: true,
      config: { device: resolve(device), volumeName, volumeUuid: volumeUuid?.toLowerCase(), replicaId, target, control, advertise, format, logLevel },
    };
  } catch (err) {
    if (err instanceof ConfigError) return { ok: false, error: err.message };
    throw err;
  }
}
