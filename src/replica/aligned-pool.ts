/**
 * A free list of O_DIRECT-aligned buffers per power-of-two size class, so the
 * I/O hot path reuses memory instead of calling posix_memalign. Buffers are
 * handed out uninitialised (old contents); callers overwrite or read into them.
 */
import { allocAligned } from './native.js';

export interface AlignedPoolOptions {
  /** Address alignment and smallest class (default 4096). Power of two. */
  readonly alignment?: number;
  /** Released buffers kept per class beyond which they are left to the GC (default 256). */
  readonly maxFreePerClass?: number;
  /** Allocator, replaceable for tests (default: the addon's allocAligned). */
  readonly alloc?: (size: number, alignment: number) => Buffer;
}

export interface AlignedPoolStats {
  /** Buffers created by the allocator over the pool's life. */
  readonly allocated: number;
  /** Buffers currently handed out. */
  readonly inUse: number;
  /** Buffers waiting in free lists. */
  readonly free: number;
}

export class AlignedPool {
  readonly alignment: number;
  readonly maxFreePerClass: number;
  readonly #alloc: (size: number, alignment: number) => Buffer;
  /** class size -> free buffers of exactly that size */
  readonly #free = new Map<number, Buffer[]>();
  /** backing store -> the full-size Buffer, for buffers handed out */
  readonly #out = new Map<ArrayBufferLike, Buffer>();
  #allocated = 0;
  #freeCount = 0;

  constructor(options: AlignedPoolOptions = {}) {
    const alignment = options.alignment ?? 4096;
    if (!Number.isInteger(alignment) || alignment < 8 || (alignment & (alignment - 1)) !== 0) {
      throw new RangeError(`alignment must be a power of two >= 8, got ${alignment}`);
    }
    this.alignment = alignment;
    this.maxFreePerClass = options.maxFreePerClass ?? 256;
    this.#alloc = options.alloc ?? allocAligned;
  }

  /** The class (buffer size actually reserved) serving a request of `size` bytes. */
  classOf(size: number): number {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`invalid buffer size ${size}`);
    let c = this.alignment;
    while (c < size) c *= 2;
    return c;
  }

  /** A buffer of exactly `size` bytes, aligned; a view of a pooled class buffer when smaller. */
  acquire(size: number): Buffer {
    const cls = this.classOf(size);
    const list = this.#free.get(cls);
    let full = list?.pop();
    if (full === undefined) {
      full = this.#alloc(cls, this.alignment);
      this.#allocated++;
    } else {
      this.#freeCount--;
    }
    this.#out.set(full.buffer, full);
    return size === cls ? full : full.subarray(0, size);
  }

  /** Returns a buffer from acquire(); releasing twice or a foreign buffer throws. */
  release(buf: Uint8Array): void {
    const full = this.#out.get(buf.buffer);
    if (full === undefined) throw new Error('release: buffer is not in use from this pool (double release?)');
    this.#out.delete(buf.buffer);
    let list = this.#free.get(full.byteLength);
    if (list === undefined) {
      list = [];
      this.#free.set(full.byteLength, list);
    }
    if (list.length < this.maxFreePerClass) {
      list.push(full);
      this.#freeCount++;
    }
  }

  /** Fills the free list of `size`'s class up to `count` buffers (warm-up before the hot path). */
  preallocate(size: number, count: number): void {
    const cls = this.classOf(size);
    let list = this.#free.get(cls);
    if (list === undefined) {
      list = [];
      this.#free.set(cls, list);
    }
    while (list.length < count) {
      list.push(this.#alloc(cls, this.alignment));
      this.#allocated++;
      this.#freeCount++;
    }
  }

  get stats(): AlignedPoolStats {
    return { allocated: this.#allocated, inUse: this.#out.size, free: this.#freeCount };
  }
}
