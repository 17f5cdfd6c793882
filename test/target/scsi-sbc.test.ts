import t from 'tap';
import { Asc, ScsiStatus, SenseKey } from '../../src/protocol/scsi/constants.js';
import { BlockDeviceError } from '../../src/target/volume/block-device.js';
import { ascOf, cdb10, cdb16, fieldPointer, makeTarget, nexus, pattern, request, sense } from '../fixtures/scsi-harness.js';

const BS = 512;

t.test('READ CAPACITY(10) and (16)', async (t) => {
  const { target } = await makeTarget({ blockCount: 2048n });
  const r10 = await target.execute(request([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { expectedLength: 8 }));
  t.equal(r10.status, ScsiStatus.Good);
  t.same([...r10.data!], [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);

  const c16 = Buffer.alloc(16);
  c16[0] = 0x9e; c16[1] = 0x10; c16.writeUInt32BE(32, 10);
  const r16 = await target.execute(request(c16, { expectedLength: 32 }));
  t.equal(r16.data!.length, 32);
  t.equal(r16.data!.readBigUInt64BE(0), 2047n);
  t.equal(r16.data!.readUInt32BE(8), 512);
  t.equal(r16.data![13], 0, 'LBPPBE 0');
  t.equal(r16.data![14], 0xc0, 'LBPME + LBPRZ');
  c16.writeUInt32BE(12, 10);
  const short = await target.execute(request(c16, { expectedLength: 12 }));
  t.equal(short.data!.length, 12, 'allocation length truncates');

  // PMI=0 with a non-zero LBA is an invalid field.
  const bad = await target.execute(request([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]));
  t.equal(ascOf(bad), Asc.InvalidFieldInCdb);
  t.same(fieldPointer(bad), { cd: true, byte: 2, bit: 7 });
});

t.test('READ CAPACITY(10) reports 0xFFFFFFFF for huge volumes', async (t) => {
  const { target } = await makeTarget({ blockCount: 0x1_0000_0001n });
  const r10 = await target.execute(request([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  t.equal(r10.data!.readUInt32BE(0), 0xffffffff);
});

t.test('WRITE/READ round trip for 6/10/12/16', async (t) => {
  const { target, device } = await makeTarget();
  const data = pattern(4 * BS, 3);
  const w10 = await target.execute(request(cdb10(0x2a, 10, 4, 0x08), { data }));
  t.equal(w10.status, ScsiStatus.Good);
  t.equal(w10.dataOutLength, 4 * BS);
  t.equal(device.stats.fuaWrites, 1, 'FUA passed to the device');
  const r10 = await target.execute(request(cdb10(0x28, 10, 4), { expectedLength: 4 * BS }));
  t.ok(r10.data!.equals(data));
  const r16 = await target.execute(request(cdb16(0x88, 10n, 4), { expectedLength: 4 * BS }));
  t.ok(r16.data!.equals(data));
  const r12 = await target.execute(request([0xa8, 0, 0, 0, 0, 10, 0, 0, 0, 4, 0, 0], { expectedLength: 4 * BS }));
  t.ok(r12.data!.equals(data));
  const r6 = await target.execute(request([0x08, 0, 0, 10, 4, 0], { expectedLength: 4 * BS }));
  t.ok(r6.data!.equals(data));
  const w16 = await target.execute(request(cdb16(0x8a, 100n, 1), { data: pattern(BS, 9) }));
  t.equal(w16.status, ScsiStatus.Good);
  const w6 = await target.execute(request([0x0a, 0, 0, 101, 1, 0], { data: pattern(BS, 10) }));
  t.equal(w6.status, ScsiStatus.Good);
  const back = await target.execute(request(cdb10(0x28, 100, 2)));
  t.ok(back.data!.equals(Buffer.concat([pattern(BS, 9), pattern(BS, 10)])));
});

t.test('READ(6) transfer length 0 means 256 blocks; READ(10) 0 blocks is GOOD without data', async (t) => {
  const { target } = await makeTarget();
  const r6 = await target.execute(request([0x08, 0, 0, 0, 0, 0]));
  t.equal(r6.data!.length, 256 * BS);
  const r10 = await target.execute(request(cdb10(0x28, 0, 0)));
  t.equal(r10.status, ScsiStatus.Good);
  t.equal(r10.data, undefined);
});

t.test('beyond end of medium → LBA OUT OF RANGE', async (t) => {
  const { target } = await makeTarget({ blockCount: 2048n });
  for (const cdb of [cdb10(0x28, 2047, 2), cdb10(0x28, 2049, 0), cdb16(0x88, -1n, 1), cdb10(0x2a, 2048, 1)]) {
    const r = await target.execute(request(cdb, { data: pattern(BS, 1) }));
    t.equal(r.status, ScsiStatus.CheckCondition);
    t.equal(sense(r).key, SenseKey.IllegalRequest);
    t.equal(ascOf(r), Asc.LbaOutOfRange);
  }
  const last = await target.execute(request(cdb10(0x28, 2047, 1)));
  t.equal(last.status, ScsiStatus.Good);
});

t.test('RDPROTECT/WRPROTECT, reserved bits, transfer length limit', async (t) => {
  const { target } = await makeTarget({ limits: { maxTransferLength: 64 } });
  const rp = await target.execute(request(cdb10(0x28, 0, 1, 0x20)));
  t.equal(ascOf(rp), Asc.InvalidFieldInCdb);
  t.same(fieldPointer(rp), { cd: true, byte: 1, bit: 7 });
  const reserved = await target.execute(request(cdb10(0x28, 0, 1, 0x01)));
  t.same(fieldPointer(reserved), { cd: true, byte: 1, bit: 0 });
  const group = cdb10(0x28, 0, 1);
  group[6] = 0x80;
  t.same(fieldPointer(await target.execute(request(group))), { cd: true, byte: 6, bit: 7 });
  const big = await target.execute(request(cdb10(0x28, 0, 65)));
  t.same(fieldPointer(big), { cd: true, byte: 7, bit: 7 });
  const naca = cdb10(0x28, 0, 1);
  naca[9] = 0x04;
  t.same(fieldPointer(await target.execute(request(naca))), { cd: true, byte: 9, bit: 2 }, 'NACA rejected');
  const link = cdb10(0x28, 0, 1);
  link[9] = 0x01;
  t.same(fieldPointer(await target.execute(request(link))), { cd: true, byte: 9, bit: 0 }, 'LINK rejected');
  const vendor = cdb10(0x28, 0, 1);
  vendor[9] = 0xc0;
  t.equal((await target.execute(request(vendor))).status, ScsiStatus.Good, 'vendor-specific control bits ignored');
});

t.test('write residuals follow libiscsi iSCSIResiduals expectations', async (t) => {
  const { target } = await makeTarget();
  const a = Buffer.alloc(2 * BS, 'a');
  await target.execute(request(cdb10(0x2a, 0, 2), { data: a }));

  // EDTL 0: GOOD, nothing written, overflow (dataOutLength > expected).
  const none = await target.execute(request(cdb10(0x2a, 0, 1), { expectedLength: 0, direction: 'write' }));
  t.equal(none.status, ScsiStatus.Good);
  t.equal(none.dataOutLength, BS);

  // EDTL < TL: only EDTL written.
  const b = Buffer.alloc(2 * BS, 'b');
  const req = request(cdb10(0x2a, 0, 2), { data: b, expectedLength: BS });
  const short = await target.execute(req);
  t.equal(short.status, ScsiStatus.Good);
  t.equal(short.dataOutLength, 2 * BS);
  t.same(req.fetched, [BS]);
  const back = await target.execute(request(cdb10(0x28, 0, 2)));
  t.ok(back.data!.subarray(0, BS).equals(Buffer.alloc(BS, 'b')));
  t.ok(back.data!.subarray(BS).equals(Buffer.alloc(BS, 'a')));

  // EDTL > TL: only TL fetched and written; underflow.
  const long = request(cdb10(0x2a, 1, 1), { data: Buffer.alloc(2 * BS, 'c') });
  const lr = await target.execute(long);
  t.equal(lr.dataOutLength, BS);
  t.same(long.fetched, [BS]);

  // EDTL not a whole block: INVALID FIELD IN COMMAND INFORMATION UNIT.
  const partial = await target.execute(request(cdb10(0x2a, 0, 1), { data: Buffer.alloc(200) }));
  t.equal(ascOf(partial), Asc.InvalidFieldInCommandInformationUnit);
  t.equal(partial.dataOutLength, BS);
});

t.test('VERIFY: BYTCHK 0/1/3, miscompare information', async (t) => {
  const { target } = await makeTarget();
  const data = pattern(4 * BS, 5);
  await target.execute(request(cdb10(0x2a, 20, 4), { data }));
  t.equal((await target.execute(request(cdb10(0x2f, 20, 4)))).status, ScsiStatus.Good, 'BYTCHK 0');
  t.equal((await target.execute(request(cdb10(0x2f, 20, 4, 0x02), { data }))).status, ScsiStatus.Good, 'BYTCHK 1 match');
  const wrong = Buffer.from(data);
  wrong[BS + 17] = wrong[BS + 17]! ^ 0xff;
  const mis = await target.execute(request(cdb10(0x2f, 20, 4, 0x02), { data: wrong }));
  t.equal(mis.status, ScsiStatus.CheckCondition);
  t.equal(sense(mis).key, SenseKey.Miscompare);
  t.equal(ascOf(mis), Asc.MiscompareDuringVerify);
  t.equal(sense(mis).information, BigInt(BS + 17));
  t.equal(ascOf(await target.execute(request(cdb10(0x2f, 20, 4, 0x04)))), Asc.InvalidFieldInCdb, 'BYTCHK 2 reserved');
  // BYTCHK 3: one block compared against each block.
  const same = Buffer.alloc(BS, 0x5a);
  await target.execute(request(cdb10(0x2a, 40, 3), { data: Buffer.concat([same, same, same]) }));
  t.equal((await target.execute(request(cdb10(0x2f, 40, 3, 0x06), { data: same }))).status, ScsiStatus.Good);
  await target.execute(request(cdb10(0x2a, 42, 1), { data: Buffer.alloc(BS, 0x11) }));
  const m3 = await target.execute(request(cdb10(0x2f, 40, 3, 0x06), { data: same }));
  t.equal(sense(m3).information, BigInt(2 * BS));
  t.equal(ascOf(await target.execute(request(cdb10(0x2f, 2047, 2)))), Asc.LbaOutOfRange);
  t.equal((await target.execute(request(cdb10(0x2f, 0, 0)))).status, ScsiStatus.Good, '0 blocks');
});

t.test('WRITE AND VERIFY writes through', async (t) => {
  const { target, device } = await makeTarget();
  const data = pattern(2 * BS, 8);
  const r = await target.execute(request(cdb10(0x2e, 7, 2, 0x02), { data }));
  t.equal(r.status, ScsiStatus.Good);
  t.equal(device.stats.fuaWrites, 1);
  t.ok((await target.execute(request(cdb10(0x28, 7, 2)))).data!.equals(data));
  t.equal(ascOf(await target.execute(request(cdb10(0x2e, 7, 2, 0x20), { data }))), Asc.InvalidFieldInCdb);
});

function caw(lba: bigint, blocks: number, flags = 0): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0x89;
  b[1] = flags;
  b.writeBigUInt64BE(lba, 2);
  b[13] = blocks;
  return b;
}

t.test('COMPARE AND WRITE', async (t) => {
  const { target } = await makeTarget();
  const old = pattern(2 * BS, 1);
  const neu = pattern(2 * BS, 2);
  await target.execute(request(cdb10(0x2a, 50, 2), { data: old }));
  const ok = await target.execute(request(caw(50n, 2, 0x08), { data: Buffer.concat([old, neu]) }));
  t.equal(ok.status, ScsiStatus.Good);
  t.ok((await target.execute(request(cdb10(0x28, 50, 2)))).data!.equals(neu));

  const mis = await target.execute(request(caw(50n, 2), { data: Buffer.concat([old, pattern(2 * BS, 3)]) }));
  t.equal(sense(mis).key, SenseKey.Miscompare);
  const firstDiff = [...old].findIndex((v, i) => v !== neu[i]);
  t.equal(sense(mis).information, BigInt(firstDiff));
  t.ok((await target.execute(request(cdb10(0x28, 50, 2)))).data!.equals(neu), 'not written on miscompare');

  // Data-out must be exactly 2 × NUMBER OF LOGICAL BLOCKS.
  const small = await target.execute(request(caw(50n, 1), { data: Buffer.alloc(4 * BS) }));
  t.equal(small.status, ScsiStatus.CheckCondition);
  const large = await target.execute(request(caw(50n, 3), { data: Buffer.alloc(4 * BS) }));
  t.equal(large.status, ScsiStatus.CheckCondition);
  t.equal(ascOf(await target.execute(request(caw(2047n, 2), { data: Buffer.alloc(4 * BS) }))), Asc.LbaOutOfRange);
  t.equal((await target.execute(request(caw(0n, 0)))).status, ScsiStatus.Good, '0 blocks');
});

t.test('COMPARE AND WRITE is atomic against concurrent writes', async (t) => {
  const { target, device } = await makeTarget();
  const zero = Buffer.alloc(BS);
  // Slow every read so a WRITE issued during the CAW would land between its read and write.
  device.beforeIo = (op) => (op === 'read' ? new Promise((r) => setTimeout(r, 20)) : undefined);
  const one = Buffer.alloc(BS, 1);
  const two = Buffer.alloc(BS, 2);
  const cawP = target.execute(request(caw(5n, 1), { data: Buffer.concat([zero, one]) }));
  await new Promise((r) => setTimeout(r, 5));
  const wP = target.execute(request(cdb10(0x2a, 5, 1), { data: two }));
  const [c, w] = await Promise.all([cawP, wP]);
  t.equal(c.status, ScsiStatus.Good);
  t.equal(w.status, ScsiStatus.Good);
  device.beforeIo = undefined;
  const back = await target.execute(request(cdb10(0x28, 5, 1)));
  t.ok(back.data!.equals(two), 'the write ordered after the CAW, not lost inside it');

  // Two CAWs racing on the same expected value: exactly one wins.
  device.beforeIo = (op) => (op === 'read' ? new Promise((r) => setTimeout(r, 5)) : undefined);
  const results = await Promise.all([3, 4].map((v) =>
    target.execute(request(caw(5n, 1), { data: Buffer.concat([two, Buffer.alloc(BS, v)]) }))));
  t.same(results.map((r) => r.status).sort(), [ScsiStatus.Good, ScsiStatus.CheckCondition]);
});

t.test('ORWRITE(16)', async (t) => {
  const { target } = await makeTarget();
  await target.execute(request(cdb10(0x2a, 9, 1), { data: Buffer.alloc(BS, 0x0f) }));
  t.equal((await target.execute(request(cdb16(0x8b, 9n, 1), { data: Buffer.alloc(BS, 0xf0) }))).status, ScsiStatus.Good);
  t.ok((await target.execute(request(cdb10(0x28, 9, 1)))).data!.equals(Buffer.alloc(BS, 0xff)));
});

t.test('WRITE SAME', async (t) => {
  const { target, device } = await makeTarget({ blockCount: 4096n });
  const blk = pattern(BS, 4);
  const r = await target.execute(request(cdb10(0x41, 100, 300), { data: blk }));
  t.equal(r.status, ScsiStatus.Good);
  const back = await target.execute(request(cdb10(0x28, 100, 300)));
  for (let i = 0; i < 300; i++) t.ok(back.data!.subarray(i * BS, (i + 1) * BS).equals(blk), `block ${i}`, { diagnostic: false });

  // UNMAP bit: deallocates, reads back zero (LBPRZ), whatever the data.
  const u = await target.execute(request(cdb10(0x41, 100, 10, 0x08), { data: Buffer.alloc(BS, 0xff) }));
  t.equal(u.status, ScsiStatus.Good);
  t.ok((await target.execute(request(cdb10(0x28, 100, 10)))).data!.equals(Buffer.alloc(10 * BS)));
  t.ok(device.stats.unmaps > 0);

  // 0 blocks: through the last LBA (WSNZ=0).
  const toEnd = await target.execute(request(cdb16(0x93, 4000n, 0), { data: blk }));
  t.equal(toEnd.status, ScsiStatus.Good);
  t.ok((await target.execute(request(cdb10(0x28, 4095, 1)))).data!.equals(blk));
  t.equal(ascOf(await target.execute(request(cdb10(0x41, 4097, 0), { data: blk }))), Asc.LbaOutOfRange);
  t.equal(ascOf(await target.execute(request(cdb16(0x93, 1n << 63n, 0), { data: blk }))), Asc.LbaOutOfRange);

  // Data-out must be one block.
  t.equal((await target.execute(request(cdb10(0x41, 0, 1, 0x08), { data: Buffer.alloc(BS / 2) }))).status, ScsiStatus.CheckCondition);
  t.equal((await target.execute(request(cdb10(0x41, 0, 1, 0x08), { data: Buffer.alloc(2 * BS) }))).status, ScsiStatus.CheckCondition);
  // ANCHOR unsupported; NDOB writes zeroes without data-out.
  t.same(fieldPointer(await target.execute(request(cdb10(0x41, 0, 1, 0x10), { data: blk }))), { cd: true, byte: 1, bit: 4 });
  const ndob = await target.execute(request(cdb16(0x93, 4000n, 2, 0x01)));
  t.equal(ndob.status, ScsiStatus.Good);
  t.ok((await target.execute(request(cdb10(0x28, 4000, 2)))).data!.equals(Buffer.alloc(2 * BS)));
});

function unmapList(descriptors: [bigint, number][], opts: { dataLength?: number; bdLength?: number } = {}): Buffer {
  const b = Buffer.alloc(8 + 16 * descriptors.length);
  b.writeUInt16BE(opts.dataLength ?? b.length - 2, 0);
  b.writeUInt16BE(opts.bdLength ?? 16 * descriptors.length, 2);
  descriptors.forEach(([lba, n], i) => {
    b.writeBigUInt64BE(lba, 8 + 16 * i);
    b.writeUInt32BE(n, 16 + 16 * i);
  });
  return b;
}

function unmapCdb(length: number, anchor = false): number[] {
  return [0x42, anchor ? 1 : 0, 0, 0, 0, 0, 0, (length >> 8) & 0xff, length & 0xff, 0];
}

t.test('UNMAP', async (t) => {
  const { target, device } = await makeTarget();
  await target.execute(request(cdb10(0x2a, 0, 8), { data: pattern(8 * BS, 1) }));
  const list = unmapList([[0n, 2], [4n, 2], [6n, 0]]);
  const r = await target.execute(request(unmapCdb(list.length), { data: list }));
  t.equal(r.status, ScsiStatus.Good);
  t.equal(device.mappedBlocks, 4);
  t.equal((await target.execute(request(unmapCdb(0)))).status, ScsiStatus.Good, 'empty parameter list');
  t.equal(ascOf(await target.execute(request(unmapCdb(6), { data: Buffer.alloc(6) }))), Asc.ParameterListLengthError);
  const oob = unmapList([[2040n, 9]]);
  t.equal(ascOf(await target.execute(request(unmapCdb(oob.length), { data: oob }))), Asc.LbaOutOfRange);
  t.same(fieldPointer(await target.execute(request(unmapCdb(list.length, true), { data: list }))), { cd: true, byte: 1, bit: 0 });
  const many = unmapList(Array.from({ length: 257 }, (_, i): [bigint, number] => [BigInt(i), 1]));
  const tooMany = await target.execute(request(unmapCdb(many.length), { data: many }));
  t.equal(ascOf(tooMany), Asc.InvalidFieldInParameterList);
  t.same(fieldPointer(tooMany), { cd: false, byte: 2, bit: 7 });
});

t.test('SYNCHRONIZE CACHE and PRE-FETCH', async (t) => {
  const { target, device } = await makeTarget();
  t.equal((await target.execute(request(cdb10(0x35, 0, 0)))).status, ScsiStatus.Good);
  t.equal(device.stats.flushes, 1);
  t.equal((await target.execute(request(cdb10(0x35, 0, 0, 0x02)))).status, ScsiStatus.Good, 'IMMED');
  t.equal(ascOf(await target.execute(request(cdb16(0x91, 2048n, 1)))), Asc.LbaOutOfRange);
  t.equal((await target.execute(request(cdb10(0x34, 2000, 48)))).status, ScsiStatus.Good);
  t.equal(ascOf(await target.execute(request(cdb16(0x90, 2047n, 2)))), Asc.LbaOutOfRange);
});

t.test('GET LBA STATUS', async (t) => {
  const { target } = await makeTarget();
  await target.execute(request(cdb10(0x2a, 10, 5), { data: pattern(5 * BS, 1) }));
  const c = Buffer.alloc(16);
  c[0] = 0x9e; c[1] = 0x12;
  c.writeBigUInt64BE(10n, 2);
  c.writeUInt32BE(24, 10);
  const r = await target.execute(request(c));
  t.equal(r.data!.length, 24);
  t.equal(r.data!.readUInt32BE(0), 20);
  t.equal(r.data!.readBigUInt64BE(8), 10n);
  t.equal(r.data!.readUInt32BE(16), 5);
  t.equal(r.data![20], 0, 'mapped');
  c.writeBigUInt64BE(15n, 2);
  const u = await target.execute(request(c));
  t.equal(u.data![20], 1, 'deallocated');
  t.equal(u.data!.readUInt32BE(16), 2048 - 15);
  c.writeBigUInt64BE(2048n, 2);
  t.equal(ascOf(await target.execute(request(c))), Asc.LbaOutOfRange);
});

t.test('block device errors map to sense', async (t) => {
  const { target, device } = await makeTarget();
  device.beforeIo = (_op, lba) => { throw new BlockDeviceError('EMEDIUM', 'bad', lba + 1n); };
  const r = await target.execute(request(cdb10(0x28, 30, 2)));
  t.equal(sense(r).key, SenseKey.MediumError);
  t.equal(ascOf(r), Asc.UnrecoveredReadError);
  t.equal(sense(r).information, 31n);
  const w = await target.execute(request(cdb10(0x2a, 30, 1), { data: Buffer.alloc(BS) }));
  t.equal(ascOf(w), Asc.WriteError);
  device.beforeIo = () => { throw new BlockDeviceError('ENOSPC', 'full'); };
  const f = await target.execute(request(cdb10(0x2a, 30, 1), { data: Buffer.alloc(BS) }));
  t.equal(sense(f).key, SenseKey.DataProtect);
  t.equal(ascOf(f), Asc.NoSpaceLeft);
  device.beforeIo = () => { throw new BlockDeviceError('EOFFLINE', 'gone'); };
  t.equal(sense(await target.execute(request(cdb10(0x28, 0, 1)))).key, SenseKey.NotReady);
  device.beforeIo = () => { throw new Error('boom'); };
  const h = await target.execute(request(cdb10(0x28, 0, 1)));
  t.equal(sense(h).key, SenseKey.HardwareError);
  t.equal(ascOf(h), Asc.InternalTargetFailure);
  void nexus;
});
