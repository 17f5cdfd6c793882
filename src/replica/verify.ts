// Offline comparison of a volume's replicas: do they hold the same bytes, written by the same
// io_seqs? Run with the volume stopped — opening a store replays its journal and closing it
// checkpoints, both of which write to the device, and nothing stops a running replica from
// writing at the same time.
//
// Memory is bounded: the volume is walked one region at a time, one region buffer per replica.
// A region is read in one call; only when that fails with a media error is it re-read chunk by
// chunk, so one bad chunk does not hide its neighbours. (A read that finds a CRC mismatch flags
// the chunk NeedsRepair, and close() persists that flag: the same thing a normal read would do.)
//
// Per chunk, in order of precedence (one kind per chunk, the most telling):
//   unreadable  a replica cannot return the chunk (NeedsRepair, CRC mismatch, I/O error);
//   io_seq      the chunk was last written by different writes (a replica missed one);
//   data        same io_seq, different bytes (a write applied differently: the serious case);
//   crc         same io_seq and bytes, different recorded CRC32C (both hold data).
// Zero, deallocated and never-written chunks all read as zeroes, so their "data" is zeroes and
// their table CRC is 0; the CRC is compared only when every replica holds data for the chunk.

import { realpath } from 'node:fs/promises';
import { ChunkFlag, NO_DATA_FLAGS } from './metadata-table.js';
import { StoreError, StoreErrorCode } from './store-api.js';
import { ReplicaStore } from './store.js';
import { errorMessage } from '../shared/errors.js';

export type DifferenceKind = 'data' | 'io_seq' | 'crc' | 'unreadable' | 'geometry' | 'volume';

export interface ReplicaSummary {
  readonly path: string;
  readonly replicaId: string;
  readonly volumeName: string;
  readonly volumeUuid: string;
  readonly capacityBytes: number;
  readonly blockSize: number;
  readonly chunkSize: number;
  readonly highestIoSeq: number;
}

/** One replica's side of a difference: chunk state for chunk kinds, identity/geometry for the others. */
export interface ReplicaValues {
  readonly path: string;
  readonly replicaId: string;
  readonly ioSeq?: number;
  readonly crc?: number;
  readonly flags?: number;
  /** Why the chunk could not be read. */
  readonly error?: string;
  readonly volumeUuid?: string;
  readonly capacityBytes?: number;
  readonly blockSize?: number;
  readonly chunkSize?: number;
}

export interface Difference {
  /** Byte offset in the volume and length of the range (0/0 for volume and geometry). */
  readonly offset: number;
  readonly length: number;
  readonly kind: DifferenceKind;
  /** Per replica, in the order given; for a range, the values of its first chunk. */
  readonly detail: readonly ReplicaValues[];
}

export interface VerifyReport {
  readonly identical: boolean;
  readonly replicas: readonly ReplicaSummary[];
  readonly chunksCompared: number;
  /** Volume bytes compared (each compared across every replica). */
  readonly bytesCompared: number;
  /** The first maxDifferences ranges. */
  readonly differences: readonly Difference[];
  /** All difference ranges found, including those not collected. */
  readonly differenceCount: number;
  /** Chunks that differ in any way. */
  readonly differentChunks: number;
}

export interface VerifyProgress {
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

export interface VerifyOptions {
  /** Bytes compared per step (rounded down to whole chunks; default 1 MiB). */
  readonly regionBytes?: number;
  /** Difference ranges kept in the report (default 10); counting goes on. */
  readonly maxDifferences?: number;
  readonly onProgress?: (progress: VerifyProgress) => void;
}

/** A replica could not be opened (not a replica, damaged, unreadable, given twice). */
export class VerifyOpenError extends Error {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VerifyOpenError';
    this.path = path;
  }
}

const DEFAULT_REGION_BYTES = 1 << 20;
const DEFAULT_MAX_DIFFERENCES = 10;

/** One replica's copy of a region: its bytes, and per chunk why it could not be read (if so). */
interface RegionCopy {
  readonly data: Buffer;
  readonly errors: readonly (string | undefined)[] | undefined;
  release(): void;
}

