// Encode and decode of every iSCSI PDU (RFC 7143 section 11), both directions. Pure: no I/O.
// Decoded Buffers are views into the frame; encoders write reserved fields as zero and
// receivers ignore reserved bits (RFC 7143 11.2.1).
import {
  AhsType, BHS_LENGTH, InitiatorOpcode, RESERVED_TAG, TargetOpcode, type LoginStageValue,
} from './constants.js';
import { IscsiErrorCode, IscsiProtocolError, type IscsiErrorCodeValue } from './errors.js';
import type {
  AnyPdu, AsyncMessage, DataIn, DataOut, InitiatorPdu, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse,
  NopIn, NopOut, PduFrame, R2T, Reject, ScsiCommand, ScsiResponse, SnackRequest, TargetPdu, TaskManagementRequest,
  TaskManagementResponse, TextRequest, TextResponse,
} from './pdu-types.js';

/** 'target': I am the target, decoding initiator PDUs; 'initiator': decoding target PDUs. */
export type PduSide = 'target' | 'initiator';

/** Shared empty buffer (zero length, so sharing it is harmless). */
export const EMPTY_BUFFER: Buffer = Buffer.alloc(0);

/** Largest AHS the 1-byte TotalAHSLength (in 4-byte words) can describe. */
export const MAX_AHS_LENGTH = 255 * 4;
/** Largest DataSegmentLength (24-bit field). */
export const MAX_DATA_SEGMENT_LENGTH = 0xff_ffff;

const CDB_IN_BHS = 16;
const IMMEDIATE = 0x40;
const FINAL = 0x80;

// ---- BHS framing fields (used by the reader before decoding) ----

export function bhsOpcode(bhs: Buffer): number {
  return bhs[0]! & 0x3f;
}
/** TotalAHSLength in bytes. */
export function bhsAhsLength(bhs: Buffer): number {
  return bhs[4]! << 2;
}
export function bhsDataSegmentLength(bhs: Buffer): number {
  return (bhs[5]! << 16) | (bhs[6]! << 8) | bhs[7]!;
}
/** Bytes of padding after a data segment of `n` bytes. */
export function padLength(n: number): number {
  return (4 - (n & 3)) & 3;
}

// ---- decode ----

function fail(code: IscsiErrorCodeValue, message: string, bhs: Buffer): never {
  throw new IscsiProtocolError(code, message, { header: bhs });
}

function noData(frame: PduFrame, name: string): void {
  if (frame.data.length !== 0) {
    fail(IscsiErrorCode.UnexpectedData, `${name} carries a ${frame.data.length}-byte data segment`, frame.bhs);
  }
}

function readIsid(b: Buffer): bigint {
  return (BigInt(b.readUInt16BE(8)) << 32n) | BigInt(b.readUInt32BE(10));
}

function loginStage(n: number): LoginStageValue | 2 {
  return (n & 3) as LoginStageValue | 2;
}

/** Decode an initiator PDU (I am the target). Throws IscsiProtocolError (not fatal) on unknown opcode or invalid field. */
export function decodePdu(frame: PduFrame, side: 'target'): InitiatorPdu;
/** Decode a target PDU (I am the initiator). */
export function decodePdu(frame: PduFrame, side: 'initiator'): TargetPdu;
export function decodePdu(frame: PduFrame, side: PduSide): AnyPdu;
export function decodePdu(frame: PduFrame, side: PduSide): AnyPdu {
  return side === 'target' ? decodeInitiatorPdu(frame) : decodeTargetPdu(frame);
}

