import t, { type Test } from 'tap';
import { PduReader, type PduReaderOptions } from '../../src/protocol/iscsi/pdu-reader.js';
import { encodePdu } from '../../src/protocol/iscsi/pdu-codec.js';
import { IscsiErrorCode, type IscsiProtocolError, rejectReasonFor } from '../../src/protocol/iscsi/errors.js';
import { LoginStatus, RejectReason } from '../../src/protocol/iscsi/constants.js';
import type { AnyPdu, PduFrame } from '../../src/protocol/iscsi/pdu-types.js';
import { frame, norm, randomChunks, rng, type FrameOptions } from '../fixtures/pdu-builder.js';
import { goldens } from '../fixtures/golden-pdus.js';
import { initiatorPdus, targetPdus } from '../fixtures/sample-pdus.js';
import { loadCapture } from '../fixtures/captures.js';
import { crc32c } from '../../src/protocol/iscsi/digest.js';

type Hook = (pdu: AnyPdu, reader: PduReader) => void;

interface Result {
  pdus: unknown[];
  errors: { code: string; fatal: boolean; header: string | undefined }[];
  raw: AnyPdu[];
}

/** Cheap comparable form for the many split runs: Buffers as length + CRC32C. */
function fingerprint(pdu: AnyPdu): string {
  let out = '';
  for (const [k, v] of Object.entries(pdu)) {
    out += `${k}=${Buffer.isBuffer(v) ? `${v.length}:${crc32c(v)}` : String(v)};`;
  }
  return out;
}

/** Feed `chunks` to a reader; PDUs are normalised inside the callback (their buffers are views). */
function run(options: PduReaderOptions, chunks: Buffer[], hook?: Hook, keepRaw = false, light = false): Result {
  const res: Result = { pdus: [], errors: [], raw: [] };
  const reader: PduReader = new PduReader(options, (pdu: AnyPdu) => {
    res.pdus.push(light ? fingerprint(pdu) : norm(pdu));
    if (keepRaw) res.raw.push(pdu);
    hook?.(pdu, reader);
  }, (err: IscsiProtocolError) => {
    res.errors.push({ code: err.code, fatal: err.fatal, header: err.header?.toString('hex') });
  });
  for (const c of chunks) reader.push(c);
  return res;
}

/** Parses `stream` split at every offset (two pushes) and in random chunks; all must equal the one-chunk parse. */
function everySplit(t: Test, name: string, options: PduReaderOptions, stream: Buffer, hook?: Hook): Result {
  const whole = run(options, [stream], hook);
  const expected = JSON.stringify(run(options, [stream], hook, false, true));
  let mismatches = 0;
  for (let k = 1; k < stream.length; k++) {
    const r = run(options, [stream.subarray(0, k), stream.subarray(k)], hook, false, true);
    if (JSON.stringify(r) !== expected) {
      if (mismatches++ === 0) t.strictSame(run(options, [stream.subarray(0, k), stream.subarray(k)], hook), whole, `${name}: split at ${k}`);
    }
  }
  t.equal(mismatches, 0, `${name}: identical at all ${stream.length - 1} split offsets`);
  const next = rng(stream.length);
  for (const max of [1, 3, 47, 49, 100, 1500]) {
    t.strictSame(run(options, randomChunks(stream, next, max), hook), whole, `${name}: random chunks of 1..${max}`);
  }
  return whole;
}

/** Re-frame encoded PDUs with digests (the encoder is verified against golden bytes elsewhere). */
function wire(pdus: AnyPdu[], opts: FrameOptions = {}): Buffer {
  return Buffer.concat(pdus.map(p => {
    const w = encodePdu(p);
    const ahsLen = w[4]! * 4;
    const dsl = w.readUIntBE(5, 3);
    return frame(w.subarray(0, 48), { ...opts, ahs: w.subarray(48, 48 + ahsLen), data: w.subarray(48 + ahsLen, 48 + ahsLen + dsl) });
  }));
}

