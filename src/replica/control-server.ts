// The replica's gRPC control server (status, fencing epoch, resize, rebuild streaming). It knows
// nothing of the store: the replica main wires plain async handlers, and this file owns the gRPC
// plumbing, the error-to-status mapping and rebuild backpressure.
import grpc from '@grpc/grpc-js';
import {
  codecs,
  DEFAULT_MAX_RUN_BYTES,
  MAX_RUN_BYTES,
  replicaControlServiceDefinition,
  type Decoded,
  type RebuildEstimateReply,
  type RebuildRequest,
  type ResizeRequest,
  type SetEpochRequest,
  type StatusReply,
  type StatusRequest,
  type StartRebuildRequest,
  type SetRebuildRateRequest,
  type GetTargetStateRequest,
  type TargetStateMessage,
} from '../protocol/replica/control-codec.js';
import type { Logger } from '../shared/logger.js';
import { formatHostPort } from '../shared/cli-values.js';
import { StoreError, type ChunkRun } from './store-api.js';
import { errorMessage } from '../shared/errors.js';
import {
  bindGrpcServer,
  explicitGrpcStatus,
  GrpcStatusError,
  shutdownGrpcServer,
  type GrpcStatusName,
} from '../shared/grpc-server.js';

export interface ReplicaControlHandlers {
  status(): Promise<StatusReply>;
  /**
   * Persist `epoch`; resolve with the epoch now persisted (nothing = echo the request). `exclusive`:
   * refuse the persisted epoch itself too (StoreError ESTALE_EPOCH), atomically with the update.
   */
  setEpoch(epoch: number, exclusive: boolean): Promise<number | void>;
  /**
   * Grow to `capacityBytes`; resolve with the new capacity (nothing = echo the request). StoreError has
   * no code for "shrink", so refuse one with ControlError('FAILED_PRECONDITION').
   */
  resize(capacityBytes: number): Promise<number | void>;
  /**
   * Chunks written after `sinceIoSeq` from `fromOffset` on, in runs of at most `maxRunBytes` (already
   * defaulted and clamped). Refuse a foreign `volumeUuid` with ControlError('FAILED_PRECONDITION').
   * `signal` aborts when the peer cancels; the server then stops pulling from the iterable.
   */
  rebuild(sinceIoSeq: number, fromOffset: number, maxRunBytes: number, volumeUuid: string, signal: AbortSignal): AsyncIterable<ChunkRun>;
  /** Bytes and chunks rebuild(sinceIoSeq, 0, …) would stream. Absent = UNIMPLEMENTED. */
  rebuildEstimate?(sinceIoSeq: number, volumeUuid: string): Promise<RebuildEstimateReply>;
  /**
   * Start rebuilding this replica from another; resolve once started (not finished). Refuse a second
   * one while running with ControlError('FAILED_PRECONDITION'). Absent = UNIMPLEMENTED.
   */
  startRebuild?(request: StartRebuildRequest): Promise<boolean>;
  /** Change the running rebuild's rate limit (bytes/s, 0 = unlimited); false when none runs. Absent = UNIMPLEMENTED. */
  setRebuildRate?(rateBytesPerSec: number): Promise<boolean>;
  /** The target's metadata blob (generation 0 = none). Absent = UNIMPLEMENTED. */
  getTargetState?(): Promise<TargetStateMessage>;
  /**
   * Store the target's metadata blob durably before resolving; refuse an older epoch or generation
   * with StoreError ESTALE_EPOCH (FAILED_PRECONDITION). Absent = UNIMPLEMENTED.
   */
  putTargetState?(state: TargetStateMessage): Promise<void>;
}

/** A handler failure with an explicit gRPC status, for conditions StoreError does not name. */
export class ControlError extends GrpcStatusError {
  constructor(code: GrpcStatusName, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ControlError';
  }
}

export interface GrpcStatus {
  readonly code: grpc.status;
  readonly details: string;
}

