// A BlockDevice over one replica connection (k = 1). The target owns the io_seq order: every
// mutating request takes the next io_seq, starting above the highest the replica reported in HELLO,
// so the replica can tell a newer write from a replayed older one. Imports only the protocol and the
// target-side connection, never src/replica.
import { ReplicaIoError, ReplicaStatus } from '../../protocol/replica/frame.js';
import { BlockDeviceError, type BlockDevice, type BlockDeviceWriteOptions } from './block-device.js';
import type { ReplicaConnection } from './replica-connection.js';

/** Largest single request to a replica (its responder refuses more than 16 MiB). */
const MAX_REQUEST_BYTES = 4 << 20;

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

  /** The io_seq the next mutating request will take. */
  get nextIoSeq(): number {
    return this.#nextIoSeq;
  }

  async read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    if (blocks === 0) return;
    const offset = this.#offset(lba, blocks);
    const length = blocks * this.blockSize;
    try {
      await this.#pieces(length, async (at, n) => {
        const { data } = await this.#conn.read(offset + at, n, this.#epoch);
        data.copy(into, at, 0, n);
      });
    } catch (err) {
      throw this.#map(err);
    }
  }

  async write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    if (data.length === 0) return;
    const offset = this.#offset(lba, data.length / this.blockSize);
    const fua = options?.fua === true;
    try {
      await this.#pieces(data.length, (at, n) =>
        this.#conn.write(offset + at, data.subarray(at, at + n), { epoch: this.#epoch, ioSeq: this.#takeIoSeq(), fua }));
    } catch (err) {
      throw this.#map(err);
    }
  }

  /** Large requests go to the replica in bounded pieces, all in flight at once. */
  async #pieces(length: number, op: (at: number, n: number) => Promise<unknown>): Promise<void> {
    if (length <= MAX_REQUEST_BYTES) {
      await op(0, length);
      return;
    }
    const ops: Promise<unknown>[] = [];
    for (let at = 0; at < length; at += MAX_REQUEST_BYTES) ops.push(op(at, Math.min(MAX_REQUEST_BYTES, length - at)));
    // Every piece settles before the caller may reuse its buffer.
    const results = await Promise.allSettled(ops);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  async flush(): Promise<void> {
    try {
      await this.#conn.sync(this.#epoch);
    } catch (err) {
      throw this.#map(err);
    }
  }

  async unmap(lba: bigint, blocks: number): Promise<void> {
    if (blocks === 0) return;
    const offset = this.#offset(lba, blocks);
    try {
      await this.#pieces(blocks * this.blockSize, (at, n) => this.#conn.unmap(offset + at, n, { epoch: this.#epoch, ioSeq: this.#takeIoSeq() }));
    } catch (err) {
      throw this.#map(err);
    }
  }

  async writeZeroes(lba: bigint, blocks: number): Promise<void> {
    if (blocks === 0) return;
    const offset = this.#offset(lba, blocks);
    try {
      await this.#pieces(blocks * this.blockSize, (at, n) => this.#conn.writeZeroes(offset + at, n, { epoch: this.#epoch, ioSeq: this.#takeIoSeq() }));
    } catch (err) {
      throw this.#map(err);
    }
  }

  async mapStatus(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }> {
    const offset = this.#offset(lba, Math.max(1, maxBlocks));
    try {
      const extent = await this.#conn.mapStatus(offset, Math.max(1, maxBlocks) * this.blockSize, this.#epoch);
      return { blocks: Math.max(1, Math.floor(extent.length / this.blockSize)), mapped: extent.mapped };
    } catch (err) {
      throw this.#map(err);
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

  /** Byte offset of a range checked against capacity (the replica checks too; this keeps numbers safe). */
  #offset(lba: bigint, blocks: number): number {
    if (lba < 0n || lba + BigInt(blocks) > this.#blockCount) {
      throw new BlockDeviceError('ERANGE', `lba ${lba}+${blocks} beyond capacity ${this.#blockCount}`);
    }
    return Number(lba) * this.blockSize;
  }

  #map(err: unknown): BlockDeviceError {
    if (err instanceof BlockDeviceError) return err;
    if (!(err instanceof ReplicaIoError)) return new BlockDeviceError('EIO', err instanceof Error ? err.message : String(err));
    switch (err.status) {
      case ReplicaStatus.MediumError: {
        const lba = err.offset === undefined ? undefined : BigInt(Math.floor(err.offset / this.blockSize));
        return new BlockDeviceError('EMEDIUM', err.message, lba);
      }
      case ReplicaStatus.NoSpace: return new BlockDeviceError('ENOSPC', err.message);
      case ReplicaStatus.OutOfRange: return new BlockDeviceError('ERANGE', err.message);
      case ReplicaStatus.Closed: return new BlockDeviceError('EOFFLINE', err.message);
      default: return new BlockDeviceError('EIO', err.message);
    }
  }
}
