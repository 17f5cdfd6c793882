// The block-device interface the SCSI layer executes against (SPDK bdev fn-table role).
// Implementations: a local file (file-device.ts) now; the replicated volume later.
// Offsets and lengths are in blocks; buffers are owned by the caller and must not be retained after the promise settles.

export interface BlockDeviceWriteOptions {
  /** Force Unit Access: durable before the promise resolves. */
  readonly fua?: boolean;
}

export interface BlockDevice {
  /** Logical block size in bytes (512 or 4096). */
  readonly blockSize: number;
  /** Capacity in blocks (may grow: see onCapacityChange). */
  readonly blockCount: bigint;
  /** Whether write-back caching is on (the SCSI WCE bit reports this; flush makes data durable). */
  readonly writeCache: boolean;
  /** Read `blocks` blocks starting at `lba` into `into` (length blocks * blockSize). */
  read(lba: bigint, blocks: number, into: Buffer): Promise<void>;
  /** Write `data` (length multiple of blockSize) at `lba`. */
  write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** Deallocate blocks; later reads return zeroes. */
  unmap(lba: bigint, blocks: number): Promise<void>;
  /** Write zeroes to blocks (may deallocate). */
  writeZeroes(lba: bigint, blocks: number): Promise<void>;
  /** Whether [lba, lba+blocks) is mapped: returns the extent starting at lba with its state (GET LBA STATUS). */
  mapStatus?(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }>;
  /** Subscribe to capacity changes (grow); returns an unsubscribe function. */
  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void;
  /** Persistent key-value state the SCSI layer keeps with the volume (persistent reservations with APTPL). */
  loadState?(key: string): Promise<Buffer | undefined>;
  saveState?(key: string, value: Buffer): Promise<void>;
  close(): Promise<void>;
}

/** Error a BlockDevice throws for a failure the SCSI layer maps to sense data. */
export class BlockDeviceError extends Error {
  readonly code: 'EIO' | 'ENOSPC' | 'EMEDIUM' | 'EOFFLINE' | 'ERANGE';
  /** For media errors: the first bad LBA. */
  readonly lba: bigint | undefined;
  constructor(code: BlockDeviceError['code'], message: string, lba?: bigint) {
    super(message);
    this.name = 'BlockDeviceError';
    this.code = code;
    this.lba = lba;
  }
}