export function decodeInitiatorPdu(frame: PduFrame): InitiatorPdu {
  const b = frame.bhs;
  const op = b[0]! & 0x3f;
  const immediate = (b[0]! & IMMEDIATE) !== 0;
  const f = b[1]!;
  switch (op) {
    case InitiatorOpcode.NopOut: {
      const pdu: NopOut = {
        kind: 'NopOut', immediate, lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16), ttt: b.readUInt32BE(20),
        cmdSN: b.readUInt32BE(24), expStatSN: b.readUInt32BE(28), data: frame.data,
      };
      return pdu;
    }
    case InitiatorOpcode.ScsiCommand:
      return decodeScsiCommand(frame, immediate);
    case InitiatorOpcode.TaskManagementRequest: {
      noData(frame, 'Task Management Request');
      const pdu: TaskManagementRequest = {
        kind: 'TaskManagementRequest', immediate, function: f & 0x7f, lun: b.readBigUInt64BE(8),
        itt: b.readUInt32BE(16), referencedTaskTag: b.readUInt32BE(20), cmdSN: b.readUInt32BE(24),
        expStatSN: b.readUInt32BE(28), refCmdSN: b.readUInt32BE(32), expDataSN: b.readUInt32BE(36),
      };
      return pdu;
    }
    case InitiatorOpcode.LoginRequest: {
      // RFC 7143 11.12.2: T and C must not both be set.
      if ((f & 0xc0) === 0xc0) fail(IscsiErrorCode.InvalidField, 'Login Request with both T and C bits set', b);
      const pdu: LoginRequest = {
        kind: 'LoginRequest', transit: (f & 0x80) !== 0, continue: (f & 0x40) !== 0,
        csg: loginStage(f >> 2), nsg: loginStage(f), versionMax: b[2]!, versionMin: b[3]!, isid: readIsid(b),
        tsih: b.readUInt16BE(14), itt: b.readUInt32BE(16), cid: b.readUInt16BE(20), cmdSN: b.readUInt32BE(24),
        expStatSN: b.readUInt32BE(28), data: frame.data,
      };
      return pdu;
    }
    case InitiatorOpcode.TextRequest: {
      if ((f & 0xc0) === 0xc0) fail(IscsiErrorCode.InvalidField, 'Text Request with both F and C bits set', b);
      const pdu: TextRequest = {
        kind: 'TextRequest', immediate, final: (f & 0x80) !== 0, continue: (f & 0x40) !== 0,
        lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16), ttt: b.readUInt32BE(20), cmdSN: b.readUInt32BE(24),
        expStatSN: b.readUInt32BE(28), data: frame.data,
      };
      return pdu;
    }
    case InitiatorOpcode.DataOut: {
      const pdu: DataOut = {
        kind: 'DataOut', final: (f & 0x80) !== 0, lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16),
        ttt: b.readUInt32BE(20), expStatSN: b.readUInt32BE(28), dataSN: b.readUInt32BE(36),
        bufferOffset: b.readUInt32BE(40), data: frame.data,
      };
      return pdu;
    }
    case InitiatorOpcode.LogoutRequest: {
      noData(frame, 'Logout Request');
      const pdu: LogoutRequest = {
        kind: 'LogoutRequest', immediate, reason: f & 0x7f, itt: b.readUInt32BE(16), cid: b.readUInt16BE(20),
        cmdSN: b.readUInt32BE(24), expStatSN: b.readUInt32BE(28),
      };
      return pdu;
    }
    case InitiatorOpcode.SnackRequest: {
      noData(frame, 'SNACK Request');
      const pdu: SnackRequest = {
        kind: 'SnackRequest', type: f & 0x0f, lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16),
        ttt: b.readUInt32BE(20), expStatSN: b.readUInt32BE(28), begRun: b.readUInt32BE(40),
        runLength: b.readUInt32BE(44),
      };
      return pdu;
    }
    default:
      return fail(IscsiErrorCode.UnknownOpcode, `unknown initiator opcode 0x${op.toString(16)}`, b);
  }
}

function decodeScsiCommand(frame: PduFrame, immediate: boolean): ScsiCommand {
  const b = frame.bhs;
  const f = b[1]!;
  const ahs = frame.ahs;
  let cdb = b.subarray(32, 48);
  let bidiReadLength: number | undefined;
  // AHS chain (RFC 7143 11.2.2): AHSLength counts the bytes after AHSType, excluding padding.
  for (let o = 0; o < ahs.length;) {
    if (o + 4 > ahs.length) fail(IscsiErrorCode.AhsInvalid, 'truncated AHS', b);
    const len = ahs.readUInt16BE(o);
    const type = ahs[o + 2]!;
    const end = o + ((3 + len + 3) & ~3);
    if (end > ahs.length) fail(IscsiErrorCode.AhsInvalid, `AHS length ${len} exceeds TotalAHSLength`, b);
    if (type === AhsType.ExtendedCdb) {
      if (len < 2) fail(IscsiErrorCode.AhsInvalid, 'empty Extended CDB AHS', b);
      // Rare (CDB > 16 bytes): the one place decode copies.
      cdb = Buffer.concat([cdb, ahs.subarray(o + 4, o + 3 + len)]);
    } else if (type === AhsType.BidirectionalReadDataLength) {
      if (len !== 5) fail(IscsiErrorCode.AhsInvalid, `Bidirectional AHS length ${len}, expected 5`, b);
      bidiReadLength = ahs.readUInt32BE(o + 4);
    }
    // Other types (vendor specific) are skipped.
    o = end;
  }
  const base = {
    kind: 'ScsiCommand', immediate, final: (f & 0x80) !== 0, read: (f & 0x40) !== 0, write: (f & 0x20) !== 0,
    attr: f & 0x07, lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16),
    expectedDataTransferLength: b.readUInt32BE(20), cmdSN: b.readUInt32BE(24), expStatSN: b.readUInt32BE(28),
    cdb, data: frame.data,
  } as const;
  return bidiReadLength === undefined ? base : { ...base, bidiReadLength };
}