/** The one place handler failures become gRPC statuses. */
export function toGrpcStatus(err: unknown): GrpcStatus {
  const details = errorMessage(err);
  const explicit = explicitGrpcStatus(err);
  if (explicit !== undefined) return { code: explicit, details };
  if (err instanceof StoreError) {
    switch (err.code) {
      case 'ESTALE_EPOCH':
      case 'EUNFORMATTED': return { code: grpc.status.FAILED_PRECONDITION, details };
      case 'ERANGE':
      case 'EINVAL':
      case 'EALIGN': return { code: grpc.status.INVALID_ARGUMENT, details };
      case 'EMEDIUM': return { code: grpc.status.DATA_LOSS, details };
      case 'ENOSPC': return { code: grpc.status.RESOURCE_EXHAUSTED, details };
      case 'ECLOSED': return { code: grpc.status.UNAVAILABLE, details };
      case 'EIO': return { code: grpc.status.INTERNAL, details };
    }
  }
  if (err instanceof Error && err.name === 'AbortError') return { code: grpc.status.CANCELLED, details };
  return { code: grpc.status.INTERNAL, details };
}

export interface ControlServerOptions {
  /** Default 127.0.0.1: the control plane is not meant to be exposed beyond the node. */
  readonly host?: string;
  /** 0 = an ephemeral port (default). */
  readonly port?: number;
  readonly handlers: ReplicaControlHandlers;
  readonly logger: Logger;
  /** Encoded rebuild bytes written but not yet flushed to HTTP/2 before the producer waits (default 4 MiB). */
  readonly maxBufferedBytes?: number;
  /** close(): how long graceful shutdown may take before active calls are cut (default 5 s). */
  readonly shutdownTimeoutMs?: number;
}

