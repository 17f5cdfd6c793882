// A sparse in-memory BlockDevice for tests: blocks live in a Map (absent = unmapped, reads as zeroes).
// Optional hooks let tests inject latency and failures.
import { BlockDeviceError, type BlockDevice, type BlockDeviceWriteOptions } from './block-device.js';

export interface MemoryBlockDeviceOptions {
  readonly blockSize?: 512 | 4096;
  readonly blockCount: bigint;
  readonly writeCache?: boolean;
}

export class MemoryBlockDevice implements BlockDevice {
  readonly blockSize: number;
  readonly writeCache: boolean;
  #blockCount: bigint;
  readonly #blocks = new Map<bigint, Buffer>();
  readonly #listeners = new Set<(n: bigint) => void>();
  readonly #state = new Map<string, Buffer>();
  /** Called before every I/O (tests: delays, failures). */
  beforeIo: ((op: 'read' | 'write' | 'flush' | 'unmap' | 'zero', lba: bigint, blocks: number) => Promise<void> | void) | undefined;
  /** Counters for tests. */
  readonly stats = { reads: 0, writes: 0, fuaWrites: 0, flushes: 0, unmaps: 0, zeroes: 0 };

  constructor(options: MemoryBlockDeviceOptions) {
    this.blockSize = options.blockSize ?? 512;
    this.#blockCount = options.blockCount;
    this.writeCache = options.writeCache ?? true;
  }

  get blockCount(): bigint {
    return this.#blockCount;
  }

  /** Grow (tests of CAPACITY DATA HAS CHANGED). */
  resize(blockCount: bigint): void {
    this.#blockCount = blockCount;
    for (const l of this.#listeners) l(blockCount);
  }

  #check(lba: bigint, blocks: number): void {
    if (lba < 0n || lba + BigInt(blocks) > this.#blockCount) throw new BlockDeviceError('ERANGE', `lba ${lba}+${blocks} beyond capacity`);
  }

  async read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    this.#check(lba, blocks);
    await this.beforeIo?.('read', lba, blocks);
    this.stats.reads++;
    const bs = this.blockSize;
    for (let i = 0; i < blocks; i++) {
      const b = this.#blocks.get(lba + BigInt(i));
      if (b) b.copy(into, i * bs);
      else into.fill(0, i * bs, (i + 1) * bs);
    }
  }

  async write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    const bs = this.blockSize;
    const blocks = data.length / bs;
    this.#check(lba, blocks);
    await this.beforeIo?.('write', lba, blocks);
    this.stats.writes++;
    if (options?.fua) this.stats.fuaWrites++;
    for (let i = 0; i < blocks; i++) this.#blocks.set(lba + BigInt(i), Buffer.from(data.subarray(i * bs, (i + 1) * bs)));
  }

  async flush(): Promise<void> {
    await this.beforeIo?.('flush', 0n, 0);
    this.stats.flushes++;
  }

  async unmap(lba: bigint, blocks: number): Promise<void> {
    this.#check(lba, blocks);
    await this.beforeIo?.('unmap', lba, blocks);
    this.stats.unmaps++;
    this.#deallocate(lba, blocks);
  }

  async writeZeroes(lba: bigint, blocks: number): Promise<void> {
    this.#check(lba, blocks);
    await this.beforeIo?.('zero', lba, blocks);
    this.stats.zeroes++;
    this.#deallocate(lba, blocks);
  }

  #deallocate(lba: bigint, blocks: number): void {
    // Iterate whichever is smaller: the range or the mapped set.
    if (blocks > this.#blocks.size) {
      const end = lba + BigInt(blocks);
      for (const k of [...this.#blocks.keys()]) if (k >= lba && k < end) this.#blocks.delete(k);
    } else {
      for (let i = 0; i < blocks; i++) this.#blocks.delete(lba + BigInt(i));
    }
  }

  async mapStatus(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }> {
    const mapped = this.#blocks.has(lba);
    if (mapped) {
      let n = 1;
      while (n < maxBlocks && this.#blocks.has(lba + BigInt(n))) n++;
      return { blocks: n, mapped };
    }
    // Unmapped: the extent runs to the next mapped block (scan the mapped set, not the range).
    let next = lba + BigInt(maxBlocks);
    for (const k of this.#blocks.keys()) if (k > lba && k < next) next = k;
    return { blocks: Number(next - lba), mapped };
  }

  /** Mapped block count (tests). */
  get mappedBlocks(): number {
    return this.#blocks.size;
  }

  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async loadState(key: string): Promise<Buffer | undefined> {
    return this.#state.get(key);
  }

  async saveState(key: string, value: Buffer): Promise<void> {
    this.#state.set(key, Buffer.from(value));
  }

  async close(): Promise<void> {
    this.#listeners.clear();
  }
}
