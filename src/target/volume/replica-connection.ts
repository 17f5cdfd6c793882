// The target side of one replica connection (past HELLO): pipelined requests with tags, a bounded
// number and byte volume in flight (the rest queue, also bounded), completions matched by tag in any order. A
// response the connection cannot place (unknown tag, wrong opcode, broken header) means the stream
// is not trustworthy: the connection is dropped and every pending request fails with CLOSED.
import type { Socket } from 'node:net';
import { FrameReader, type ReceivedFrame } from '../../protocol/replica/frame-reader.js';
import {
  DEFAULT_MAX_PAYLOAD_LENGTH, FrameFlag, MAX_IO_LENGTH, Opcode, ReplicaIoError, ReplicaStatus, chunksTouched,
  decodeIoSeqs, decodeMapStatus, encodeHeader, errorForStatus, type FrameHeader, type OpcodeValue, type ReplicaHello,
} from '../../protocol/replica/frame.js';
import { crc32c } from '../../protocol/iscsi/digest.js';
import type { Logger } from '../../shared/logger.js';

export interface ReplicaConnectionOptions {
  readonly logger: Logger;
  /** Requests on the wire at once (default 64); more wait in a queue. */
  readonly maxInFlight?: number;
  /** Payload bytes (WRITE data) on the wire at once before requests queue (default 64 MiB; one larger request still goes alone). */
  readonly maxInFlightBytes?: number;
  /** Requests waiting beyond maxInFlight before new ones fail with NOT_READY (default 4096). */
  readonly maxQueued?: number;
  /** A request unanswered this long drops the connection (default 30 s; 0 disables). */
  readonly requestTimeoutMs?: number;
  readonly maxPayloadLength?: number;
  /** Bytes that arrived right after the handshake. */
  readonly initialData?: readonly Buffer[];
}

export interface ReplicaReadResult {
  /** The requested bytes: a view into receive buffers or one copy, owned by the caller. */
  readonly data: Buffer;
  /** io_seq of every chunk the range touches. */
  readonly ioSeqs: Float64Array;
}

export interface ReplicaWriteOptions {
  readonly epoch: number;
  readonly ioSeq: number;
  readonly fua?: boolean;
  /**
   * CRC32C of `data` when the caller already has it: a write fanned out to k replicas computes it
   * once instead of k times. The replica verifies it, so a wrong value fails the write, never more.
   */
  readonly payloadCrc?: number;
}

export interface ReplicaConnectionCounters {
  readonly sent: number;
  readonly completed: number;
  readonly failed: number;
  readonly inFlight: number;
  readonly queued: number;
}

interface Request {
  readonly opcode: OpcodeValue;
  readonly flags: number;
  readonly epoch: number;
  readonly ioSeq: number;
  readonly offset: number;
  readonly length: number;
  readonly payload: Buffer | undefined;
  readonly payloadCrc: number | undefined;
  readonly resolve: (frame: ReceivedFrame) => void;
  readonly reject: (err: Error) => void;
  tag: number;
  sentAt: number;
}

export class ReplicaConnection {
  readonly hello: ReplicaHello;
  readonly remoteAddress: string;
  readonly #socket: Socket;
  readonly #logger: Logger;
  readonly #reader: FrameReader;
  readonly #maxInFlight: number;
  readonly #maxQueued: number;
  readonly #maxInFlightBytes: number;
  #inFlightBytes = 0;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Request>();
  readonly #queue: Request[] = [];
  #queueHead = 0;
  #nextTag = 1;
  #corked = false;
  #open = true;
  #closeReason = 'connection closed';
  readonly #closed: Promise<void>;
  readonly #closeListeners = new Set<(reason: string) => void>();
  #sweep: NodeJS.Timeout | undefined;
  #sent = 0;
  #completed = 0;
  #failed = 0;

