// The store's intent journal: before a write touches a chunk's data, a journal record names the
// chunk with its new io_seq/CRC *and* its previous ones. Records are 4 KiB blocks in a ring; block
// `seq` lives at slot seq % slots, so no head pointer is ever persisted. Each block is
// self-validating (magic, volume tag, CRC32C), which makes torn or stale blocks recognisable.
//
// Writes of one event-loop turn share a block (group commit), so at queue depth 32 the journal
// costs a small fraction of an extra device write per data write.
//
// Small writes also put their data in the journal (data journaling, like ZFS's ZIL for small
// blocks): the data blocks follow the header block that names them, in one sequential write, so
// the write is safe — and acknowledged — after a single device write; the copy in place follows
// in the background. Recovery replays such records from the journal (their data's CRC must match).
//
// Space: a block may be overwritten only once the superblock's journal checkpoint covers it, i.e.
// the metadata table pages for all of its entries are on disk. The writer never gets further than
// `slots` blocks ahead of the checkpoint and asks for a checkpoint when half the ring is in use.
//
// Block layout (little-endian):
//   0  magic u32 "JRN1"   4  CRC32C of bytes 8..4095   8  seq u64   16  completeSeq u64 (every
//   record ≤ it had all its data written when this block was built)   24  io_seq watermark u64
//   32  entry count u32   36  volume tag u32   40..63 zero   64  entries, 32 bytes each:
//   0 chunk u64 · 8 new io_seq+flags u64 · 16 new CRC u32 · 20 previous io_seq+flags u64 · 28 previous CRC u32
//   (new flags bit 0x80: the chunk's data follows in the journal; the k-th such entry of a header
//   block at seq h has its data at seq h + 1 + k * blocksPerChunk)

import { crc32c } from '../protocol/iscsi/digest.js';
import type { BlockFile } from './native.js';
import type { AlignedPool } from './aligned-pool.js';

export const JOURNAL_BLOCK_BYTES = 4096;
const HEADER_BYTES = 64;
const ENTRY_BYTES = 32;
export const ENTRIES_PER_BLOCK = (JOURNAL_BLOCK_BYTES - HEADER_BYTES) / ENTRY_BYTES;
const MAGIC = 0x314e524a; // "JRN1"
const TWO32 = 0x1_0000_0000;
const DATA_IN_JOURNAL = 0x80;

export interface JournalEntry {
  readonly chunk: number;
  readonly newSeq: number;
  readonly newCrc: number;
  readonly newFlags: number;
  readonly prevSeq: number;
  readonly prevCrc: number;
  readonly prevFlags: number;
  /** Data journaling: the chunk's new data (chunk-sized), written into the journal after the header. */
  readonly data?: Buffer;
}

/** A decoded entry: where its data is, when it was journaled. */
export interface DecodedJournalEntry extends Omit<JournalEntry, 'data'> {
  /** Seq of the first journal block holding this entry's data, if the data was journaled. */
  readonly dataSeq?: number;
}

export interface JournalBlock {
  readonly seq: number;
  readonly completeSeq: number;
  readonly ioSeqWatermark: number;
  readonly entries: readonly (JournalEntry | DecodedJournalEntry)[];
}

function putU64(b: Buffer, at: number, v: number, topByte = 0): void {
  b.writeUInt32LE(v >>> 0, at);
  b.writeUInt32LE((Math.floor(v / TWO32) | (topByte << 24)) >>> 0, at + 4);
}

function getU53(b: Buffer, at: number): number {
  return (b.readUInt32LE(at + 4) & 0x1f_ffff) * TWO32 + b.readUInt32LE(at);
}

