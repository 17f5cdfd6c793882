// The replica's block store: volume data in chunks on a file, zvol or raw device (O_DIRECT through
// the native addon), a CRC32C and io_seq per chunk, and an intent journal for crash consistency.
//
// ## Crash consistency (kill -9 or power loss at any moment)
// A mutation of chunk c goes: (1) journal record {c, new io_seq/CRC/flags, previous ones} written;
// (2) only then the chunk's data written in place; (3) the in-memory table updated; (4) later, at a
// checkpoint, the table page written and the superblock's journal checkpoint moved past the record.
// Recovery reads every journal block newer than the checkpoint:
//   - a record whose write was known complete when a later block was written (its block ≤ that
//     block's completeSeq) is applied as is;
//   - otherwise the chunk is read back: CRC = new → the write landed; CRC = previous (or the
//     previous state holds no data: unwritten, zero, deallocated) → it did not, the old state is
//     kept; anything else (a torn chunk: power loss inside the data write) → flagged NeedsRepair.
// So every chunk reads back as its old content or its new content with a matching checksum, or
// is reported as a media error until it is rewritten or rebuilt — never silent garbage. And reads
// verify the CRC of every chunk they return, which also catches what the journal cannot know
// (a lost write in a volatile device cache after power loss, bit rot).
//
// ## Durability
// An acknowledged WRITE has been written with O_DIRECT (data and journal record): it survives the
// replica process crashing or being killed, and a target crash. It survives power loss once a
// later SYNC has completed, or immediately when written with FUA: both fdatasync the device
// (flushing its volatile write cache) before their acknowledgement.
//
// ## Ordering
// Operations lock their chunks in arrival order (chunk-locks.ts). A write whose io_seq is not newer
// than what a chunk already holds is not applied to that chunk (rebuild and retries rely on it);
// a chunk flagged NeedsRepair accepts any write that covers it entirely.

import { randomBytes } from 'node:crypto';
import { open as fsOpen, stat, truncate } from 'node:fs/promises';
import { crc32c, crc32cCombine } from '../protocol/iscsi/digest.js';
import type { Logger } from '../shared/logger.js';
import { AlignedPool } from './aligned-pool.js';
import { ChunkLocks } from './chunk-locks.js';
import { ENTRY_BYTES, MAX_IO_SEQ, MetadataTable, NO_DATA_FLAGS, ChunkFlag, TABLE_PAGE_BYTES } from './metadata-table.js';
import { JOURNAL_BLOCK_BYTES, JournalWriter, decodeJournalBlock, type DecodedJournalEntry, type JournalEntry, type JournalTicket } from './journal.js';
import { BlockFile, type BlockIoError, type Engine } from './native.js';
import {
  DEFAULT_CHUNK_SIZE, DEFAULT_JOURNAL_BYTES, MIN_JOURNAL_BYTES, TARGET_STATE_OFFSET, TARGET_STATE_REGION_BYTES, layoutForDevice,
  layoutForFile, type StoreLayout,
} from './store-layout.js';
import { TargetStateArea } from './target-state-area.js';
import type { TargetStateBlob } from './target-state.js';
import {
  SUPERBLOCK_REGION_BYTES, SuperblockFlag, encodeSuperblock, nextSuperblock, selectSuperblock, type Superblock,
} from './superblock.js';
import {
  StoreError, StoreErrorCode, type ChunkRun, type MapExtent, type ReplicaStoreApi, type StoreInfo, type StoreReadResult,
  type StoreStats, type StoreWriteResult,
} from './store-api.js';

export interface FormatOptions {
  readonly volumeName: string;
  readonly volumeUuid: string;
  readonly replicaId: string;
  readonly capacityBytes: number;
  readonly blockSize?: 512 | 4096;
  readonly chunkSize?: number;
  readonly journalBytes?: number;
  /** Format over an existing superblock (another volume's, or a corrupt one). */
  readonly force?: boolean;
  readonly engine?: Engine;
}

export interface OpenStoreOptions {
  /** Refuse the device unless it belongs to this volume / replica. */
  readonly volumeUuid?: string;
  readonly volumeName?: string;
  readonly replicaId?: string;
  readonly logger?: Logger;
  readonly engine?: Engine;
  /** Write the table back when idle this long (default 5 s; 0 = only when the journal fills and at close). */
  readonly checkpointIntervalMs?: number;
  readonly journalMaxInflightWrites?: number;
  /**
   * Writes of at most this many bytes put their data in the journal and are acknowledged after that
   * one sequential write; the copy in place follows in the background (default 64 KiB; 0 = never).
   * Larger writes journal metadata only, then write in place: two device writes in sequence, but no
   * bandwidth spent twice.
   */
  readonly dataJournalMaxBytes?: number;
}

export interface RecoveryReport {
  readonly journalBlocks: number;
  readonly appliedEntries: number;
  readonly verifiedChunks: number;
  /** Chunks whose journaled data was copied into place. */
  readonly replayedChunks: number;
  readonly revertedChunks: number;
  readonly repairChunks: number;
  readonly badTableEntries: number;
}

const IO_PIECE = 8 << 20;
const DEFAULT_DATA_JOURNAL_MAX = 64 << 10;

/** A read's result: its data lives in a pooled buffer until release(). */
class PooledRead implements StoreReadResult {
  readonly data: Buffer;
  readonly ioSeqs: Float64Array;
  readonly dataCrc?: number;
  #pool: AlignedPool | undefined;
  readonly #buf: Buffer;

  constructor(pool: AlignedPool, buf: Buffer, data: Buffer, ioSeqs: Float64Array, dataCrc: number | undefined) {
    this.#pool = pool;
    this.#buf = buf;
    this.data = data;
    this.ioSeqs = ioSeqs;
    if (dataCrc !== undefined) this.dataCrc = dataCrc;
  }

