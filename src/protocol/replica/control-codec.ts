// Wire codec and typed client for the replica control service (replica-control.proto). Messages are
// encoded with protobufjs reflection; uint64 fields become JS numbers at this edge and anything above
// 2^53 - 1 is refused rather than silently rounded.
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

// ---- messages ---------------------------------------------------------------------------------

export type StatusRequest = Readonly<Record<string, never>>;

export interface ReplicaCounters {
  readonly reads: number;
  readonly writes: number;
  readonly syncs: number;
  readonly unmaps: number;
  readonly writeZeroes: number;
  readonly readBytes: number;
  readonly writeBytes: number;
  readonly staleChunksSkipped: number;
  readonly checksumMismatches: number;
  readonly chunksNeedingRepair: number;
  readonly inflight: number;
  readonly badFrames: number;
}

export interface StatusReply {
  readonly volumeName: string;
  readonly volumeUuid: string;
  readonly replicaId: string;
  /** "ready", "rebuilding", "closing", ... */
  readonly state: string;
  readonly epoch: number;
  readonly checkpointedIoSeq: number;
  readonly highestIoSeq: number;
  readonly capacityBytes: number;
  readonly blockSize: number;
  readonly chunkSize: number;
  readonly uptimeSeconds: number;
  readonly pid: number;
  readonly counters: ReplicaCounters;
  readonly dataConnected: boolean;
  /** The last or current rebuild of this replica; absent when none was started. */
  readonly rebuild?: RebuildStatus;
}

export type RebuildState = 'idle' | 'running' | 'backoff' | 'done' | 'failed';

export interface RebuildStatus {
  readonly state: RebuildState;
  readonly bytesDone: number;
  /** Estimate (0 = unknown); never below bytesDone. */
  readonly bytesTotal: number;
  readonly rateBytesPerSec: number;
  /** -1 = unknown. */
  readonly etaSeconds: number;
  readonly source: string;
  readonly attempts: number;
  readonly lastError: string;
}

export interface RebuildEstimateReply {
  readonly bytes: number;
  readonly chunks: number;
}

export interface StartRebuildRequest {
  readonly sourceAddress: string;
  readonly sinceIoSeq: number;
  /** 0 = unlimited. */
  readonly rateBytesPerSec: number;
  readonly volumeUuid: string;
}

export interface StartRebuildReply {
  readonly started: boolean;
}

export interface SetRebuildRateRequest {
  /** 0 = unlimited. */
  readonly rateBytesPerSec: number;
}

export interface SetRebuildRateReply {
  /** false when no rebuild is running. */
  readonly applied: boolean;
}

/** The target's metadata blob on a replica (GetTargetState's reply, PutTargetState's request). */
export interface TargetStateMessage {
  /** 0 = nothing stored. */
  readonly generation: number;
  readonly epoch: number;
  readonly entries: ReadonlyMap<string, Buffer>;
}
export type GetTargetStateRequest = Readonly<Record<string, never>>;
export interface PutTargetStateReply {
  readonly generation: number;
}

export interface SetEpochRequest {
  readonly epoch: number;
  /** Refuse the epoch unless it is above the persisted one (a target start claiming it). */
  readonly exclusive?: boolean;
}
export interface SetEpochReply {
  readonly epoch: number;
}
export interface ResizeRequest {
  readonly capacityBytes: number;
}
export interface ResizeReply {
  readonly capacityBytes: number;
}

export interface RebuildRequest {
  readonly sinceIoSeq: number;
  readonly fromOffset: number;
  /** 0 = server default (DEFAULT_MAX_RUN_BYTES); the server clamps to MAX_RUN_BYTES. */
  readonly maxRunBytes: number;
  readonly volumeUuid: string;
}

export interface ChunkRun {
  readonly offset: number;
  readonly length: number;
  /** One entry per chunk. */
  readonly ioSeqs: Float64Array;
  readonly crcs: Uint32Array;
  /** One byte per chunk: 1 when the chunk is deallocated/zero. */
  readonly zeroMask: Uint8Array;
  /** All `length` bytes, zero chunks included. */
  readonly data: Buffer;
}

export const DEFAULT_MAX_RUN_BYTES = 1024 * 1024;
export const MAX_RUN_BYTES = 8 * 1024 * 1024;
/** Headroom over MAX_RUN_BYTES for the per-chunk arrays (≤ 15 bytes per 4 KiB chunk) and framing. */
export const MAX_CONTROL_MESSAGE_BYTES = MAX_RUN_BYTES + 1024 * 1024;