function readSequence(b: Buffer): { statSN: number; expCmdSN: number; maxCmdSN: number } {
  return { statSN: b.readUInt32BE(24), expCmdSN: b.readUInt32BE(28), maxCmdSN: b.readUInt32BE(32) };
}

/** [SenseLength u16][sense] → the sense bytes (view). */
function senseOf(frame: PduFrame, name: string): Buffer {
  const d = frame.data;
  if (d.length === 0) return EMPTY_BUFFER;
  if (d.length < 2) fail(IscsiErrorCode.InvalidField, `${name} data segment shorter than SenseLength`, frame.bhs);
  const n = d.readUInt16BE(0);
  if (n > d.length - 2) fail(IscsiErrorCode.InvalidField, `${name} SenseLength ${n} exceeds data segment`, frame.bhs);
  return d.subarray(2, 2 + n);
}

export function decodeTargetPdu(frame: PduFrame): TargetPdu {
  const b = frame.bhs;
  const op = b[0]! & 0x3f;
  const f = b[1]!;
  switch (op) {
    case TargetOpcode.NopIn: {
      const pdu: NopIn = {
        kind: 'NopIn', lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16), ttt: b.readUInt32BE(20),
        ...readSequence(b), data: frame.data,
      };
      return pdu;
    }
    case TargetOpcode.ScsiResponse: {
      const pdu: ScsiResponse = {
        kind: 'ScsiResponse', bidiOverflow: (f & 0x10) !== 0, bidiUnderflow: (f & 0x08) !== 0,
        overflow: (f & 0x04) !== 0, underflow: (f & 0x02) !== 0, response: b[2]!, status: b[3]!,
        itt: b.readUInt32BE(16), ...readSequence(b), expDataSN: b.readUInt32BE(36),
        bidiReadResidualCount: b.readUInt32BE(40), residualCount: b.readUInt32BE(44),
        sense: senseOf(frame, 'SCSI Response'),
      };
      return pdu;
    }
    case TargetOpcode.TaskManagementResponse: {
      noData(frame, 'Task Management Response');
      const pdu: TaskManagementResponse = {
        kind: 'TaskManagementResponse', response: b[2]!, itt: b.readUInt32BE(16), ...readSequence(b),
      };
      return pdu;
    }
    case TargetOpcode.LoginResponse: {
      if ((f & 0xc0) === 0xc0) fail(IscsiErrorCode.InvalidField, 'Login Response with both T and C bits set', b);
      const pdu: LoginResponse = {
        kind: 'LoginResponse', transit: (f & 0x80) !== 0, continue: (f & 0x40) !== 0,
        csg: loginStage(f >> 2), nsg: loginStage(f), versionMax: b[2]!, versionActive: b[3]!, isid: readIsid(b),
        tsih: b.readUInt16BE(14), itt: b.readUInt32BE(16), ...readSequence(b), status: b.readUInt16BE(36),
        data: frame.data,
      };
      return pdu;
    }
    case TargetOpcode.TextResponse: {
      if ((f & 0xc0) === 0xc0) fail(IscsiErrorCode.InvalidField, 'Text Response with both F and C bits set', b);
      const pdu: TextResponse = {
        kind: 'TextResponse', final: (f & 0x80) !== 0, continue: (f & 0x40) !== 0, lun: b.readBigUInt64BE(8),
        itt: b.readUInt32BE(16), ttt: b.readUInt32BE(20), ...readSequence(b), data: frame.data,
      };
      return pdu;
    }
    case TargetOpcode.DataIn: {
      const statusPresent = (f & 0x01) !== 0;
      // RFC 7143 11.7.1: S may be set only together with F.
      if (statusPresent && (f & 0x80) === 0) fail(IscsiErrorCode.InvalidField, 'Data-In with S bit but no F bit', b);
      const pdu: DataIn = {
        kind: 'DataIn', final: (f & 0x80) !== 0, acknowledge: (f & 0x40) !== 0, overflow: (f & 0x04) !== 0,
        underflow: (f & 0x02) !== 0, statusPresent, status: b[3]!, lun: b.readBigUInt64BE(8),
        itt: b.readUInt32BE(16), ttt: b.readUInt32BE(20), ...readSequence(b), dataSN: b.readUInt32BE(36),
        bufferOffset: b.readUInt32BE(40), residualCount: b.readUInt32BE(44), data: frame.data,
      };
      return pdu;
    }
    case TargetOpcode.LogoutResponse: {
      noData(frame, 'Logout Response');
      const pdu: LogoutResponse = {
        kind: 'LogoutResponse', response: b[2]!, itt: b.readUInt32BE(16), ...readSequence(b),
        time2Wait: b.readUInt16BE(40), time2Retain: b.readUInt16BE(42),
      };
      return pdu;
    }
    case TargetOpcode.R2T: {
      noData(frame, 'R2T');
      const pdu: R2T = {
        kind: 'R2T', lun: b.readBigUInt64BE(8), itt: b.readUInt32BE(16), ttt: b.readUInt32BE(20),
        ...readSequence(b), r2tSN: b.readUInt32BE(36), bufferOffset: b.readUInt32BE(40),
        desiredDataTransferLength: b.readUInt32BE(44),
      };
      return pdu;
    }
    case TargetOpcode.AsyncMessage: {
      const pdu: AsyncMessage = {
        kind: 'AsyncMessage', lun: b.readBigUInt64BE(8), ...readSequence(b), asyncEvent: b[36]!,
        asyncVCode: b[37]!, parameter1: b.readUInt16BE(38), parameter2: b.readUInt16BE(40),
        parameter3: b.readUInt16BE(42), data: senseOf(frame, 'Async Message'),
      };
      return pdu;
    }
    case TargetOpcode.Reject: {
      const pdu: Reject = {
        kind: 'Reject', reason: b[2]!, ...readSequence(b), dataSN: b.readUInt32BE(36), rejectedHeader: frame.data,
      };
      return pdu;
    }
    default:
      return fail(IscsiErrorCode.UnknownOpcode, `unknown target opcode 0x${op.toString(16)}`, b);
  }
}