const target = (o: Partial<PduReaderOptions> = {}): PduReaderOptions => ({ side: 'target', maxRecvDataSegmentLength: 262144, ...o });
const initiator = (o: Partial<PduReaderOptions> = {}): PduReaderOptions => ({ side: 'initiator', maxRecvDataSegmentLength: 262144, ...o });

t.test('multi-PDU streams at every split offset (AHS, padding, digests)', async t => {
  for (const [name, digests] of [['no digests', {}], ['header digest', { headerDigest: true }],
    ['data digest', { dataDigest: true }], ['both digests', { headerDigest: true, dataDigest: true }]] as const) {
    const i = everySplit(t, `initiator PDUs, ${name}`, target(digests), wire(initiatorPdus, digests));
    t.strictSame(i.pdus, initiatorPdus.map(norm), `initiator PDUs, ${name}: decoded as sent`);
    t.strictSame(i.errors, []);
    const tg = everySplit(t, `target PDUs, ${name}`, initiator(digests), wire(targetPdus, digests));
    t.strictSame(tg.pdus, targetPdus.map(norm), `target PDUs, ${name}: decoded as sent`);
  }
});

t.test('golden PDUs concatenated', async t => {
  for (const side of ['target', 'initiator'] as const) {
    const g = goldens.filter(x => x.side === side);
    const r = everySplit(t, `goldens for ${side}`, { side, maxRecvDataSegmentLength: 8192 }, Buffer.concat(g.map(x => x.wire)));
    t.strictSame(r.pdus, g.map(x => norm(x.pdu)));
  }
});

t.test('zero copy when a PDU lies in one chunk; copies only across chunks', async t => {
  const stream = wire(initiatorPdus);
  const frames: PduFrame[] = [];
  const seen: AnyPdu[] = [];
  const reader = new PduReader(target(), (pdu, f) => {
    seen.push(pdu);
    frames.push(f);
  }, () => t.fail('no error'));
  reader.push(stream);
  t.equal(frames.length, initiatorPdus.length);
  for (const f of frames) {
    t.equal(f.bhs.buffer, stream.buffer, 'BHS is a view');
    if (f.data.length > 0) t.equal(f.data.buffer, stream.buffer, 'data is a view');
  }
  const dataOut = seen.find(p => p.kind === 'DataOut');
  t.equal(dataOut?.kind === 'DataOut' ? dataOut.data.buffer : undefined, stream.buffer);
  t.equal(reader.bufferedBytes, 0);

  // Straddling: the data is copied into one contiguous buffer.
  const one = wire([initiatorPdus.find(p => p.kind === 'DataOut')!]);
  let data: Buffer | undefined;
  const r2 = new PduReader(target(), (_p, f) => { data = Buffer.from(f.data); }, () => t.fail('no error'));
  r2.push(one.subarray(0, 100));
  t.equal(r2.bufferedBytes, 100 - 48, 'the BHS is parsed, the partial data waits');
  r2.push(one.subarray(100));
  t.equal(data?.length, 8190);
  t.equal(r2.bufferedBytes, 0);
});

t.test('partial input stays buffered until complete', async t => {
  const stream = wire(initiatorPdus.slice(0, 3));
  let n = 0;
  const reader = new PduReader(target(), () => { n++; }, () => t.fail('no error'));
  reader.push(stream.subarray(0, 47));
  t.equal(n, 0);
  t.equal(reader.bufferedBytes, 47);
  reader.push(stream.subarray(47, 48 + 5));
  t.equal(n, 0, 'NOP-Out needs its padding too');
  reader.push(stream.subarray(48 + 5, 56));
  t.equal(n, 1);
  reader.push(stream.subarray(56));
  t.equal(n, 3);
});

