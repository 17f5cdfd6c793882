import t from 'tap';
import {
  SUPERBLOCK_SLOT_BYTES, SuperblockErrorCode, decodeSuperblock, encodeSuperblock, nextSuperblock, selectSuperblock,
  type Superblock,
} from '../../src/replica/superblock.js';
import { crc32c } from '../../src/protocol/iscsi/digest.js';

const base: Superblock = {
  generation: 1n,
  volumeName: 'pvc-0c4f',
  volumeUuid: '3f2504e0-4f89-11d3-9a0c-0305e82c3301',
  replicaId: 'replica-a',
  blockSize: 512,
  metadataChunkSize: 4096,
  capacityBytes: 1n << 30n,
  epoch: 7n,
  checkpointedIoSeq: 123456789n,
  metadataOffset: 2n << 20n,
  metadataLength: 4n << 20n,
  dataOffset: 6n << 20n,
  flags: 0,
  journalOffset: 1n << 20n,
  journalLength: 1n << 20n,
  journalCheckpointSeq: 99n,
  journalNonce: 0xc0ffee11,
  rebuildSinceIoSeq: 77n,
};

function region(a: Buffer | undefined, b: Buffer | undefined): Buffer {
  const r = Buffer.alloc(2 * SUPERBLOCK_SLOT_BYTES);
  a?.copy(r, 0);
  b?.copy(r, SUPERBLOCK_SLOT_BYTES);
  return r;
}

t.test('round trip and layout', async t => {
  const bytes = encodeSuperblock(base);
  t.equal(bytes.length, 4096);
  t.equal(bytes.toString('ascii', 0, 8), 'CSTSRPL1');
  t.equal(bytes.readUInt32LE(4092), crc32c(bytes.subarray(0, 4092)), 'CRC32C over the first 4092 bytes');
  t.equal(bytes.readBigUInt64LE(64), 123456789n, 'checkpointed io_seq at 64');
  t.equal(bytes.readBigUInt64LE(116), 99n, 'journal checkpoint seq at 116');
  t.equal(bytes.readUInt32LE(124), 0xc0ffee11, 'journal nonce at 124');
  t.equal(bytes.readBigUInt64LE(456), 77n, 'rebuild since at 456');
  t.equal(bytes.toString('utf8', 130, 138), 'pvc-0c4f', 'volume name at 130');
  t.same(decodeSuperblock(bytes), base);
});

t.test('every single-byte corruption is detected', async t => {
  const bytes = encodeSuperblock(base);
  let detected = 0;
  for (let i = 0; i < bytes.length; i++) {
    const copy = Buffer.from(bytes);
    copy[i] = copy[i]! ^ 0x01;
    try {
      decodeSuperblock(copy);
    } catch {
      detected++;
    }
  }
  t.equal(detected, bytes.length);
});

t.test('slot selection', async t => {
  const g1 = encodeSuperblock(base);
  const { superblock: next, offset } = nextSuperblock(base, { epoch: 8n });
  t.equal(next.generation, 2n);
  t.equal(offset, 0, 'generation 2 goes to slot 0');
  const g2 = encodeSuperblock(next);

  const both = selectSuperblock(region(g2, g1));
  t.equal(both.state, 'valid');
  if (both.state === 'valid') { t.equal(both.superblock.epoch, 8n, 'newest generation wins'); t.equal(both.slot, 0); }

  const torn = Buffer.from(g2);
  torn.fill(0, 1000, 4096); // a write that stopped part-way
  const afterCrash = selectSuperblock(region(torn, g1));
  t.equal(afterCrash.state, 'valid');
  if (afterCrash.state === 'valid') {
    t.equal(afterCrash.superblock.generation, 1n, 'a torn update falls back to the previous generation');
    t.equal(afterCrash.otherSlotError, SuperblockErrorCode.BadChecksum);
  }

  t.same(selectSuperblock(region(undefined, undefined)), { state: 'unformatted' });
  const corrupt = selectSuperblock(region(torn, undefined));
  t.equal(corrupt.state, 'corrupt', 'magic without a valid copy is corrupt, never "unformatted"');
});

t.test('invalid fields are refused with a clear message', async t => {
  t.throws(() => encodeSuperblock({ ...base, blockSize: 1024 }), /block size 1024/);
  t.throws(() => encodeSuperblock({ ...base, volumeUuid: 'nope' }), /not a UUID/);
  t.throws(() => encodeSuperblock({ ...base, volumeName: '' }), /volume name/);
  t.throws(() => encodeSuperblock({ ...base, replicaId: 'x'.repeat(65) }), /replica id/);
  t.throws(() => encodeSuperblock({ ...base, capacityBytes: 1000n }), /capacity/);
  t.throws(() => encodeSuperblock({ ...base, dataOffset: 8192n }), /data overlaps/);
  t.throws(() => encodeSuperblock({ ...base, metadataChunkSize: 1000 }), /metadata chunk size/);
  t.throws(() => encodeSuperblock({ ...base, journalOffset: 2n << 20n }), /journal overlaps/);
  const future = encodeSuperblock(base);
  future.writeUInt32LE(2, 8);
  future.writeUInt32LE(crc32c(future.subarray(0, 4092)), 4092);
  t.throws(() => decodeSuperblock(future), { code: SuperblockErrorCode.UnsupportedVersion });
  t.throws(() => decodeSuperblock(Buffer.alloc(4096)), { code: SuperblockErrorCode.NoMagic });
});