// ---- encode ----

function w16(b: Buffer, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}
function w24(b: Buffer, o: number, v: number): void {
  b[o] = v >>> 16;
  b[o + 1] = v >>> 8;
  b[o + 2] = v;
}
// Typed-array stores truncate modulo 256: no range checks, unlike writeUInt32BE.
function w32(b: Buffer, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}
function wIsid(b: Buffer, o: number, isid: bigint): void {
  w16(b, o, Number((isid >> 32n) & 0xffffn));
  w32(b, o + 2, Number(isid & 0xffff_ffffn));
}
function wSeq(b: Buffer, o: number, p: { statSN: number; expCmdSN: number; maxCmdSN: number }): void {
  w32(b, o + 24, p.statSN);
  w32(b, o + 28, p.expCmdSN);
  w32(b, o + 32, p.maxCmdSN);
}

/** Bytes of AHS this PDU encodes to (ScsiCommand only: Extended CDB and Bidirectional AHS). */
export function ahsLength(pdu: AnyPdu): number {
  if (pdu.kind !== 'ScsiCommand') return 0;
  let n = 0;
  if (pdu.cdb.length > CDB_IN_BHS) n += (4 + pdu.cdb.length - CDB_IN_BHS + 3) & ~3;
  if (pdu.bidiReadLength !== undefined) n += 8;
  return n;
}

/** BHS + AHS length, without digest. */
export function headerLength(pdu: AnyPdu): number {
  return BHS_LENGTH + ahsLength(pdu);
}

