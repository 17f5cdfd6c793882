// The contract between the replica's block store and its servers (data path, gRPC control, rebuild).
// Byte offsets and lengths are JS numbers (safe integers: volumes up to 8 PiB); io_seq values are
// numbers too (safe up to 2^53, centuries at a million IOPS) so the hot path does no BigInt math.

export interface StoreInfo {
  readonly volumeName: string;
  readonly volumeUuid: string;
  readonly replicaId: string;
  /** Volume logical block size (512 or 4096): offsets and lengths must be multiples of it. */
  readonly blockSize: number;
  /** Bytes covered by one metadata entry (io_seq + CRC32C); a multiple of blockSize, at least 4096. */
  readonly chunkSize: number;
  readonly capacityBytes: number;
  /** Highest target epoch persisted; requests stamped with an older one are refused. */
  readonly epoch: number;
  /** Every write with io_seq ≤ this is applied and recorded in the checkpointed metadata. */
  readonly checkpointedIoSeq: number;
  /** Highest io_seq applied to any chunk (≥ checkpointedIoSeq). */
  readonly highestIoSeq: number;
  /** Set while a rebuild is unfinished (persisted): it must cover every write newer than this io_seq. */
  readonly rebuildingSince?: number;
}

export interface StoreStats {
  readonly reads: number;
  readonly writes: number;
  readonly syncs: number;
  readonly unmaps: number;
  readonly writeZeroes: number;
  readonly readBytes: number;
  readonly writeBytes: number;
  /** Chunks whose write was skipped because the chunk already held a newer io_seq. */
  readonly staleChunksSkipped: number;
  /** Reads refused because a chunk's data did not match its CRC32C. */
  readonly checksumMismatches: number;
  /** Chunks flagged as needing repair (unreadable until rewritten). */
  readonly chunksNeedingRepair: number;
  readonly inflight: number;
}

export interface StoreReadResult {
  /** Exactly the requested bytes. Valid until release() is called. */
  readonly data: Buffer;
  /** The io_seq of every chunk the range touches, in order (0 = never written). */
  readonly ioSeqs: Float64Array;
  /**
   * CRC32C of `data` when known without another pass over it: a read of whole chunks carries the
   * checksums the store just verified, combined (the data path reuses it for its frame).
   */
  readonly dataCrc?: number;
  /** Return pooled memory; `data` must not be used afterwards. */
  release(): void;
}

export interface StoreWriteResult {
  /** Chunks written. */
  readonly applied: number;
  /** Chunks not written because they already held a newer (or the same) io_seq. */
  readonly skipped: number;
}

export interface MapExtent {
  /** Bytes from the queried offset with the same state (at least one block). */
  readonly length: number;
  readonly mapped: boolean;
}

/** One run of chunks for rebuild: contiguous, all newer than the requested io_seq. */
export interface ChunkRun {
  readonly offset: number;
  readonly length: number;
  /** Per chunk: io_seq and CRC32C of its data (0/zero-CRC for deallocated chunks). */
  readonly ioSeqs: Float64Array;
  readonly crcs: Uint32Array;
  /** Per chunk: true when the chunk is deallocated/zero (its bytes in `data` are zeroes). */
  readonly zero: Uint8Array;
  readonly data: Buffer;
}

export interface ReplicaStoreApi {
  readonly info: StoreInfo;
  /** Every mutation with io_seq ≤ this that reached the store is applied (none below it is missing). */
  readonly completeIoSeq: number;
  stats(): StoreStats;
  read(offset: number, length: number): Promise<StoreReadResult>;
  /** `data` may be any Buffer; one from acquireBuffer() avoids a copy. */
  /**
   * `crc`: CRC32C of `data`, already verified against these very bytes (the data path's payload
   * checksum); reused as the chunk checksum when `data` is exactly one whole chunk.
   */
  write(offset: number, data: Buffer, ioSeq: number, options?: { readonly fua?: boolean; readonly crc?: number }): Promise<StoreWriteResult>;
  unmap(offset: number, length: number, ioSeq: number): Promise<StoreWriteResult>;
  writeZeroes(offset: number, length: number, ioSeq: number): Promise<StoreWriteResult>;
  /** Make every completed write durable (fdatasync). */
  flush(): Promise<void>;
  mapStatus(offset: number, maxLength: number): Promise<MapExtent>;
  /** An O_DIRECT-aligned buffer of exactly `size` bytes for write payloads. */
  acquireBuffer(size: number): Buffer;
  releaseBuffer(buffer: Buffer): void;
  /** Persist a new epoch (fencing); refuses one lower than the current. */
  setEpoch(epoch: number): Promise<void>;
  /** Grow the volume; shrinking is refused. */
  resize(capacityBytes: number): Promise<void>;
  /** Chunks written after `sinceIoSeq`, in offset order, in runs of at most maxRunBytes. */
  scan(sinceIoSeq: number, options?: { readonly maxRunBytes?: number; readonly fromOffset?: number }): AsyncIterable<ChunkRun>;
  close(): Promise<void>;
}

export const StoreErrorCode = {
  /** A chunk's data does not match its checksum, or it is flagged as needing repair. */
  Medium: 'EMEDIUM',
  OutOfRange: 'ERANGE',
  Misaligned: 'EALIGN',
  StaleEpoch: 'ESTALE_EPOCH',
  Io: 'EIO',
  NoSpace: 'ENOSPC',
  Closed: 'ECLOSED',
  Invalid: 'EINVAL',
  /** The device holds no replica superblock (format it first). */
  Unformatted: 'EUNFORMATTED',
} as const;
export type StoreErrorCodeValue = (typeof StoreErrorCode)[keyof typeof StoreErrorCode];

export class StoreError extends Error {
  readonly code: StoreErrorCodeValue;
  /** The first failing byte offset (media errors: the bad chunk), when known. */
  readonly offset: number | undefined;
  constructor(code: StoreErrorCodeValue, message: string, offset?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
    this.code = code;
    this.offset = offset;
  }
}
