import t from 'tap';
import { Asc, ScsiStatus, SenseKey } from '../../src/protocol/scsi/constants.js';
import { naaFromSerial } from '../../src/protocol/scsi/inquiry.js';
import { ascOf, cdb10, fieldPointer, makeTarget, nexus, request, sense } from '../fixtures/scsi-harness.js';

const inquiry = (evpd: number, page: number, alloc: number): number[] => [0x12, evpd, page, (alloc >> 8) & 0xff, alloc & 0xff, 0];
const LUN1 = 0x0001_0000_0000_0000n;

t.test('standard INQUIRY data byte by byte', async (t) => {
  const { target } = await makeTarget();
  const r = await target.execute(request(inquiry(0, 0, 260)));
  const d = r.data!;
  t.equal(d.length, 96);
  t.equal(d[0], 0x00, 'PQ 0, direct access');
  t.equal(d[1], 0x00, 'RMB 0');
  t.equal(d[2], 0x06, 'SPC-4');
  t.equal(d[3], 0x12, 'HiSup, RDF 2');
  t.equal(d[4], 91, 'additional length n-4');
  t.equal(d[5], 0x00, 'TPGS 0, no PROTECT');
  t.equal(d[7], 0x02, 'CmdQue');
  t.equal(d.subarray(8, 16).toString(), 'OPENEBS ');
  t.equal(d.subarray(16, 32).toString(), 'CSTOR-TS VOLUME ');
  t.equal(d.subarray(32, 36).toString(), '0001');
  t.same([58, 60, 62, 64].map((o) => d.readUInt16BE(o)), [0x00a0, 0x0960, 0x0460, 0x04c0]);
  const short = await target.execute(request(inquiry(0, 0, 36)));
  t.equal(short.data!.length, 36, 'allocation length truncation');
  t.equal(short.data![4], 91, 'length field keeps the full size');
  const bad = await target.execute(request(inquiry(0, 0x80, 255)));
  t.same(fieldPointer(bad), { cd: true, byte: 2, bit: 7 }, 'EVPD=0 with a page code');
  t.same(fieldPointer(await target.execute(request(inquiry(2, 0, 255)))), { cd: true, byte: 1, bit: 1 }, 'CmdDt');
});

