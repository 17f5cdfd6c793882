// A BlockDevice over one replica connection (k = 1). The target owns the io_seq order: every
// mutating request takes the next io_seq, starting above the highest the replica reported in HELLO,
// so the replica can tell a newer write from a replayed older one. Imports only the protocol and the
// target-side connection, never src/replica.
import { blockDeviceErrorFor, inPieces, requestOffset } from './replica-requests.js';
import type { BlockDevice, BlockDeviceWriteOptions } from './block-device.js';
import type { ReplicaConnection } from './replica-connection.js';

export interface ReplicaBlockDeviceOptions {
  readonly connection: ReplicaConnection;
  /** The target's epoch, stamped on every request (fencing). */
  readonly epoch: number;
  /** First io_seq to use (default: one above the highest the replica reported in HELLO). */
  readonly firstIoSeq?: number;
}

export class ReplicaBlockDevice implements BlockDevice {
  readonly blockSize: number;
  readonly writeCache = true;
  readonly #conn: ReplicaConnection;
  readonly #epoch: number;
  #blockCount: bigint;
  #nextIoSeq: number;
  readonly #listeners = new Set<(n: bigint) => void>();

  constructor(options: ReplicaBlockDeviceOptions) {
    const hello = options.connection.hello;
    this.#conn = options.connection;
    this.#epoch = options.epoch;
    this.blockSize = hello.blockSize;
    this.#blockCount = BigInt(Math.floor(hello.capacityBytes / hello.blockSize));
    this.#nextIoSeq = Math.max(options.firstIoSeq ?? 0, hello.highestIoSeq + 1);
  }

  get blockCount(): bigint {
    return this.#blockCount;
  }

  get connection(): ReplicaConnection {
    return this.#conn;
  }

  /** The replica was resized: serve up to `blocks` (never fewer than now). */
  grow(blocks: bigint): void {
    if (blocks <= this.#blockCount) return;
    this.#blockCount = blocks;
    for (const l of this.#listeners) l(blocks);
  }

  /** The io_seq the next mutating request will take. */
  get nextIoSeq(): number {
    return this.#nextIoSeq;
  }

  async read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    if (blocks === 0) return;
    const offset = requestOffset(lba, blocks, this.#blockCount, this.blockSize);
    const length = blocks * this.blockSize;
    try {
      await inPieces(length, async (at, n) => {
        const { data } = await this.#conn.read(offset + at, n, this.#epoch);
        data.copy(into, at, 0, n);
      });
    } catch (err) {
      throw blockDeviceErrorFor(err, this.blockSize);
    }
  }

  async write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    if (data.length === 0) return;
    const offset = requestOffset(lba, data.length / this.blockSize, this.#blockCount, this.blockSize);
    const fua = options?.fua === true;
    try {
      await inPieces(data.length, (at, n) =>
        this.#conn.write(offset + at, data.subarray(at, at + n), { epoch: this.#epoch, ioSeq: this.#takeIoSeq(), fua }));
    } catch (err) {
      throw blockDeviceErrorFor(err, this.blockSize);
    }
  }



  async flush(): Promise<void> {
    try {
      await this.#conn.sync(this.#epoch);
    } catch (err) {
      throw blockDeviceErrorFor(err, this.blockSize);
    }
  }

  async unmap(lba: bigint, blocks: number): Promise<void> {
    if (blocks === 0) return;
    const offset = requestOffset(lba, blocks, this.#blockCount, this.blockSize);
    try {
      await inPieces(blocks * this.blockSize, (at, n) => this.#conn.unmap(offset + at, n, { epoch: this.#epoch, ioSeq: this.#takeIoSeq() }));
    } catch (err) {
      throw blockDeviceErrorFor(err, this.blockSize);
    }
  }

  async writeZeroes(lba: bigint, blocks: number): Promise<void> {
    if (blocks === 0) return;
    const offset = requestOffset(lba, blocks, this.#blockCount, this.blockSize);
    try {
      await inPieces(blocks * this.blockSize, (at, n) => this.#conn.writeZeroes(offset + at, n, { epoch: this.#epoch, ioSeq: this.#takeIoSeq() }));
    } catch (err) {
      throw blockDeviceErrorFor(err, this.blockSize);
    }
  }

  async mapStatus(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }> {
    const offset = requestOffset(lba, Math.max(1, maxBlocks), this.#blockCount, this.blockSize);
    try {
      const extent = await this.#conn.mapStatus(offset, Math.max(1, maxBlocks) * this.blockSize, this.#epoch);
      return { blocks: Math.max(1, Math.floor(extent.length / this.blockSize)), mapped: extent.mapped };
    } catch (err) {
      throw blockDeviceErrorFor(err, this.blockSize);
    }
  }

  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.#listeners.clear();
    await this.#conn.close();
  }

  #takeIoSeq(): number {
    return this.#nextIoSeq++;
  }


}
