// Per-chunk metadata of the replica store: the io_seq of the last write applied to each chunk, the
// CRC32C of its data and a few state flags. The whole table lives in memory (16 bytes per chunk on
// disk, 13 in memory: 1 GiB of volume at 4 KiB chunks is 3.25 MiB) and is written back to the
// metadata region page by page at checkpoints (the journal covers what is not yet written back).
//
// On-disk entry (16 bytes, little-endian):
//   0  u32 io_seq low 32 bits
//   4  u32 io_seq high 21 bits | flags << 24
//   8  u32 CRC32C of the chunk's data (0 when the chunk holds no data: zero, deallocated, unwritten)
//  12  u32 check: a hash of bytes 0..11, so a rotted entry is detected
// All 16 bytes zero = never written (reads as zeroes), which is what a freshly zeroed region holds.
// The check is a JS hash rather than CRC32C because a CRC call per 12-byte entry (a native call
// each) made loading a large table slow; it guards against media corruption, not adversaries. A
// torn page write needs no check at all: pages are only written at checkpoints, before the
// superblock moves the journal checkpoint, so recovery replays every entry such a page held.

export const ENTRY_BYTES = 16;
export const TABLE_PAGE_BYTES = 4096;
export const ENTRIES_PER_PAGE = TABLE_PAGE_BYTES / ENTRY_BYTES;

/** Chunk state flags (a chunk with none of them and io_seq 0 was never written). */
export const ChunkFlag = {
  /** WRITE SAME / WRITE ZEROES: reads as zeroes, counts as mapped. */
  Zero: 1,
  /** UNMAP: reads as zeroes, counts as deallocated. */
  Deallocated: 2,
  /** The data on disk is known bad (torn by power loss, or a checksum mismatch): unreadable until rewritten. */
  NeedsRepair: 4,
} as const;

/** Chunks whose data lives on disk have none of these. */
export const NO_DATA_FLAGS = ChunkFlag.Zero | ChunkFlag.Deallocated;

/** Largest io_seq an entry can hold (53 bits: a safe JS integer). */
export const MAX_IO_SEQ = Number.MAX_SAFE_INTEGER;

function entryCheck(w0: number, w1: number, w2: number): number {
  // murmur3-style mixing of the three words; never 0 for a written entry is not required.
  let h = 0x9e3779b9 ^ w0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ w1 ^ (h >>> 13), 0xc2b2ae35);
  h = Math.imul(h ^ w2 ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 15)) >>> 0;
}

export class MetadataTable {
  /** io_seq per chunk (safe integers). */
  ioSeq: Float64Array;
  crc: Uint32Array;
  flags: Uint8Array;
  #chunkCount: number;
  /** Pages changed since they were last handed out by takeDirtyPages(). */
  #dirty = new Set<number>();

  constructor(chunkCount: number) {
    this.#chunkCount = chunkCount;
    this.ioSeq = new Float64Array(chunkCount);
    this.crc = new Uint32Array(chunkCount);
    this.flags = new Uint8Array(chunkCount);
  }

  get chunkCount(): number {
    return this.#chunkCount;
  }

  /** Grow to `chunkCount` chunks; the new ones are unwritten. */
  grow(chunkCount: number): void {
    if (chunkCount <= this.#chunkCount) return;
    const ioSeq = new Float64Array(chunkCount);
    ioSeq.set(this.ioSeq);
    const crc = new Uint32Array(chunkCount);
    crc.set(this.crc);
    const flags = new Uint8Array(chunkCount);
    flags.set(this.flags);
    this.ioSeq = ioSeq;
    this.crc = crc;
    this.flags = flags;
    this.#chunkCount = chunkCount;
  }

  set(chunk: number, ioSeq: number, crc: number, flags: number): void {
    this.ioSeq[chunk] = ioSeq;
    this.crc[chunk] = crc;
    this.flags[chunk] = flags;
    this.#dirty.add((chunk / ENTRIES_PER_PAGE) | 0);
  }

  markDirty(chunk: number): void {
    this.#dirty.add((chunk / ENTRIES_PER_PAGE) | 0);
  }

  get dirtyPageCount(): number {
    return this.#dirty.size;
  }

  /** The dirty pages, sorted; they count as clean from now on (a later change dirties them again). */
  takeDirtyPages(): number[] {
    const pages = [...this.#dirty].sort((a, b) => a - b);
    this.#dirty = new Set();
    return pages;
  }

  /** Put pages back after a failed write-back. */
  restoreDirtyPages(pages: readonly number[]): void {
    for (const p of pages) this.#dirty.add(p);
  }

  /** Encode page `page` into `out` (TABLE_PAGE_BYTES at `at`). Entries past the last chunk are zero. */
  encodePage(page: number, out: Buffer, at = 0): void {
    const first = page * ENTRIES_PER_PAGE;
    const words = new Uint32Array(out.buffer, out.byteOffset + at, TABLE_PAGE_BYTES / 4);
    for (let i = 0; i < ENTRIES_PER_PAGE; i++) {
      const c = first + i;
      const w = i * 4;
      if (c >= this.#chunkCount) {
        words.fill(0, w, w + 4);
        continue;
      }
      const seq = this.ioSeq[c]!;
      const fl = this.flags[c]!;
      if (seq === 0 && fl === 0) {
        words.fill(0, w, w + 4);
        continue;
      }
      const w0 = seq >>> 0;
      const w1 = (Math.floor(seq / 0x1_0000_0000) | (fl << 24)) >>> 0;
      const w2 = this.crc[c]!;
      words[w] = w0;
      words[w + 1] = w1;
      words[w + 2] = w2;
      words[w + 3] = entryCheck(w0, w1, w2);
    }
  }

  /**
   * Load entries for chunks [firstChunk, firstChunk + count) from `bytes` (their on-disk image).
   * Returns the chunks whose entry failed its check; they are flagged NeedsRepair.
   */
  load(bytes: Buffer, firstChunk: number, count: number): number[] {
    const bad: number[] = [];
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, (count * ENTRY_BYTES) / 4);
    for (let i = 0; i < count; i++) {
      const w = i * 4;
      const w0 = words[w]!;
      const w1 = words[w + 1]!;
      const w2 = words[w + 2]!;
      const w3 = words[w + 3]!;
      const c = firstChunk + i;
      if ((w0 | w1 | w2 | w3) === 0) {
        this.ioSeq[c] = 0;
        this.crc[c] = 0;
        this.flags[c] = 0;
        continue;
      }
      if (entryCheck(w0, w1, w2) !== w3) {
        bad.push(c);
        this.ioSeq[c] = 0;
        this.crc[c] = 0;
        this.flags[c] = ChunkFlag.NeedsRepair;
        this.#dirty.add((c / ENTRIES_PER_PAGE) | 0);
        continue;
      }
      this.ioSeq[c] = (w1 & 0x1f_ffff) * 0x1_0000_0000 + w0;
      this.flags[c] = w1 >>> 24;
      this.crc[c] = w2;
    }
    return bad;
  }
}
