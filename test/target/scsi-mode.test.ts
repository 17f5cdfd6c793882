import t from 'tap';
import { Asc, ScsiStatus, SenseKey } from '../../src/protocol/scsi/constants.js';
import { ascOf, cdb16, fieldPointer, makeTarget, nexus, request, sense } from '../fixtures/scsi-harness.js';

const ms6 = (page: number, pc = 0, dbd = false, alloc = 255, sub = 0): number[] => [0x1a, dbd ? 0x08 : 0, (pc << 6) | page, sub, alloc, 0];
const ms10 = (page: number, llbaa = false, alloc = 512): number[] => [0x5a, llbaa ? 0x10 : 0, page, 0, 0, 0, 0, (alloc >> 8) & 0xff, alloc & 0xff, 0];

t.test('MODE SENSE(6) all pages layout', async (t) => {
  const { target } = await makeTarget({ blockCount: 2048n });
  const d = (await target.execute(request(ms6(0x3f)))).data!;
  t.equal(d[0], d.length - 1, 'mode data length');
  t.equal(d[1], 0, 'medium type');
  t.equal(d[2], 0x10, 'DPOFUA, not WP');
  t.equal(d[3], 8, 'block descriptor length');
  t.same([...d.subarray(4, 12)], [0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00]);
  t.same([d[12], d[13], d[14]], [0x08, 0x12, 0x04], 'caching page, WCE=1 (memory device write cache)');
  t.same([d[32], d[33], d[34], d[35], d[37]], [0x0a, 0x0a, 0, 0x10, 0], 'control page');
  t.same([d[44], d[45], d[46]], [0x1c, 0x0a, 0x08], 'IE page, DEXCPT');
  t.equal(d.length, 56);
  const noBd = (await target.execute(request(ms6(0x08, 0, true)))).data!;
  t.same([noBd[0], noBd[3], noBd.length], [23, 0, 24]);
  const trunc = (await target.execute(request(ms6(0x3f, 0, false, 4)))).data!;
  t.same([...trunc], [55, 0, 0x10, 8], 'residual: full length reported in 4 bytes');
  const ffSub = (await target.execute(request(ms6(0x3f, 0, true, 255, 0xff)))).data!;
  t.equal(ffSub.length, 4 + 20 + 12 + 12);
});

t.test('MODE SENSE page control and errors', async (t) => {
  const { target } = await makeTarget();
  const chg = (await target.execute(request(ms6(0x0a, 1, true)))).data!;
  t.same([...chg.subarray(4)], [0x0a, 0x0a, 0x04, 0, 0x08, 0x40, 0, 0, 0, 0, 0, 0], 'D_SENSE, SWP and TAS changeable');
  const cachingChg = (await target.execute(request(ms6(0x08, 1, true)))).data!;
  t.equal(cachingChg[6], 0, 'WCE not changeable');
  const saved = await target.execute(request(ms6(0x0a, 3)));
  t.equal(sense(saved).key, SenseKey.IllegalRequest);
  t.equal(ascOf(saved), Asc.SavingParametersNotSupported);
  t.same(fieldPointer(await target.execute(request(ms6(0x19)))), { cd: true, byte: 2, bit: 5 }, 'unknown page');
  t.same(fieldPointer(await target.execute(request(ms6(0x0a, 0, false, 255, 1)))), { cd: true, byte: 3, bit: 7 }, 'unknown subpage');
});

t.test('MODE SENSE(10) with LLBAA', async (t) => {
  const { target } = await makeTarget({ blockCount: 2048n });
  const d = (await target.execute(request(ms10(0x0a, true)))).data!;
  t.equal(d.readUInt16BE(0), d.length - 2);
  t.same([d[3], d[4], d.readUInt16BE(6)], [0x10, 0x01, 16]);
  t.equal(d.readBigUInt64BE(8), 2048n);
  t.equal(d.readUInt32BE(20), 512);
  t.equal(d[24], 0x0a);
  const short = (await target.execute(request(ms10(0x0a)))).data!;
  t.same([short[4], short.readUInt16BE(6), short.length], [0, 8, 8 + 8 + 12]);
});

function controlSelect(dSense: boolean, tas = false, extra?: (page: Buffer) => void): Buffer {
  const p = Buffer.alloc(4 + 12);
  p[4] = 0x0a; p[5] = 0x0a; p[6] = dSense ? 0x04 : 0; p[7] = 0x10; p[9] = tas ? 0x40 : 0;
  extra?.(p);
  return p;
}
const sel6 = (len: number, pf = true, sp = false): number[] => [0x15, (pf ? 0x10 : 0) | (sp ? 1 : 0), 0, 0, len, 0];

t.test('MODE SELECT D_SENSE switches to descriptor sense and raises MODE PARAMETERS CHANGED', async (t) => {
  const { target } = await makeTarget();
  const p = controlSelect(true);
  const r = await target.execute(request(sel6(p.length), { data: p }));
  t.equal(r.status, ScsiStatus.Good);
  const oob = await target.execute(request(cdb16(0x88, -1n, 1)));
  t.equal(oob.sense![0], 0x72, 'descriptor format');
  t.equal(ascOf(oob), Asc.LbaOutOfRange);
  const other = await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: nexus(2) }));
  t.equal(ascOf(other), Asc.ModeParametersChanged, 'other nexus told');
  t.equal((await target.execute(request([0, 0, 0, 0, 0, 0]))).status, ScsiStatus.Good, 'issuer not told');
  const current = (await target.execute(request(ms6(0x0a, 0, true)))).data!;
  t.equal(current[6], 0x04);
  // Back off.
  const off = controlSelect(false);
  t.equal((await target.execute(request(sel6(off.length), { data: off }))).status, ScsiStatus.Good);
  t.equal((await target.execute(request(cdb16(0x88, -1n, 1)))).sense![0], 0x70);
});

