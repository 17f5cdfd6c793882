/**
 * Typed wrapper over the `blockio` Node-API addon (native/blockio.c): O_DIRECT
 * block I/O on a regular file or a block device, never blocking the event
 * loop (io_uring, or a dedicated thread pool where io_uring is unavailable).
 *
 * The addon only does mechanism; this module adds types, clear load errors and
 * the `BlockFile` class. Errors from the addon carry `code` (errno name, or
 * `EALIGN` for a misaligned buffer/offset/length refused before the kernel),
 * `op`, `syscall`, `offset` and `length`.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../shared/errors.js';

export type Engine = 'io_uring' | 'threads';

export interface OpenOptions {
  /** Open read-write (default read-only). */
  readonly write?: boolean;
  /** O_DIRECT (default true): buffers, offsets and lengths must be aligned. */
  readonly direct?: boolean;
  /** I/O engine (default io_uring, falling back to threads if the kernel refuses it). */
  readonly engine?: Engine;
}

/** Per-operation options. */
export interface IoOptions {
  /**
   * Nobody waits for this I/O soon (a copy in place the journal already covers): with io_uring it
   * is submitted at the end of the event-loop turn, after the turn's other I/O and together with
   * every other background op, instead of at once. Latency-bound I/O must not set it.
   */
  readonly background?: boolean;
}

/** Cumulative counters of this thread's io_uring ring (one per Node environment) since it started. */
export interface IoStats {
  /** Operations queued on the ring. */
  readonly ops: number;
  /** io_uring_enter calls that submitted, and wakeups that reaped completions. */
  readonly enters: number;
  readonly reaps: number;
  /** Completions reaped. */
  readonly cqes: number;
  /** Nanoseconds ops spent queued in the process before the kernel took them (summed). */
  readonly queueNs: number;
  /** Nanoseconds from submission until the completion was reaped (summed): device + kernel + waiting to be reaped. */
  readonly deviceNs: number;
  /** Nanoseconds the event loop spent settling completions (and running the JS they resumed). */
  readonly settleNs: number;
  /** Nanoseconds spent in submitting io_uring_enter calls. */
  readonly enterNs: number;
}

/** Error thrown or rejected by the addon. */
export interface BlockIoError extends Error {
  readonly code: string;
  readonly op?: string;
  readonly syscall?: string;
  readonly offset?: number;
  readonly length?: number;
  readonly errno?: number;
}

interface NativeHandle {
  readonly handle: unknown;
  readonly fd: number;
  readonly size: number;
  readonly isBlockDevice: boolean;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly memoryAlignment: number;
  readonly direct: boolean;
  readonly engine: Engine;
}

type Buffers = Uint8Array | readonly Uint8Array[];

interface Addon {
  open(path: string, options: { write: boolean; direct: boolean; engine: Engine }): NativeHandle;
  allocAligned(size: number, alignment: number): Buffer;
  read(handle: unknown, buffers: Buffers, offset: number, background?: boolean): Promise<number>;
  write(handle: unknown, buffers: Buffers, offset: number, background?: boolean): Promise<number>;
  fdatasync(handle: unknown): Promise<number>;
  discard(handle: unknown, offset: number, length: number): Promise<number>;
  writeZeroes(handle: unknown, offset: number, length: number): Promise<number>;
  close(handle: unknown): Promise<void>;
  engineInfo(): { ioUring: boolean; ioUringError?: string; threads: number };
  ioStats(): IoStats;
}

let addon: Addon | undefined;

/** Where the addon is looked for: BLOCKIO_ADDON, else build/Release under the package root. */
function candidates(): string[] {
  const fromEnv = process.env['BLOCKIO_ADDON'];
  if (fromEnv !== undefined && fromEnv !== '') return [resolve(fromEnv)];
  const out: string[] = [];
  // Walk up from this file (src/replica or dist/src/replica) to the package root.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json'))) {
      out.push(join(dir, 'build', 'Release', 'blockio.node'));
      break;
    }
    dir = dirname(dir);
  }
  return out;
}

/** Loads the addon once; a failure says how to rebuild it. */
export function loadAddon(): Addon {
  if (addon !== undefined) return addon;
  const require = createRequire(import.meta.url);
  const tried = candidates();
  let cause: unknown = new Error('package root not found');
  for (const path of tried) {
    try {
      addon = require(path) as Addon;
      return addon;
    } catch (err) {
      cause = err;
    }
  }
  const reason = errorMessage(cause);
  const err = new Error(
    `cannot load the blockio native addon (tried ${tried.join(', ') || 'nothing'}): ${reason}. ` +
      'Rebuild it with `npm rebuild` or `npx node-gyp rebuild` in the package root ' +
      '(needs python3, make, a C compiler and the Node headers).',
    { cause },
  ) as Error & { code: string };
  err.code = 'ERR_BLOCKIO_LOAD';
  throw err;
}

/** Which engines work in this process (and why io_uring does not, if it does not). */
export function engineInfo(): { ioUring: boolean; ioUringError?: string; threads: number } {
  return loadAddon().engineInfo();
}