t.test('oversized data segment: error, bytes skipped without buffering, next PDU parsed', async t => {
  for (const digests of [{}, { headerDigest: true, dataDigest: true }]) {
    const big = initiatorPdus.find(p => p.kind === 'DataOut')!; // 8190 bytes
    const small = initiatorPdus[0]!;
    const stream = wire([small, big, small], digests);
    const errors: IscsiProtocolError[] = [];
    const pdus: string[] = [];
    const reader = new PduReader(target({ ...digests, maxRecvDataSegmentLength: 8189 }), p => pdus.push(p.kind), e => errors.push(e));
    let maxBuffered = 0;
    for (const c of randomChunks(stream, rng(1), 700)) {
      reader.push(c);
      maxBuffered = Math.max(maxBuffered, reader.bufferedBytes);
    }
    t.strictSame(pdus, ['NopOut', 'NopOut']);
    t.equal(errors.length, 1);
    t.equal(errors[0]?.code, IscsiErrorCode.DataSegmentTooLong);
    t.equal(errors[0]?.fatal, false);
    t.equal(rejectReasonFor(errors[0]!.code), RejectReason.ProtocolError);
    t.equal(errors[0]?.header?.toString('hex'), encodePdu(big).subarray(0, 48).toString('hex'), 'header of the rejected PDU');
    t.ok(maxBuffered < 700, `never buffered the data segment (max ${maxBuffered})`);
    t.equal(reader.bufferedBytes, 0);
    everySplit(t, 'oversized', target({ ...digests, maxRecvDataSegmentLength: 8189 }), stream);
  }
});

t.test('setMaxRecvDataSegmentLength applies to the next PDU', async t => {
  const stream = wire([initiatorPdus[0]!, initiatorPdus[0]!]); // 5-byte data each
  const r = run(target({ maxRecvDataSegmentLength: 8192 }), [stream], (_p, reader) => reader.setMaxRecvDataSegmentLength(4));
  t.equal(r.pdus.length, 1);
  t.strictSame(r.errors.map(e => e.code), [IscsiErrorCode.DataSegmentTooLong]);
});

t.test('data digest mismatch: not fatal, PDU dropped, next PDU parsed', async t => {
  const opts = { headerDigest: true, dataDigest: true };
  const [a, b, c] = [initiatorPdus[0]!, initiatorPdus[2]!, initiatorPdus[8]!];
  const stream = Buffer.concat([wire([a], opts), wire([b], { ...opts, badDataDigest: true }), wire([c], opts)]);
  const r = everySplit(t, 'data digest error', target(opts), stream);
  t.strictSame(r.pdus, [norm(a), norm(c)]);
  t.equal(r.errors.length, 1);
  t.equal(r.errors[0]?.code, IscsiErrorCode.DataDigest);
  t.equal(r.errors[0]?.fatal, false);
  t.equal(rejectReasonFor(IscsiErrorCode.DataDigest), RejectReason.DataDigestError);
  t.equal(r.errors[0]?.header, encodePdu(b).subarray(0, 48).toString('hex'));
});

t.test('header digest mismatch is fatal: parsing stops for good', async t => {
  const opts = { headerDigest: true, dataDigest: true };
  const [a, b, c] = [initiatorPdus[0]!, initiatorPdus[2]!, initiatorPdus[8]!];
  const stream = Buffer.concat([wire([a], opts), wire([b], { ...opts, badHeaderDigest: true }), wire([c], opts)]);
  const r = everySplit(t, 'header digest error', target(opts), stream);
  t.strictSame(r.pdus, [norm(a)]);
  t.strictSame(r.errors.map(e => [e.code, e.fatal]), [[IscsiErrorCode.HeaderDigest, true]]);
  t.equal(rejectReasonFor(IscsiErrorCode.HeaderDigest), undefined, 'no Reject: drop the connection');

  const errors: IscsiProtocolError[] = [];
  let n = 0;
  const reader = new PduReader(target(opts), () => { n++; }, e => errors.push(e));
  reader.push(stream);
  t.ok(reader.failed);
  t.equal(reader.bufferedBytes, 0, 'buffers released');
  reader.push(wire([a], opts));
  t.equal(n, 1, 'later input ignored');
  t.equal(errors.length, 1);
});