/** Encode one journal block into `out` at `at`. */
export function encodeJournalBlock(out: Buffer, at: number, block: JournalBlock, volumeTag: number): void {
  const b = out.subarray(at, at + JOURNAL_BLOCK_BYTES);
  b.fill(0, 0, HEADER_BYTES);
  b.writeUInt32LE(MAGIC, 0);
  putU64(b, 8, block.seq);
  putU64(b, 16, block.completeSeq);
  putU64(b, 24, block.ioSeqWatermark);
  b.writeUInt32LE(block.entries.length, 32);
  b.writeUInt32LE(volumeTag >>> 0, 36);
  let p = HEADER_BYTES;
  for (const e of block.entries) {
    putU64(b, p, e.chunk);
    putU64(b, p + 8, e.newSeq, e.newFlags | ('data' in e && e.data !== undefined ? DATA_IN_JOURNAL : 0));
    b.writeUInt32LE(e.newCrc >>> 0, p + 16);
    putU64(b, p + 20, e.prevSeq, e.prevFlags);
    b.writeUInt32LE(e.prevCrc >>> 0, p + 28);
    p += ENTRY_BYTES;
  }
  b.fill(0, p);
  b.writeUInt32LE(crc32c(b.subarray(8)), 4);
}

/**
 * Decode a journal block; undefined when it is not a valid block of this volume (never written,
 * torn, stale format, or a data block). `blocksPerChunk` places journaled data.
 */
export function decodeJournalBlock(b: Buffer, volumeTag: number, blocksPerChunk = 1): (JournalBlock & { readonly entries: DecodedJournalEntry[] }) | undefined {
  if (b.length < JOURNAL_BLOCK_BYTES || b.readUInt32LE(0) !== MAGIC) return undefined;
  if (b.readUInt32LE(36) !== volumeTag >>> 0) return undefined;
  if (crc32c(b.subarray(8, JOURNAL_BLOCK_BYTES)) !== b.readUInt32LE(4)) return undefined;
  const count = b.readUInt32LE(32);
  if (count > ENTRIES_PER_BLOCK) return undefined;
  const seq = getU53(b, 8);
  const entries: DecodedJournalEntry[] = [];
  let dataSeq = seq + 1;
  for (let i = 0, p = HEADER_BYTES; i < count; i++, p += ENTRY_BYTES) {
    const flags = b.readUInt8(p + 15);
    const entry: DecodedJournalEntry = {
      chunk: getU53(b, p),
      newSeq: getU53(b, p + 8),
      newFlags: flags & ~DATA_IN_JOURNAL,
      newCrc: b.readUInt32LE(p + 16),
      prevSeq: getU53(b, p + 20),
      prevFlags: b.readUInt8(p + 27),
      prevCrc: b.readUInt32LE(p + 28),
      ...((flags & DATA_IN_JOURNAL) !== 0 ? { dataSeq } : {}),
    };
    if ((flags & DATA_IN_JOURNAL) !== 0) dataSeq += blocksPerChunk;
    entries.push(entry);
  }
  return { seq, completeSeq: getU53(b, 16), ioSeqWatermark: getU53(b, 24), entries };
}

/** One write's share of a group-commit batch. */
export interface JournalTicket {
  readonly firstSeq: number;
  readonly lastSeq: number;
  /** Views of the journaled data of this write's data entries (in entry order), valid until complete(). */
  readonly dataViews: readonly Buffer[];
}

/** The blocks written together, and how many writes still owe their data in place. */
interface Batch {
  readonly firstSeq: number;
  readonly lastSeq: number;
  pending: number;
  written: boolean;
  buffer: Buffer | undefined;
}

interface Waiter {
  readonly entries: readonly JournalEntry[];
  readonly resolve: (ticket: JournalTicket) => void;
  readonly reject: (err: unknown) => void;
}

export interface JournalWriterOptions {
  readonly file: BlockFile;
  readonly pool: AlignedPool;
  readonly offset: number;
  readonly length: number;
  readonly volumeTag: number;
  /** First seq to write (one past the highest valid block found at open). */
  readonly nextSeq: number;
  /** Blocks ≤ this are covered by the superblock's checkpoint. */
  readonly checkpointSeq: number;
  /** The io_seq watermark to stamp in each block. */
  readonly watermark: () => number;
  /** Called (at most once until checkpointed() is called) when half the ring is in use or it is full. */
  readonly onCheckpointNeeded: () => void;
  /** Journal writes in flight at once; more batches wait and grow (group commit). */
  readonly maxInflightWrites?: number;
  /** Chunk size, for entries that carry data (default 4096). */
  readonly chunkSize?: number;
}

