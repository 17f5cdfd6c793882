import t from 'tap';
import {
  bhsAhsLength, bhsDataSegmentLength, decodePdu, encodeBhs, encodePdu, headerLength, padLength, pduDataSegment,
  pduDataSegmentLength,
} from '../../src/protocol/iscsi/pdu-codec.js';
import { IscsiErrorCode, IscsiProtocolError, rejectReasonFor } from '../../src/protocol/iscsi/errors.js';
import { RejectReason } from '../../src/protocol/iscsi/constants.js';
import type { AnyPdu, PduFrame } from '../../src/protocol/iscsi/pdu-types.js';
import { goldens } from '../fixtures/golden-pdus.js';
import { allPdus, initiatorPdus } from '../fixtures/sample-pdus.js';
import { hex, norm } from '../fixtures/pdu-builder.js';

/** Split one digest-less PDU into its frame, independently of the reader. */
function frameOf(wire: Buffer): PduFrame {
  const ahsLen = wire[4]! * 4;
  const dsl = wire.readUIntBE(5, 3);
  return { bhs: wire.subarray(0, 48), ahs: wire.subarray(48, 48 + ahsLen), data: wire.subarray(48 + ahsLen, 48 + ahsLen + dsl) };
}

function sideOf(pdu: AnyPdu): 'target' | 'initiator' {
  return (initiatorPdus as AnyPdu[]).includes(pdu) ? 'target' : 'initiator';
}

function decodeError(fn: () => unknown): IscsiProtocolError {
  try {
    fn();
  } catch (err) {
    if (err instanceof IscsiProtocolError) return err;
    throw err;
  }
  throw new Error('expected an IscsiProtocolError');
}

t.test('golden bytes decode to the expected PDU', async t => {
  for (const g of goldens) {
    t.strictSame(norm(decodePdu(frameOf(g.wire), g.side)), norm(g.pdu), g.name);
  }
});

t.test('encoder produces the golden bytes', async t => {
  for (const g of goldens) {
    t.equal(encodePdu(g.pdu).toString('hex'), g.wire.toString('hex'), g.name);
    const data = pduDataSegment(g.pdu);
    t.equal(pduDataSegmentLength(g.pdu), data.length, `${g.name}: data segment length`);
    const h = encodeBhs(g.pdu);
    t.equal(h.length, headerLength(g.pdu));
    t.equal(bhsAhsLength(h), h.length - 48);
    t.equal(bhsDataSegmentLength(h), data.length);
  }
});

t.test('golden set covers every opcode', async t => {
  const kinds = new Set(goldens.map(g => g.pdu.kind));
  for (const k of ['NopOut', 'ScsiCommand', 'TaskManagementRequest', 'LoginRequest', 'TextRequest', 'DataOut',
    'LogoutRequest', 'SnackRequest', 'NopIn', 'ScsiResponse', 'TaskManagementResponse', 'LoginResponse',
    'TextResponse', 'DataIn', 'LogoutResponse', 'R2T', 'AsyncMessage', 'Reject']) {
    t.ok(kinds.has(k as AnyPdu['kind']), k);
  }
});

t.test('round trip encode → decode for every sample PDU', async t => {
  for (const pdu of allPdus) {
    const wire = encodePdu(pdu);
    t.equal(wire.length % 4, 0, `${pdu.kind} padded to 4 bytes`);
    t.strictSame(norm(decodePdu(frameOf(wire), sideOf(pdu))), norm(pdu), pdu.kind);
  }
});

t.test('the data segment is the PDU buffer itself (no copy)', async t => {
  for (const pdu of allPdus) {
    if ('data' in pdu && pdu.kind !== 'AsyncMessage') t.equal(pduDataSegment(pdu), pdu.data, pdu.kind);
    if (pdu.kind === 'Reject') t.equal(pduDataSegment(pdu), pdu.rejectedHeader);
  }
});

t.test('decoded buffers are views into the frame', async t => {
  const g = goldens.find(x => x.pdu.kind === 'DataOut')!;
  const frame = frameOf(g.wire);
  const pdu = decodePdu(frame, 'target');
  t.equal(pdu.kind, 'DataOut');
  if (pdu.kind === 'DataOut') t.equal(pdu.data.buffer, g.wire.buffer);
  const cmd = decodePdu(frameOf(goldens[1]!.wire), 'target');
  if (cmd.kind === 'ScsiCommand') t.equal(cmd.cdb.buffer, goldens[1]!.wire.buffer, 'CDB from the BHS is a view');
});

t.test('reserved bits are ignored on receive, written as zero', async t => {
  const wire = Buffer.from(goldens[0]!.wire);
  wire[0]! |= 0x80; // reserved bit before I
  wire[2] = 0xff; // reserved
  wire.fill(0xee, 32, 48); // reserved
  const pdu = decodePdu(frameOf(wire), 'target');
  t.strictSame(norm(pdu), norm(goldens[0]!.pdu));
  t.equal(encodePdu(pdu).toString('hex'), goldens[0]!.wire.toString('hex'));
});

t.test('padding', async t => {
  t.strictSame([0, 1, 2, 3, 4, 5, 8191].map(padLength), [0, 3, 2, 1, 0, 3, 1]);
});

