import t from 'tap';
import { Asc, ScsiStatus, SenseKey } from '../../src/protocol/scsi/constants.js';
import { ascOf, cdb16, fieldPointer, makeTarget, nexus, request, sense } from '../fixtures/scsi-harness.js';

const sanitize = (sa: number, len = 0, immed = false, ause = false): number[] =>
  [0x48, (immed ? 0x80 : 0) | (ause ? 0x20 : 0) | sa, 0, 0, 0, 0, 0, (len >> 8) & 0xff, len & 0xff, 0];
const TUR = [0x00, 0, 0, 0, 0, 0];
const read1 = (lba: number): number[] => [0x28, 0, 0, 0, (lba >> 8) & 0xff, lba & 0xff, 0, 0, 1, 0];

function overwriteParams(pattern: Buffer, count = 1, invert = false): Buffer {
  const p = Buffer.alloc(4 + pattern.length);
  p[0] = (invert ? 0x80 : 0) | count;
  p.writeUInt16BE(pattern.length, 2);
  pattern.copy(p, 4);
  return p;
}

t.test('OVERWRITE fills the whole LU with the repeated pattern', async (t) => {
  const { target, device } = await makeTarget({ blockCount: 64n, sanitizeBytesPerSecond: 0 });
  const p = overwriteParams(Buffer.from([1, 2, 3, 4]));
  const r = await target.execute(request(sanitize(1, p.length), { data: p }));
  t.equal(r.status, ScsiStatus.Good);
  const back = Buffer.alloc(64 * 512);
  await device.read(0n, 64, back);
  t.ok(back.every((b, i) => b === (i % 4) + 1), 'pattern everywhere');
});

t.test('OVERWRITE parameter validation', async (t) => {
  const { target } = await makeTarget({ sanitizeBytesPerSecond: 0 });
  for (const len of [0, 4, 512 + 5]) {
    const data = Buffer.alloc(Math.max(len, 1));
    const r = await target.execute(request(sanitize(1, len), { data }));
    t.same(fieldPointer(r), { cd: true, byte: 7, bit: 7 }, `parameter list length ${len}`);
  }
  const zeroCount = overwriteParams(Buffer.alloc(4), 0);
  t.equal(ascOf(await target.execute(request(sanitize(1, zeroCount.length), { data: zeroCount }))), Asc.InvalidFieldInParameterList);
  const zeroLen = overwriteParams(Buffer.alloc(4));
  zeroLen.writeUInt16BE(0, 2);
  t.equal(ascOf(await target.execute(request(sanitize(1, zeroLen.length), { data: zeroLen }))), Asc.InvalidFieldInParameterList);
  t.same(fieldPointer(await target.execute(request(sanitize(2, 8), { data: Buffer.alloc(8) }))), { cd: true, byte: 7, bit: 7 }, 'BLOCK ERASE takes no parameters');
  t.same(fieldPointer(await target.execute(request(sanitize(0x1f, 8), { data: Buffer.alloc(8) }))), { cd: true, byte: 7, bit: 7 }, 'EXIT FAILURE MODE takes no parameters');
  t.equal(ascOf(await target.execute(request(sanitize(3)))), Asc.InvalidFieldInCdb, 'CRYPTOGRAPHIC ERASE not supported');
  t.equal(ascOf(await target.execute(request([0x48, 0x42, 0, 0, 0, 0, 0, 0, 0, 0]))), Asc.InvalidFieldInCdb, 'ZNR not supported');
  t.equal((await target.execute(request(sanitize(0x1f)))).status, ScsiStatus.Good, 'EXIT FAILURE MODE outside failure mode');
});

t.test('BLOCK ERASE deallocates everything; the operation outlives its command', async (t) => {
  const { target, device } = await makeTarget({ blockCount: 4096n, sanitizeBytesPerSecond: 1 << 20 });
  await device.write(0n, Buffer.alloc(512, 0xaa));
  const running = target.execute(request(sanitize(2)));
  await new Promise((r) => setImmediate(r));
  const tur = await target.execute(request(TUR));
  t.equal(sense(tur).key, SenseKey.NotReady);
  t.equal(ascOf(tur), Asc.LogicalUnitNotReadySanitizeInProgress, 'TEST UNIT READY: sanitize in progress');
  t.equal(ascOf(await target.execute(request(read1(0)))), Asc.LogicalUnitNotReadySanitizeInProgress, 'READ refused');
  t.equal((await target.execute(request([0x12, 0, 0, 0, 96, 0]))).status, ScsiStatus.Good, 'INQUIRY allowed');
  const rs = (await target.execute(request([0x03, 0, 0, 0, 18, 0]))).data!;
  t.same([rs[2], rs[12], rs[13]], [SenseKey.NotReady, 0x04, 0x1b], 'REQUEST SENSE reports it');
  // Abort the SANITIZE command itself: the operation keeps going.
  await target.abortTaskSet(nexus(1), 0n);
  t.ok((await running).aborted, 'command aborted');
  t.equal(ascOf(await target.execute(request(TUR))), Asc.LogicalUnitNotReadySanitizeInProgress, 'still sanitizing');
  await target.logicalUnit.sanitize.settled();
  t.equal((await target.execute(request(TUR))).status, ScsiStatus.Good);
  t.equal(device.mappedBlocks, 0, 'all deallocated');
  const back = (await target.execute(request(read1(0)))).data!;
  t.ok(back.every((b) => b === 0), 'reads zeroes (WABEREQ=01b)');
});

