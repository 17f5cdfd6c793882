import t from 'tap';
import { ENTRIES_PER_BLOCK, JOURNAL_BLOCK_BYTES, decodeJournalBlock, encodeJournalBlock, type JournalEntry } from '../../src/replica/journal.js';
import { ENTRY_BYTES, ENTRIES_PER_PAGE, MetadataTable, ChunkFlag, TABLE_PAGE_BYTES } from '../../src/replica/metadata-table.js';

const TAG = 0x3f2504e0;

function entries(n: number): JournalEntry[] {
  return Array.from({ length: n }, (_, i) => ({
    chunk: 2 ** 40 + i, newSeq: 2 ** 52 + i, newCrc: 0xdeadbeef - i, newFlags: i % 3,
    prevSeq: i, prevCrc: i * 7, prevFlags: ChunkFlag.NeedsRepair,
  }));
}

t.test('journal block round trip, full and empty', async (t) => {
  const buf = Buffer.alloc(2 * JOURNAL_BLOCK_BYTES);
  const full = { seq: 2 ** 50, completeSeq: 2 ** 50 - 3, ioSeqWatermark: 123, entries: entries(ENTRIES_PER_BLOCK) };
  encodeJournalBlock(buf, JOURNAL_BLOCK_BYTES, full, TAG);
  t.same(decodeJournalBlock(buf.subarray(JOURNAL_BLOCK_BYTES), TAG), full);
  encodeJournalBlock(buf, 0, { seq: 1, completeSeq: 0, ioSeqWatermark: 0, entries: [] }, TAG);
  t.same(decodeJournalBlock(buf.subarray(0, JOURNAL_BLOCK_BYTES), TAG)?.entries, []);
});

t.test('a torn, foreign or never-written block is not a record', async (t) => {
  const b = Buffer.alloc(JOURNAL_BLOCK_BYTES);
  t.equal(decodeJournalBlock(b, TAG), undefined, 'zeroes');
  encodeJournalBlock(b, 0, { seq: 9, completeSeq: 8, ioSeqWatermark: 7, entries: entries(ENTRIES_PER_BLOCK) }, TAG);
  const older = Buffer.alloc(JOURNAL_BLOCK_BYTES);
  encodeJournalBlock(older, 0, { seq: 9 - 64, completeSeq: 1, ioSeqWatermark: 1, entries: entries(ENTRIES_PER_BLOCK - 1) }, TAG);
  t.equal(decodeJournalBlock(b, TAG ^ 1), undefined, 'another volume\'s journal');
  // A write torn at any 512-byte sector boundary leaves a mix of old and new sectors.
  for (let sector = 1; sector < 8; sector++) {
    const torn = Buffer.from(b);
    older.copy(torn, sector * 512, sector * 512); // the slot's previous lap shows through
    t.equal(decodeJournalBlock(torn, TAG), undefined, `torn after sector ${sector}`);
  }
  for (const at of [8, 20, 64, 1000, 4095]) {
    const flipped = Buffer.from(b);
    flipped[at]! ^= 0x10;
    t.equal(decodeJournalBlock(flipped, TAG), undefined, `bit flip at ${at}`);
  }
});

t.test('metadata table pages round trip and detect rotted entries', async (t) => {
  const table = new MetadataTable(ENTRIES_PER_PAGE + 10);
  table.set(0, 2 ** 53 - 1, 0xffffffff, ChunkFlag.Zero | ChunkFlag.NeedsRepair);
  table.set(5, 77, 0x12345678, 0);
  table.set(ENTRIES_PER_PAGE + 3, 1, 1, ChunkFlag.Deallocated);
  t.same(table.takeDirtyPages(), [0, 1]);
  t.same(table.takeDirtyPages(), [], 'taken pages are clean');
  const pages = Buffer.alloc(2 * TABLE_PAGE_BYTES);
  table.encodePage(0, pages, 0);
  table.encodePage(1, pages, TABLE_PAGE_BYTES);
  t.ok(pages.subarray(16, 32).equals(Buffer.alloc(16)), 'an unwritten entry is all zeroes');
  pages[5 * ENTRY_BYTES + 2]! ^= 1;
  const copy = new MetadataTable(ENTRIES_PER_PAGE + 10);
  const bad = copy.load(pages, 0, ENTRIES_PER_PAGE + 10);
  t.same(bad, [5], 'the rotted entry is reported');
  t.equal(copy.flags[5], ChunkFlag.NeedsRepair, 'and flagged');
  t.equal(copy.ioSeq[0], 2 ** 53 - 1);
  t.equal(copy.crc[0], 0xffffffff);
  t.equal(copy.flags[0], ChunkFlag.Zero | ChunkFlag.NeedsRepair);
  t.equal(copy.ioSeq[ENTRIES_PER_PAGE + 3], 1);
  t.equal(copy.flags[ENTRIES_PER_PAGE + 3], ChunkFlag.Deallocated);
  t.same(copy.takeDirtyPages(), [0], 'a flagged entry must be written back');
  copy.grow(ENTRIES_PER_PAGE * 3);
  t.equal(copy.chunkCount, ENTRIES_PER_PAGE * 3);
  t.equal(copy.ioSeq[ENTRIES_PER_PAGE + 3], 1, 'grow keeps entries');
});