t.test('unknown opcode', async t => {
  const bhs = Buffer.alloc(48);
  bhs[0] = 0x1f;
  let err = decodeError(() => decodePdu(frameOf(bhs), 'target'));
  t.equal(err.code, IscsiErrorCode.UnknownOpcode);
  t.equal(err.fatal, false);
  t.equal(rejectReasonFor(err.code), RejectReason.CommandNotSupported);
  t.same(err.header, bhs);
  t.not(err.header, bhs, 'header is a copy');

  // A target opcode arriving at the target, and an initiator opcode at the initiator.
  err = decodeError(() => decodePdu(frameOf(goldens.find(g => g.pdu.kind === 'R2T')!.wire), 'target'));
  t.equal(err.code, IscsiErrorCode.UnknownOpcode);
  err = decodeError(() => decodePdu(frameOf(goldens[0]!.wire), 'initiator'));
  t.equal(err.code, IscsiErrorCode.UnknownOpcode);
});

t.test('invalid fields', async t => {
  const login = Buffer.from(goldens.find(g => g.pdu.kind === 'LoginRequest')!.wire);
  login[1] = 0xc7; // T and C
  let err = decodeError(() => decodePdu(frameOf(login), 'target'));
  t.equal(err.code, IscsiErrorCode.InvalidField);
  t.equal(rejectReasonFor(err.code), RejectReason.InvalidPduField);

  const text = Buffer.from(goldens.find(g => g.pdu.kind === 'TextRequest')!.wire);
  text[1] = 0xc0; // F and C
  t.equal(decodeError(() => decodePdu(frameOf(text), 'target')).code, IscsiErrorCode.InvalidField);

  const dataIn = Buffer.from(goldens.find(g => g.pdu.kind === 'DataIn')!.wire);
  dataIn[1] = 0x01; // S without F
  t.equal(decodeError(() => decodePdu(frameOf(dataIn), 'initiator')).code, IscsiErrorCode.InvalidField);

  const rsp = Buffer.from(goldens.find(g => g.pdu.kind === 'ScsiResponse')!.wire);
  rsp.writeUInt16BE(19, 48); // SenseLength beyond the data segment
  t.equal(decodeError(() => decodePdu(frameOf(rsp), 'initiator')).code, IscsiErrorCode.InvalidField);

  // Data on a PDU that has no data segment.
  const tmf = goldens.find(g => g.pdu.kind === 'TaskManagementRequest')!.wire;
  err = decodeError(() => decodePdu({ bhs: tmf.subarray(0, 48), ahs: Buffer.alloc(0), data: hex('00 00 00 01') }, 'target'));
  t.equal(err.code, IscsiErrorCode.UnexpectedData);
  t.equal(rejectReasonFor(err.code), RejectReason.ProtocolError);
});

t.test('malformed AHS', async t => {
  const g = goldens[2]!; // SCSI Command with Extended CDB and Bidirectional AHS
  const frame = frameOf(g.wire);
  const bad = (ahs: Buffer): IscsiProtocolError =>
    decodeError(() => decodePdu({ bhs: frame.bhs, ahs, data: frame.data }, 'target'));
  let err = bad(hex('00 20 01 00  00 00 00 00')); // AHSLength beyond TotalAHSLength
  t.equal(err.code, IscsiErrorCode.AhsInvalid);
  t.equal(err.fatal, false);
  t.equal(rejectReasonFor(err.code), RejectReason.InvalidPduField);
  t.equal(bad(hex('00 04 02 00  00 00 00 00')).code, IscsiErrorCode.AhsInvalid, 'bidi AHS with wrong length');
  t.equal(bad(hex('00 01 01 00')).code, IscsiErrorCode.AhsInvalid, 'empty extended CDB');
  // Vendor-specific AHS types are skipped.
  const ok = decodePdu({ bhs: frame.bhs, ahs: hex('00 01 3b 00  00 05 02 00  00 00 00 09'), data: frame.data }, 'target');
  t.equal(ok.kind === 'ScsiCommand' ? ok.bidiReadLength : -1, 9);
  t.equal(ok.kind === 'ScsiCommand' ? ok.cdb.length : -1, 16);
});

t.test('encode ScsiCommand AHS variants', async t => {
  const base = initiatorPdus[1]!;
  if (base.kind !== 'ScsiCommand') throw new Error('fixture');
  for (const len of [6, 10, 12, 16, 17, 18, 19, 20, 32, 260]) {
    const cdb = Buffer.alloc(len);
    for (let i = 0; i < len; i++) cdb[i] = i + 1;
    const pdu = { ...base, cdb };
    const wire = encodePdu(pdu);
    const back = decodePdu(frameOf(wire), 'target');
    const expected = len < 16 ? Buffer.concat([cdb, Buffer.alloc(16 - len)]) : cdb;
    t.equal(back.kind === 'ScsiCommand' ? back.cdb.toString('hex') : '', expected.toString('hex'), `CDB of ${len} bytes`);
    t.equal(wire[4]! * 4, len > 16 ? (4 + len - 16 + 3) & ~3 : 0, `TotalAHSLength for ${len}`);
  }
  t.throws(() => encodeBhs({ ...base, cdb: Buffer.alloc(1100) }), RangeError, 'AHS too large for TotalAHSLength');
});

t.test('Login ISID and TSIH use the whole 6 + 2 bytes', async t => {
  const g = goldens.find(x => x.pdu.kind === 'LoginRequest')!;
  const pdu = { ...(g.pdu as Extract<AnyPdu, { kind: 'LoginRequest' }>), isid: 0xfedc_ba98_7654n, tsih: 0xffff };
  const wire = encodePdu(pdu);
  t.equal(wire.subarray(8, 16).toString('hex'), 'fedcba987654ffff');
});