  release(): void {
    const pool = this.#pool;
    if (pool === undefined) return;
    this.#pool = undefined;
    pool.release(this.#buf);
  }
}

/** Like Promise.all, but settles only when every promise has: buffers in use by the kernel are never released early. */
async function settleAll(promises: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}


function storeErrorFromIo(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as Partial<BlockIoError>;
  const code = e.code === 'ENOSPC' || e.code === 'EDQUOT' ? StoreErrorCode.NoSpace
    : e.code === 'EALIGN' ? StoreErrorCode.Misaligned
      : e.code === 'ECLOSED' ? StoreErrorCode.Closed
        : StoreErrorCode.Io;
  return new StoreError(code, `${what}: ${e.message ?? String(err)}`, e.offset, { cause: err });
}

async function readFully(file: BlockFile, pool: AlignedPool, offset: number, length: number, into: (buf: Buffer, at: number) => void): Promise<void> {
  const buf = pool.acquire(Math.min(IO_PIECE, length));
  try {
    for (let at = 0; at < length; at += IO_PIECE) {
      const n = Math.min(IO_PIECE, length - at);
      const view = buf.subarray(0, n);
      const got = await file.read(view, offset + at);
      if (got < n) view.fill(0, got);
      into(view, at);
    }
  } finally {
    pool.release(buf);
  }
}

function checkIdentity(sb: Superblock, opts: OpenStoreOptions, path: string): void {
  if (opts.volumeUuid !== undefined && sb.volumeUuid !== opts.volumeUuid.toLowerCase()) {
    throw new StoreError(StoreErrorCode.Invalid, `${path} belongs to volume ${sb.volumeName} (${sb.volumeUuid}), not ${opts.volumeUuid}`);
  }
  if (opts.volumeName !== undefined && sb.volumeName !== opts.volumeName) {
    throw new StoreError(StoreErrorCode.Invalid, `${path} belongs to volume '${sb.volumeName}', not '${opts.volumeName}'`);
  }
  if (opts.replicaId !== undefined && sb.replicaId !== opts.replicaId) {
    throw new StoreError(StoreErrorCode.Invalid, `${path} holds replica '${sb.replicaId}' of volume '${sb.volumeName}', not replica '${opts.replicaId}'`);
  }
}

function checkGeometry(file: BlockFile, chunkSize: number, path: string): void {
  const lbs = file.logicalBlockSize;
  if (lbs > chunkSize || chunkSize % lbs !== 0 || lbs > 4096) {
    throw new StoreError(StoreErrorCode.Misaligned,
      `${path}: device logical block size ${lbs} does not divide the ${chunkSize}-byte chunk size (misaligned for O_DIRECT)`);
  }
}

/**
 * Initialise `path` (a block device, or a file created/extended as needed) for one replica.
 * Refuses — touching nothing — a device with another volume's superblock or a corrupt one (unless
 * force), one that is too small or misaligned, and one already formatted for this replica.
 */
export async function formatStore(path: string, options: FormatOptions): Promise<StoreInfo> {
  const blockSize = options.blockSize ?? 512;
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  // Small writes journal their data, so the journal holds ~1/8 of the volume, 16..128 MiB.
  const journalBytes = options.journalBytes
    ?? Math.min(DEFAULT_JOURNAL_BYTES, Math.max(16 << 20, Math.floor(options.capacityBytes / 8 / JOURNAL_BLOCK_BYTES) * JOURNAL_BLOCK_BYTES));
  if (!Number.isInteger(chunkSize) || chunkSize < 4096 || chunkSize > 1 << 20 || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new StoreError(StoreErrorCode.Invalid, `chunk size ${chunkSize} must be a power of two from 4096 to 1 MiB`);
  }
  if (!Number.isSafeInteger(options.capacityBytes) || options.capacityBytes <= 0 || options.capacityBytes % chunkSize !== 0) {
    throw new StoreError(StoreErrorCode.Invalid, `capacity ${options.capacityBytes} must be a positive multiple of the ${chunkSize}-byte chunk size`);
  }
  if (journalBytes < MIN_JOURNAL_BYTES || journalBytes % JOURNAL_BLOCK_BYTES !== 0) {
    throw new StoreError(StoreErrorCode.Invalid, `journal size ${journalBytes} must be a multiple of 4096, at least ${MIN_JOURNAL_BYTES}`);
  }
  let created = false;
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    return undefined;
  });
  if (st === undefined) {
    const fh = await fsOpen(path, 'wx', 0o600);
    await fh.close();
    created = true;
  } else if (!st.isFile() && !st.isBlockDevice()) {
    throw new StoreError(StoreErrorCode.Invalid, `${path} is neither a regular file nor a block device`);
  }
  const isBlockDevice = st?.isBlockDevice() ?? false;

  const file = await BlockFile.open(path, { write: true, engine: options.engine ?? 'io_uring' });
  const pool = new AlignedPool({ alignment: Math.max(4096, file.memoryAlignment) });
  try {
    checkGeometry(file, chunkSize, path);
    if (!created && file.size >= SUPERBLOCK_REGION_BYTES) {
      const region = pool.acquire(SUPERBLOCK_REGION_BYTES);
      try {
        await file.read(region, 0);
        const state = selectSuperblock(region);
        if (state.state === 'valid' && !options.force) {
          const sb = state.superblock;
          const same = sb.volumeUuid === options.volumeUuid.toLowerCase() && sb.replicaId === options.replicaId;
          throw new StoreError(StoreErrorCode.Invalid, same
            ? `${path} is already formatted for replica '${sb.replicaId}' of volume '${sb.volumeName}'`
            : `${path} holds replica '${sb.replicaId}' of another volume '${sb.volumeName}' (${sb.volumeUuid}); refusing to format it (use --force to overwrite)`);
        }
        if (state.state === 'corrupt' && !options.force) {
          throw new StoreError(StoreErrorCode.Invalid, `${path} has a damaged replica superblock (${state.errors.join('; ')}); refusing to format it (use --force to overwrite)`);
        }
      } finally {
        pool.release(region);
      }
    }
    const layout: StoreLayout = isBlockDevice
      ? layoutForDevice(file.size, chunkSize, journalBytes)
      : layoutForFile(options.capacityBytes, chunkSize, journalBytes);
    const needed = layout.dataOffset + options.capacityBytes;
    if (isBlockDevice && needed > file.size) {
      throw new StoreError(StoreErrorCode.NoSpace,
        `${path} is too small: ${file.size} bytes, the volume needs ${needed} (${options.capacityBytes} of data plus ${layout.dataOffset} of metadata)`);
    }
    const superblock: Superblock = {
      generation: 1n,
      volumeName: options.volumeName,
      volumeUuid: options.volumeUuid,
      replicaId: options.replicaId,
      blockSize,
      metadataChunkSize: chunkSize,
      capacityBytes: BigInt(options.capacityBytes),
      epoch: 0n,
      checkpointedIoSeq: 0n,
      metadataOffset: BigInt(layout.metadataOffset),
      metadataLength: BigInt(layout.metadataLength),
      dataOffset: BigInt(layout.dataOffset),
      flags: 0,
      journalOffset: BigInt(layout.journalOffset),
      journalLength: BigInt(layout.journalLength),
      journalCheckpointSeq: 0n,
      journalNonce: randomBytes(4).readUInt32LE(0),
      rebuildSinceIoSeq: 0n,
    };
    const slot = encodeSuperblock(superblock); // validates every field before anything is written
    if (!isBlockDevice && file.size < needed) await truncate(path, needed);
    // Old journal blocks or table entries must not survive into the new format. A new file is all holes.
    if (!created) {
      // Through the target state slots: a previous format's blob must not survive either.
      await file.writeZeroes(0, TARGET_STATE_OFFSET + TARGET_STATE_REGION_BYTES);
      await file.writeZeroes(layout.metadataOffset, layout.metadataLength);
    }
    // The journal is written with real zeroes, not holes or unwritten extents: a journal write is on
    // every small write's path, and allocating one in the file system costs several times a write.
    if (!isBlockDevice) {
      const zeroes = pool.acquire(Math.min(IO_PIECE, layout.journalLength));
      zeroes.fill(0);
      try {
        for (let at = 0; at < layout.journalLength; at += zeroes.length) {
          const n = Math.min(zeroes.length, layout.journalLength - at);
          await file.write(zeroes.subarray(0, n), layout.journalOffset + at);
        }
      } finally {
        pool.release(zeroes);
      }
    } else {
      await file.writeZeroes(layout.journalOffset, layout.journalLength);
    }
    const buf = pool.acquire(4096);
    try {
      slot.copy(buf);
      await file.write(buf, Number(superblock.generation % 2n) * 4096);
    } finally {
      pool.release(buf);
    }
    await file.flush();
    return infoOf(superblock, 0);
  } catch (err) {
    throw err instanceof StoreError ? err : storeErrorFromIo(err, `format ${path}`);
  } finally {
    await file.close();
  }
}

function infoOf(sb: Superblock, highestIoSeq: number): StoreInfo {
  const rebuilding = (sb.flags & SuperblockFlag.Rebuilding) !== 0;
  return {
    ...(rebuilding ? { rebuildingSince: Number(sb.rebuildSinceIoSeq) } : {}),
    volumeName: sb.volumeName,
    volumeUuid: sb.volumeUuid,
    replicaId: sb.replicaId,
    blockSize: sb.blockSize,
    chunkSize: sb.metadataChunkSize,
    capacityBytes: Number(sb.capacityBytes),
    epoch: Number(sb.epoch),
    checkpointedIoSeq: Number(sb.checkpointedIoSeq),
    highestIoSeq: Math.max(highestIoSeq, Number(sb.checkpointedIoSeq)),
  };
}

type MutableStats = { -readonly [K in keyof StoreStats]: StoreStats[K] };

interface ChunkPlan {
  readonly chunk: number;
  /** Flags for a no-data chunk (zero/deallocated), or 0 for data taken from the working buffer. */
  readonly noDataFlags: number;
}