// ---- uint64 edge ------------------------------------------------------------------------------

/** A uint64 field outside 0..2^53-1 (or not an integer): it cannot be carried exactly as a JS number. */
export class U64RangeError extends RangeError {
  readonly field: string;
  constructor(field: string, value: string) {
    super(`${field}: ${value} is not a uint64 within 0..${Number.MAX_SAFE_INTEGER}`);
    this.name = 'U64RangeError';
    this.field = field;
  }
}

/** protobufjs hands uint64 back as a Long (the `long` package is its dependency) or, without it, a number. */
interface LongLike {
  readonly low: number;
  readonly high: number;
  toNumber(): number;
  toString(): string;
}

function checkU64(value: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new U64RangeError(field, String(value));
  return value;
}

function fromU64(value: unknown, field: string): number {
  if (value === undefined || value === null) return 0;
  if (typeof value === 'number') return checkU64(value, field);
  const long = value as LongLike;
  // Unsigned: anything with bits above 2^53 in the high word is out of range.
  if ((long.high >>> 0) > 0x1fffff) throw new U64RangeError(field, long.toString());
  return long.toNumber();
}

function checkU32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`${field}: ${value} is not a uint32`);
  return value;
}

// ---- protobufjs types -------------------------------------------------------------------------

// The .proto sits next to this module both in src/ (tests run the .ts) and in dist/src/ (the build copies it).
const PROTO_PATH = fileURLToPath(new URL('./replica-control.proto', import.meta.url));
const PACKAGE = 'cstor.replica.v1';
const root = protobuf.loadSync(PROTO_PATH);
root.resolveAll();
const type = (name: string): protobuf.Type => root.lookupType(`${PACKAGE}.${name}`);

/** Decoded protobufjs message: fields by camelCase name, absent ones from prototype defaults. */
type Raw = Record<string, unknown>;

export interface MessageCodec<T> {
  /** Validates and encodes; throws U64RangeError/RangeError on values the wire cannot carry exactly. */
  encode(value: T): Buffer;
  /** Decodes and validates; throws on malformed bytes or out-of-range values. */
  decode(bytes: Uint8Array): T;
}