t.test('MODE SELECT validation', async (t) => {
  const { target } = await makeTarget();
  const qerr = controlSelect(false, false, (p) => { p[7] = 0x12; });
  const r = await target.execute(request(sel6(qerr.length), { data: qerr }));
  t.equal(ascOf(r), Asc.InvalidFieldInParameterList);
  t.same(fieldPointer(r), { cd: false, byte: 7, bit: 1 }, 'QERR not changeable');
  const caching = Buffer.alloc(4 + 20);
  caching[4] = 0x08; caching[5] = 0x12;
  const wce = await target.execute(request(sel6(caching.length), { data: caching }));
  t.same(fieldPointer(wce), { cd: false, byte: 6, bit: 2 }, 'WCE cannot differ from the device');
  caching[6] = 0x04;
  t.equal((await target.execute(request(sel6(caching.length), { data: caching }))).status, ScsiStatus.Good, 'WCE restated');
  const p = controlSelect(true);
  t.same(fieldPointer(await target.execute(request(sel6(p.length, false), { data: p }))), { cd: true, byte: 1, bit: 4 }, 'PF=0');
  t.same(fieldPointer(await target.execute(request(sel6(p.length, true, true), { data: p }))), { cd: true, byte: 1, bit: 0 }, 'SP=1');
  t.equal(ascOf(await target.execute(request(sel6(3), { data: p.subarray(0, 3) }))), Asc.ParameterListLengthError);
  t.equal(ascOf(await target.execute(request(sel6(10), { data: p.subarray(0, 10) }))), Asc.ParameterListLengthError, 'truncated page');
  const ps = controlSelect(true, false, (b) => { b[4] = 0x8a; });
  t.same(fieldPointer(await target.execute(request(sel6(ps.length), { data: ps }))), { cd: false, byte: 4, bit: 7 }, 'PS set');
  const len = controlSelect(true, false, (b) => { b[5] = 0x0b; });
  t.same(fieldPointer(await target.execute(request(sel6(len.length), { data: len }))), { cd: false, byte: 5, bit: 7 }, 'page length');
  // Block descriptor restating the block size is fine; another size is not.
  const bd = Buffer.alloc(4 + 8);
  bd[3] = 8; bd.writeUIntBE(512, 9, 3);
  t.equal((await target.execute(request(sel6(bd.length), { data: bd }))).status, ScsiStatus.Good);
  bd.writeUIntBE(4096, 9, 3);
  t.same(fieldPointer(await target.execute(request(sel6(bd.length), { data: bd }))), { cd: false, byte: 9, bit: 7 });
  t.equal((await target.execute(request(sel6(0)))).status, ScsiStatus.Good, 'empty list');
  // Nothing applied from a rejected list.
  const mixed = Buffer.concat([controlSelect(true), Buffer.from([0x08, 0x12, ...Buffer.alloc(18)])]);
  t.equal((await target.execute(request(sel6(mixed.length), { data: mixed }))).status, ScsiStatus.CheckCondition);
  t.equal((await target.execute(request(ms6(0x0a, 0, true)))).data![6], 0, 'D_SENSE unchanged');
});

t.test('SWP write-protects the logical unit until cleared or reset', async (t) => {
  const { target, device } = await makeTarget();
  const on = controlSelect(false, false, (p) => { p[8] = 0x08; });
  t.equal((await target.execute(request(sel6(on.length), { data: on }))).status, ScsiStatus.Good, 'SWP set');
  const hdr = (await target.execute(request(ms6(0x0a)))).data!;
  t.equal(hdr[2]! & 0x80, 0x80, 'WP in the device-specific parameter');
  t.equal(hdr[12]! & 0x08, 0x08, 'SWP in the control page');
  const block = Buffer.alloc(512, 7);
  const w = await target.execute(request([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], { data: block }));
  t.equal(sense(w).key, SenseKey.DataProtect);
  t.equal(ascOf(w), Asc.WriteProtected);
  const unmap = Buffer.alloc(24);
  unmap.writeUInt16BE(22, 0); unmap.writeUInt16BE(16, 2); unmap.writeUInt32BE(1, 16);
  t.equal(ascOf(await target.execute(request([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { data: unmap }))), Asc.WriteProtected, 'UNMAP refused');
  const atomic = Buffer.alloc(16);
  atomic[0] = 0x9c;
  atomic.writeUInt16BE(1, 12);
  t.equal(ascOf(await target.execute(request(atomic, { data: block }))), Asc.WriteProtected, 'WRITE ATOMIC refused');
  t.equal((await target.execute(request([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]))).status, ScsiStatus.Good, 'reads still work');
  t.equal(device.stats.writes, 0, 'nothing written');
  const other = await target.execute(request([0x00, 0, 0, 0, 0, 0], { nexus: nexus(2) }));
  t.equal(ascOf(other), Asc.ModeParametersChanged, 'other nexus told');
  await target.logicalUnitReset(nexus(1), 0n);
  await target.execute(request([0x00, 0, 0, 0, 0, 0]));
  const after = (await target.execute(request(ms6(0x0a)))).data!;
  t.equal(after[2]! & 0x80, 0, 'LU reset restores the default (SWP off)');
  t.equal((await target.execute(request([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], { data: block }))).status, ScsiStatus.Good);
});
