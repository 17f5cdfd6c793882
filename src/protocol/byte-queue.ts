// The pending input of a resumable stream parser: received chunks, consumed from the front without
// copying when a request falls inside one chunk (a `subarray` view), with one copy otherwise.
import { allocIoBuffer } from './io-buffer.js';

const EMPTY = Buffer.alloc(0);

export class ByteQueue {
  // #chunks[#head..] with #offset bytes of #chunks[#head] already consumed.
  #chunks: Buffer[] = [];
  #head = 0;
  #offset = 0;
  #length = 0;

  /** Bytes buffered. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Take `n` buffered bytes (n ≤ length): a view when one chunk holds them, else a copy. */
  consume(n: number): Buffer {
    if (n === 0) return EMPTY;
    this.#length -= n;
    const first = this.#chunks[this.#head]!;
    const start = this.#offset;
    const end = start + n;
    if (end <= first.length) {
      if (end === first.length) this.#dropHead();
      else this.#offset = end;
      return first.subarray(start, end);
    }
    const out = allocIoBuffer(n);
    this.#copy(out, 0, n);
    return out;
  }

  /** Move up to `max` buffered bytes into `target` at `at`; returns how many. */
  copyInto(target: Buffer, at: number, max: number): number {
    const n = Math.min(max, this.#length);
    this.#length -= n;
    this.#copy(target, at, n);
    return n;
  }

  /** Drop `n` buffered bytes (n ≤ length). */
  skip(n: number): void {
    this.#length -= n;
    while (n > 0) {
      const c = this.#chunks[this.#head]!;
      const take = Math.min(c.length - this.#offset, n);
      n -= take;
      if (this.#offset + take === c.length) this.#dropHead();
      else this.#offset += take;
    }
  }

  /** Everything buffered, as views, leaving the queue empty (to hand the stream to another parser). */
  drain(): Buffer[] {
    const rest: Buffer[] = [];
    for (let i = this.#head; i < this.#chunks.length; i++) {
      const c = this.#chunks[i]!;
      rest.push(i === this.#head ? c.subarray(this.#offset) : c);
    }
    this.clear();
    return rest.filter((c) => c.length > 0);
  }

  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#offset = 0;
    this.#length = 0;
  }

  #copy(target: Buffer, at: number, n: number): void {
    let written = 0;
    while (written < n) {
      const c = this.#chunks[this.#head]!;
      const take = Math.min(c.length - this.#offset, n - written);
      c.copy(target, at + written, this.#offset, this.#offset + take);
      written += take;
      if (this.#offset + take === c.length) this.#dropHead();
      else this.#offset += take;
    }
  }

  #dropHead(): void {
    const chunks = this.#chunks;
    // Release the reference so the chunk can be collected while views into it die off.
    (chunks as (Buffer | undefined)[])[this.#head] = undefined;
    this.#head++;
    this.#offset = 0;
    if (this.#head === chunks.length) {
      chunks.length = 0;
      this.#head = 0;
    } else if (this.#head >= 64) {
      chunks.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