function codec<T>(name: string, toWire: (value: T) => Raw, fromWire: (raw: Raw) => T): MessageCodec<T> {
  const t = type(name);
  return {
    encode: (value) => Buffer.from(t.encode(toWire(value)).finish()),
    decode: (bytes) => fromWire(t.decode(bytes) as unknown as Raw),
  };
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
const bytesOf = (v: unknown): Buffer => {
  if (v instanceof Uint8Array) return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return Buffer.alloc(0);
};

const COUNTER_FIELDS = [
  'reads', 'writes', 'syncs', 'unmaps', 'writeZeroes', 'readBytes', 'writeBytes', 'staleChunksSkipped',
  'checksumMismatches', 'chunksNeedingRepair', 'inflight', 'badFrames',
] as const satisfies readonly (keyof ReplicaCounters)[];

function countersToWire(c: ReplicaCounters): Raw {
  const out: Raw = {};
  for (const f of COUNTER_FIELDS) out[f] = checkU64(c[f], `counters.${f}`);
  return out;
}

function countersFromWire(raw: unknown): ReplicaCounters {
  const r = (raw ?? {}) as Raw;
  const out: Record<string, number> = {};
  for (const f of COUNTER_FIELDS) out[f] = fromU64(r[f], `counters.${f}`);
  return out as unknown as ReplicaCounters;
}

const REBUILD_STATES: readonly RebuildState[] = ['idle', 'running', 'backoff', 'done', 'failed'];

function rebuildStatusToWire(m: RebuildStatus): Raw {
  return {
    state: m.state,
    bytesDone: checkU64(m.bytesDone, 'rebuild.bytes_done'),
    bytesTotal: checkU64(m.bytesTotal, 'rebuild.bytes_total'),
    rateBytesPerSec: m.rateBytesPerSec,
    etaSeconds: m.etaSeconds,
    source: m.source,
    attempts: checkU32(m.attempts, 'rebuild.attempts'),
    lastError: m.lastError,
  };
}

function rebuildStatusFromWire(raw: unknown): RebuildStatus | undefined {
  if (raw === undefined || raw === null) return undefined;
  const r = raw as Raw;
  const state = str(r['state']);
  return {
    // An unknown state from a newer peer reads as idle rather than failing the whole Status call.
    state: (REBUILD_STATES as readonly string[]).includes(state) ? (state as RebuildState) : 'idle',
    bytesDone: fromU64(r['bytesDone'], 'rebuild.bytes_done'),
    bytesTotal: fromU64(r['bytesTotal'], 'rebuild.bytes_total'),
    rateBytesPerSec: num(r['rateBytesPerSec']),
    etaSeconds: num(r['etaSeconds']),
    source: str(r['source']),
    attempts: num(r['attempts']),
    lastError: str(r['lastError']),
  };
}

function chunkRunToWire(m: ChunkRun): Raw {
  const n = m.ioSeqs.length;
  if (m.crcs.length !== n || m.zeroMask.length !== n) {
    throw new RangeError(`ChunkRun: ${n} io_seqs, ${m.crcs.length} crcs, ${m.zeroMask.length} zero_mask entries`);
  }
  if (m.data.length !== m.length) throw new RangeError(`ChunkRun: data is ${m.data.length} bytes, length ${m.length}`);
  for (let i = 0; i < n; i++) checkU64(m.ioSeqs[i]!, 'io_seqs');
  // Typed arrays go straight to the protobufjs writer (it only indexes them).
  return { offset: checkU64(m.offset, 'offset'), length: checkU64(m.length, 'length'), ioSeqs: m.ioSeqs, crcs: m.crcs, zeroMask: m.zeroMask, data: m.data };
}

function chunkRunFromWire(r: Raw): ChunkRun {
  const seqsRaw = (r['ioSeqs'] ?? []) as readonly unknown[];
  const crcsRaw = (r['crcs'] ?? []) as readonly number[];
  const ioSeqs = new Float64Array(seqsRaw.length);
  for (let i = 0; i < seqsRaw.length; i++) ioSeqs[i] = fromU64(seqsRaw[i], 'io_seqs');
  const run: ChunkRun = {
    offset: fromU64(r['offset'], 'offset'),
    length: fromU64(r['length'], 'length'),
    ioSeqs,
    crcs: Uint32Array.from(crcsRaw),
    zeroMask: bytesOf(r['zeroMask']),
    data: bytesOf(r['data']),
  };
  if (run.crcs.length !== ioSeqs.length || run.zeroMask.length !== ioSeqs.length || run.data.length !== run.length) {
    throw new RangeError(`ChunkRun at ${run.offset}: inconsistent per-chunk arrays or data length`);
  }
  return run;
}

export const codecs = {
  statusRequest: codec<StatusRequest>('StatusRequest', () => ({}), () => ({})),
  statusReply: codec<StatusReply>(
    'StatusReply',
    (m) => ({
      volumeName: m.volumeName, volumeUuid: m.volumeUuid, replicaId: m.replicaId, state: m.state,
      epoch: checkU64(m.epoch, 'epoch'),
      checkpointedIoSeq: checkU64(m.checkpointedIoSeq, 'checkpointed_io_seq'),
      highestIoSeq: checkU64(m.highestIoSeq, 'highest_io_seq'),
      capacityBytes: checkU64(m.capacityBytes, 'capacity_bytes'),
      blockSize: checkU32(m.blockSize, 'block_size'),
      chunkSize: checkU32(m.chunkSize, 'chunk_size'),
      uptimeSeconds: m.uptimeSeconds,
      pid: checkU32(m.pid, 'pid'),
      counters: countersToWire(m.counters),
      dataConnected: m.dataConnected,
      ...(m.rebuild === undefined ? {} : { rebuild: rebuildStatusToWire(m.rebuild) }),
    }),
    (r) => ({
      volumeName: str(r['volumeName']), volumeUuid: str(r['volumeUuid']), replicaId: str(r['replicaId']), state: str(r['state']),
      epoch: fromU64(r['epoch'], 'epoch'),
      checkpointedIoSeq: fromU64(r['checkpointedIoSeq'], 'checkpointed_io_seq'),
      highestIoSeq: fromU64(r['highestIoSeq'], 'highest_io_seq'),
      capacityBytes: fromU64(r['capacityBytes'], 'capacity_bytes'),
      blockSize: num(r['blockSize']),
      chunkSize: num(r['chunkSize']),
      uptimeSeconds: num(r['uptimeSeconds']),
      pid: num(r['pid']),
      counters: countersFromWire(r['counters']),
      dataConnected: r['dataConnected'] === true,
      ...((rebuild) => (rebuild === undefined ? {} : { rebuild }))(rebuildStatusFromWire(r['rebuild'])),
    }),
  ),
  setEpochRequest: codec<SetEpochRequest>('SetEpochRequest',
    (m) => ({ epoch: checkU64(m.epoch, 'epoch'), exclusive: m.exclusive === true }),
    (r) => ({ epoch: fromU64(r['epoch'], 'epoch'), ...(r['exclusive'] === true ? { exclusive: true } : {}) })),
  setEpochReply: codec<SetEpochReply>('SetEpochReply',
    (m) => ({ epoch: checkU64(m.epoch, 'epoch') }), (r) => ({ epoch: fromU64(r['epoch'], 'epoch') })),
  resizeRequest: codec<ResizeRequest>('ResizeRequest',
    (m) => ({ capacityBytes: checkU64(m.capacityBytes, 'capacity_bytes') }),
    (r) => ({ capacityBytes: fromU64(r['capacityBytes'], 'capacity_bytes') })),
  resizeReply: codec<ResizeReply>('ResizeReply',
    (m) => ({ capacityBytes: checkU64(m.capacityBytes, 'capacity_bytes') }),
    (r) => ({ capacityBytes: fromU64(r['capacityBytes'], 'capacity_bytes') })),
  rebuildRequest: codec<RebuildRequest>(
    'RebuildRequest',
    (m) => ({
      sinceIoSeq: checkU64(m.sinceIoSeq, 'since_io_seq'),
      fromOffset: checkU64(m.fromOffset, 'from_offset'),
      maxRunBytes: checkU64(m.maxRunBytes, 'max_run_bytes'),
      volumeUuid: m.volumeUuid,
    }),
    (r) => ({
      sinceIoSeq: fromU64(r['sinceIoSeq'], 'since_io_seq'),
      fromOffset: fromU64(r['fromOffset'], 'from_offset'),
      maxRunBytes: fromU64(r['maxRunBytes'], 'max_run_bytes'),
      volumeUuid: str(r['volumeUuid']),
    }),
  ),
  chunkRun: codec<ChunkRun>('ChunkRun', chunkRunToWire, chunkRunFromWire),
  rebuildEstimateReply: codec<RebuildEstimateReply>('RebuildEstimateReply',
    (m) => ({ bytes: checkU64(m.bytes, 'bytes'), chunks: checkU64(m.chunks, 'chunks') }),
    (r) => ({ bytes: fromU64(r['bytes'], 'bytes'), chunks: fromU64(r['chunks'], 'chunks') })),
  startRebuildRequest: codec<StartRebuildRequest>(
    'StartRebuildRequest',
    (m) => ({
      sourceAddress: m.sourceAddress,
      sinceIoSeq: checkU64(m.sinceIoSeq, 'since_io_seq'),
      rateBytesPerSec: checkU64(m.rateBytesPerSec, 'rate_bytes_per_sec'),
      volumeUuid: m.volumeUuid,
    }),
    (r) => ({
      sourceAddress: str(r['sourceAddress']),
      sinceIoSeq: fromU64(r['sinceIoSeq'], 'since_io_seq'),
      rateBytesPerSec: fromU64(r['rateBytesPerSec'], 'rate_bytes_per_sec'),
      volumeUuid: str(r['volumeUuid']),
    }),
  ),
  startRebuildReply: codec<StartRebuildReply>('StartRebuildReply',
    (m) => ({ started: m.started }), (r) => ({ started: r['started'] === true })),
  setRebuildRateRequest: codec<SetRebuildRateRequest>('SetRebuildRateRequest',
    (m) => ({ rateBytesPerSec: checkU64(m.rateBytesPerSec, 'rate_bytes_per_sec') }),
    (r) => ({ rateBytesPerSec: fromU64(r['rateBytesPerSec'], 'rate_bytes_per_sec') })),
  setRebuildRateReply: codec<SetRebuildRateReply>('SetRebuildRateReply',
    (m) => ({ applied: m.applied }), (r) => ({ applied: r['applied'] === true })),
  getTargetStateRequest: codec<GetTargetStateRequest>('GetTargetStateRequest', () => ({}), () => ({})),
  targetState: codec<TargetStateMessage>(
    'TargetState',
    (m) => ({
      generation: checkU64(m.generation, 'generation'),
      epoch: checkU64(m.epoch, 'epoch'),
      entries: [...m.entries].map(([key, value]) => ({ key, value })),
    }),
    (r) => {
      const entries = new Map<string, Buffer>();
      for (const e of (r['entries'] ?? []) as readonly Raw[]) {
        const key = str(e['key']);
        if (entries.has(key)) throw new RangeError(`TargetState: duplicate key ${JSON.stringify(key)}`);
        entries.set(key, Buffer.from(bytesOf(e['value'])));
      }
      return { generation: fromU64(r['generation'], 'generation'), epoch: fromU64(r['epoch'], 'epoch'), entries };
    },
  ),
  putTargetStateReply: codec<PutTargetStateReply>('PutTargetStateReply',
    (m) => ({ generation: checkU64(m.generation, 'generation') }), (r) => ({ generation: fromU64(r['generation'], 'generation') })),
} as const;

// ---- service definition -----------------------------------------------------------------------

const SERVICE_PATH = `/${PACKAGE}.ReplicaControl`;

/** A request as the server sees it: decoding never throws there, so a bad value becomes INVALID_ARGUMENT, not INTERNAL. */
export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: Error };