export class ReplicaStore implements ReplicaStoreApi {
  readonly path: string;
  readonly #file: BlockFile;
  readonly #pool: AlignedPool;
  readonly #log: Logger | undefined;
  readonly #table: MetadataTable;
  readonly #locks = new ChunkLocks();
  readonly #journal: JournalWriter;
  readonly #chunk: number;
  readonly #chunkShift: number;
  readonly #zeroCrc: number;
  readonly #ownBuffers = new WeakSet<Buffer>();
  readonly #dataJournalMax: number;
  /** Where chunk 0's data starts on the device (fixed by the layout). */
  readonly #dataOffset: number;
  #sb: Superblock;
  #highestIoSeq: number;
  /**
   * Set when the store opened holding writes above a point it cannot prove complete: a crash left
   * the io_seq watermark below the highest io_seq applied, so a write in between may be missing
   * (it was in flight and never landed). Caps the watermark — and so what HELLO reports complete
   * and what checkpoints persist — until a rebuild fills whatever is missing.
   */
  #holeFloor: number | undefined;
  #info: StoreInfo;
  readonly #stats: MutableStats = {
    reads: 0, writes: 0, syncs: 0, unmaps: 0, writeZeroes: 0, readBytes: 0, writeBytes: 0,
    staleChunksSkipped: 0, checksumMismatches: 0, chunksNeedingRepair: 0, inflight: 0,
  };
  /** io_seq -> mutations in flight with it (for the checkpointed io_seq watermark). */
  readonly #inflightSeqs = new Map<number, number>();
  #highestReceived: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;
  #superblockChain: Promise<unknown> = Promise.resolve();
  #targetState: TargetStateArea | undefined;
  #checkpointing: Promise<void> | undefined;
  #checkpointTimer: NodeJS.Timeout | undefined;
  #syncRunning: Promise<void> | undefined;
  #syncQueued: Promise<void> | undefined;
  readonly recovery: RecoveryReport;

  private constructor(args: {
    path: string; file: BlockFile; pool: AlignedPool; log: Logger | undefined; sb: Superblock; table: MetadataTable;
    nextJournalSeq: number; recovery: RecoveryReport; options: OpenStoreOptions;
    /** Every write with io_seq ≤ this is applied: the watermark recovery found (the checkpoint's when nothing was replayed). */
    completeThrough: number;
  }) {
    this.path = args.path;
    this.#file = args.file;
    this.#pool = args.pool;
    this.#log = args.log;
    this.#sb = args.sb;
    this.#dataOffset = Number(args.sb.dataOffset);
    this.#table = args.table;
    this.#chunk = args.sb.metadataChunkSize;
    this.#chunkShift = Math.log2(this.#chunk);
    this.#zeroCrc = crc32c(Buffer.alloc(this.#chunk));
    // Bounded by the ring: a batch must always fit in it.
    this.#dataJournalMax = Math.min(args.options.dataJournalMaxBytes ?? DEFAULT_DATA_JOURNAL_MAX, Number(args.sb.journalLength) / 8);
    this.recovery = args.recovery;
    let highest = 0;
    const seqs = args.table.ioSeq;
    for (let i = 0; i < seqs.length; i++) if (seqs[i]! > highest) highest = seqs[i]!;
    this.#highestIoSeq = highest;
    this.#highestReceived = Math.max(highest, Number(args.sb.checkpointedIoSeq));
    if (args.completeThrough < highest) this.#holeFloor = args.completeThrough;
    let repair = 0;
    for (let i = 0; i < args.table.flags.length; i++) if ((args.table.flags[i]! & ChunkFlag.NeedsRepair) !== 0) repair++;
    this.#stats.chunksNeedingRepair = repair;
    this.#info = infoOf(args.sb, highest);
    this.#journal = new JournalWriter({
      file: args.file,
      pool: args.pool,
      offset: Number(args.sb.journalOffset),
      length: Number(args.sb.journalLength),
      volumeTag: args.sb.journalNonce,
      nextSeq: args.nextJournalSeq,
      checkpointSeq: Number(args.sb.journalCheckpointSeq),
      watermark: () => this.#watermark(),
      onCheckpointNeeded: () => { void this.checkpoint().catch(() => undefined); },
      ...(args.options.journalMaxInflightWrites !== undefined ? { maxInflightWrites: args.options.journalMaxInflightWrites } : {}),
      chunkSize: args.sb.metadataChunkSize,
    });
    const interval = args.options.checkpointIntervalMs ?? 5000;
    if (interval > 0) {
      this.#checkpointTimer = setInterval(() => {
        if (this.#table.dirtyPageCount > 0 && this.#checkpointing === undefined) void this.checkpoint().catch(() => undefined);
      }, interval);
      this.#checkpointTimer.unref();
    }
  }

  /** Open a formatted device, replaying its journal (see the crash-consistency notes above). */
  static async open(path: string, options: OpenStoreOptions = {}): Promise<ReplicaStore> {
    const log = options.logger;
    let file: BlockFile;
    try {
      file = await BlockFile.open(path, { write: true, engine: options.engine ?? 'io_uring' });
    } catch (err) {
      throw storeErrorFromIo(err, `open ${path}`);
    }
    const pool = new AlignedPool({ alignment: Math.max(4096, file.memoryAlignment) });
    try {
      const region = pool.acquire(SUPERBLOCK_REGION_BYTES);
      let state;
      try {
        const got = await file.read(region, 0);
        if (got < SUPERBLOCK_REGION_BYTES) region.fill(0, got);
        state = selectSuperblock(region);
      } finally {
        pool.release(region);
      }
      if (state.state === 'unformatted') throw new StoreError(StoreErrorCode.Unformatted, `${path} is not formatted as a replica (format it first)`);
      if (state.state === 'corrupt') throw new StoreError(StoreErrorCode.Invalid, `${path} has a damaged replica superblock: ${state.errors.join('; ')}`);
      const sb = state.superblock;
      if (state.otherSlotError !== undefined && !(state.otherSlotError === 'ESB_NO_MAGIC' && sb.generation === 1n)) log?.warn({ path, slotError: state.otherSlotError }, 'one superblock copy is unreadable; using the other');
      checkIdentity(sb, options, path);
      checkGeometry(file, sb.metadataChunkSize, path);
      const needed = Number(sb.dataOffset + sb.capacityBytes);
      if (file.size < needed) {
        throw new StoreError(StoreErrorCode.Invalid, `${path} is too small: ${file.size} bytes, the volume needs ${needed}`);
      }
      const chunkCount = Number(sb.capacityBytes) / sb.metadataChunkSize;
      const table = new MetadataTable(chunkCount);
      let badTableEntries = 0;
      await readFully(file, pool, Number(sb.metadataOffset), Math.ceil((chunkCount * ENTRY_BYTES) / TABLE_PAGE_BYTES) * TABLE_PAGE_BYTES, (buf, at) => {
        const first = at / ENTRY_BYTES;
        const count = Math.min(buf.length / ENTRY_BYTES, chunkCount - first);
        if (count > 0) badTableEntries += table.load(buf, first, count).length;
      });
      const replay = await ReplicaStore.#replayJournal(file, pool, sb, table, log);
      const recovery: RecoveryReport = { ...replay.report, badTableEntries };
      const store = new ReplicaStore({ path, file, pool, log, sb, table, nextJournalSeq: replay.nextSeq, recovery, options, completeThrough: replay.watermark });
      if (store.#holeFloor !== undefined) {
        log?.warn({ path, completeIoSeq: store.#holeFloor, highestIoSeq: store.#highestIoSeq },
          'writes above the complete io_seq may be missing (a crash with writes in flight): this replica reports itself complete only through it until a rebuild');
      }
      if (replay.report.journalBlocks > 0 || badTableEntries > 0) {
        await store.#checkpointNow(replay.nextSeq - 1, replay.watermark);
        log?.info({ path, ...recovery }, 'replica store recovered from its journal');
      }
      return store;
    } catch (err) {
      await file.close();
      throw err instanceof StoreError ? err : storeErrorFromIo(err, `open ${path}`);
    }
  }

  static async #replayJournal(file: BlockFile, pool: AlignedPool, sb: Superblock, table: MetadataTable, log: Logger | undefined): Promise<{
    nextSeq: number; watermark: number; report: Omit<RecoveryReport, 'badTableEntries'>;
  }> {
    const checkpointSeq = Number(sb.journalCheckpointSeq);
    const tag = sb.journalNonce;
    const blocksPerChunk = sb.metadataChunkSize / JOURNAL_BLOCK_BYTES;
    const slots = Number(sb.journalLength) / JOURNAL_BLOCK_BYTES;
    const blocks: NonNullable<ReturnType<typeof decodeJournalBlock>>[] = [];
    let maxSeq = checkpointSeq;
    await readFully(file, pool, Number(sb.journalOffset), Number(sb.journalLength), (buf) => {
      for (let at = 0; at < buf.length; at += JOURNAL_BLOCK_BYTES) {
        const b = decodeJournalBlock(buf.subarray(at, at + JOURNAL_BLOCK_BYTES), tag, blocksPerChunk);
        if (b === undefined || b.seq <= checkpointSeq) continue;
        blocks.push(b);
        if (b.seq > maxSeq) maxSeq = b.seq;
      }
    });
    blocks.sort((a, b) => a.seq - b.seq);
    let completeSeq = checkpointSeq;
    let watermark = Number(sb.checkpointedIoSeq);
    for (const b of blocks) {
      if (b.completeSeq > completeSeq) completeSeq = b.completeSeq;
      if (b.ioSeqWatermark > watermark) watermark = b.ioSeqWatermark;
    }
    const chunkCount = table.chunkCount;
    let applied = 0;
    const unverified = new Map<number, DecodedJournalEntry>();
    for (const b of blocks) {
      for (const e of b.entries) {
        if (e.chunk >= chunkCount) continue; // beyond a capacity that a crashed resize never persisted
        if (b.seq <= completeSeq) {
          table.set(e.chunk, e.newSeq, e.newCrc, e.newFlags);
          unverified.delete(e.chunk);
          applied++;
        } else {
          unverified.set(e.chunk, e);
        }
      }
    }
    let reverted = 0;
    let repair = 0;
    let replayed = 0;
    const chunk = sb.metadataChunkSize;
    if (unverified.size > 0) {
      const buf = pool.acquire(chunk);
      try {
        for (const e of unverified.values()) {
          applied++;
          if ((e.newFlags & NO_DATA_FLAGS) !== 0) {
            table.set(e.chunk, e.newSeq, e.newCrc, e.newFlags);
            continue;
          }
          if (e.dataSeq !== undefined) {
            // Data journaled: if the journal copy is whole, the write was (or could have been)
            // acknowledged: copy it into place. A torn copy means it never was: check the chunk.
            for (let i = 0; i < blocksPerChunk; i++) {
              const slot = (e.dataSeq + i) % slots;
              await file.read(buf.subarray(i * JOURNAL_BLOCK_BYTES, (i + 1) * JOURNAL_BLOCK_BYTES), Number(sb.journalOffset) + slot * JOURNAL_BLOCK_BYTES);
            }
            if (crc32c(buf) === e.newCrc) {
              await file.write(buf, Number(sb.dataOffset) + e.chunk * chunk);
              table.set(e.chunk, e.newSeq, e.newCrc, e.newFlags);
              replayed++;
              continue;
            }
          }
          const got = await file.read(buf, Number(sb.dataOffset) + e.chunk * chunk);
          if (got < chunk) buf.fill(0, got);
          const crc = crc32c(buf);
          if (crc === e.newCrc) {
            table.set(e.chunk, e.newSeq, e.newCrc, e.newFlags);
            continue;
          }
          // The new data did not (fully) land; nothing with this io_seq or later is known applied.
          watermark = Math.min(watermark, e.newSeq - 1);
          const prevHoldsNoData = (e.prevFlags & (NO_DATA_FLAGS | ChunkFlag.NeedsRepair)) !== 0 || (e.prevSeq === 0 && e.prevFlags === 0);
          if (prevHoldsNoData || crc === e.prevCrc) {
            table.set(e.chunk, e.prevSeq, e.prevCrc, e.prevFlags);
            reverted++;
          } else {
            table.set(e.chunk, e.prevSeq, e.prevCrc, e.prevFlags | ChunkFlag.NeedsRepair);
            repair++;
            log?.warn({ chunk: e.chunk, ioSeq: e.newSeq }, 'chunk torn by a crash during its write; flagged as needing repair');
          }
        }
      } finally {
        pool.release(buf);
      }
    }
    return {
      nextSeq: maxSeq + 1,
      watermark,
      report: { journalBlocks: blocks.length, appliedEntries: applied, verifiedChunks: unverified.size, replayedChunks: replayed, revertedChunks: reverted, repairChunks: repair },
    };
  }

  get info(): StoreInfo {
    return this.#info;
  }

  stats(): StoreStats {
    return { ...this.#stats };
  }

  /** Byte offsets of chunks flagged as needing repair (rebuild fetches them whatever their io_seq). */
  chunksNeedingRepair(limit = 1024): number[] {
    const out: number[] = [];
    const flags = this.#table.flags;
    for (let c = 0; c < flags.length && out.length < limit; c++) {
      if ((flags[c]! & ChunkFlag.NeedsRepair) !== 0) out.push(c * this.#chunk);
    }
    return out;
  }

  acquireBuffer(size: number): Buffer {
    const b = this.#pool.acquire(size);
    this.#ownBuffers.add(b);
    return b;
  }

  releaseBuffer(buffer: Buffer): void {
    this.#ownBuffers.delete(buffer);
    this.#pool.release(buffer);
  }

  #checkOpen(): void {
    if (this.#closed) throw new StoreError(StoreErrorCode.Closed, 'the store is closed');
  }

  #checkRange(offset: number, length: number): void {
    const bs = this.#info.blockSize;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      throw new StoreError(StoreErrorCode.Invalid, `invalid range offset ${offset} length ${length}`, offset);
    }
    if (offset % bs !== 0 || length % bs !== 0) {
      throw new StoreError(StoreErrorCode.Misaligned, `range offset ${offset} length ${length} is not a multiple of the ${bs}-byte block size`, offset);
    }
    if (offset + length > this.#info.capacityBytes) {
      throw new StoreError(StoreErrorCode.OutOfRange, `range offset ${offset} length ${length} ends beyond the capacity ${this.#info.capacityBytes}`, offset);
    }
  }

  static #checkSeq(ioSeq: number): void {
    if (!Number.isSafeInteger(ioSeq) || ioSeq < 1 || ioSeq > MAX_IO_SEQ) {
      throw new StoreError(StoreErrorCode.Invalid, `io_seq ${ioSeq} must be an integer from 1 to 2^53-1`);
    }
  }

  #lock(first: number, last: number): Promise<() => void> | (() => void) {
    return this.#locks.lock(first, last);
  }

  #enter(): void {
    this.#stats.inflight++;
  }

  #leave(): void {
    if (--this.#stats.inflight === 0 && this.#idle !== undefined) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle();
    }
  }

  /** Every mutation with io_seq ≤ this that reached the store is applied (none below it is missing). */
  #watermark(): number {
    let live = this.#highestReceived;
    if (this.#inflightSeqs.size > 0) {
      let min = Infinity;
      for (const s of this.#inflightSeqs.keys()) if (s < min) min = s;
      live = min - 1;
    }
    return this.#holeFloor === undefined ? live : Math.min(live, this.#holeFloor);
  }

  /**
   * Every mutation with io_seq ≤ this that reached this replica is applied: below it nothing is
   * missing. Lower than highestIoSeq while writes are in flight, and after a crash with writes in
   * flight until a rebuild (the target then judges this copy by it, not by its highest io_seq).
   */
  get completeIoSeq(): number {
    return this.#watermark();
  }

  #seqStart(ioSeq: number): void {
    this.#inflightSeqs.set(ioSeq, (this.#inflightSeqs.get(ioSeq) ?? 0) + 1);
    if (ioSeq > this.#highestReceived) this.#highestReceived = ioSeq;
  }

  #seqEnd(ioSeq: number): void {
    const n = this.#inflightSeqs.get(ioSeq)! - 1;
    if (n === 0) this.#inflightSeqs.delete(ioSeq);
    else this.#inflightSeqs.set(ioSeq, n);
  }

  /** Read chunks [first, first+count) into `buf` (count * chunk bytes), verifying each CRC. Caller holds the locks. */
  #readChunks(first: number, count: number, buf: Buffer, ioSeqs: Float64Array | undefined): Promise<void> {
    // One chunk (the common 4 KiB read, a partial write's read-modify-write) needs no run bookkeeping.
    return count === 1 ? this.#readChunk(first, buf, ioSeqs) : this.#readRuns(first, count, buf, ioSeqs);
  }

  /** Whether chunk c's content is on the device (not zero, deallocated or never written). */
  #holdsData(c: number): boolean {
    return (this.#table.flags[c]! & NO_DATA_FLAGS) === 0 && this.#table.ioSeq[c]! !== 0;
  }

  #refuseIfNeedsRepair(c: number): void {
    if ((this.#table.flags[c]! & ChunkFlag.NeedsRepair) !== 0) {
      throw new StoreError(StoreErrorCode.Medium, `chunk at offset ${c * this.#chunk} needs repair (its data was torn or failed its checksum)`, c * this.#chunk);
    }
  }

  async #readChunk(c: number, buf: Buffer, ioSeqs: Float64Array | undefined): Promise<void> {
    this.#refuseIfNeedsRepair(c);
    if (ioSeqs !== undefined) ioSeqs[0] = this.#table.ioSeq[c]!;
    if (!this.#holdsData(c)) {
      buf.fill(0);
      return;
    }
    let got: number;
    try {
      got = await this.#file.read(buf, this.#dataOffset + c * this.#chunk);
    } catch (err) {
      throw storeErrorFromIo(err, 'read');
    }
    if (got < buf.length) buf.fill(0, got);
    if (crc32c(buf) !== this.#table.crc[c]) this.#checksumMismatch(c);
  }

  async #readRuns(first: number, count: number, buf: Buffer, ioSeqs: Float64Array | undefined): Promise<void> {
    const chunk = this.#chunk;
    const { ioSeq, crc } = this.#table;
    const dataOffset = this.#dataOffset;
    const reads: Promise<void>[] = [];
    let runStart = -1;
    const flushRun = (end: number): void => {
      if (runStart < 0) return;
      const start = runStart;
      const view = buf.subarray((start - first) * chunk, (end - first) * chunk);
      reads.push(this.#file.read(view, dataOffset + start * chunk).then((got) => {
        if (got < view.length) view.fill(0, got);
      }));
      runStart = -1;
    };
    for (let c = first; c < first + count; c++) this.#refuseIfNeedsRepair(c);
    for (let c = first; c < first + count; c++) {
      if (ioSeqs !== undefined) ioSeqs[c - first] = ioSeq[c]!;
      if (this.#holdsData(c)) {
        if (runStart < 0) runStart = c;
      } else {
        flushRun(c);
        buf.fill(0, (c - first) * chunk, (c - first + 1) * chunk);
      }
    }
    flushRun(first + count);
    try {
      if (reads.length === 1) await reads[0];
      else if (reads.length > 1) await settleAll(reads);
    } catch (err) {
      throw storeErrorFromIo(err, 'read');
    }
    for (let c = first; c < first + count; c++) {
      if (!this.#holdsData(c)) continue;
      const at = (c - first) * chunk;
      if (crc32c(buf.subarray(at, at + chunk)) !== crc[c]) this.#checksumMismatch(c);
    }
  }

  /** A chunk's data did not match its checksum: flag it, count it, and refuse the read. */
  #checksumMismatch(c: number): never {
    const { flags, ioSeq, crc } = this.#table;
    this.#stats.checksumMismatches++;
    this.#stats.chunksNeedingRepair++;
    this.#table.set(c, ioSeq[c]!, crc[c]!, flags[c]! | ChunkFlag.NeedsRepair);
    this.#log?.error({ chunk: c, offset: c * this.#chunk, ioSeq: ioSeq[c] }, 'chunk data does not match its checksum; flagged as needing repair');
    throw new StoreError(StoreErrorCode.Medium, `checksum mismatch in the chunk at offset ${c * this.#chunk}`, c * this.#chunk);
  }

  /**
   * The checksum of chunks [first, first+count) as #readChunks just returned (and verified) them,
   * combined from their table checksums instead of another pass over the data.
   */
  #verifiedRunCrc(first: number, count: number): number {
    const crc = this.#table.crc;
    const chunk = this.#chunk;
    let run = 0;
    for (let c = first; c < first + count; c++) {
      const own = this.#holdsData(c) ? crc[c]! : this.#zeroCrc;
      run = c === first ? own : crc32cCombine(run, own, chunk);
    }
    return run;
  }

  async read(offset: number, length: number): Promise<StoreReadResult> {
    this.#checkOpen();
    this.#checkRange(offset, length);
    const shift = this.#chunkShift;
    const first = Math.floor(offset / this.#chunk);
    const last = Math.floor((offset + length - 1) / this.#chunk);
    const count = last - first + 1;
    this.#enter();
    const l = this.#lock(first, last);
    const unlock = typeof l === 'function' ? l : await l;
    const buf = this.#pool.acquire(count << shift);
    try {
      const ioSeqs = new Float64Array(count);
      await this.#readChunks(first, count, buf, ioSeqs);
      this.#stats.reads++;
      this.#stats.readBytes += length;
      const at = offset - first * this.#chunk;
      const whole = at === 0 && length === count << shift;
      return new PooledRead(this.#pool, buf, buf.subarray(at, at + length), ioSeqs,
        whole ? this.#verifiedRunCrc(first, count) : undefined);
    } catch (err) {
      this.#pool.release(buf);
      throw err;
    } finally {
      unlock();
      this.#leave();
    }
  }

  async write(offset: number, data: Buffer, ioSeq: number, options?: { readonly fua?: boolean; readonly crc?: number }): Promise<StoreWriteResult> {
    const result = await this.#mutate(offset, data.length, ioSeq, data, 0, options?.crc);
    // FUA: durable before the acknowledgement (also when skipped: the newer data must be durable too).
    if (options?.fua === true) await this.flush();
    return result;
  }

  unmap(offset: number, length: number, ioSeq: number): Promise<StoreWriteResult> {
    return this.#mutate(offset, length, ioSeq, undefined, ChunkFlag.Deallocated);
  }

  writeZeroes(offset: number, length: number, ioSeq: number): Promise<StoreWriteResult> {
    return this.#mutate(offset, length, ioSeq, undefined, ChunkFlag.Zero);
  }

  /**
   * The one mutation path. `data` given: write it. Otherwise whole chunks get `noDataFlags` (zero or
   * deallocated, no data I/O) and partial chunks at either end are rewritten with zeroes.
   */
  async #mutate(offset: number, length: number, ioSeq: number, data: Buffer | undefined, noDataFlags: number,
    dataCrc?: number): Promise<StoreWriteResult> {
    this.#checkOpen();
    this.#checkRange(offset, length);
    ReplicaStore.#checkSeq(ioSeq);
    const chunk = this.#chunk;
    const first = Math.floor(offset / chunk);
    const last = Math.floor((offset + length - 1) / chunk);
    const count = last - first + 1;
    const headPartial = offset % chunk !== 0;
    const tailPartial = (offset + length) % chunk !== 0;
    this.#enter();
    this.#seqStart(ioSeq);
    const l = this.#lock(first, last);
    const unlock = typeof l === 'function' ? l : await l;
    let work: Buffer | undefined;
    let ownWork = false;
    let ticket: JournalTicket | undefined;
    let handedOff = false;
    try {
      const { ioSeq: seqs, flags, crc } = this.#table;
      // Which chunks to apply, and what each becomes.
      const plan: ChunkPlan[] = [];
      let skipped = 0;
      for (let c = first; c <= last; c++) {
        const needsRepair = (flags[c]! & ChunkFlag.NeedsRepair) !== 0;
        if (ioSeq <= seqs[c]! && !needsRepair) {
          skipped++;
          continue;
        }
        const partial = (c === first && headPartial) || (c === last && tailPartial);
        if (partial && needsRepair) {
          throw new StoreError(StoreErrorCode.Medium, `chunk at offset ${c * chunk} needs repair and this write does not cover it entirely`, c * chunk);
        }
        plan.push({ chunk: c, noDataFlags: data === undefined && !partial ? noDataFlags : 0 });
      }
      this.#stats.staleChunksSkipped += skipped;
      if (plan.length === 0) return { applied: 0, skipped };

      // The working buffer holds whole chunks [first, last] for every chunk written with data.
      const needsData = plan.some((p) => p.noDataFlags === 0);
      if (needsData) {
        if (data !== undefined && !headPartial && !tailPartial && this.#ownBuffers.has(data)) {
          work = data;
        } else {
          work = this.#pool.acquire(count * chunk);
          ownWork = true;
          const partialChunks: number[] = [];
          if (headPartial) partialChunks.push(first);
          if (tailPartial && (last !== first || !headPartial)) partialChunks.push(last);
          for (const c of partialChunks) {
            if (!plan.some((p) => p.chunk === c)) continue;
            await this.#readChunks(c, 1, work.subarray((c - first) * chunk, (c - first + 1) * chunk), undefined);
          }
          const at = offset - first * chunk;
          if (data !== undefined) data.copy(work, at);
          else work.fill(0, at, at + length);
        }
      }

      // Small writes carry their data in the journal and are acknowledged once it is written.
      const journalData = data !== undefined && plan.length * chunk <= this.#dataJournalMax;
      const entries: JournalEntry[] = [];
      const newCrcs = new Uint32Array(plan.length);
      // Exactly one whole chunk of data: the caller's checksum of it is the chunk's (no second pass).
      const knownCrc = dataCrc !== undefined && data !== undefined && count === 1 && length === chunk ? dataCrc : undefined;
      for (let i = 0; i < plan.length; i++) {
        const p = plan[i]!;
        const c = p.chunk;
        const at = (c - first) * chunk;
        const view = p.noDataFlags !== 0 ? undefined : work!.subarray(at, at + chunk);
        const newCrc = view === undefined ? 0 : knownCrc ?? crc32c(view);
        newCrcs[i] = newCrc;
        entries.push({
          chunk: c, newSeq: ioSeq, newCrc, newFlags: p.noDataFlags,
          prevSeq: seqs[c]!, prevCrc: crc[c]!, prevFlags: flags[c]!,
          ...(journalData && view !== undefined ? { data: view } : {}),
        });
      }
      try {
        ticket = await this.#journal.append(entries);
      } catch (err) {
        throw storeErrorFromIo(err, 'journal write');
      }

      if (journalData) {
        // Safe now (recovery replays the journal copy): publish the new state and acknowledge. The
        // copy in place keeps the chunks locked, so reads and later writes wait for it.
        this.#publish(plan, newCrcs, ioSeq, length, data, noDataFlags);
        this.#writeInPlaceFromJournal(plan, ticket, unlock, ioSeq);
        handedOff = true;
        return { applied: plan.length, skipped };
      }

      // Data in place: one device write per run of consecutive data chunks; discard deallocated runs.
      const dataOffset = this.#dataOffset;
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < plan.length;) {
        let j = i + 1;
        const kind = plan[i]!.noDataFlags;
        while (j < plan.length && plan[j]!.chunk === plan[j - 1]!.chunk + 1 && plan[j]!.noDataFlags === kind) j++;
        const c0 = plan[i]!.chunk;
        const n = j - i;
        if (kind === 0) {
          ops.push(this.#file.write(work!.subarray((c0 - first) * chunk, (c0 - first + n) * chunk), dataOffset + c0 * chunk));
        } else if (kind === ChunkFlag.Deallocated) {
          // A hint only: the table already says the chunk reads as zeroes, whatever the device holds.
          ops.push(this.#file.discard(dataOffset + c0 * chunk, n * chunk).catch(() => undefined));
        }
        i = j;
      }
      try {
        if (ops.length === 1) await ops[0];
        else if (ops.length > 1) await settleAll(ops);
      } catch (err) {
        this.#flagUnknown(plan);
        throw storeErrorFromIo(err, 'write');
      }
      this.#publish(plan, newCrcs, ioSeq, length, data, noDataFlags);
      return { applied: plan.length, skipped };
    } finally {
      if (ownWork) this.#pool.release(work!);
      if (!handedOff) {
        // The table is updated before the journal hears of completion: a checkpoint covering this
        // record must find the new entries in memory.
        if (ticket !== undefined) this.#journal.complete(ticket);
        unlock();
        this.#seqEnd(ioSeq);
        this.#leave();
      }
    }
  }

  /** The new table state of a mutation, and its counters. */
  #publish(plan: readonly ChunkPlan[], newCrcs: Uint32Array, ioSeq: number, length: number, data: Buffer | undefined, noDataFlags: number): void {
    const flags = this.#table.flags;
    for (let i = 0; i < plan.length; i++) {
      const c = plan[i]!.chunk;
      if ((flags[c]! & ChunkFlag.NeedsRepair) !== 0) this.#stats.chunksNeedingRepair--;
      this.#table.set(c, ioSeq, newCrcs[i]!, plan[i]!.noDataFlags);
    }
    if (ioSeq > this.#highestIoSeq) {
      this.#highestIoSeq = ioSeq;
      this.#info = { ...this.#info, highestIoSeq: ioSeq };
    }
    if (data !== undefined) {
      this.#stats.writes++;
      this.#stats.writeBytes += length;
    } else if (noDataFlags === ChunkFlag.Deallocated) {
      this.#stats.unmaps++;
    } else {
      this.#stats.writeZeroes++;
    }
  }

  /** A failed write in place leaves its chunks' content unknown: flag them (reads would catch it by CRC anyway). */
  #flagUnknown(plan: readonly ChunkPlan[]): void {
    const { flags, ioSeq, crc } = this.#table;
    for (const p of plan) {
      if (p.noDataFlags !== 0) continue;
      if ((flags[p.chunk]! & ChunkFlag.NeedsRepair) === 0) this.#stats.chunksNeedingRepair++;
      this.#table.set(p.chunk, ioSeq[p.chunk]!, crc[p.chunk]!, flags[p.chunk]! | ChunkFlag.NeedsRepair);
    }
  }

  /** Background half of a data-journaled write: copy the journaled data into place, then release. */
  #writeInPlaceFromJournal(plan: readonly ChunkPlan[], ticket: JournalTicket, unlock: () => void, ioSeq: number): void {
    const chunk = this.#chunk;
    const dataOffset = this.#dataOffset;
    const ops: Promise<unknown>[] = [];
    let v = 0;
    for (let i = 0; i < plan.length;) {
      // Runs of consecutive chunks go out as one writev of their journal views.
      let j = i + 1;
      while (j < plan.length && plan[j]!.chunk === plan[j - 1]!.chunk + 1) j++;
      const views = ticket.dataViews.slice(v, v + (j - i));
      v += j - i;
      // Background: nobody waits for this copy, so it goes to the device after the loop turn's
      // foreground I/O (the journal writes that acknowledge clients), in one submission.
      ops.push(this.#file.write(views.length === 1 ? views[0]! : views, dataOffset + plan[i]!.chunk * chunk, { background: true }));
      i = j;
    }
    const done = ops.length === 1 ? ops[0]! : settleAll(ops);
    done.catch((err: unknown) => {
      // The journal still holds the data, but this copy is unknown until rewritten or rebuilt.
      this.#flagUnknown(plan);
      this.#log?.error({ err, ioSeq }, 'write in place after the journal failed; chunks flagged as needing repair');
    }).finally(() => {
      this.#journal.complete(ticket);
      unlock();
      this.#seqEnd(ioSeq);
      this.#leave();
    });
  }

  /**
   * Rebuild sink: apply a run streamed from a healthy replica. Each chunk is written with its own
   * io_seq, so a chunk that meanwhile received a newer write keeps it (the mutation path skips
   * chunks whose io_seq is not older). Data is checked against the source's CRC32C first: a copy
   * corrupted on the way is refused, never stored.
   */
  async applyRun(run: Pick<ChunkRun, 'offset' | 'ioSeqs' | 'crcs' | 'zero' | 'data'>): Promise<StoreWriteResult> {
    const chunk = this.#chunk;
    const count = run.ioSeqs.length;
    if (run.offset % chunk !== 0 || run.data.length !== count * chunk || run.crcs.length !== count || run.zero.length !== count) {
      throw new StoreError(StoreErrorCode.Invalid, `rebuild run at ${run.offset} is not whole chunks with one io_seq, CRC and zero flag each`, run.offset);
    }
    for (let i = 0; i < count; i++) {
      if (run.zero[i] === 1) continue;
      if (crc32c(run.data.subarray(i * chunk, (i + 1) * chunk)) !== run.crcs[i]) {
        throw new StoreError(StoreErrorCode.Medium, `rebuild data for the chunk at ${run.offset + i * chunk} does not match its CRC32C`, run.offset + i * chunk);
      }
    }
    let applied = 0;
    let skipped = 0;
    // Consecutive chunks with the same io_seq and kind go through the mutation path together.
    for (let i = 0; i < count;) {
      let j = i + 1;
      while (j < count && run.ioSeqs[j] === run.ioSeqs[i] && run.zero[j] === run.zero[i]) j++;
      const offset = run.offset + i * chunk;
      const length = (j - i) * chunk;
      const ioSeq = run.ioSeqs[i]!;
      const r = ioSeq === 0
        ? { applied: 0, skipped: j - i } // never written at the source: nothing to copy
        : run.zero[i] === 1
          ? await this.#mutate(offset, length, ioSeq, undefined, ChunkFlag.Zero)
          : await this.#mutate(offset, length, ioSeq, run.data.subarray(i * chunk, j * chunk), 0);
      applied += r.applied;
      skipped += r.skipped;
      i = j;
    }
    return { applied, skipped };
  }

  /** fdatasync, coalesced: callers arriving while one runs share the next one. */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(new StoreError(StoreErrorCode.Closed, 'the store is closed'));
    if (this.#syncRunning === undefined) return this.#startSync();
    this.#syncQueued ??= this.#syncRunning.catch(() => undefined).then(() => {
      this.#syncQueued = undefined;
      return this.#startSync();
    });
    return this.#syncQueued;
  }

  #startSync(): Promise<void> {
    const p = this.#file.flush().then(() => {
      this.#stats.syncs++;
    }, (err: unknown) => {
      throw storeErrorFromIo(err, 'fdatasync');
    }).finally(() => {
      if (this.#syncRunning === p) this.#syncRunning = undefined;
    });
    this.#syncRunning = p;
    return p;
  }

  async mapStatus(offset: number, maxLength: number): Promise<MapExtent> {
    this.#checkOpen();
    this.#checkRange(offset, this.#info.blockSize);
    const chunk = this.#chunk;
    const { flags, ioSeq } = this.#table;
    const mappedAt = (c: number): boolean => (flags[c]! & ChunkFlag.Deallocated) === 0 && !(ioSeq[c] === 0 && flags[c] === 0);
    const first = Math.floor(offset / chunk);
    const mapped = mappedAt(first);
    const limit = Math.min(offset + Math.max(maxLength, this.#info.blockSize), this.#info.capacityBytes);
    let c = first + 1;
    while (c * chunk < limit && mappedAt(c) === mapped) c++;
    return { length: Math.min(c * chunk, limit) - offset, mapped };
  }

  /** `exclusive`: the persisted epoch itself is refused too (a target start claims a new one). */
  setEpoch(epoch: number, options?: { readonly exclusive?: boolean }): Promise<void> {
    return this.#updateSuperblock((sb) => {
      if (!Number.isSafeInteger(epoch) || epoch < 0) throw new StoreError(StoreErrorCode.Invalid, `invalid epoch ${epoch}`);
      if (BigInt(epoch) < sb.epoch) throw new StoreError(StoreErrorCode.StaleEpoch, `epoch ${epoch} is older than the persisted epoch ${sb.epoch}`);
      if (options?.exclusive === true && BigInt(epoch) === sb.epoch) {
        throw new StoreError(StoreErrorCode.StaleEpoch, `epoch ${epoch} is already taken (another target claimed it)`);
      }
      return BigInt(epoch) === sb.epoch ? undefined : { epoch: BigInt(epoch) };
    });
  }

  /**
   * Persist that a rebuild covering every write newer than `sinceIoSeq` has started, so a restart
   * in the middle is still known to be out of sync. An unfinished one keeps the older starting point.
   */
  beginRebuild(sinceIoSeq: number): Promise<void> {
    return this.#updateSuperblock((sb) => {
      const since = (sb.flags & SuperblockFlag.Rebuilding) !== 0 ? BigInt(Math.min(sinceIoSeq, Number(sb.rebuildSinceIoSeq))) : BigInt(sinceIoSeq);
      return { flags: sb.flags | SuperblockFlag.Rebuilding, rebuildSinceIoSeq: since };
    });
  }

  /** The rebuild finished: this replica holds everything its source had (a hole a crash left is filled). */
  async endRebuild(): Promise<void> {
    await this.#updateSuperblock((sb) => ((sb.flags & SuperblockFlag.Rebuilding) === 0 ? undefined
      : { flags: sb.flags & ~SuperblockFlag.Rebuilding, rebuildSinceIoSeq: 0n }));
    this.#holeFloor = undefined;
  }

  /** The target's metadata blob (target-state.ts); generation 0 when none was stored. */
  targetState(): Promise<TargetStateBlob> {
    return this.#serialised(() => this.#targetStateArea().get());
  }

  /**
   * Store the target's metadata blob durably. Fenced like the data path: refused (ESTALE_EPOCH) when
   * written under an epoch older than the persisted one, or older than the stored generation. It
   * runs in the superblock chain, so a SetEpoch that completed is never overtaken by an older put.
   */
  async putTargetState(blob: TargetStateBlob): Promise<void> {
    if (Number.isSafeInteger(blob.epoch) && BigInt(blob.epoch) > this.#sb.epoch) await this.setEpoch(blob.epoch);
    return this.#serialised(async () => {
      if (BigInt(blob.epoch) < this.#sb.epoch) {
        throw new StoreError(StoreErrorCode.StaleEpoch, `target state written under epoch ${blob.epoch}, older than the persisted epoch ${this.#sb.epoch}`);
      }
      await this.#targetStateArea().put(blob);
    });
  }

  #targetStateArea(): TargetStateArea {
    this.#checkOpen();
    if (this.#targetState !== undefined) return this.#targetState;
    const end = TARGET_STATE_OFFSET + TARGET_STATE_REGION_BYTES;
    const sb = this.#sb;
    if (Number(sb.journalOffset) < end || Number(sb.metadataOffset) < end) {
      throw new StoreError(StoreErrorCode.Invalid, 'this replica\'s layout has no room for the target state');
    }
    const file = this.#file;
    this.#targetState = new TargetStateArea({
      io: {
        read: (buf, offset) => file.read(buf, offset),
        write: (buf, offset) => file.write(buf, offset),
        flush: () => file.flush(),
        acquire: (size) => this.#pool.acquire(size),
        release: (buf) => this.#pool.release(buf),
      },
      offset: TARGET_STATE_OFFSET,
      volumeUuid: sb.volumeUuid,
      log: this.#log,
    });
    return this.#targetState;
  }

  /** Run `fn` after every superblock update queued before it, and before any queued after. */
  #serialised<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#superblockChain.then(fn, fn);
    this.#superblockChain = p.catch(() => undefined);
    return p;
  }

  async resize(capacityBytes: number): Promise<void> {
    this.#checkOpen();
    const chunk = this.#chunk;
    const current = this.#info.capacityBytes;
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes % chunk !== 0) {
      throw new StoreError(StoreErrorCode.Misaligned, `capacity ${capacityBytes} is not a multiple of the ${chunk}-byte chunk size`);
    }
    if (capacityBytes < current) throw new StoreError(StoreErrorCode.Invalid, `shrinking from ${current} to ${capacityBytes} bytes is refused`);
    if (capacityBytes === current) return;
    const maxCapacity = (Number(this.#sb.metadataLength) / ENTRY_BYTES) * chunk;
    if (capacityBytes > maxCapacity) {
      throw new StoreError(StoreErrorCode.NoSpace, `capacity ${capacityBytes} exceeds what this replica's metadata region can describe (${maxCapacity})`);
    }
    const needed = Number(this.#sb.dataOffset) + capacityBytes;
    if (needed > this.#file.size) {
      if (this.#file.isBlockDevice) throw new StoreError(StoreErrorCode.NoSpace, `${this.path} is too small for ${capacityBytes} bytes of data`);
      const st = await stat(this.path);
      if (st.size < needed) await truncate(this.path, needed);
    }
    // New chunks read as unwritten (their table entries are zero) before the superblock says they exist.
    this.#table.grow(capacityBytes / chunk);
    await this.#updateSuperblock(() => ({ capacityBytes: BigInt(capacityBytes) }));
  }

  /** Write back dirty table pages and move the journal checkpoint. Serialised; callers share a running one. */
  checkpoint(): Promise<void> {
    if (this.#checkpointing !== undefined) return this.#checkpointing;
    const p = this.#checkpointNow(this.#journal.completeSeq, this.#watermark()).finally(() => {
      this.#checkpointing = undefined;
    });
    this.#checkpointing = p;
    return p;
  }

  async #checkpointNow(journalSeq: number, watermark: number): Promise<void> {
    const pages = this.#table.takeDirtyPages();
    try {
      const metadataOffset = Number(this.#sb.metadataOffset);
      const maxRun = 256; // pages per write (1 MiB)
      const writes: Promise<void>[] = [];
      for (let i = 0; i < pages.length;) {
        let j = i + 1;
        while (j < pages.length && pages[j] === pages[j - 1]! + 1 && j - i < maxRun) j++;
        const n = j - i;
        const buf = this.#pool.acquire(n * TABLE_PAGE_BYTES);
        for (let k = 0; k < n; k++) this.#table.encodePage(pages[i + k]!, buf, k * TABLE_PAGE_BYTES);
        const at = metadataOffset + pages[i]! * TABLE_PAGE_BYTES;
        writes.push(this.#file.write(buf, at).then(() => undefined).finally(() => this.#pool.release(buf)));
        i = j;
      }
      await settleAll(writes);
      await this.#file.flush();
      await this.#updateSuperblock((sb) => {
        const seq = BigInt(Math.max(journalSeq, Number(sb.journalCheckpointSeq)));
        const io = BigInt(Math.max(watermark, Number(sb.checkpointedIoSeq)));
        return seq === sb.journalCheckpointSeq && io === sb.checkpointedIoSeq ? undefined : { journalCheckpointSeq: seq, checkpointedIoSeq: io };
      }, true);
      this.#journal.checkpointed(journalSeq);
    } catch (err) {
      this.#table.restoreDirtyPages(pages);
      this.#log?.error({ err }, 'checkpoint failed');
      throw storeErrorFromIo(err, 'checkpoint');
    }
  }

  /** Write the next superblock generation (serialised) and fdatasync it. */
  #updateSuperblock(change: (sb: Superblock) => Partial<Omit<Superblock, 'generation'>> | undefined, allowWhileClosing = false): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.#closed && !allowWhileClosing) throw new StoreError(StoreErrorCode.Closed, 'the store is closed');
      const changes = change(this.#sb);
      if (changes === undefined) return;
      const { superblock, offset } = nextSuperblock(this.#sb, changes);
      const bytes = encodeSuperblock(superblock);
      const buf = this.#pool.acquire(bytes.length);
      try {
        bytes.copy(buf);
        await this.#file.write(buf, offset);
        await this.#file.flush();
      } catch (err) {
        throw storeErrorFromIo(err, 'superblock write');
      } finally {
        this.#pool.release(buf);
      }
      this.#sb = superblock;
      this.#info = infoOf(superblock, this.#highestIoSeq);
    };
    return this.#serialised(run);
  }

  /** Chunks with io_seq > sinceIoSeq, in runs (rebuild source). Chunks needing repair are left out. */
  async *scan(sinceIoSeq: number, options: { readonly maxRunBytes?: number; readonly fromOffset?: number } = {}): AsyncIterable<ChunkRun> {
    const chunk = this.#chunk;
    const maxChunks = Math.max(1, Math.floor((options.maxRunBytes ?? 1 << 20) / chunk));
    let c = Math.floor((options.fromOffset ?? 0) / chunk);
    while (true) {
      this.#checkOpen();
      const { ioSeq, flags } = this.#table;
      const total = this.#table.chunkCount;
      while (c < total && (ioSeq[c]! <= sinceIoSeq || (flags[c]! & ChunkFlag.NeedsRepair) !== 0)) c++;
      if (c >= total) return;
      let end = c + 1;
      while (end < total && end - c < maxChunks && ioSeq[end]! > sinceIoSeq && (flags[end]! & ChunkFlag.NeedsRepair) === 0) end++;
      const count = end - c;
      this.#enter();
      const l = this.#lock(c, end - 1);
      const unlock = typeof l === 'function' ? l : await l;
      const data = Buffer.allocUnsafe(count * chunk);
      const buf = this.#pool.acquire(count * chunk);
      const ioSeqs = new Float64Array(count);
      const crcs = new Uint32Array(count);
      const zero = new Uint8Array(count);
      try {
        await this.#readChunks(c, count, buf, ioSeqs);
        for (let i = 0; i < count; i++) {
          const f = this.#table.flags[c + i]!;
          zero[i] = (f & NO_DATA_FLAGS) !== 0 ? 1 : 0;
          crcs[i] = zero[i] === 1 ? this.#zeroCrc : this.#table.crc[c + i]!;
        }
        buf.copy(data, 0, 0, count * chunk);
      } finally {
        this.#pool.release(buf);
        unlock();
        this.#leave();
      }
      yield { offset: c * chunk, length: count * chunk, ioSeqs, crcs, zero, data };
      c = end;
    }
  }

  /** Refuse new I/O, wait for what is in flight, checkpoint, close the device. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#checkpointTimer !== undefined) clearInterval(this.#checkpointTimer);
      if (this.#stats.inflight > 0) await new Promise<void>((resolve) => { this.#idle = resolve; });
      try {
        await this.#checkpointing?.catch(() => undefined);
        await this.#checkpointNow(this.#journal.completeSeq, this.#watermark());
      } catch (err) {
        this.#log?.error({ err }, 'final checkpoint failed; the journal will be replayed at the next open');
      } finally {
        await this.#file.close();
      }
    })();
    return this.#closing;
  }

  /** For tests and tools: the table entry of the chunk holding `offset`. */
  chunkState(offset: number): { ioSeq: number; crc: number; flags: number } {
    const c = Math.floor(offset / this.#chunk);
    return { ioSeq: this.#table.ioSeq[c]!, crc: this.#table.crc[c]!, flags: this.#table.flags[c]! };
  }

  /** Journal statistics (tests, status). */
  journalStats(): { blocksWritten: number; used: number; slots: number } {
    return { blocksWritten: this.#journal.blocksWritten, used: this.#journal.used, slots: this.#journal.slots };
  }
}