/** Length of the data segment (without padding) without building it. */
export function pduDataSegmentLength(pdu: AnyPdu): number {
  switch (pdu.kind) {
    case 'ScsiResponse':
      return pdu.sense.length === 0 ? 0 : 2 + pdu.sense.length;
    case 'AsyncMessage':
      return pdu.data.length === 0 ? 0 : 2 + pdu.data.length;
    case 'Reject':
      return pdu.rejectedHeader.length;
    case 'NopOut': case 'ScsiCommand': case 'LoginRequest': case 'TextRequest': case 'DataOut':
    case 'NopIn': case 'LoginResponse': case 'TextResponse': case 'DataIn':
      return pdu.data.length;
    default:
      return 0;
  }
}

function withSenseLength(sense: Buffer): Buffer {
  if (sense.length === 0) return EMPTY_BUFFER;
  const out = Buffer.allocUnsafe(2 + sense.length);
  w16(out, 0, sense.length);
  sense.copy(out, 2);
  return out;
}

/**
 * The data segment to send (without padding). The PDU's own Buffer when it holds one (no copy);
 * a new buffer only where a SenseLength prefix is needed (ScsiResponse sense, AsyncMessage).
 */
export function pduDataSegment(pdu: AnyPdu): Buffer {
  switch (pdu.kind) {
    case 'ScsiResponse':
      return withSenseLength(pdu.sense);
    case 'AsyncMessage':
      return withSenseLength(pdu.data);
    case 'Reject':
      return pdu.rejectedHeader;
    case 'NopOut': case 'ScsiCommand': case 'LoginRequest': case 'TextRequest': case 'DataOut':
    case 'NopIn': case 'LoginResponse': case 'TextResponse': case 'DataIn':
      return pdu.data;
    default:
      return EMPTY_BUFFER;
  }
}

/**
 * Write BHS + AHS (headerLength(pdu) bytes) into `out` at `offset`, every reserved byte zeroed.
 * `dataSegmentLength` goes into the BHS: pass pduDataSegmentLength(pdu) (or the length of pduDataSegment(pdu)).
 */