function decodeSafely<T>(c: MessageCodec<T>): (bytes: Buffer) => Decoded<T> {
  return (bytes) => {
    try {
      return { ok: true, value: c.decode(bytes) };
    } catch (err) {
      return { ok: false, error: err instanceof Error ? err : new Error(String(err)) };
    }
  };
}

const passThrough = (bytes: Buffer): Buffer => bytes;

function method<Req>(name: string, request: MessageCodec<Req>, responseStream: boolean): grpc.MethodDefinition<Decoded<Req>, Buffer> {
  return {
    path: `${SERVICE_PATH}/${name}`,
    originalName: name,
    requestStream: false,
    responseStream,
    requestSerialize: () => {
      throw new Error('server-side definition: requests are encoded by createReplicaControlClient');
    },
    requestDeserialize: decodeSafely(request),
    // Replies are encoded by the server before write(): encode errors surface in the handler and the
    // byte size is known for backpressure accounting.
    responseSerialize: passThrough,
    responseDeserialize: passThrough,
  };
}

/** Server side of ReplicaControl: requests arrive as Decoded<T>, replies are written pre-encoded (codecs.*.encode). */
export const replicaControlServiceDefinition = {
  status: method('Status', codecs.statusRequest, false),
  setEpoch: method('SetEpoch', codecs.setEpochRequest, false),
  resize: method('Resize', codecs.resizeRequest, false),
  rebuild: method('Rebuild', codecs.rebuildRequest, true),
  rebuildEstimate: method('RebuildEstimate', codecs.rebuildRequest, false),
  startRebuild: method('StartRebuild', codecs.startRebuildRequest, false),
  setRebuildRate: method('SetRebuildRate', codecs.setRebuildRateRequest, false),
  getTargetState: method('GetTargetState', codecs.getTargetStateRequest, false),
  putTargetState: method('PutTargetState', codecs.targetState, false),
} as const satisfies grpc.ServiceDefinition;

