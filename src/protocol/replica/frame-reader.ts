// Resumable replica-frame parser over a TCP byte stream: header (64 bytes) then payload. Chunks are
// kept as received; a header or payload inside one chunk is handed out as a view, only one straddling
// chunks is copied. With an allocator the payload is copied straight into a caller-owned buffer
// (e.g. an O_DIRECT-aligned pooled one) as bytes arrive, sized once from the header.
import { ByteQueue } from '../byte-queue.js';
import { crc32c } from '../iscsi/digest.js';
import {
  DEFAULT_MAX_PAYLOAD_LENGTH, FRAME_HEADER_LENGTH, FrameError, FrameErrorCode, decodeHeader, type FrameHeader,
} from './frame.js';

export interface ReceivedFrame {
  readonly header: FrameHeader;
  /**
   * A view into the pushed chunks (never written by the reader, so it stays valid as long as the pusher
   * does not reuse them — socket chunks are fresh per 'data'), a copy when it straddled chunks, or,
   * when `allocated`, the allocator's buffer.
   */
  readonly payload: Buffer;
  /** False when the payload does not match payloadCrc: answer BAD_PAYLOAD_CRC, the stream is still in sync. */
  readonly payloadCrcOk: boolean;
  /** True when `payload` came from the allocator: the receiver owns (and must release) it. */
  readonly allocated: boolean;
}

/** Returns a buffer of exactly `size` bytes for this frame's payload, or undefined for the default handling. */
export type PayloadAllocator = (size: number, header: FrameHeader) => Buffer | undefined;

export interface FrameReaderOptions {
  /** Largest accepted payloadLength; a larger one is fatal, checked before anything is buffered. */
  readonly maxPayloadLength?: number;
  readonly allocatePayload?: PayloadAllocator;
}

export type FrameHandler = (frame: ReceivedFrame) => void;
export type FrameErrorHandler = (err: FrameError) => void;

const S_HEADER = 0;
const S_PAYLOAD = 1; // buffering chunks until the whole payload is in
const S_FILL = 2; // copying into an allocated payload buffer
const S_DEAD = 3;
type State = typeof S_HEADER | typeof S_PAYLOAD | typeof S_FILL | typeof S_DEAD;

const EMPTY = Buffer.alloc(0);

export class FrameReader {
  readonly #maxPayload: number;
  readonly #allocate: PayloadAllocator | undefined;
  readonly #onFrame: FrameHandler;
  readonly #onError: FrameErrorHandler;

  readonly #input = new ByteQueue();

  #state: State = S_HEADER;
  #header: FrameHeader | undefined;
  #fill: Buffer = EMPTY;
  #filled = 0;
  #paused = false;
  #running = false;

  constructor(options: FrameReaderOptions, onFrame: FrameHandler, onError: FrameErrorHandler) {
    this.#maxPayload = options.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH;
    this.#allocate = options.allocatePayload;
    this.#onFrame = onFrame;
    this.#onError = onError;
  }

  /** Bytes received and not yet handed out (excluding bytes already copied into an allocated payload). */
  get bufferedBytes(): number {
    return this.#input.length;
  }

  get failed(): boolean {
    return this.#state === S_DEAD;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** Stop emitting frames (input is still accepted and buffered) — e.g. too many requests in flight. */
  pause(): void {
    this.#paused = true;
  }

  /** Emit what is buffered, then keep going with new input. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#run();
  }

  /** Parse every complete frame in the input so far, calling the handlers synchronously in order. */
  push(chunk: Buffer): void {
    if (this.#state === S_DEAD || chunk.length === 0) return;
    this.#input.push(chunk);
    this.#run();
  }

  /**
   * Hand over the unparsed input and stop: for a handshake reader whose connection continues with
   * another reader. Call at a frame boundary (from onFrame, after pause()).
   */
  detach(): Buffer[] {
    const rest = this.#state === S_HEADER ? this.#input.drain() : [];
    this.#die();
    return rest;
  }

  #run(): void {
    // A handler that resumes or pushes re-entrantly must not start a second loop over the same chunks.
    if (this.#running) return;
    this.#running = true;
    try {
      for (;;) {
        const state = this.#state;
        if (this.#paused) return;
        if (state === S_HEADER) {
          if (this.#input.length < FRAME_HEADER_LENGTH) return;
          this.#readHeader();
        } else if (state === S_PAYLOAD) {
          const need = this.#header!.payloadLength;
          if (this.#input.length < need) return;
          this.#emit(this.#input.consume(need), false);
        } else if (state === S_FILL) {
          if (this.#input.length === 0) return;
          this.#fillFromChunks();
        } else {
          return;
        }
      }
    } finally {
      this.#running = false;
    }
  }

  #readHeader(): void {
    const raw = this.#input.consume(FRAME_HEADER_LENGTH);
    let header: FrameHeader;
    try {
      header = decodeHeader(raw);
    } catch (err) {
      this.#fatal(err instanceof FrameError ? err : new FrameError(FrameErrorCode.BadMagic, String(err)));
      return;
    }
    const size = header.payloadLength;
    if (size > this.#maxPayload) {
      this.#fatal(new FrameError(FrameErrorCode.PayloadTooLarge,
        `payload length ${size} exceeds the maximum ${this.#maxPayload}`));
      return;
    }
    this.#header = header;
    if (size === 0) {
      this.#emit(EMPTY, false);
      return;
    }
    const target = this.#allocate?.(size, header);
    if (target !== undefined) {
      if (target.length !== size) {
        throw new RangeError(`payload allocator returned ${target.length} bytes for a ${size}-byte payload`);
      }
      this.#fill = target;
      this.#filled = 0;
      this.#state = S_FILL;
    } else {
      this.#state = S_PAYLOAD;
    }
  }

  #fillFromChunks(): void {
    const target = this.#fill;
    this.#filled += this.#input.copyInto(target, this.#filled, target.length - this.#filled);
    if (this.#filled === target.length) {
      this.#fill = EMPTY;
      this.#emit(target, true);
    }
  }

  #emit(payload: Buffer, allocated: boolean): void {
    const header = this.#header!;
    const payloadCrcOk = payload.length === 0 ? header.payloadCrc === 0 : crc32c(payload) === header.payloadCrc;
    // State moves on before the callback so a re-entrant or throwing consumer leaves the parser consistent.
    this.#state = S_HEADER;
    this.#header = undefined;
    this.#onFrame({ header, payload, payloadCrcOk, allocated });
  }

  #fatal(err: FrameError): void {
    this.#die();
    this.#onError(err);
  }

  #die(): void {
    this.#state = S_DEAD;
    this.#input.clear();
    this.#header = undefined;
    this.#fill = EMPTY;
  }
}