export function encodeHeaderInto(pdu: AnyPdu, dataSegmentLength: number, out: Buffer, offset: number): void {
  const ahsLen = ahsLength(pdu);
  if (ahsLen > MAX_AHS_LENGTH) throw new RangeError(`AHS of ${ahsLen} bytes exceeds ${MAX_AHS_LENGTH}`);
  if (dataSegmentLength > MAX_DATA_SEGMENT_LENGTH || dataSegmentLength < 0) {
    throw new RangeError(`DataSegmentLength ${dataSegmentLength} out of range`);
  }
  const o = offset;
  const b = out;
  b.fill(0, o, o + BHS_LENGTH + ahsLen);
  b[o + 4] = ahsLen >>> 2;
  w24(b, o + 5, dataSegmentLength);
  switch (pdu.kind) {
    case 'NopOut':
      b[o] = InitiatorOpcode.NopOut | (pdu.immediate ? IMMEDIATE : 0);
      b[o + 1] = FINAL;
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      w32(b, o + 24, pdu.cmdSN);
      w32(b, o + 28, pdu.expStatSN);
      return;
    case 'ScsiCommand': {
      b[o] = InitiatorOpcode.ScsiCommand | (pdu.immediate ? IMMEDIATE : 0);
      b[o + 1] = (pdu.final ? 0x80 : 0) | (pdu.read ? 0x40 : 0) | (pdu.write ? 0x20 : 0) | (pdu.attr & 0x07);
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.expectedDataTransferLength);
      w32(b, o + 24, pdu.cmdSN);
      w32(b, o + 28, pdu.expStatSN);
      const cdb = pdu.cdb;
      // A CDB shorter than 16 bytes is zero padded (already zeroed).
      cdb.copy(b, o + 32, 0, Math.min(cdb.length, CDB_IN_BHS));
      let a = o + BHS_LENGTH;
      if (cdb.length > CDB_IN_BHS) {
        const extra = cdb.length - CDB_IN_BHS;
        w16(b, a, extra + 1); // + the reserved byte
        b[a + 2] = AhsType.ExtendedCdb;
        cdb.copy(b, a + 4, CDB_IN_BHS);
        a += (4 + extra + 3) & ~3;
      }
      if (pdu.bidiReadLength !== undefined) {
        w16(b, a, 5);
        b[a + 2] = AhsType.BidirectionalReadDataLength;
        w32(b, a + 4, pdu.bidiReadLength);
      }
      return;
    }
    case 'TaskManagementRequest':
      b[o] = InitiatorOpcode.TaskManagementRequest | (pdu.immediate ? IMMEDIATE : 0);
      b[o + 1] = FINAL | (pdu.function & 0x7f);
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.referencedTaskTag);
      w32(b, o + 24, pdu.cmdSN);
      w32(b, o + 28, pdu.expStatSN);
      w32(b, o + 32, pdu.refCmdSN);
      w32(b, o + 36, pdu.expDataSN);
      return;
    case 'LoginRequest':
      // The I bit is always 1 on a Login Request (RFC 7143 11.12).
      b[o] = InitiatorOpcode.LoginRequest | IMMEDIATE;
      b[o + 1] = (pdu.transit ? 0x80 : 0) | (pdu.continue ? 0x40 : 0) | ((pdu.csg & 3) << 2) | (pdu.nsg & 3);
      b[o + 2] = pdu.versionMax;
      b[o + 3] = pdu.versionMin;
      wIsid(b, o + 8, pdu.isid);
      w16(b, o + 14, pdu.tsih);
      w32(b, o + 16, pdu.itt);
      w16(b, o + 20, pdu.cid);
      w32(b, o + 24, pdu.cmdSN);
      w32(b, o + 28, pdu.expStatSN);
      return;
    case 'TextRequest':
      b[o] = InitiatorOpcode.TextRequest | (pdu.immediate ? IMMEDIATE : 0);
      b[o + 1] = (pdu.final ? 0x80 : 0) | (pdu.continue ? 0x40 : 0);
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      w32(b, o + 24, pdu.cmdSN);
      w32(b, o + 28, pdu.expStatSN);
      return;
    case 'DataOut':
      b[o] = InitiatorOpcode.DataOut;
      b[o + 1] = pdu.final ? 0x80 : 0;
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      w32(b, o + 28, pdu.expStatSN);
      w32(b, o + 36, pdu.dataSN);
      w32(b, o + 40, pdu.bufferOffset);
      return;
    case 'LogoutRequest':
      b[o] = InitiatorOpcode.LogoutRequest | (pdu.immediate ? IMMEDIATE : 0);
      b[o + 1] = FINAL | (pdu.reason & 0x7f);
      w32(b, o + 16, pdu.itt);
      w16(b, o + 20, pdu.cid);
      w32(b, o + 24, pdu.cmdSN);
      w32(b, o + 28, pdu.expStatSN);
      return;
    case 'SnackRequest':
      b[o] = InitiatorOpcode.SnackRequest;
      b[o + 1] = FINAL | (pdu.type & 0x0f);
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      w32(b, o + 28, pdu.expStatSN);
      w32(b, o + 40, pdu.begRun);
      w32(b, o + 44, pdu.runLength);
      return;
    case 'NopIn':
      b[o] = TargetOpcode.NopIn;
      b[o + 1] = FINAL;
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      wSeq(b, o, pdu);
      return;
    case 'ScsiResponse':
      b[o] = TargetOpcode.ScsiResponse;
      b[o + 1] = FINAL | (pdu.bidiOverflow ? 0x10 : 0) | (pdu.bidiUnderflow ? 0x08 : 0) |
        (pdu.overflow ? 0x04 : 0) | (pdu.underflow ? 0x02 : 0);
      b[o + 2] = pdu.response;
      b[o + 3] = pdu.status;
      w32(b, o + 16, pdu.itt);
      // SNACK Tag (offset 20) stays 0: no SNACK support at ErrorRecoveryLevel 0.
      wSeq(b, o, pdu);
      w32(b, o + 36, pdu.expDataSN);
      w32(b, o + 40, pdu.bidiReadResidualCount);
      w32(b, o + 44, pdu.residualCount);
      return;
    case 'TaskManagementResponse':
      b[o] = TargetOpcode.TaskManagementResponse;
      b[o + 1] = FINAL;
      b[o + 2] = pdu.response;
      w32(b, o + 16, pdu.itt);
      wSeq(b, o, pdu);
      return;
    case 'LoginResponse':
      b[o] = TargetOpcode.LoginResponse;
      b[o + 1] = (pdu.transit ? 0x80 : 0) | (pdu.continue ? 0x40 : 0) | ((pdu.csg & 3) << 2) | (pdu.nsg & 3);
      b[o + 2] = pdu.versionMax;
      b[o + 3] = pdu.versionActive;
      wIsid(b, o + 8, pdu.isid);
      w16(b, o + 14, pdu.tsih);
      w32(b, o + 16, pdu.itt);
      wSeq(b, o, pdu);
      w16(b, o + 36, pdu.status);
      return;
    case 'TextResponse':
      b[o] = TargetOpcode.TextResponse;
      b[o + 1] = (pdu.final ? 0x80 : 0) | (pdu.continue ? 0x40 : 0);
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      wSeq(b, o, pdu);
      return;
    case 'DataIn':
      b[o] = TargetOpcode.DataIn;
      b[o + 1] = (pdu.final ? 0x80 : 0) | (pdu.acknowledge ? 0x40 : 0) | (pdu.overflow ? 0x04 : 0) |
        (pdu.underflow ? 0x02 : 0) | (pdu.statusPresent ? 0x01 : 0);
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      wSeq(b, o, pdu);
      // Status and StatSN are reserved unless the S bit is set (RFC 7143 11.7.3, 11.7.4).
      if (!pdu.statusPresent) w32(b, o + 24, 0);
      else b[o + 3] = pdu.status;
      w32(b, o + 36, pdu.dataSN);
      w32(b, o + 40, pdu.bufferOffset);
      w32(b, o + 44, pdu.residualCount);
      return;
    case 'LogoutResponse':
      b[o] = TargetOpcode.LogoutResponse;
      b[o + 1] = FINAL;
      b[o + 2] = pdu.response;
      w32(b, o + 16, pdu.itt);
      wSeq(b, o, pdu);
      w16(b, o + 40, pdu.time2Wait);
      w16(b, o + 42, pdu.time2Retain);
      return;
    case 'R2T':
      b[o] = TargetOpcode.R2T;
      b[o + 1] = FINAL;
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, pdu.itt);
      w32(b, o + 20, pdu.ttt);
      wSeq(b, o, pdu);
      w32(b, o + 36, pdu.r2tSN);
      w32(b, o + 40, pdu.bufferOffset);
      w32(b, o + 44, pdu.desiredDataTransferLength);
      return;
    case 'AsyncMessage':
      b[o] = TargetOpcode.AsyncMessage;
      b[o + 1] = FINAL;
      b.writeBigUInt64BE(pdu.lun, o + 8);
      w32(b, o + 16, RESERVED_TAG);
      wSeq(b, o, pdu);
      b[o + 36] = pdu.asyncEvent;
      b[o + 37] = pdu.asyncVCode;
      w16(b, o + 38, pdu.parameter1);
      w16(b, o + 40, pdu.parameter2);
      w16(b, o + 42, pdu.parameter3);
      return;
    case 'Reject':
      b[o] = TargetOpcode.Reject;
      b[o + 1] = FINAL;
      b[o + 2] = pdu.reason;
      w32(b, o + 16, RESERVED_TAG);
      wSeq(b, o, pdu);
      w32(b, o + 36, pdu.dataSN);
      return;
  }
}

/**
 * A new buffer holding BHS + AHS. DataSegmentLength defaults to pduDataSegmentLength(pdu).
 * The writer uses encodeHeaderInto to add the header digest in the same allocation.
 */
export function encodeBhs(pdu: AnyPdu, dataSegmentLength: number = pduDataSegmentLength(pdu)): Buffer {
  const out = Buffer.allocUnsafe(headerLength(pdu));
  encodeHeaderInto(pdu, dataSegmentLength, out, 0);
  return out;
}

/** A whole PDU without digests in one new buffer (header, data, padding). For tests and tools, not the hot path. */
export function encodePdu(pdu: AnyPdu): Buffer {
  const data = pduDataSegment(pdu);
  const h = headerLength(pdu);
  const out = Buffer.alloc(h + data.length + padLength(data.length));
  encodeHeaderInto(pdu, data.length, out, 0);
  data.copy(out, h);
  return out;
}