  constructor(socket: Socket, hello: ReplicaHello, options: ReplicaConnectionOptions) {
    this.#socket = socket;
    this.hello = hello;
    this.remoteAddress = `${socket.remoteAddress ?? ''}:${socket.remotePort ?? 0}`;
    this.#logger = options.logger;
    this.#maxInFlight = Math.max(1, options.maxInFlight ?? 64);
    this.#maxQueued = Math.max(0, options.maxQueued ?? 4096);
    this.#maxInFlightBytes = Math.max(1, options.maxInFlightBytes ?? 64 * 1024 * 1024);
    this.#timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#reader = new FrameReader(
      { maxPayloadLength: options.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH },
      frame => this.#onFrame(frame),
      err => this.#fail(`framing lost: ${err.message}`),
    );
    socket.setNoDelay(true);
    this.#closed = new Promise(resolve => {
      if (socket.destroyed) { this.#onClose(); resolve(); } else socket.once('close', () => { this.#onClose(); resolve(); });
    });
    socket.on('data', chunk => {
      if (!this.#open) return;
      try {
        this.#reader.push(chunk);
      } catch (err) {
        this.#fail(`parser failure: ${String(err)}`);
      }
    });
    socket.on('error', err => {
      this.#closeReason = `socket error: ${(err as NodeJS.ErrnoException).code ?? err.message}`;
      this.#logger.debug({ err }, 'replica connection error');
    });
    if (this.#timeoutMs > 0) {
      this.#sweep = setInterval(() => this.#checkTimeouts(), Math.max(10, Math.min(1000, this.#timeoutMs / 4)));
      this.#sweep.unref();
    }
    for (const chunk of options.initialData ?? []) {
      if (this.#open) this.#reader.push(chunk);
    }
  }

  get isOpen(): boolean {
    return this.#open;
  }

  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Called once with the reason when the connection ends; returns an unsubscribe function. */
  onClose(listener: (reason: string) => void): () => void {
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  counters(): ReplicaConnectionCounters {
    return {
      sent: this.#sent, completed: this.#completed, failed: this.#failed,
      inFlight: this.#pending.size, queued: this.#queue.length - this.#queueHead,
    };
  }

  async read(offset: number, length: number, epoch: number, ioSeq = 0): Promise<ReplicaReadResult> {
    if (length > MAX_IO_LENGTH) throw new ReplicaIoError(ReplicaStatus.Invalid, `read of ${length} bytes exceeds ${MAX_IO_LENGTH}`);
    const frame = await this.#request(Opcode.Read, 0, epoch, ioSeq, offset, length);
    const n = chunksTouched(offset, length, this.hello.chunkSize);
    const payload = frame.payload;
    if (payload.length !== length + n * 8) {
      throw new ReplicaIoError(ReplicaStatus.Invalid, `READ response of ${payload.length} bytes, expected ${length} + ${n} io_seqs`);
    }
    const ioSeqs = decodeIoSeqs(payload.subarray(length));
    if (ioSeqs === undefined) throw new ReplicaIoError(ReplicaStatus.Invalid, 'READ response io_seq above 2^53');
    return { data: payload.subarray(0, length), ioSeqs };
  }

  async write(offset: number, data: Buffer, options: ReplicaWriteOptions): Promise<void> {
    if (data.length > MAX_IO_LENGTH) throw new ReplicaIoError(ReplicaStatus.Invalid, `write of ${data.length} bytes exceeds ${MAX_IO_LENGTH}`);
    await this.#request(Opcode.Write, options.fua ? FrameFlag.Fua : 0, options.epoch, options.ioSeq, offset, data.length, data, options.payloadCrc);
  }

  async sync(epoch: number): Promise<void> {
    await this.#request(Opcode.Sync, 0, epoch, 0, 0, 0);
  }

  async unmap(offset: number, length: number, options: { readonly epoch: number; readonly ioSeq: number }): Promise<void> {
    await this.#request(Opcode.Unmap, 0, options.epoch, options.ioSeq, offset, length);
  }

  async writeZeroes(offset: number, length: number, options: { readonly epoch: number; readonly ioSeq: number }): Promise<void> {
    await this.#request(Opcode.WriteZeroes, 0, options.epoch, options.ioSeq, offset, length);
  }

  async mapStatus(offset: number, maxLength: number, epoch: number): Promise<{ readonly length: number; readonly mapped: boolean }> {
    const frame = await this.#request(Opcode.MapStatus, 0, epoch, 0, offset, maxLength);
    const extent = decodeMapStatus(frame.payload);
    if (extent === undefined) throw new ReplicaIoError(ReplicaStatus.Invalid, 'malformed MAP_STATUS response');
    return extent;
  }

  /** Round trip in milliseconds. */
  async ping(): Promise<number> {
    const start = performance.now();
    await this.#request(Opcode.Ping, 0, 0, 0, 0, 0);
    return performance.now() - start;
  }

  /** Drop the connection; pending requests fail with CLOSED. */
  close(): Promise<void> {
    this.#fail('closed by the target', false);
    return this.#closed;
  }

  #request(opcode: OpcodeValue, flags: number, epoch: number, ioSeq: number, offset: number, length: number, payload?: Buffer,
    payloadCrc?: number): Promise<ReceivedFrame> {
    return new Promise((resolve, reject) => {
      if (!this.#open) {
        reject(new ReplicaIoError(ReplicaStatus.Closed, `replica connection closed: ${this.#closeReason}`));
        return;
      }
      const req: Request = { opcode, flags, epoch, ioSeq, offset, length, payload, payloadCrc, resolve, reject, tag: 0, sentAt: 0 };
      if (this.#queueHead === this.#queue.length && this.#canSend(req)) {
        this.#send(req);
        return;
      }
      if (this.#queue.length - this.#queueHead >= this.#maxQueued) {
        reject(new ReplicaIoError(ReplicaStatus.NotReady, 'replica connection queue full'));
        return;
      }
      this.#queue.push(req);
    });
  }

  /** Room for one more on the wire: under the count bound and the byte bound (the socket buffer stays bounded). */
  #canSend(req: Request): boolean {
    if (this.#pending.size >= this.#maxInFlight) return false;
    const bytes = req.payload?.length ?? 0;
    return bytes === 0 || this.#inFlightBytes === 0 || this.#inFlightBytes + bytes <= this.#maxInFlightBytes;
  }

  #send(req: Request): void {
    // Encode first: a field out of range must fail this request alone, before a tag is taken.
    let buffers: Buffer[];
    const tag = this.#takeTag();
    try {
      const fields = {
        opcode: req.opcode, flags: req.flags, tag, epoch: req.epoch, ioSeq: req.ioSeq, offset: req.offset, length: req.length,
      };
      const payload = req.payload;
      buffers = payload === undefined || payload.length === 0 ? [encodeHeader(fields)]
        : [encodeHeader(fields, payload.length, req.payloadCrc ?? crc32c(payload)), payload];
    } catch (err) {
      req.reject(new ReplicaIoError(ReplicaStatus.Invalid, String(err instanceof Error ? err.message : err)));
      return;
    }
    req.tag = tag;
    req.sentAt = Date.now();
    this.#pending.set(tag, req);
    this.#inFlightBytes += req.payload?.length ?? 0;
    this.#sent++;
    const socket = this.#socket;
    if (!this.#corked) {
      // Requests issued in one tick leave in one writev.
      this.#corked = true;
      socket.cork();
      process.nextTick(() => { this.#corked = false; socket.uncork(); });
    }
    // Socket backpressure is bounded by maxInFlight: at most that many requests are buffered.
    for (const b of buffers) socket.write(b);
  }

  #takeTag(): number {
    // Tags wrap at 2^32; skipping live ones keeps them unique (at most maxInFlight are live).
    let tag = this.#nextTag;
    while (this.#pending.has(tag)) tag = (tag + 1) >>> 0;
    this.#nextTag = (tag + 1) >>> 0;
    return tag;
  }

  #onFrame(frame: ReceivedFrame): void {
    const h = frame.header;
    if ((h.flags & FrameFlag.Response) === 0) {
      this.#fail(`replica sent a request (opcode ${h.opcode}) on the data connection`);
      return;
    }
    const req = this.#pending.get(h.tag);
    if (req === undefined || req.opcode !== h.opcode) {
      this.#fail(`response for an unknown request (tag ${h.tag}, opcode ${h.opcode})`);
      return;
    }
    this.#pending.delete(h.tag);
    this.#inFlightBytes -= req.payload?.length ?? 0;
    this.#complete(req, frame, h);
    this.#drainQueue();
  }

  #complete(req: Request, frame: ReceivedFrame, h: FrameHeader): void {
    if (!frame.payloadCrcOk) {
      this.#failed++;
      req.reject(new ReplicaIoError(ReplicaStatus.BadPayloadCrc, `response payload CRC32C mismatch (opcode ${h.opcode})`));
      return;
    }
    if (h.status !== ReplicaStatus.Ok) {
      this.#failed++;
      req.reject(errorForStatus(h.status, frame.payload.toString('utf8'), h.offset));
      return;
    }
    this.#completed++;
    // READ data stays a view (zero-copy): the reader never writes into received chunks and Node hands
    // every 'data' event a fresh buffer, so the view outlives this callback safely.
    req.resolve(frame);
  }

  #drainQueue(): void {
    while (this.#queueHead < this.#queue.length && this.#open) {
      const req = this.#queue[this.#queueHead]!;
      if (!this.#canSend(req)) break;
      (this.#queue as (Request | undefined)[])[this.#queueHead] = undefined;
      this.#queueHead++;
      this.#send(req);
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead >= 1024) {
      this.#queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #checkTimeouts(): void {
    if (!this.#open || this.#pending.size === 0) return;
    const limit = Date.now() - this.#timeoutMs;
    for (const req of this.#pending.values()) {
      if (req.sentAt <= limit) {
        this.#fail(`request (opcode ${req.opcode}, tag ${req.tag}) unanswered for ${this.#timeoutMs} ms`);
        return;
      }
    }
  }

  #fail(reason: string, warn = true): void {
    if (!this.#open) return;
    this.#closeReason = reason;
    if (warn) this.#logger.warn({ replica: this.hello.replicaId, reason }, 'dropping replica connection');
    this.#socket.destroy();
    this.#onClose();
  }

  #onClose(): void {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
    const first = this.#open;
    this.#open = false;
    const err = (): ReplicaIoError => new ReplicaIoError(ReplicaStatus.Closed, `replica connection lost: ${this.#closeReason}`);
    for (const req of this.#pending.values()) { this.#failed++; req.reject(err()); }
    this.#pending.clear();
    this.#inFlightBytes = 0;
    for (let i = this.#queueHead; i < this.#queue.length; i++) { this.#failed++; this.#queue[i]!.reject(err()); }
    this.#queue.length = 0;
    this.#queueHead = 0;
    if (!first) return;
    this.#logger.debug({ reason: this.#closeReason }, 'replica connection closed');
    for (const l of this.#closeListeners) {
      try {
        l(this.#closeReason);
      } catch (e) {
        this.#logger.error({ err: e }, 'replica connection close listener threw');
      }
    }
  }
}