export class JournalWriter {
  readonly #o: JournalWriterOptions;
  readonly #slots: number;
  #nextSeq: number;
  #checkpointSeq: number;
  #queue: Waiter[] = [];
  #scheduled = false;
  #inflightWrites = 0;
  readonly #maxInflight: number;
  /** Batches not yet fully complete, oldest first. */
  readonly #batches: Batch[] = [];
  #completeSeq: number;
  #checkpointRequested = false;
  #blocksWritten = 0;
  readonly #blocksPerChunk: number;
  readonly #tickets = new WeakMap<JournalTicket, Batch>();

  constructor(options: JournalWriterOptions) {
    this.#blocksPerChunk = Math.max(1, (options.chunkSize ?? JOURNAL_BLOCK_BYTES) / JOURNAL_BLOCK_BYTES);
    this.#o = options;
    this.#slots = Math.floor(options.length / JOURNAL_BLOCK_BYTES);
    this.#nextSeq = options.nextSeq;
    this.#checkpointSeq = options.checkpointSeq;
    this.#completeSeq = options.nextSeq - 1;
    this.#maxInflight = options.maxInflightWrites ?? 2;
  }

  /** Highest seq such that every record ≤ it has had its data written. */
  get completeSeq(): number {
    return this.#completeSeq;
  }

  get blocksWritten(): number {
    return this.#blocksWritten;
  }

  /** Blocks between the checkpoint and the next write. */
  get used(): number {
    return this.#nextSeq - 1 - this.#checkpointSeq;
  }

  get slots(): number {
    return this.#slots;
  }

  /** Resolves once the records for `entries` are written; the caller then writes data and calls complete(). */
  append(entries: readonly JournalEntry[]): Promise<JournalTicket> {
    if (entries.length === 0) return Promise.resolve({ firstSeq: this.#nextSeq, lastSeq: this.#nextSeq - 1, dataViews: [] });
    return new Promise((resolve, reject) => {
      this.#queue.push({ entries, resolve, reject });
      this.#schedule();
    });
  }

  /** The write holding `ticket` has its data on disk (or failed: its records then describe a write that may be partial, which recovery handles). */
  complete(ticket: JournalTicket): void {
    const batch = this.#tickets.get(ticket);
    if (batch === undefined) return;
    this.#tickets.delete(ticket);
    if (--batch.pending === 0 && batch.buffer !== undefined) {
      this.#o.pool.release(batch.buffer);
      batch.buffer = undefined;
    }
    this.#advance();
  }

  /** The superblock now covers every block ≤ seq; their slots may be reused. */
  checkpointed(seq: number): void {
    if (seq > this.#checkpointSeq) this.#checkpointSeq = seq;
    this.#checkpointRequested = false;
    this.#schedule();
  }

  #advance(): void {
    while (this.#batches.length > 0) {
      const b = this.#batches[0]!;
      if (!b.written || b.pending > 0) break;
      this.#completeSeq = b.lastSeq;
      this.#batches.shift();
    }
  }

  #schedule(): void {
    if (this.#scheduled || this.#queue.length === 0) return;
    this.#scheduled = true;
    // setImmediate: every write started by this turn's completions joins the same batch.
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
    });
  }

  #requestCheckpoint(): void {
    if (this.#checkpointRequested) return;
    this.#checkpointRequested = true;
    this.#o.onCheckpointNeeded();
  }