function summaryOf(store: ReplicaStore): ReplicaSummary {
  const i = store.info;
  return {
    path: store.path, replicaId: i.replicaId, volumeName: i.volumeName, volumeUuid: i.volumeUuid,
    capacityBytes: i.capacityBytes, blockSize: i.blockSize, chunkSize: i.chunkSize, highestIoSeq: i.highestIoSeq,
  };
}

function isUnreadable(err: unknown): err is StoreError {
  return err instanceof StoreError && (err.code === StoreErrorCode.Medium || err.code === StoreErrorCode.Io);
}

async function readRegion(store: ReplicaStore, offset: number, length: number, chunk: number): Promise<RegionCopy> {
  try {
    const r = await store.read(offset, length);
    return { data: r.data, errors: undefined, release: () => r.release() };
  } catch (err) {
    if (!isUnreadable(err)) throw err;
  }
  // Chunk by chunk, so only the bad chunks are reported unreadable.
  const data = Buffer.alloc(length);
  const errors: (string | undefined)[] = [];
  for (let at = 0; at < length; at += chunk) {
    const n = Math.min(chunk, length - at);
    try {
      const r = await store.read(offset + at, n);
      r.data.copy(data, at);
      r.release();
      errors.push(undefined);
    } catch (err) {
      if (!isUnreadable(err)) throw err;
      errors.push(err.message);
    }
  }
  return { data, errors, release: () => undefined };
}

async function openAll(paths: readonly string[]): Promise<ReplicaStore[]> {
  const stores: ReplicaStore[] = [];
  try {
    const seen = new Map<string, string>();
    for (const path of paths) {
      const real = await realpath(path).catch((err: unknown) => {
        throw new VerifyOpenError(path, `${path}: ${(err as Error).message}`, { cause: err });
      });
      // Two stores on one device would replay and checkpoint it twice.
      const twice = seen.get(real);
      if (twice !== undefined) throw new VerifyOpenError(path, `${path} is the same file as ${twice}`);
      seen.set(real, path);
      try {
        stores.push(await ReplicaStore.open(path, { checkpointIntervalMs: 0 }));
      } catch (err) {
        const message = err instanceof StoreError && err.code === StoreErrorCode.Unformatted
          ? `${path} is not a replica (no replica superblock)`
          : errorMessage(err);
        throw new VerifyOpenError(path, message, { cause: err });
      }
    }
    return stores;
  } catch (err) {
    await Promise.allSettled(stores.map(s => s.close()));
    throw err;
  }
}

/** Accumulates difference ranges: coalesces consecutive chunks of one kind, keeps the first `max`. */
class DifferenceLog {
  readonly #max: number;
  readonly #kept: Difference[] = [];
  #count = 0;
  #chunks = 0;
  #openKind: DifferenceKind | undefined;
  #openEnd = -1;

  constructor(max: number) {
    this.#max = max;
  }