t.test('unknown opcode and invalid fields: not fatal, parsing continues', async t => {
  const bogus = Buffer.alloc(48);
  bogus[0] = 0x1e;
  const r2t = goldens.find(g => g.pdu.kind === 'R2T')!.wire; // target opcode arriving at the target
  const badLogin = Buffer.from(goldens.find(g => g.pdu.kind === 'LoginRequest')!.wire);
  badLogin[1] = 0xc7;
  const nop = wire([initiatorPdus[0]!]);
  const stream = Buffer.concat([frame(bogus, { data: Buffer.from('hello') }), nop, r2t, nop, badLogin, nop]);
  const r = everySplit(t, 'decode errors', target(), stream);
  t.equal(r.pdus.length, 3);
  t.strictSame(r.errors.map(e => [e.code, e.fatal]), [
    [IscsiErrorCode.UnknownOpcode, false], [IscsiErrorCode.UnknownOpcode, false], [IscsiErrorCode.InvalidField, false],
  ]);
  t.equal(r.errors[1]?.header, r2t.subarray(0, 48).toString('hex'));
});

t.test('AHS above maxAhsLength: not fatal, PDU skipped', async t => {
  const withAhs = initiatorPdus.find(p => p.kind === 'ScsiCommand' && p.cdb.length === 32)!; // AHS 20 bytes
  const nop = initiatorPdus[0]!;
  const opts = target({ maxAhsLength: 16, headerDigest: true, dataDigest: true });
  const r = everySplit(t, 'AHS too long', opts, wire([nop, withAhs, nop], { headerDigest: true, dataDigest: true }));
  t.strictSame(r.pdus, [norm(nop), norm(nop)]);
  t.strictSame(r.errors.map(e => [e.code, e.fatal]), [[IscsiErrorCode.AhsTooLong, false]]);
});

t.test('setDigests takes effect at the next PDU boundary', async t => {
  const login = initiatorPdus.find(p => p.kind === 'LoginRequest')!;
  const rest = initiatorPdus.filter(p => p.kind !== 'LoginRequest');
  const opts = { headerDigest: true, dataDigest: true };
  const stream = Buffer.concat([wire([login]), wire(rest, opts)]);
  const r = everySplit(t, 'digests after login', target(), stream, (p, reader) => {
    if (p.kind === 'LoginRequest') reader.setDigests(true, true);
  });
  t.strictSame(r.pdus, [norm(login), ...rest.map(norm)]);
  t.strictSame(r.errors, []);
});

t.test('a consumer that throws leaves the parser consistent', async t => {
  const stream = wire([initiatorPdus[0]!, initiatorPdus[1]!]);
  let calls = 0;
  const reader = new PduReader(target(), () => {
    if (calls++ === 0) throw new Error('boom');
  }, () => t.fail('no error'));
  t.throws(() => reader.push(stream), /boom/);
  reader.push(Buffer.alloc(0));
  reader.push(wire([initiatorPdus[0]!]));
  t.equal(calls, 3, 'the second PDU is parsed on the next push');
});

// ---- real traffic captured between libiscsi (initiator) and tgtd (target) ----

/** libiscsi and tgtd turn on the negotiated header digest after the final Login exchange. */
function digestsAfterLogin(p: AnyPdu, reader: PduReader): void {
  if ((p.kind === 'LoginRequest' || p.kind === 'LoginResponse') && p.transit && p.nsg === 3) reader.setDigests(true, false);
}

function capture(t: Test, name: string, hook?: Hook): { i2t: AnyPdu[]; t2i: AnyPdu[] } {
  const out: { i2t: AnyPdu[]; t2i: AnyPdu[] } = { i2t: [], t2i: [] };
  for (const dir of ['i2t', 't2i'] as const) {
    const stream = loadCapture(name, dir);
    const options = dir === 'i2t' ? target() : initiator();
    const whole = everySplit(t, `${name} ${dir}`, options, stream, hook);
    t.strictSame(whole.errors, [], `${name} ${dir}: no errors`);
    // Keep copies for field checks (views die with the callback).
    out[dir] = run(options, [Buffer.from(stream)], hook, true).raw;
  }
  return out;
}

