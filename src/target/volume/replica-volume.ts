// The volume the SCSI layer sees when its data lives in a replica process (k = 1; the replicated
// volume of the next step fans out to k). It survives the replica going away: I/O waits for the
// replica to reconnect for up to `holdMs` and is then re-issued on the new connection, so a
// replica restart is a pause, not an error; past the hold it fails as offline (CHECK CONDITION).
// io_seq continues across connections, above anything issued before and anything the replica
// reports having applied, so a re-issued write is never mistaken for an older one.

import type { Logger } from '../../shared/logger.js';
import { BlockDeviceError, type BlockDevice, type BlockDeviceWriteOptions } from './block-device.js';
import type { ReplicaConnection } from './replica-connection.js';
import { ReplicaBlockDevice } from './replica-device.js';
import type { TargetStateKeeper } from './target-state-keeper.js';

export interface ReplicaVolumeOptions {
  readonly blockSize: number;
  readonly capacityBytes: number;
  /** Target epoch stamped on every request (fencing). */
  readonly epoch: number;
  /** Persistent SCSI state (reservations), kept on the replica; none = saveState fails. */
  readonly targetState?: TargetStateKeeper;
  /** How long I/O waits for a replica before failing (default 30 s). */
  readonly holdMs?: number;
  readonly logger: Logger;
}

export class ReplicaVolume implements BlockDevice {
  readonly blockSize: number;
  readonly writeCache = true;
  readonly #o: ReplicaVolumeOptions;
  readonly #holdMs: number;
  #blockCount: bigint;
  #current: ReplicaBlockDevice | undefined;
  #lastIssued = 0;
  #waiters = new Set<() => void>();
  readonly #listeners = new Set<(n: bigint) => void>();
  #closed = false;

  constructor(options: ReplicaVolumeOptions) {
    this.#o = options;
    this.blockSize = options.blockSize;
    this.#blockCount = BigInt(options.capacityBytes / options.blockSize);
    this.#holdMs = options.holdMs ?? 30_000;
  }

  get blockCount(): bigint {
    return this.#blockCount;
  }

  get connected(): boolean {
    return this.#current !== undefined;
  }

  /** The replica's data connection while it is connected. */
  get connection(): ReplicaConnection | undefined {
    return this.#current?.connection;
  }

  /** The volume grew to `capacityBytes` (the replica was resized first). Shrinking is refused. */
  grow(capacityBytes: number): void {
    // The multiple check first: BigInt() of a fraction throws a RangeError that names nothing.
    if (capacityBytes % this.blockSize !== 0) throw new Error(`${capacityBytes} is not a multiple of the block size ${this.blockSize}`);
    const blocks = BigInt(capacityBytes / this.blockSize);
    if (blocks < this.#blockCount) throw new Error(`cannot shrink from ${this.#blockCount} to ${blocks} blocks`);
    if (blocks === this.#blockCount) return;
    this.#blockCount = blocks;
    this.#current?.grow(blocks);
    for (const l of this.#listeners) l(blocks);
  }

  /** Serve I/O through `connection` from now on (a newly connected or reconnected replica). */
  attach(connection: ReplicaConnection): void {
    const hello = connection.hello;
    if (hello.blockSize !== this.blockSize) {
      throw new Error(`replica ${hello.replicaId} has block size ${hello.blockSize}, the volume ${this.blockSize}`);
    }
    const previous = this.#current;
    const device = new ReplicaBlockDevice({
      connection,
      epoch: this.#o.epoch,
      firstIoSeq: Math.max(this.#lastIssued, hello.highestIoSeq) + 1,
    });
    device.grow(this.#blockCount);
    this.#current = device;
    void this.#o.targetState?.push({ id: hello.replicaId, controlAddress: hello.controlAddress });
    if (previous !== undefined) void previous.close().catch(() => undefined);
    connection.onClose((reason) => {
      if (this.#current !== device) return;
      this.#lastIssued = Math.max(this.#lastIssued, device.nextIoSeq - 1);
      this.#current = undefined;
      this.#o.logger.warn({ replica: hello.replicaId, reason }, 'replica disconnected; I/O waits for it to come back');
    });
    const grown = BigInt(Math.floor(hello.capacityBytes / this.blockSize));
    if (grown > this.#blockCount) {
      this.#blockCount = grown;
      for (const l of this.#listeners) l(grown);
    }
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  #waitForReplica(deadline: number): Promise<ReplicaBlockDevice> {
    return new Promise((resolve, reject) => {
      const left = deadline - Date.now();
      if (this.#closed) {
        reject(new BlockDeviceError('EOFFLINE', 'the volume is closed'));
        return;
      }
      if (left <= 0) {
        reject(new BlockDeviceError('EOFFLINE', `no replica connected for ${this.#holdMs} ms`));
        return;
      }
      const wake = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        if (this.#current !== undefined) resolve(this.#current);
        else this.#waitForReplica(deadline).then(resolve, reject);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(wake);
        reject(new BlockDeviceError('EOFFLINE', `no replica connected for ${this.#holdMs} ms`));
      }, left);
      this.#waiters.add(wake);
    });
  }

  /** Run `op` on the connected replica; if the connection dies under it, wait and re-issue. */
  async #io<T>(op: (d: ReplicaBlockDevice) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#holdMs;
    for (;;) {
      const d = this.#current ?? await this.#waitForReplica(deadline);
      try {
        return await op(d);
      } catch (err) {
        const lost = err instanceof BlockDeviceError && err.code === 'EOFFLINE' && !this.#closed;
        if (!lost) throw err;
        if (this.#current === d) this.#current = undefined;
      }
    }
  }

  read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    return this.#io((d) => d.read(lba, blocks, into));
  }

  write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    return this.#io((d) => d.write(lba, data, options));
  }

  flush(): Promise<void> {
    return this.#io((d) => d.flush());
  }

  unmap(lba: bigint, blocks: number): Promise<void> {
    return this.#io((d) => d.unmap(lba, blocks));
  }

  writeZeroes(lba: bigint, blocks: number): Promise<void> {
    return this.#io((d) => d.writeZeroes(lba, blocks));
  }

  mapStatus(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }> {
    return this.#io((d) => d.mapStatus(lba, maxBlocks));
  }

  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  loadState(key: string): Promise<Buffer | undefined> {
    return Promise.resolve(this.#o.targetState?.load(key));
  }

  /** On the replica; with none connected it waits for one, like I/O (holdMs). */
  async saveState(key: string, value: Buffer): Promise<void> {
    const keeper = this.#o.targetState;
    if (keeper === undefined) throw new Error('no target state store');
    const device = this.#current ?? await this.#waitForReplica(Date.now() + this.#holdMs);
    const hello = device.connection.hello;
    await keeper.save(key, value, [{ id: hello.replicaId, controlAddress: hello.controlAddress, counts: true }]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    for (const wake of this.#waiters) wake();
    const d = this.#current;
    this.#current = undefined;
    await d?.close();
  }
}
