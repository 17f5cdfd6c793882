// A BlockDevice wrapper that reports each completed I/O to an observer (Prometheus counters and
// latency histograms). It sits between SCSI and the volume, so neither knows about metrics.
import type { BlockDevice, BlockDeviceWriteOptions } from '../volume/block-device.js';

export type IoKind = 'read' | 'write' | 'sync' | 'unmap';

export interface IoObserver {
  /** One finished I/O: its kind, blocks moved (0 for sync) and their bytes, seconds taken, and whether it failed. */
  observe(kind: IoKind, blocks: number, bytes: number, seconds: number, failed: boolean): void;
}

const NS_PER_S = 1e9;

function since(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / NS_PER_S;
}

export class MeteredDevice implements BlockDevice {
  readonly #inner: BlockDevice;
  readonly #observer: IoObserver;
  readonly loadState?: NonNullable<BlockDevice['loadState']>;
  readonly saveState?: NonNullable<BlockDevice['saveState']>;
  readonly mapStatus?: NonNullable<BlockDevice['mapStatus']>;

  constructor(inner: BlockDevice, observer: IoObserver) {
    this.#inner = inner;
    this.#observer = observer;
    // Optional capabilities stay optional: SCSI probes for them.
    if (inner.loadState !== undefined) this.loadState = inner.loadState.bind(inner);
    if (inner.saveState !== undefined) this.saveState = inner.saveState.bind(inner);
    if (inner.mapStatus !== undefined) this.mapStatus = inner.mapStatus.bind(inner);
  }

  get blockSize(): number {
    return this.#inner.blockSize;
  }

  get blockCount(): bigint {
    return this.#inner.blockCount;
  }

  get writeCache(): boolean {
    return this.#inner.writeCache;
  }

  read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    return this.#timed('read', blocks, () => this.#inner.read(lba, blocks, into));
  }

  write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    return this.#timed('write', data.length / this.#inner.blockSize, () => this.#inner.write(lba, data, options));
  }

  flush(): Promise<void> {
    return this.#timed('sync', 0, () => this.#inner.flush());
  }

  unmap(lba: bigint, blocks: number): Promise<void> {
    return this.#timed('unmap', blocks, () => this.#inner.unmap(lba, blocks));
  }

  writeZeroes(lba: bigint, blocks: number): Promise<void> {
    return this.#timed('write', blocks, () => this.#inner.writeZeroes(lba, blocks));
  }

  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void {
    return this.#inner.onCapacityChange(listener);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #timed(kind: IoKind, blocks: number, io: () => Promise<void>): Promise<void> {
    const start = process.hrtime.bigint();
    return io().then(
      () => this.#observer.observe(kind, blocks, blocks * this.#inner.blockSize, since(start), false),
      (err: unknown) => {
        this.#observer.observe(kind, blocks, blocks * this.#inner.blockSize, since(start), true);
        throw err;
      },
    );
  }
}