t.test('VPD pages', async (t) => {
  const { target } = await makeTarget({ serial: 'abc123' });
  const supported = (await target.execute(request(inquiry(1, 0x00, 255)))).data!;
  t.same([...supported], [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
  const serial = (await target.execute(request(inquiry(1, 0x80, 255)))).data!;
  t.same([...serial.subarray(0, 4)], [0, 0x80, 0, 6]);
  t.equal(serial.subarray(4).toString(), 'abc123');

  const id = (await target.execute(request(inquiry(1, 0x83, 255)))).data!;
  t.equal(id[1], 0x83);
  t.equal(id.readUInt16BE(2), id.length - 4);
  let off = 4;
  const designators: { codeSet: number; assoc: number; type: number; piv: boolean; proto: number; data: Buffer }[] = [];
  while (off < id.length) {
    const len = id[off + 3]!;
    designators.push({
      codeSet: id[off]! & 0x0f, proto: id[off]! >> 4, piv: (id[off + 1]! & 0x80) !== 0,
      assoc: (id[off + 1]! >> 4) & 3, type: id[off + 1]! & 0x0f, data: id.subarray(off + 4, off + 4 + len),
    });
    off += 4 + len;
  }
  t.equal(off, id.length);
  const naa = designators.find((d) => d.type === 3)!;
  t.equal(naa.codeSet, 1);
  t.equal(naa.data.length, 16);
  t.equal(naa.data[0]! >> 4, 6, 'NAA 6');
  t.ok(naa.data.equals(naaFromSerial('abc123', 0x001405)), 'derived from the serial');
  t.notOk(naaFromSerial('abc124', 0x001405).equals(naa.data));
  const t10 = designators.find((d) => d.type === 1)!;
  t.equal(t10.codeSet, 2);
  t.equal(t10.data.toString(), 'OPENEBS abc123');
  const port = designators.find((d) => d.type === 4)!;
  t.same({ assoc: port.assoc, piv: port.piv, proto: port.proto, rtp: port.data.readUInt16BE(2) }, { assoc: 1, piv: true, proto: 5, rtp: 1 });
  const tpg = designators.find((d) => d.type === 5)!;
  t.equal(tpg.data.readUInt16BE(2), 1);

  const bl = (await target.execute(request(inquiry(1, 0xb0, 255)))).data!;
  t.equal(bl.length, 64);
  t.equal(bl[3], 0x3c);
  t.equal(bl[4]! & 1, 0, 'WSNZ 0');
  t.equal(bl[5], 255, 'MAXIMUM COMPARE AND WRITE LENGTH');
  t.equal(bl.readUInt32BE(8), (32 << 20) / 512, 'MAXIMUM TRANSFER LENGTH');
  t.equal(bl.readUInt32BE(44), (8 << 20) / 512, 'MAXIMUM ATOMIC TRANSFER LENGTH');
  t.same([bl.readUInt32BE(48), bl.readUInt32BE(52), bl.readUInt32BE(56), bl.readUInt32BE(60)], [0, 0, 0, 0], 'no atomic alignment, granularity or boundaries');
  t.ok(bl.readUInt32BE(20) > 0 && bl.readUInt32BE(20) <= 1024 * 1024, 'MAXIMUM UNMAP LBA COUNT');
  t.equal(bl.readUInt32BE(24), 256, 'MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT');
  t.equal(bl.readBigUInt64BE(36), 0xffffffffn, 'MAXIMUM WRITE SAME LENGTH');

  const bdc = (await target.execute(request(inquiry(1, 0xb1, 255)))).data!;
  t.same([bdc[1], bdc[3], bdc.readUInt16BE(4)], [0xb1, 0x3c, 1]);
  t.equal(bdc[7]! & 0xf0, 0x40, 'WABEREQ=01b (reads succeed after BLOCK ERASE), WACEREQ=00b');
  const lbp = (await target.execute(request(inquiry(1, 0xb2, 255)))).data!;
  t.same([...lbp], [0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]);
  t.same(fieldPointer(await target.execute(request(inquiry(1, 0x85, 255)))), { cd: true, byte: 2, bit: 7 });
  t.equal((await target.execute(request(inquiry(1, 0x83, 8)))).data!.length, 8);
});

t.test('LUN addressing: unsupported LUNs', async (t) => {
  const { target } = await makeTarget();
  const inq = await target.execute(request(inquiry(0, 0, 96), { lun: LUN1 }));
  t.equal(inq.status, ScsiStatus.Good);
  t.equal(inq.data![0], 0x7f, 'PQ 011b, type 1Fh');
  const flat0 = await target.execute(request(inquiry(0, 0, 96), { lun: 0x4000_0000_0000_0000n }));
  t.equal(flat0.data![0], 0x00, 'flat addressing of LUN 0');
  const rl = await target.execute(request([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], { lun: LUN1 }));
  t.same([...rl.data!], [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const rs = await target.execute(request([0x03, 0, 0, 0, 252, 0], { lun: LUN1 }));
  t.equal(rs.status, ScsiStatus.Good);
  t.equal(rs.data![12], 0x25);
  const tur = await target.execute(request([0, 0, 0, 0, 0, 0], { lun: LUN1 }));
  t.equal(sense(tur).key, SenseKey.IllegalRequest);
  t.equal(ascOf(tur), Asc.LogicalUnitNotSupported);
  t.equal(await target.abortTaskSet(nexus(1), LUN1), 'lun-does-not-exist');
});

t.test('REPORT LUNS', async (t) => {
  const { target } = await makeTarget();
  const rl = (sel: number, alloc: number): number[] => [0xa0, 0, sel, 0, 0, 0, (alloc >>> 24) & 0xff, (alloc >> 16) & 0xff, (alloc >> 8) & 0xff, alloc & 0xff, 0, 0];
  t.same([...(await target.execute(request(rl(0, 16)))).data!], [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  t.same([...(await target.execute(request(rl(2, 64)))).data!].slice(0, 4), [0, 0, 0, 8]);
  t.same([...(await target.execute(request(rl(1, 64)))).data!], [0, 0, 0, 0, 0, 0, 0, 0], 'no well-known LUNs');
  t.same(fieldPointer(await target.execute(request(rl(0, 15)))), { cd: true, byte: 6, bit: 7 });
  t.same(fieldPointer(await target.execute(request(rl(3, 16)))), { cd: true, byte: 2, bit: 7 });
});

t.test('unit attentions: power on, exempt commands, REQUEST SENSE', async (t) => {
  const { target } = await makeTarget();
  const n3 = nexus(3);
  target.addNexus(n3);
  // INQUIRY and REPORT LUNS neither blocked nor consume.
  t.equal((await target.execute(request(inquiry(0, 0, 96), { nexus: n3 }))).status, ScsiStatus.Good);
  t.equal((await target.execute(request([0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], { nexus: n3 }))).status, ScsiStatus.Good);
  // REQUEST SENSE reports (and clears) it, in the format DESC asks for.
  const rs = await target.execute(request([0x03, 1, 0, 0, 252, 0], { nexus: n3 }));
  t.equal(rs.status, ScsiStatus.Good);
  t.same([rs.data![0], rs.data![1], rs.data![2], rs.data![3]], [0x72, SenseKey.UnitAttention, 0x29, 0x00]);
  t.equal((await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: n3 }))).status, ScsiStatus.Good);
  const none = await target.execute(request([0x03, 0, 0, 0, 18, 0], { nexus: n3 }));
  t.same([none.data![0], none.data![2], none.data![12]], [0x70, 0, 0]);

  const n4 = nexus(4);
  target.addNexus(n4);
  const tur = await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: n4 }));
  t.equal(tur.status, ScsiStatus.CheckCondition);
  t.equal(sense(tur).key, SenseKey.UnitAttention);
  t.equal(ascOf(tur), Asc.PowerOnResetOrBusDeviceResetOccurred);
  t.equal((await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: n4 }))).status, ScsiStatus.Good);
});

