import t from 'tap';
import {
  CdbUsage, cdbLength, checkReservedBits, decodeCompareAndWrite, decodeInquiry, decodeLun, decodeModeSense,
  decodeReportLuns, decodeRw, decodeWriteSame, encodeLun, highestBit,
} from '../../src/protocol/scsi/cdb.js';
import { CheckCondition } from '../../src/protocol/scsi/sense.js';

function pointerOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    if (e instanceof CheckCondition) return { asc: e.asc, ...e.field };
    throw e;
  }
  return undefined;
}

t.test('CDB length by group code', async (t) => {
  t.same([0x00, 0x28, 0x5a, 0x88, 0xa8, 0x7f, 0xc0].map(cdbLength), [6, 10, 10, 16, 12, undefined, undefined]);
});

t.test('every usage mask matches its CDB length and opcode', async (t) => {
  for (const [name, usage] of Object.entries(CdbUsage)) {
    t.equal(usage.length, cdbLength(usage[0]), name);
  }
});

t.test('READ/WRITE decoding', async (t) => {
  const r6 = decodeRw(Buffer.from([0x08, 0x1f, 0xff, 0xfe, 0, 0]));
  t.same([r6.lba, r6.blocks], [0x1ffffen, 256]);
  const r10 = decodeRw(Buffer.from([0x28, 0x18, 0, 0, 1, 0, 0, 0x01, 0x02, 0]));
  t.same([r10.lba, r10.blocks, r10.dpo, r10.fua, r10.protect, r10.lengthByte], [256n, 258, true, true, 0, 7]);
  const r12 = decodeRw(Buffer.from([0xa8, 0xe0, 0, 0, 0, 9, 0, 1, 0, 0, 0, 0]));
  t.same([r12.lba, r12.blocks, r12.protect, r12.lengthByte], [9n, 65536, 7, 6]);
  const c16 = Buffer.alloc(16);
  c16[0] = 0x8f; c16[1] = 0x06; c16.writeBigUInt64BE(0xffff_ffff_ffff_fffen, 2); c16.writeUInt32BE(7, 10);
  const v16 = decodeRw(c16);
  t.same([v16.lba, v16.blocks, v16.bytchk, v16.lengthByte], [0xffff_ffff_ffff_fffen, 7, 3, 10]);
});

t.test('COMPARE AND WRITE and WRITE SAME decoding', async (t) => {
  const c = Buffer.alloc(16);
  c[0] = 0x89; c[1] = 0x08; c.writeBigUInt64BE(5n, 2); c[13] = 3;
  t.same(decodeCompareAndWrite(c), { lba: 5n, blocks: 3, dpo: false, fua: true, protect: 0 });
  const ws = Buffer.alloc(16);
  ws[0] = 0x93; ws[1] = 0x19; ws.writeBigUInt64BE(8n, 2); ws.writeUInt32BE(0, 10);
  t.same(decodeWriteSame(ws), { lba: 8n, blocks: 0, protect: 0, anchor: true, unmap: true, ndob: true, lengthByte: 10 });
  const ws10 = Buffer.from([0x41, 0x01, 0, 0, 0, 8, 0, 0, 4, 0]);
  t.equal(decodeWriteSame(ws10).ndob, false, 'no NDOB in WRITE SAME(10)');
});

t.test('reserved bits name byte and bit', async (t) => {
  t.same(pointerOf(() => checkReservedBits(Buffer.from([0x28, 0x01, 0, 0, 0, 0, 0, 0, 1, 0]), CdbUsage.read10)),
    { asc: 0x2400, inCdb: true, byte: 1, bit: 0 });
  t.same(pointerOf(() => checkReservedBits(Buffer.from([0x12, 0, 0, 0, 0xff, 0x04]), CdbUsage.inquiry)),
    { asc: 0x2400, inCdb: true, byte: 5, bit: 2 });
  t.equal(pointerOf(() => checkReservedBits(Buffer.from([0x12, 1, 0x83, 0, 0xff, 0xc0]), CdbUsage.inquiry)), undefined);
  t.equal(highestBit(0x30), 5);
});

t.test('field validation in decoders', async (t) => {
  t.same(pointerOf(() => decodeInquiry(Buffer.from([0x12, 0, 0x80, 0, 0xff, 0]))), { asc: 0x2400, inCdb: true, byte: 2, bit: 7 });
  t.same(decodeInquiry(Buffer.from([0x12, 1, 0xb0, 0x01, 0x00, 0])), { evpd: true, pageCode: 0xb0, allocationLength: 256 });
  t.same(pointerOf(() => decodeReportLuns(Buffer.from([0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0]))), { asc: 0x2400, inCdb: true, byte: 6, bit: 7 });
  const ms = decodeModeSense(Buffer.from([0x5a, 0x18, 0xbf, 0xff, 0, 0, 0, 0x10, 0x00, 0]));
  t.same(ms, { ten: true, dbd: true, llbaa: true, pageControl: 2, pageCode: 0x3f, subpageCode: 0xff, allocationLength: 4096 });
});

t.test('LUN field', async (t) => {
  t.equal(decodeLun(0n), 0);
  t.equal(decodeLun(0x0005_0000_0000_0000n), 5);
  t.equal(decodeLun(0x4123_0000_0000_0000n), 0x123, 'flat');
  t.equal(decodeLun(0x0100_0000_0000_0000n), undefined, 'bus identifier');
  t.equal(decodeLun(0x0000_0001_0000_0000n), undefined, 'second level');
  t.equal(decodeLun(0x8000_0000_0000_0000n), undefined, 'logical unit addressing');
  t.same([...encodeLun(3)], [0, 3, 0, 0, 0, 0, 0, 0]);
  t.same([...encodeLun(300)], [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
});