const kinds = (pdus: AnyPdu[]): string[] => pdus.map(p => p.kind);
const cdbOps = (pdus: AnyPdu[]): number[] => pdus.flatMap(p => (p.kind === 'ScsiCommand' ? [p.cdb[0]!] : []));
const textOf = (b: Buffer): string[] => b.toString('latin1').split('\0').filter(s => s !== '');

t.test('capture: login to an unknown target', async t => {
  const { i2t, t2i } = capture(t, 'tgt-login-not-found');
  t.strictSame(kinds(i2t), ['LoginRequest']);
  const req = i2t[0]!;
  const rsp = t2i[0]!;
  if (req.kind !== 'LoginRequest' || rsp.kind !== 'LoginResponse') throw new Error('unexpected');
  t.equal(req.isid, 0x8087_9862_0000n);
  t.ok(textOf(req.data).includes('TargetName=iqn.2016-09.com.openebs.cstor:vol1'));
  t.equal(rsp.status, LoginStatus.NotFound);
  t.equal(rsp.transit, false);
});

t.test('capture: discovery session', async t => {
  const { i2t, t2i } = capture(t, 'tgt-discovery');
  t.strictSame(kinds(i2t), ['LoginRequest', 'TextRequest', 'LogoutRequest']);
  t.strictSame(kinds(t2i), ['LoginResponse', 'TextResponse', 'LogoutResponse']);
  const [login, text] = i2t;
  const [loginRsp, textRsp] = t2i;
  if (login?.kind !== 'LoginRequest' || loginRsp?.kind !== 'LoginResponse') throw new Error('unexpected');
  t.equal(login.isid, 0x80ed_9047_0000n);
  t.equal(loginRsp.isid, login.isid);
  t.equal(login.itt, loginRsp.itt);
  t.ok(textOf(login.data).includes('SessionType=Discovery'));
  t.strictSame([login.transit, login.csg, login.nsg], [true, 1, 3]);
  t.strictSame([loginRsp.status, loginRsp.tsih, loginRsp.transit, loginRsp.nsg], [0, 256, true, 3]);
  t.strictSame(text?.kind === 'TextRequest' ? textOf(text.data) : [], ['SendTargets=All']);
  t.strictSame(textRsp?.kind === 'TextResponse' ? textOf(textRsp.data) : [],
    ['TargetName=iqn.2025-01.test:capture', 'TargetAddress=127.0.0.1:13260,1']);
});

t.test('capture: iscsi-ls session (REPORT LUNS, INQUIRY, READ CAPACITY, CHECK CONDITION)', async t => {
  const { i2t, t2i } = capture(t, 'tgt-iscsi-ls-session');
  t.strictSame(cdbOps(i2t), [0xa0, 0xa0, 0x00, 0x00, 0x12, 0x00, 0x00, 0x12, 0x25]);
  t.strictSame(kinds(t2i), ['LoginResponse', 'DataIn', 'DataIn', 'ScsiResponse', 'ScsiResponse', 'DataIn',
    'ScsiResponse', 'ScsiResponse', 'DataIn', 'DataIn']);
  const cc = t2i[3]!;
  if (cc.kind !== 'ScsiResponse') throw new Error('unexpected');
  t.equal(cc.status, 0x02, 'CHECK CONDITION');
  t.equal(cc.sense.length, 18);
  t.equal(cc.sense[2]! & 0x0f, 0x06, 'UNIT ATTENTION');
  t.equal(cc.sense[12], 0x29, 'POWER ON, RESET');
  const cap = t2i[9]!;
  t.equal(cap.kind === 'DataIn' ? cap.data.toString('hex') : '', '00003fff00000200', 'READ CAPACITY(10): 16384 blocks of 512');
  // Every command's ITT is answered, in order.
  const itts = i2t.flatMap(p => (p.kind === 'ScsiCommand' ? [p.itt] : []));
  t.strictSame(t2i.flatMap(p => (p.kind === 'DataIn' || (p.kind === 'ScsiResponse') ? [p.itt] : [])), itts);
});

