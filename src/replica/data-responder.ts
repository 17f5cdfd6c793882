// The replica side of one data connection (already past HELLO): reads requests, runs them on the
// store concurrently and answers each as it completes (out of order, matched by tag). Reading pauses
// while too many requests are in flight or the socket is backpressured. Bad input is answered with a
// status; only a broken header (lost framing) closes the connection. Nothing here throws out of an
// event handler.
import type { Socket } from 'node:net';
import { FrameReader, type ReceivedFrame } from '../protocol/replica/frame-reader.js';
import {
  DEFAULT_MAX_PAYLOAD_LENGTH, FrameFlag, MAX_IO_LENGTH, Opcode, ReplicaStatus, encodeErrorMessage, encodeFrameWithCrc,
  encodeIoSeqs, encodeMapStatus, statusForStoreErrorCode, statusName, type FrameError, type FrameHeader,
  type ReplicaStatusName, type ReplicaStatusValue,
} from '../protocol/replica/frame.js';
import type { Logger } from '../shared/logger.js';
import { StoreError, type ReplicaStoreApi } from './store-api.js';
import { errorMessage } from '../shared/errors.js';

export interface DataResponderOptions {
  readonly logger: Logger;
  /** Requests executing at once before reading pauses (default 128). */
  readonly maxInFlight?: number;
  /** Largest READ/WRITE length accepted (default 16 MiB). */
  readonly maxIoLength?: number;
  readonly maxPayloadLength?: number;
  /** Bytes that arrived after the handshake frame, to be parsed before anything else. */
  readonly initialData?: readonly Buffer[];
  /** Called once when the framing broke (the socket is then destroyed). */
  readonly onFatal?: (err: FrameError) => void;
}

export interface DataResponderCounters {
  readonly requests: number;
  readonly inFlight: number;
  /** Responses sent, by status. */
  readonly responses: Readonly<Record<ReplicaStatusName, number>>;
  /** Frames dropped without an answer (a response sent to the replica). */
  readonly ignored: number;
  readonly framingErrors: number;
  /** Times reading paused for in-flight or socket backpressure. */
  readonly pauses: number;
}

function zeroCounts(): Record<ReplicaStatusName, number> {
  const out = {} as Record<ReplicaStatusName, number>;
  for (const name of Object.keys(ReplicaStatus) as ReplicaStatusName[]) out[name] = 0;
  return out;
}

/** A request that could not run: answered with `status`. */
class Refusal {
  readonly status: ReplicaStatusValue;
  readonly message: string;
  readonly offset: number | undefined;
  constructor(status: ReplicaStatusValue, message: string, offset?: number) {
    this.status = status;
    this.message = message;
    this.offset = offset;
  }
}

export class DataResponder {
  readonly #socket: Socket;
  readonly #store: ReplicaStoreApi;
  readonly #logger: Logger;
  readonly #reader: FrameReader;
  readonly #maxInFlight: number;
  readonly #maxIo: number;
  readonly #onFatal: ((err: FrameError) => void) | undefined;
  readonly #closed: Promise<void>;
  readonly #counts = zeroCounts();
  #requests = 0;
  #ignored = 0;
  #framingErrors = 0;
  #pauses = 0;
  #inFlight = 0;
  #corked = false;
  #writeBlocked = false;
  #readPaused = false;
  #open = true;
  /** Serialises epoch raises so requests stamped with a newer epoch run after it is persisted. */
  #epochChain: Promise<void> = Promise.resolve();