// ---- client -----------------------------------------------------------------------------------

export interface ControlCallOptions {
  /** Milliseconds from the call's start; unary calls default to the client's defaultDeadlineMs. */
  readonly deadlineMs?: number;
  readonly signal?: AbortSignal;
}

export interface ReplicaControlClient {
  readonly address: string;
  status(options?: ControlCallOptions): Promise<StatusReply>;
  setEpoch(request: SetEpochRequest, options?: ControlCallOptions): Promise<SetEpochReply>;
  resize(request: ResizeRequest, options?: ControlCallOptions): Promise<ResizeReply>;
  /**
   * The runs the peer streams, read on demand (a slow consumer slows the server through HTTP/2 flow
   * control). Breaking out of the loop or aborting `signal` cancels the call. No deadline unless given.
   * Failures are grpc.ServiceError (code = grpc.status), or the signal's reason when aborted.
   */
  rebuild(request: RebuildRequest, options?: ControlCallOptions): AsyncIterable<ChunkRun>;
  /** What rebuild(request) would stream, in bytes and chunks (from_offset and max_run_bytes are ignored). */
  rebuildEstimate(request: RebuildRequest, options?: ControlCallOptions): Promise<RebuildEstimateReply>;
  /** Ask this replica to rebuild itself from another (it pulls); progress is in status().rebuild. */
  startRebuild(request: StartRebuildRequest, options?: ControlCallOptions): Promise<StartRebuildReply>;
  /** Change the rate limit of this replica's running rebuild (applied = false when none runs). */
  setRebuildRate(request: SetRebuildRateRequest, options?: ControlCallOptions): Promise<SetRebuildRateReply>;
  /** The target metadata blob this replica keeps (generation 0: none). */
  getTargetState(options?: ControlCallOptions): Promise<TargetStateMessage>;
  /** Store the target metadata blob durably (fenced by epoch, ordered by generation). */
  putTargetState(request: TargetStateMessage, options?: ControlCallOptions): Promise<PutTargetStateReply>;
  close(): void;
}