export interface ControlServer {
  /** host:port as bound, usable by createReplicaControlClient. */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

type UnaryCall<Req> = grpc.ServerUnaryCall<Decoded<Req>, Buffer>;

export async function startControlServer(options: ControlServerOptions): Promise<ControlServer> {
  const host = options.host ?? '127.0.0.1';
  const { handlers } = options;
  const log = options.logger.child({ component: 'replica-control' });
  const maxBufferedBytes = options.maxBufferedBytes ?? 4 * 1024 * 1024;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5_000;

  function fail(method: string, err: unknown): grpc.ServerErrorResponse {
    const status = toGrpcStatus(err);
    const level = status.code === grpc.status.INTERNAL || status.code === grpc.status.DATA_LOSS ? 'error' : 'debug';
    log[level]({ method, code: grpc.status[status.code], err }, 'control call failed');
    return Object.assign(new Error(status.details), { code: status.code, details: status.details });
  }

  // Unary plumbing: a bad request is INVALID_ARGUMENT; everything the handler throws goes through toGrpcStatus.
  function unary<Req>(method: string, run: (request: Req) => Promise<Buffer>): grpc.handleUnaryCall<Decoded<Req>, Buffer> {
    return (call: UnaryCall<Req>, callback) => {
      const decoded = call.request;
      if (!decoded.ok) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: decoded.error.message });
        return;
      }
      run(decoded.value).then(
        (reply) => callback(null, reply),
        (err: unknown) => callback(fail(method, err)),
      );
    };
  }

  const status = unary<StatusRequest>('Status', async () => codecs.statusReply.encode(await handlers.status()));
  const setEpoch = unary<SetEpochRequest>('SetEpoch', async ({ epoch, exclusive }) => {
    const persisted = await handlers.setEpoch(epoch, exclusive === true);
    return codecs.setEpochReply.encode({ epoch: persisted ?? epoch });
  });
  const resize = unary<ResizeRequest>('Resize', async ({ capacityBytes }) => {
    const capacity = await handlers.resize(capacityBytes);
    return codecs.resizeReply.encode({ capacityBytes: capacity ?? capacityBytes });
  });

  const unimplemented = (method: string): never => {
    throw new ControlError('UNIMPLEMENTED', `${method} is not served by this replica`);
  };
  const rebuildEstimate = unary<RebuildRequest>('RebuildEstimate', async ({ sinceIoSeq, volumeUuid }) =>
    codecs.rebuildEstimateReply.encode(await (handlers.rebuildEstimate?.(sinceIoSeq, volumeUuid) ?? unimplemented('RebuildEstimate'))));
  const startRebuild = unary<StartRebuildRequest>('StartRebuild', async (request) =>
    codecs.startRebuildReply.encode({ started: await (handlers.startRebuild?.(request) ?? unimplemented('StartRebuild')) }));
  const setRebuildRate = unary<SetRebuildRateRequest>('SetRebuildRate', async ({ rateBytesPerSec }) =>
    codecs.setRebuildRateReply.encode({ applied: await (handlers.setRebuildRate?.(rateBytesPerSec) ?? unimplemented('SetRebuildRate')) }));

  const getTargetState = unary<GetTargetStateRequest>('GetTargetState', async () =>
    codecs.targetState.encode(await (handlers.getTargetState?.() ?? unimplemented('GetTargetState'))));
  const putTargetState = unary<TargetStateMessage>('PutTargetState', async (state) => {
    await (handlers.putTargetState?.(state) ?? unimplemented('PutTargetState'));
    return codecs.putTargetStateReply.encode({ generation: state.generation });
  });

  const rebuild: grpc.handleServerStreamingCall<Decoded<RebuildRequest>, Buffer> = (call) => {
    const decoded = call.request;
    if (!decoded.ok) {
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: decoded.error.message });
      return;
    }
    const req = decoded.value;
    const maxRunBytes = req.maxRunBytes === 0 ? DEFAULT_MAX_RUN_BYTES : Math.min(req.maxRunBytes, MAX_RUN_BYTES);
    const abort = new AbortController();
    // Woken by write completions, 'drain' and cancellation; the producer re-checks its condition.
    let wake: (() => void) | undefined;
    const wakeUp = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    call.on('cancelled', () => {
      abort.abort(new ControlError('CANCELLED', 'rebuild cancelled by peer'));
      wakeUp();
    });
    call.on('drain', wakeUp);
    let buffered = 0;
    let runs = 0;
    let bytesSent = 0;
    const rlog = log.child({ rebuild: { since: req.sinceIoSeq, from: req.fromOffset, maxRunBytes } });
    rlog.info({}, 'rebuild stream started');

    const produce = async (): Promise<void> => {
      const source = handlers.rebuild(req.sinceIoSeq, req.fromOffset, maxRunBytes, req.volumeUuid, abort.signal);
      // for-await's early exit (break) calls the iterator's return(), so a store scan releases its resources.
      for await (const run of source) {
        if (abort.signal.aborted) break;
        const bytes = codecs.chunkRun.encode({
          offset: run.offset, length: run.length, ioSeqs: run.ioSeqs, crcs: run.crcs, zeroMask: run.zero, data: run.data,
        });
        buffered += bytes.length;
        runs++;
        bytesSent += run.length;
        call.write(bytes, () => {
          buffered -= bytes.length;
          wakeUp();
        });
        // Backpressure: do not pull the next run while too much is queued ahead of HTTP/2 flow control.
        while (!abort.signal.aborted && (buffered > maxBufferedBytes || call.writableNeedDrain)) {
          await new Promise<void>((resolve) => { wake = resolve; });
        }
        if (abort.signal.aborted) break;
      }
    };

    produce().then(
      () => {
        if (abort.signal.aborted) {
          rlog.info({ runs, bytes: bytesSent }, 'rebuild stream cancelled');
          return;
        }
        rlog.info({ runs, bytes: bytesSent }, 'rebuild stream finished');
        call.end();
      },
      (err: unknown) => {
        if (abort.signal.aborted) {
          rlog.info({ runs, bytes: bytesSent, err }, 'rebuild stream cancelled');
          return;
        }
        call.emit('error', fail('Rebuild', err));
      },
    );
  };

  const server = new grpc.Server();
  server.addService(replicaControlServiceDefinition, {
    status, setEpoch, resize, rebuild, rebuildEstimate, startRebuild, getTargetState, putTargetState, setRebuildRate,
  });

  const port = await bindGrpcServer(server, host, options.port ?? 0);
  const address = formatHostPort(host, port);
  log.info({ address }, 'control server listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= shutdownGrpcServer(server, shutdownTimeoutMs, () => {
      log.warn({ shutdownTimeoutMs }, 'control server graceful shutdown timed out; forcing');
    }).then(() => log.info({ address }, 'control server closed'));
    return closing;
  };

  return { address, port, close };
}