  constructor(socket: Socket, store: ReplicaStoreApi, options: DataResponderOptions) {
    this.#socket = socket;
    this.#store = store;
    this.#logger = options.logger;
    this.#maxInFlight = Math.max(1, options.maxInFlight ?? 128);
    this.#maxIo = Math.min(options.maxIoLength ?? MAX_IO_LENGTH, MAX_IO_LENGTH);
    this.#onFatal = options.onFatal;
    this.#reader = new FrameReader(
      { maxPayloadLength: options.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH, allocatePayload: (size, h) => this.#allocate(size, h) },
      frame => this.#onFrame(frame),
      err => this.#onFramingError(err),
    );
    socket.setNoDelay(true);
    this.#closed = new Promise(resolve => {
      if (socket.destroyed) resolve();
      else socket.once('close', () => resolve());
    });
    void this.#closed.then(() => { this.#open = false; });
    socket.on('data', chunk => this.#onData(chunk));
    socket.on('drain', () => { this.#writeBlocked = false; this.#updateFlow(); });
    socket.on('error', err => this.#logger.debug({ err }, 'data connection error'));
    for (const chunk of options.initialData ?? []) this.#onData(chunk);
  }

  get closed(): Promise<void> {
    return this.#closed;
  }

  counters(): DataResponderCounters {
    return {
      requests: this.#requests,
      inFlight: this.#inFlight,
      responses: { ...this.#counts },
      ignored: this.#ignored,
      framingErrors: this.#framingErrors,
      pauses: this.#pauses,
    };
  }

  /** Drop the connection; in-flight store operations finish and their answers are discarded. */
  close(): void {
    this.#open = false;
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    if (!this.#open) return;
    try {
      this.#reader.push(chunk);
    } catch (err) {
      this.#logger.error({ err }, 'data connection: unexpected parser failure');
      this.close();
    }
  }

  #allocate(size: number, header: FrameHeader): Buffer | undefined {
    // Only WRITE data goes to the pool (O_DIRECT-aligned, no copy in the store); the rest is small.
    if (header.opcode !== Opcode.Write || (header.flags & FrameFlag.Response) !== 0 || size > this.#maxIo) return undefined;
    try {
      return this.#store.acquireBuffer(size);
    } catch (err) {
      this.#logger.debug({ err, size }, 'payload pool exhausted: using a heap buffer');
      return undefined;
    }
  }

  #onFramingError(err: FrameError): void {
    this.#framingErrors++;
    this.#logger.warn({ err, code: err.code }, 'data connection framing lost: closing');
    try {
      this.#onFatal?.(err);
    } catch (cbErr) {
      this.#logger.error({ err: cbErr }, 'onFatal callback threw');
    }
    this.close();
  }

  #onFrame(frame: ReceivedFrame): void {
    const h = frame.header;
    if ((h.flags & FrameFlag.Response) !== 0) {
      // Never answer a response: two responders wired together would echo forever.
      this.#ignored++;
      if (frame.allocated) this.#release(frame.payload);
      this.#logger.debug({ opcode: h.opcode, tag: h.tag }, 'response frame on the replica side ignored');
      return;
    }
    this.#requests++;
    this.#inFlight++;
    this.#updateFlow();
    let payload = frame.payload;
    if (!frame.allocated && payload.length > 0 && h.opcode === Opcode.Write) {
      // A view into socket chunks must not outlive this callback: the store runs asynchronously.
      payload = Buffer.from(payload);
    }
    this.#execute(h, frame, payload).catch((err: unknown) => {
      // #execute answers every failure itself; this is only a safety net.
      this.#logger.error({ err }, 'request handling failed');
    });
  }

  async #execute(h: FrameHeader, frame: ReceivedFrame, payload: Buffer): Promise<void> {
    // The pooled WRITE buffer goes back exactly once, whichever path finishes with it.
    let pooled = frame.allocated ? frame.payload : undefined;
    const releasePayload = (): void => {
      if (pooled === undefined) return;
      const buf = pooled;
      pooled = undefined;
      this.#release(buf);
    };
    try {
      const refusal = this.#check(h, frame);
      if (refusal) {
        releasePayload();
        this.#respond(h, refusal.status, refusal.offset, encodeErrorMessage(refusal.message));
        return;
      }
      // A newer target epoch is persisted before the request runs, fencing older targets from then on.
      if (h.opcode !== Opcode.Ping && h.epoch > this.#store.info.epoch) await this.#raiseEpoch(h.epoch);
      await this.#run(h, payload, releasePayload);
    } catch (err) {
      releasePayload();
      const status = err instanceof StoreError ? statusForStoreErrorCode(err.code) : ReplicaStatus.IoError;
      const offset = err instanceof StoreError && status === ReplicaStatus.MediumError ? err.offset : undefined;
      if (!(err instanceof StoreError)) this.#logger.warn({ err, opcode: h.opcode }, 'store operation failed');
      const message = errorMessage(err);
      this.#respond(h, status, offset, encodeErrorMessage(message));
    } finally {
      this.#inFlight--;
      this.#updateFlow();
    }
  }

  /** Validation before touching the store; undefined when the request may run. */
  #check(h: FrameHeader, frame: ReceivedFrame): Refusal | undefined {
    if (!frame.payloadCrcOk) return new Refusal(ReplicaStatus.BadPayloadCrc, 'payload CRC32C mismatch');
    const op = h.opcode;
    if (op === Opcode.Ping) return undefined;
    if (op === Opcode.Hello) return new Refusal(ReplicaStatus.Invalid, 'HELLO on an established connection');
    if (op < Opcode.Read || op > Opcode.MapStatus) return new Refusal(ReplicaStatus.UnknownOpcode, `unknown opcode ${op}`);
    const info = this.#store.info;
    if (h.epoch < info.epoch) return new Refusal(ReplicaStatus.StaleEpoch, `epoch ${h.epoch} is older than ${info.epoch}`);
    if (op === Opcode.Sync) return undefined;
    const { offset, length } = h;
    if (length === 0) return new Refusal(ReplicaStatus.Invalid, 'zero length');
    if ((op === Opcode.Read || op === Opcode.Write) && length > this.#maxIo) {
      return new Refusal(ReplicaStatus.Invalid, `length ${length} exceeds the maximum ${this.#maxIo}`);
    }
    if (op === Opcode.Write && frame.payload.length !== length) {
      return new Refusal(ReplicaStatus.Invalid, `payload ${frame.payload.length} bytes for a ${length}-byte write`);
    }
    if (op !== Opcode.Write && frame.payload.length !== 0) return new Refusal(ReplicaStatus.Invalid, 'unexpected payload');
    if (offset % info.blockSize !== 0 || length % info.blockSize !== 0) {
      return new Refusal(ReplicaStatus.Misaligned, `offset ${offset}/length ${length} not multiples of ${info.blockSize}`);
    }
    if (offset + length > info.capacityBytes) {
      return new Refusal(ReplicaStatus.OutOfRange, `${offset}+${length} beyond capacity ${info.capacityBytes}`);
    }
    return undefined;
  }

  #raiseEpoch(epoch: number): Promise<void> {
    const next = this.#epochChain.then(async () => {
      if (epoch > this.#store.info.epoch) {
        await this.#store.setEpoch(epoch);
        this.#logger.info({ epoch }, 'epoch raised by the target');
      }
    });
    // A failed raise fails only the requests that waited for it.
    this.#epochChain = next.catch(() => undefined);
    return next;
  }

  async #run(h: FrameHeader, payload: Buffer, releasePayload: () => void): Promise<void> {
    const store = this.#store;
    switch (h.opcode) {
      case Opcode.Ping:
        this.#respond(h, ReplicaStatus.Ok);
        return;
      case Opcode.Read: {
        const result = await store.read(h.offset, h.length);
        let released = false;
        const release = (): void => {
          if (released) return;
          released = true;
          result.release();
        };
        try {
          this.#respond(h, ReplicaStatus.Ok, undefined, result.data, encodeIoSeqs(result.ioSeqs), release, result.dataCrc);
        } catch (err) {
          release();
          throw err;
        }
        return;
      }
      case Opcode.Write:
        try {
          // The payload passed its CRC32C check (#check): the store may reuse it as a chunk checksum.
          await store.write(h.offset, payload, h.ioSeq, { fua: (h.flags & FrameFlag.Fua) !== 0, crc: h.payloadCrc });
        } finally {
          releasePayload();
        }
        this.#respond(h, ReplicaStatus.Ok);
        return;
      case Opcode.Sync:
        await store.flush();
        this.#respond(h, ReplicaStatus.Ok);
        return;
      case Opcode.Unmap:
        await store.unmap(h.offset, h.length, h.ioSeq);
        this.#respond(h, ReplicaStatus.Ok);
        return;
      case Opcode.WriteZeroes:
        await store.writeZeroes(h.offset, h.length, h.ioSeq);
        this.#respond(h, ReplicaStatus.Ok);
        return;
      case Opcode.MapStatus: {
        const extent = await store.mapStatus(h.offset, h.length);
        this.#respond(h, ReplicaStatus.Ok, undefined, encodeMapStatus(extent.length, extent.mapped));
        return;
      }
      default:
        this.#respond(h, ReplicaStatus.UnknownOpcode, undefined, encodeErrorMessage(`unknown opcode ${h.opcode}`));
    }
  }

  #release(buf: Buffer): void {
    try {
      this.#store.releaseBuffer(buf);
    } catch (err) {
      this.#logger.error({ err }, 'releaseBuffer failed');
    }
  }

  /**
   * Write one response (header + payload parts, corked so they leave in one writev). `done` runs once
   * the bytes are handed to the kernel, or at once if the connection is gone.
   */
  #respond(h: FrameHeader, status: ReplicaStatusValue, offset?: number, data?: Buffer, trailer?: Buffer, done?: () => void,
    dataCrc?: number): void {
    const socket = this.#socket;
    if (!this.#open || socket.destroyed || !socket.writable) {
      done?.();
      return;
    }
    this.#counts[statusName(status) ?? 'Invalid']++;
    const fields = {
      opcode: h.opcode,
      flags: FrameFlag.Response,
      status,
      tag: h.tag,
      epoch: this.#store.info.epoch,
      ioSeq: h.ioSeq,
      offset: offset ?? h.offset,
      length: h.length,
    };
    const parts: Buffer[] = [];
    if (data !== undefined) parts.push(data);
    if (trailer !== undefined) parts.push(trailer);
    // The store already verified the data's checksum: the frame's continues from it, no second pass.
    const buffers = encodeFrameWithCrc(fields, data !== undefined ? dataCrc : undefined, ...parts);
    if (!this.#corked) {
      // Every response completed in this tick leaves in one writev.
      this.#corked = true;
      socket.cork();
      process.nextTick(() => { this.#corked = false; socket.uncork(); });
    }
    let ok = true;
    const last = buffers.length - 1;
    for (let i = 0; i <= last; i++) {
      ok = i === last && done !== undefined ? socket.write(buffers[i]!, () => done()) : socket.write(buffers[i]!);
    }
    if (!ok && !this.#writeBlocked) {
      this.#writeBlocked = true;
      this.#updateFlow();
    }
  }

  /** Pause reading while too much is in flight or the peer is not reading our answers. */
  #updateFlow(): void {
    const stop = this.#writeBlocked || this.#inFlight >= this.#maxInFlight;
    if (stop && !this.#readPaused) {
      this.#readPaused = true;
      this.#pauses++;
      this.#reader.pause();
      this.#socket.pause();
    } else if (!stop && this.#readPaused) {
      this.#readPaused = false;
      this.#socket.resume();
      try {
        this.#reader.resume();
      } catch (err) {
        this.#logger.error({ err }, 'data connection: unexpected parser failure');
        this.close();
      }
    }
  }
}