t.test('a failed sanitize enters failure mode; AUSE=1 lets EXIT FAILURE MODE leave it', async (t) => {
  const { target, device } = await makeTarget({ blockCount: 64n, sanitizeBytesPerSecond: 0 });
  device.beforeIo = (op) => { if (op === 'unmap') throw new Error('boom'); };
  t.equal((await target.execute(request(sanitize(2)))).status, ScsiStatus.CheckCondition);
  device.beforeIo = undefined;
  const r = await target.execute(request(read1(0)));
  t.equal(sense(r).key, SenseKey.MediumError);
  t.equal(ascOf(r), Asc.SanitizeCommandFailed);
  t.equal(ascOf(await target.execute(request(sanitize(0x1f)))), Asc.InvalidFieldInCdb, 'AUSE was 0: no exit');
  device.beforeIo = (op) => { if (op === 'unmap') throw new Error('boom'); };
  await target.execute(request(sanitize(2, 0, false, true)));
  device.beforeIo = undefined;
  t.equal((await target.execute(request(sanitize(0x1f)))).status, ScsiStatus.Good, 'AUSE=1: exit allowed');
  t.equal((await target.execute(request(read1(0)))).status, ScsiStatus.Good);
});

t.test('WRITE ATOMIC(16)', async (t) => {
  const { target, device } = await makeTarget({ blockCount: 64n });
  const wa = (lba: bigint, blocks: number, flags = 0, boundary = 0): Buffer => {
    const c = cdb16(0x9c, lba, 0, flags);
    c.writeUInt16BE(boundary, 10);
    c.writeUInt16BE(blocks, 12);
    return c;
  };
  const data = Buffer.alloc(2 * 512, 0x5a);
  t.equal((await target.execute(request(wa(62n, 2), { data }))).status, ScsiStatus.Good);
  const back = Buffer.alloc(1024);
  await device.read(62n, 2, back);
  t.ok(back.equals(data));
  t.equal(ascOf(await target.execute(request(wa(63n, 2), { data }))), Asc.LbaOutOfRange);
  t.same(fieldPointer(await target.execute(request(wa(0n, 2, 0x20), { data }))), { cd: true, byte: 1, bit: 7 }, 'WRPROTECT');
  t.same(fieldPointer(await target.execute(request(wa(0n, 2, 0, 1), { data }))), { cd: true, byte: 10, bit: 7 }, 'ATOMIC BOUNDARY');
  t.equal((await target.execute(request(wa(0n, 0)))).status, ScsiStatus.Good, 'zero blocks');
  t.equal((await target.execute(request(wa(0n, 2), { data: data.subarray(0, 512) }))).status, ScsiStatus.CheckCondition, 'partial data-out refused');
});

t.test('READ DEFECT DATA(10)/(12): empty lists', async (t) => {
  const { target } = await makeTarget();
  const d10 = (await target.execute(request([0x37, 0, 0x18 | 5, 0, 0, 0, 0, 0, 255, 0]))).data!;
  t.same([...d10], [0, 0x18 | 5, 0, 0]);
  const d12 = (await target.execute(request([0xb7, 0x10 | 3, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0]))).data!;
  t.same([...d12], [0, 0x10 | 3, 0, 0, 0, 0, 0, 0]);
  t.equal(ascOf(await target.execute(request([0x37, 0, 7, 0, 0, 0, 0, 0, 255, 0]))), Asc.InvalidFieldInCdb, 'reserved format');
});

t.test('COMPARE AND WRITE of zero blocks with data-out on offer is refused', async (t) => {
  const { target } = await makeTarget();
  const c = cdb16(0x89, 0n, 0);
  const r = await target.execute(request(c, { data: Buffer.alloc(1024) }));
  t.same(fieldPointer(r), { cd: true, byte: 13, bit: 7 });
  t.equal((await target.execute(request(c))).status, ScsiStatus.Good, 'no data: nothing to do');
});