export interface ReplicaControlClientOptions {
  /** Deadline for unary calls without their own (default 10 s). */
  readonly defaultDeadlineMs?: number;
  readonly channelOptions?: grpc.ChannelOptions;
}

export function createReplicaControlClient(address: string, options: ReplicaControlClientOptions = {}): ReplicaControlClient {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_CONTROL_MESSAGE_BYTES,
    ...options.channelOptions,
  });
  const defaultDeadlineMs = options.defaultDeadlineMs ?? 10_000;
  const def = replicaControlServiceDefinition;

  function unary<Req, Rep>(path: string, reqCodec: MessageCodec<Req>, repCodec: MessageCodec<Rep>, request: Req, opts: ControlCallOptions = {}): Promise<Rep> {
    return new Promise<Rep>((resolve, reject) => {
      const { signal } = opts;
      if (signal?.aborted) return reject(signal.reason);
      let bytes: Buffer;
      try {
        // Encode up front so a value the wire cannot carry is a local RangeError, not a remote INTERNAL.
        bytes = reqCodec.encode(request);
      } catch (err) {
        return reject(err);
      }
      const deadline = Date.now() + (opts.deadlineMs ?? defaultDeadlineMs);
      const onAbort = (): void => call.cancel();
      const call = client.makeUnaryRequest<Buffer, Rep>(path, passThrough, repCodec.decode, bytes, { deadline }, (err, reply) => {
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(signal?.aborted ? signal.reason : err);
        else resolve(reply as Rep);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async function* rebuild(request: RebuildRequest, opts: ControlCallOptions = {}): AsyncGenerator<ChunkRun> {
    const { signal } = opts;
    signal?.throwIfAborted();
    const bytes = codecs.rebuildRequest.encode(request);
    const callOptions: grpc.CallOptions = opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs };
    const call = client.makeServerStreamRequest<Buffer, ChunkRun>(def.rebuild.path, passThrough, codecs.chunkRun.decode, bytes, callOptions);
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const run of call as AsyncIterable<ChunkRun>) yield run;
    } catch (err) {
      throw signal?.aborted ? signal.reason : err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // The status of a call cancelled here arrives as an 'error' after the iterator let go of the stream.
      call.on('error', () => {});
      call.cancel();
    }
  }

  return {
    address,
    status: (opts) => unary(def.status.path, codecs.statusRequest, codecs.statusReply, {}, opts),
    setEpoch: (req, opts) => unary(def.setEpoch.path, codecs.setEpochRequest, codecs.setEpochReply, req, opts),
    resize: (req, opts) => unary(def.resize.path, codecs.resizeRequest, codecs.resizeReply, req, opts),
    rebuild,
    rebuildEstimate: (req, opts) => unary(def.rebuildEstimate.path, codecs.rebuildRequest, codecs.rebuildEstimateReply, req, opts),
    startRebuild: (req, opts) => unary(def.startRebuild.path, codecs.startRebuildRequest, codecs.startRebuildReply, req, opts),
    setRebuildRate: (req, opts) => unary(def.setRebuildRate.path, codecs.setRebuildRateRequest, codecs.setRebuildRateReply, req, opts),
    getTargetState: (opts) => unary(def.getTargetState.path, codecs.getTargetStateRequest, codecs.targetState, {}, opts),
    putTargetState: (req, opts) => unary(def.putTargetState.path, codecs.targetState, codecs.putTargetStateReply, req, opts),
    close: () => client.close(),
  };
}