/** Where this thread's io_uring time goes: queued in the process, in the kernel/device, settling. */
export function ioStats(): IoStats {
  return loadAddon().ioStats();
}

/** A zero-filled Buffer whose memory is aligned for O_DIRECT (freed when collected). */
export function allocAligned(size: number, alignment = 4096): Buffer {
  return loadAddon().allocAligned(size, alignment);
}

function closedError(op: string): BlockIoError {
  const err = new Error(`${op}: file is closed`) as Error & { code: string; op: string };
  err.code = 'EBADF';
  err.op = op;
  return err;
}

/** An open file or block device. All I/O is asynchronous; close() waits for in-flight I/O. */
export class BlockFile {
  readonly path: string;
  readonly fd: number;
  /** Bytes (fstat for files, BLKGETSIZE64 for block devices) at open time. */
  readonly size: number;
  readonly isBlockDevice: boolean;
  /** Offset and length granularity for O_DIRECT (BLKSSZGET, or STATX_DIOALIGN/probe for files). */
  readonly logicalBlockSize: number;
  /** BLKPBSZGET, or st_blksize for files. */
  readonly physicalBlockSize: number;
  /** Required buffer address alignment for O_DIRECT. */
  readonly memoryAlignment: number;
  readonly direct: boolean;
  readonly engine: Engine;
  readonly #native: Addon;
  readonly #handle: unknown;
  #closed = false;
  #closing: Promise<void> | undefined;
  #pending = 0;
  #drained: (() => void) | undefined;

  private constructor(path: string, native: Addon, h: NativeHandle) {
    this.path = path;
    this.#native = native;
    this.#handle = h.handle;
    this.fd = h.fd;
    this.size = h.size;
    this.isBlockDevice = h.isBlockDevice;
    this.logicalBlockSize = h.logicalBlockSize;
    this.physicalBlockSize = h.physicalBlockSize;
    this.memoryAlignment = h.memoryAlignment;
    this.direct = h.direct;
    this.engine = h.engine;
  }

  /** Opens `path`; rejects with code ENOENT, EACCES, ... like fs. */
  static async open(path: string, options: OpenOptions = {}): Promise<BlockFile> {
    const native = loadAddon();
    const h = native.open(path, {
      write: options.write ?? false,
      direct: options.direct ?? true,
      engine: options.engine ?? 'io_uring',
    });
    return new BlockFile(path, native, h);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Reads into `buffers` (one, or several as a readv) at `offset`; resolves to bytes read (short at EOF). */
  read(buffers: Buffers, offset: number, options?: IoOptions): Promise<number> {
    if (this.#closed) return Promise.reject(closedError('read'));
    return this.#track(this.#native.read(this.#handle, buffers, offset, options?.background === true));
  }

  /** Writes all of `buffers` at `offset`; a short write rejects with EIO. */
  async write(buffers: Buffers, offset: number, options?: IoOptions): Promise<number> {
    if (this.#closed) throw closedError('write');
    const n = await this.#track(this.#native.write(this.#handle, buffers, offset, options?.background === true));
    const want = buffers instanceof Uint8Array ? buffers.byteLength : buffers.reduce((s, b) => s + b.byteLength, 0);
    if (n !== want) {
      const err = new Error(`write: short write of ${n} of ${want} bytes at offset ${offset}`) as Error &
        Record<string, unknown>;
      Object.assign(err, { code: 'EIO', op: 'write', offset, length: want });
      throw err;
    }
    return n;
  }

  /** fdatasync(2): data written before this call is durable when it resolves. */
  async flush(): Promise<void> {
    if (this.#closed) throw closedError('fdatasync');
    await this.#track(this.#native.fdatasync(this.#handle));
  }

  /** Deallocates a range (BLKDISCARD, or a punched hole in a file); it reads back as zeroes on files. */
  async discard(offset: number, length: number): Promise<void> {
    if (this.#closed) throw closedError('discard');
    await this.#track(this.#native.discard(this.#handle, offset, length));
  }

  /** Zeroes a range (BLKZEROOUT, FALLOC_FL_ZERO_RANGE, or written zeroes). */
  async writeZeroes(offset: number, length: number): Promise<void> {
    if (this.#closed) throw closedError('writeZeroes');
    await this.#track(this.#native.writeZeroes(this.#handle, offset, length));
  }

  /**
   * Counts an op until its promise has settled *and* the caller's reactions to it
   * were queued, so close() resolves after every op's promise has settled (the
   * addon alone only guarantees the kernel I/O finished before the fd closes).
   */
  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending++;
    const done = (): void => {
      if (--this.#pending === 0 && this.#drained !== undefined) {
        const resolveDrain = this.#drained;
        this.#drained = undefined;
        // One more turn: the op's own promise reactions run first.
        queueMicrotask(resolveDrain);
      }
    };
    p.then(done, done);
    return p;
  }

  /** Refuses new I/O at once, waits for in-flight I/O to settle, then closes the descriptor. Idempotent. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = this.#native.close(this.#handle).then(async () => {
        if (this.#pending > 0) await new Promise<void>((resolve) => { this.#drained = resolve; });
      });
    }
    return this.#closing;
  }
}