  get differences(): readonly Difference[] { return this.#kept; }
  get count(): number { return this.#count; }
  get chunks(): number { return this.#chunks; }

  /** A whole-volume difference (identity, geometry). */
  addVolume(kind: 'volume' | 'geometry', detail: readonly ReplicaValues[]): void {
    this.#count++;
    if (this.#kept.length < this.#max) this.#kept.push({ offset: 0, length: 0, kind, detail });
  }

  addChunk(offset: number, length: number, kind: DifferenceKind, detail: () => readonly ReplicaValues[]): void {
    this.#chunks++;
    if (kind === this.#openKind && offset === this.#openEnd) {
      this.#openEnd += length;
      const last = this.#kept[this.#kept.length - 1];
      // Extend the range only if it is the one kept last (a range begun past the limit is just counted).
      if (last !== undefined && last.kind === kind && last.offset + last.length === offset) {
        this.#kept[this.#kept.length - 1] = { ...last, length: last.length + length };
      }
      return;
    }
    this.#count++;
    this.#openKind = kind;
    this.#openEnd = offset + length;
    if (this.#kept.length < this.#max) this.#kept.push({ offset, length, kind, detail: detail() });
  }
}

function identityDifference(stores: readonly ReplicaStore[]): 'volume' | 'geometry' | undefined {
  const a = stores[0]!.info;
  if (stores.some(s => s.info.volumeUuid !== a.volumeUuid)) return 'volume';
  if (stores.some(s => s.info.capacityBytes !== a.capacityBytes || s.info.blockSize !== a.blockSize || s.info.chunkSize !== a.chunkSize)) {
    return 'geometry';
  }
  return undefined;
}

/**
 * Compare the replicas at `paths` chunk by chunk. Throws VerifyOpenError when one cannot be opened;
 * replicas of different volumes or geometries are reported as a single difference, not walked.
 */
export async function verifyReplicas(paths: readonly string[], options: VerifyOptions = {}): Promise<VerifyReport> {
  if (paths.length === 0) throw new VerifyOpenError('', 'no replicas to verify');
  const maxDifferences = options.maxDifferences ?? DEFAULT_MAX_DIFFERENCES;
  const stores = await openAll(paths);
  try {
    const replicas = stores.map(summaryOf);
    const log = new DifferenceLog(maxDifferences);
    const mismatch = identityDifference(stores);
    if (mismatch !== undefined) {
      log.addVolume(mismatch, stores.map(s => ({
        path: s.path, replicaId: s.info.replicaId, volumeUuid: s.info.volumeUuid,
        capacityBytes: s.info.capacityBytes, blockSize: s.info.blockSize, chunkSize: s.info.chunkSize,
      })));
      return { identical: false, replicas, chunksCompared: 0, bytesCompared: 0, differences: log.differences, differenceCount: log.count, differentChunks: 0 };
    }
    const { chunkSize: chunk, capacityBytes: capacity } = stores[0]!.info;
    const regionBytes = Math.max(chunk, Math.floor((options.regionBytes ?? DEFAULT_REGION_BYTES) / chunk) * chunk);
    let chunksCompared = 0;
    for (let offset = 0; offset < capacity; offset += regionBytes) {
      const length = Math.min(regionBytes, capacity - offset);
      const settled = await Promise.allSettled(stores.map(s => readRegion(s, offset, length, chunk)));
      const copies = settled.flatMap(r => (r.status === 'fulfilled' ? [r.value] : []));
      try {
        const failed = settled.find(r => r.status === 'rejected');
        if (failed !== undefined) throw failed.reason;
        for (let at = 0; at < length; at += chunk) {
          const n = Math.min(chunk, length - at);
          compareChunk(stores, copies, offset + at, at, n, log);
          chunksCompared++;
        }
      } finally {
        for (const c of copies) c.release();
      }
      options.onProgress?.({ bytesDone: offset + length, bytesTotal: capacity });
    }
    return {
      identical: log.count === 0, replicas, chunksCompared, bytesCompared: capacity,
      differences: log.differences, differenceCount: log.count, differentChunks: log.chunks,
    };
  } finally {
    await Promise.allSettled(stores.map(s => s.close()));
  }
}

/** Compare the chunk at volume `offset` (`at` within each region copy) across the replicas. */
function compareChunk(stores: readonly ReplicaStore[], copies: readonly RegionCopy[], offset: number, at: number, n: number, log: DifferenceLog): void {
  const index = at / (stores[0]!.info.chunkSize);
  const states = stores.map(s => s.chunkState(offset));
  const errors = copies.map(c => c.errors?.[index]);
  const detail = (): ReplicaValues[] => stores.map((s, i) => {
    const st = states[i]!;
    const error = errors[i];
    return {
      path: s.path, replicaId: s.info.replicaId, ioSeq: st.ioSeq, crc: st.crc, flags: st.flags,
      ...(error !== undefined ? { error } : {}),
    };
  });
  let kind: DifferenceKind | undefined;
  if (errors.some(e => e !== undefined) || states.some(s => (s.flags & ChunkFlag.NeedsRepair) !== 0)) {
    kind = 'unreadable';
  } else if (states.some(s => s.ioSeq !== states[0]!.ioSeq)) {
    kind = 'io_seq';
  } else {
    const first = copies[0]!.data.subarray(at, at + n);
    if (copies.some(c => !c.data.subarray(at, at + n).equals(first))) kind = 'data';
    else if (states.every(s => (s.flags & NO_DATA_FLAGS) === 0 && s.ioSeq !== 0) && states.some(s => s.crc !== states[0]!.crc)) kind = 'crc';
  }
  if (kind !== undefined) log.addChunk(offset, n, kind, detail);
}