t.test('capture: iscsi-inq', async t => {
  const { i2t, t2i } = capture(t, 'tgt-inquiry');
  t.strictSame(cdbOps(i2t), [0x00, 0x00, 0x12, 0x12]);
  t.strictSame(kinds(i2t).at(-1), 'LogoutRequest');
  const inq = t2i.filter(p => p.kind === 'DataIn');
  t.equal(inq.length, 2);
  for (const d of inq) {
    if (d.kind !== 'DataIn') continue;
    t.ok(d.final && d.statusPresent, 'phase collapse: status in the last Data-In');
    t.equal(d.data.subarray(8, 16).toString('latin1'), 'IET     ', 'vendor id');
  }
  const cmd = i2t.find(p => p.kind === 'ScsiCommand' && p.cdb[0] === 0x12)!;
  t.equal(cmd.kind === 'ScsiCommand' ? cmd.lun : -1n, 0x0001_0000_0000_0000n, 'LUN 1');
});

t.test('capture: iscsi-readcapacity16', async t => {
  const { i2t, t2i } = capture(t, 'tgt-readcapacity16');
  t.strictSame(cdbOps(i2t), [0x00, 0x00, 0x9e]);
  const d = t2i.find(p => p.kind === 'DataIn')!;
  if (d.kind !== 'DataIn') throw new Error('unexpected');
  t.equal(d.data.readBigUInt64BE(0), 16383n, 'last LBA');
  t.equal(d.data.readUInt32BE(8), 512, 'block length');
});

t.test('capture: writes with immediate data, R2T and Data-Out, residuals', async t => {
  const { i2t, t2i } = capture(t, 'tgt-write-residuals');
  const w = i2t.find(p => p.kind === 'ScsiCommand' && p.expectedDataTransferLength === 10000)!;
  const r2t = t2i.find(p => p.kind === 'R2T')!;
  const dout = i2t.find(p => p.kind === 'DataOut')!;
  if (w.kind !== 'ScsiCommand' || r2t.kind !== 'R2T' || dout.kind !== 'DataOut') throw new Error('unexpected');
  t.strictSame([w.cdb[0], w.write, w.data.length], [0x2a, true, 8192], 'WRITE(10) with 8 KiB immediate data');
  t.strictSame([r2t.itt, r2t.bufferOffset, r2t.desiredDataTransferLength], [w.itt, 8192, 1808]);
  t.strictSame([dout.itt, dout.ttt, dout.bufferOffset, dout.data.length, dout.final], [w.itt, r2t.ttt, 8192, 1808, true]);
  const residuals = t2i.flatMap(p => (p.kind === 'ScsiResponse' && (p.overflow || p.underflow)
    ? [[p.overflow ? 'O' : 'U', p.residualCount]] : []));
  t.strictSame(residuals, [['O', 512], ['U', 9488], ['O', 312], ['O', 512], ['U', 512], ['O', 512]]);
});

t.test('capture: reads with residuals', async t => {
  const { t2i } = capture(t, 'tgt-read-residuals');
  const din = t2i.flatMap(p => (p.kind === 'DataIn'
    ? [[p.data.length, p.underflow ? 'U' : p.overflow ? 'O' : '-', p.residualCount]] : []));
  t.strictSame(din, [[512, 'U', 9488], [200, 'O', 312], [512, 'O', 512], [8, 'U', 16376]]);
});

t.test('capture: CRC32C header digests negotiated with tgtd', async t => {
  const { i2t, t2i } = capture(t, 'tgt-inquiry-header-digest', digestsAfterLogin);
  t.strictSame(cdbOps(i2t), [0x00, 0x00, 0x12, 0x12]);
  t.strictSame(kinds(t2i), ['LoginResponse', 'ScsiResponse', 'ScsiResponse', 'DataIn', 'DataIn', 'LogoutResponse']);
  const login = t2i[0]!;
  t.ok(login.kind === 'LoginResponse' && textOf(login.data).includes('HeaderDigest=CRC32C'));
  // Without digests the same bytes do not parse.
  const r = run(target(), [loadCapture('tgt-inquiry-header-digest', 'i2t')]);
  t.not(JSON.stringify(r.pdus.slice(1, 3)), JSON.stringify(i2t.slice(1, 3).map(norm)));
});
