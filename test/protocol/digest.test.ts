import t from 'tap';
import { createRequire } from 'node:module';
import { crc32c, crc32cCombine, hardwareCrc32c } from '../../src/protocol/iscsi/digest.js';
import { hex, rng } from '../fixtures/pdu-builder.js';

// RFC 3720 Appendix B.4: inputs and the digest bytes as sent on the wire.
const incrementing = Buffer.alloc(32);
const decrementing = Buffer.alloc(32);
for (let i = 0; i < 32; i++) {
  incrementing[i] = i;
  decrementing[i] = 31 - i;
}
const readCommandPdu = hex(
  '01 c0 00 00  00 00 00 00  00 00 00 00  00 00 00 00',
  '14 00 00 00  00 00 04 00  00 00 00 14  00 00 00 18',
  '28 00 00 00  00 00 00 00  02 00 00 00  00 00 00 00',
);
const vectors: [string, Buffer, number, string][] = [
  ['32 bytes of zeros', Buffer.alloc(32), 0x8a9136aa, 'aa 36 91 8a'],
  ['32 bytes of 0xff', Buffer.alloc(32, 0xff), 0x62a8ab43, '43 ab a8 62'],
  ['32 incrementing bytes', incrementing, 0x46dd794e, '4e 79 dd 46'],
  ['32 decrementing bytes', decrementing, 0x113fdb5c, '5c db 3f 11'],
  ['SCSI Read(10) command PDU', readCommandPdu, 0xd9963a56, '56 3a 96 d9'],
];

t.test('RFC 3720 B.4 vectors', async t => {
  for (const [name, input, value, wire] of vectors) {
    const crc = crc32c(input);
    t.equal(crc, value, `${name}: value 0x${value.toString(16)}`);
    const onWire = Buffer.alloc(4);
    onWire.writeUInt32LE(crc);
    t.same(onWire, hex(wire), `${name}: little-endian on the wire`);
  }
});

t.test('incremental computation equals one pass', async t => {
  const next = rng(7);
  const buf = Buffer.alloc(10_000);
  for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(next() * 256);
  const whole = crc32c(buf);
  for (const cut of [0, 1, 3, 48, 4096, 9999, 10_000]) {
    t.equal(crc32c(buf.subarray(cut), crc32c(buf.subarray(0, cut))), whole, `cut at ${cut}`);
  }
  t.equal(crc32c(Buffer.alloc(0)), 0);
});

t.test('hardware CRC32C is in use and agrees with the table implementation', async t => {
  t.equal(hardwareCrc32c(), true, 'SSE4.2 path active');
  const sse = createRequire(import.meta.url)('sse4_crc32') as { table_crc: (b: Buffer, c?: number) => number };
  const next = rng(42);
  for (const n of [1, 7, 48, 52, 8192, 65_537]) {
    const buf = Buffer.alloc(n);
    for (let i = 0; i < n; i++) buf[i] = Math.floor(next() * 256);
    t.equal(crc32c(buf), sse.table_crc(buf), `${n} bytes`);
  }
});

t.test('crc32cCombine equals the checksum of the concatenation', async t => {
  const next = rng(7);
  const bytes = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
    return b;
  };
  for (const [la, lb] of [[1, 1], [5, 4096], [4096, 4096], [100, 3], [0, 7], [7, 0], [65536, 4096], [3, 100_001]] as const) {
    const a = bytes(la);
    const b = bytes(lb);
    t.equal(crc32cCombine(crc32c(a), crc32c(b), lb), crc32c(Buffer.concat([a, b])), `${la} + ${lb} bytes`);
  }
  const chunks = Array.from({ length: 64 }, () => bytes(4096));
  let run = crc32c(chunks[0]!);
  for (let i = 1; i < chunks.length; i++) run = crc32cCombine(run, crc32c(chunks[i]!), 4096);
  t.equal(run, crc32c(Buffer.concat(chunks)), '64 chunks folded one by one');
});