t.test('capacity change raises CAPACITY DATA HAS CHANGED', async (t) => {
  const { target, device } = await makeTarget();
  device.resize(4096n);
  for (const n of [nexus(1), nexus(2)]) {
    const r = await target.execute(request(cdb10(0x28, 0, 1), { nexus: n }));
    t.equal(ascOf(r), Asc.CapacityDataHasChanged);
  }
});

t.test('unknown opcode, unsupported service action', async (t) => {
  const { target } = await makeTarget();
  const r = await target.execute(request([0xc0, 0, 0, 0, 0, 0]));
  t.equal(sense(r).key, SenseKey.IllegalRequest);
  t.equal(ascOf(r), Asc.InvalidCommandOperationCode);
  const sa = await target.execute(request([0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  t.same(fieldPointer(sa), { cd: true, byte: 1, bit: 4 });
  const prin = await target.execute(request([0x5e, 0x04, 0, 0, 0, 0, 0, 0, 8, 0]));
  t.equal(ascOf(prin), Asc.InvalidFieldInCdb, 'PR IN service action out of range');
});

t.test('START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL', async (t) => {
  const { target } = await makeTarget();
  t.equal((await target.execute(request([0x1b, 1, 0, 0, 1, 0]))).status, ScsiStatus.Good);
  t.equal((await target.execute(request([0x1b, 0, 0, 0, 0, 0]))).status, ScsiStatus.Good);
  t.same(fieldPointer(await target.execute(request([0x1b, 1, 0, 0, 2, 0]))), { cd: true, byte: 4, bit: 1 }, 'LOEJ on fixed medium');
  t.equal((await target.execute(request([0x1e, 0, 0, 0, 0, 0]))).status, ScsiStatus.Good);
  t.equal((await target.execute(request([0x1e, 0, 0, 0, 1, 0]))).status, ScsiStatus.Good);
  t.equal(ascOf(await target.execute(request([0x1e, 0, 0, 0, 2, 0]))), Asc.InvalidFieldInCdb);
});

function rsoc(options: number, opcode = 0, sa = 0, alloc = 65535, rctd = false): number[] {
  return [0xa3, 0x0c, (rctd ? 0x80 : 0) | options, opcode, (sa >> 8) & 0xff, sa & 0xff, 0, 0, (alloc >> 8) & 0xff, alloc & 0xff, 0, 0];
}

t.test('REPORT SUPPORTED OPERATION CODES', async (t) => {
  const { target } = await makeTarget();
  const all = (await target.execute(request(rsoc(0)))).data!;
  t.equal(all.readUInt32BE(0), all.length - 4);
  const descriptors: { op: number; sa: number; flags: number; len: number }[] = [];
  for (let off = 4; off < all.length; off += 8) {
    descriptors.push({ op: all[off]!, sa: all.readUInt16BE(off + 2), flags: all[off + 5]!, len: all.readUInt16BE(off + 6) });
  }
  t.ok(descriptors.some((d) => d.op === 0x28 && d.len === 10 && d.flags === 0));
  t.ok(descriptors.some((d) => d.op === 0x9e && d.sa === 0x10 && d.flags === 1 && d.len === 16));
  t.ok(descriptors.every((d) => (d.flags & 1) === 1 || d.sa === 0), 'SERVACTV clear → SA 0');

  const withTimeouts = (await target.execute(request(rsoc(0, 0, 0, 65535, true)))).data!;
  t.equal((withTimeouts.length - 4) % 20, 0);
  t.equal(withTimeouts[4 + 5]! & 0x02, 0x02, 'CTDP');
  t.equal(withTimeouts.readUInt16BE(4 + 8), 0x0a, 'timeouts descriptor length');

  const one = (await target.execute(request(rsoc(1, 0x28)))).data!;
  t.same([...one], [0, 0x03, 0, 10, 0x28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0]);
  t.same([...(await target.execute(request(rsoc(1, 0xc0)))).data!], [0, 0x01, 0, 0], 'not supported');
  t.equal(ascOf(await target.execute(request(rsoc(1, 0x9e)))), Asc.InvalidFieldInCdb, 'opcode with service actions');
  const two = (await target.execute(request(rsoc(2, 0x9e, 0x10)))).data!;
  t.same([two[1], two.readUInt16BE(2), two[4], two[5]], [0x03, 16, 0x9e, 0x10]);
  t.equal(ascOf(await target.execute(request(rsoc(2, 0x28)))), Asc.InvalidFieldInCdb);
  t.equal((await target.execute(request(rsoc(3, 0x28, 0)))).data![1], 0x03);
  t.equal(ascOf(await target.execute(request(rsoc(4)))), Asc.InvalidFieldInCdb);
  t.equal((await target.execute(request(rsoc(0, 0, 0, 10)))).data!.length, 10);
});

t.test('REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS', async (t) => {
  const { target } = await makeTarget();
  const r = (await target.execute(request([0xa3, 0x0d, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]))).data!;
  t.same([...r], [0xda, 0, 0, 0]);
  const repd = (await target.execute(request([0xa3, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0]))).data!;
  t.equal(repd.length, 16);
  t.equal(repd[3], 0x0c);
});

t.test('reservations: RESERVE(6) conflicts another nexus, PR IN works', async (t) => {
  const { target } = await makeTarget();
  t.equal((await target.execute(request([0x16, 0, 0, 0, 0, 0], { nexus: nexus(1) }))).status, ScsiStatus.Good);
  t.equal((await target.execute(request(cdb10(0x28, 0, 1), { nexus: nexus(2) }))).status, ScsiStatus.ReservationConflict);
  t.equal((await target.execute(request(inquiry(0, 0, 36), { nexus: nexus(2) }))).status, ScsiStatus.Good);
  t.equal((await target.execute(request([0x17, 0, 0, 0, 0, 0], { nexus: nexus(1) }))).status, ScsiStatus.Good);
  t.equal((await target.execute(request(cdb10(0x28, 0, 1), { nexus: nexus(2) }))).status, ScsiStatus.Good);

  const keys = await target.execute(request([0x5e, 0, 0, 0, 0, 0, 0, 0, 8, 0]));
  t.equal(keys.status, ScsiStatus.Good);
  t.equal(keys.data!.length, 8);
  // PR OUT REGISTER with a 24-byte parameter list.
  const params = Buffer.alloc(24);
  params.writeBigUInt64BE(0x1234n, 8);
  const reg = await target.execute(request([0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0], { data: params }));
  t.equal(reg.status, ScsiStatus.Good);
  const keys2 = await target.execute(request([0x5e, 0, 0, 0, 0, 0, 0, 0, 16, 0]));
  t.equal(keys2.data!.readBigUInt64BE(8), 0x1234n);
});

t.test('persisted reservation state is restored at creation and saved through the device', async (t) => {
  const { MemoryBlockDevice } = await import('../../src/target/volume/memory-device.js');
  const { ScsiTargetDevice } = await import('../../src/target/scsi/scsi-target.js');
  const device = new MemoryBlockDevice({ blockCount: 64n });
  await device.saveState('pr', Buffer.from('saved-state'));
  const restored: string[] = [];
  let hooks: { persist(state: Buffer | undefined): Promise<void> } | undefined;
  await ScsiTargetDevice.create({
    device, serial: 's',
    reservations: (h) => {
      hooks = h;
      return {
        restore: (b: Buffer) => { restored.push(b.toString()); },
        isConflict: () => false,
        persistentReserveIn: () => ({ status: 0 }),
        persistentReserveOut: async () => ({ status: 0 }),
        reserve: () => ({ status: 0 }),
        release: () => ({ status: 0 }),
        onLogicalUnitReset: () => {},
        onNexusLoss: () => {},
      };
    },
  });
  t.same(restored, ['saved-state']);
  await hooks!.persist(Buffer.from('new'));
  t.equal((await device.loadState('pr'))!.toString(), 'new');
  await hooks!.persist(undefined);
  t.equal((await device.loadState('pr'))!.length, 0, 'cleared');
});