  #flush(): void {
    while (this.#queue.length > 0 && this.#inflightWrites < this.#maxInflight) {
      // Take as many waiters as fit in the free ring space.
      const free = this.#slots - this.used;
      let blocks = 0;
      let inBlock = ENTRIES_PER_BLOCK;
      let take = 0;
      for (const w of this.#queue) {
        let need = 0;
        let fill = inBlock;
        for (const e of w.entries) {
          if (fill === ENTRIES_PER_BLOCK) { need++; fill = 0; }
          fill++;
          if (e.data !== undefined) need += this.#blocksPerChunk;
        }
        if (blocks + need > free) break;
        blocks += need;
        inBlock = fill;
        take++;
      }
      if (take === 0) {
        this.#requestCheckpoint();
        return;
      }
      const waiters = this.#queue.splice(0, take);
      this.#writeBatch(waiters, blocks);
      if (this.used * 2 >= this.#slots) this.#requestCheckpoint();
    }
  }

  #writeBatch(waiters: Waiter[], blockCount: number): void {
    const firstSeq = this.#nextSeq;
    this.#nextSeq += blockCount;
    const buf = this.#o.pool.acquire(blockCount * JOURNAL_BLOCK_BYTES);
    const batch: Batch = { firstSeq, lastSeq: firstSeq + blockCount - 1, pending: waiters.length, written: false, buffer: buf };
    this.#batches.push(batch);
    // Header blocks are filled waiter by waiter; each is followed by the data its entries carry.
    const completeSeq = this.#completeSeq;
    const watermark = this.#o.watermark();
    const bpc = this.#blocksPerChunk;
    let headerSeq = firstSeq;
    let nextSeq = firstSeq + 1;
    let entries: JournalEntry[] = [];
    const views: Buffer[][] = waiters.map(() => []);
    const emitHeader = (): void => {
      encodeJournalBlock(buf, (headerSeq - firstSeq) * JOURNAL_BLOCK_BYTES, { seq: headerSeq, completeSeq, ioSeqWatermark: watermark, entries }, this.#o.volumeTag);
      entries = [];
      headerSeq = nextSeq;
      nextSeq = headerSeq + 1;
    };
    waiters.forEach((w, wi) => {
      for (const e of w.entries) {
        if (entries.length === ENTRIES_PER_BLOCK) emitHeader();
        entries.push(e);
        if (e.data !== undefined) {
          const at = (nextSeq - firstSeq) * JOURNAL_BLOCK_BYTES;
          e.data.copy(buf, at, 0, bpc * JOURNAL_BLOCK_BYTES);
          views[wi]!.push(buf.subarray(at, at + bpc * JOURNAL_BLOCK_BYTES));
          nextSeq += bpc;
        }
      }
    });
    emitHeader();
    // Blocks the count reserved but packing did not need (never more than one) are empty headers.
    while (headerSeq <= batch.lastSeq) emitHeader();

    this.#inflightWrites++;
    const writes: Promise<number>[] = [];
    const firstSlot = firstSeq % this.#slots;
    const contiguous = Math.min(blockCount, this.#slots - firstSlot);
    writes.push(this.#o.file.write(buf.subarray(0, contiguous * JOURNAL_BLOCK_BYTES), this.#o.offset + firstSlot * JOURNAL_BLOCK_BYTES));
    if (contiguous < blockCount) {
      writes.push(this.#o.file.write(buf.subarray(contiguous * JOURNAL_BLOCK_BYTES, blockCount * JOURNAL_BLOCK_BYTES), this.#o.offset));
    }
    // allSettled: the buffer goes back to the pool only when no write still uses it.
    Promise.allSettled(writes).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    }).then(() => {
      this.#inflightWrites--;
      this.#blocksWritten += blockCount;
      batch.written = true;
      waiters.forEach((w, wi) => {
        const ticket: JournalTicket = { firstSeq: batch.firstSeq, lastSeq: batch.lastSeq, dataViews: views[wi]! };
        this.#tickets.set(ticket, batch);
        w.resolve(ticket);
      });
      this.#schedule();
    }, (err: unknown) => {
      this.#inflightWrites--;
      this.#o.pool.release(buf);
      batch.buffer = undefined;
      // The records may or may not be on disk; recovery treats them like any write in flight.
      batch.written = true;
      batch.pending = 0;
      this.#advance();
      for (const w of waiters) w.reject(err);
      this.#schedule();
    });
  }
}
