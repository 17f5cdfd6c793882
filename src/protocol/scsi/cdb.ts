// Pure CDB decoding (SPC-4 / SBC-3): operation codes, CDB length by group code, per-command CDB usage
// masks (which drive both reserved-bit validation and REPORT SUPPORTED OPERATION CODES), and decoders
// that turn CDB bytes into normalized objects. Validation failures throw CheckCondition with a
// sense-key-specific field pointer at the offending byte/bit.
import { invalidCdbField } from './sense.js';

export const Op = {
  TestUnitReady: 0x00,
  RequestSense: 0x03,
  Read6: 0x08,
  Write6: 0x0a,
  Inquiry: 0x12,
  ModeSelect6: 0x15,
  Reserve6: 0x16,
  Release6: 0x17,
  ModeSense6: 0x1a,
  StartStopUnit: 0x1b,
  PreventAllowMediumRemoval: 0x1e,
  ReadCapacity10: 0x25,
  Read10: 0x28,
  Write10: 0x2a,
  WriteAndVerify10: 0x2e,
  Verify10: 0x2f,
  PreFetch10: 0x34,
  SynchronizeCache10: 0x35,
  ReadDefectData10: 0x37,
  WriteSame10: 0x41,
  Unmap: 0x42,
  Sanitize: 0x48,
  ModeSelect10: 0x55,
  Reserve10: 0x56,
  Release10: 0x57,
  ModeSense10: 0x5a,
  PersistentReserveIn: 0x5e,
  PersistentReserveOut: 0x5f,
  Read16: 0x88,
  CompareAndWrite: 0x89,
  Write16: 0x8a,
  OrWrite16: 0x8b,
  WriteAndVerify16: 0x8e,
  Verify16: 0x8f,
  PreFetch16: 0x90,
  SynchronizeCache16: 0x91,
  WriteSame16: 0x93,
  WriteAtomic16: 0x9c,
  ServiceActionIn16: 0x9e,
  ReportLuns: 0xa0,
  MaintenanceIn: 0xa3,
  Read12: 0xa8,
  Write12: 0xaa,
  WriteAndVerify12: 0xae,
  Verify12: 0xaf,
  ReadDefectData12: 0xb7,
} as const;

/** SANITIZE service actions (SBC-4 5.30). */
export const SanitizeAction = {
  Overwrite: 0x01,
  BlockErase: 0x02,
  CryptographicErase: 0x03,
  ExitFailureMode: 0x1f,
} as const;

export const ServiceAction = {
  ReadCapacity16: 0x10,
  GetLbaStatus: 0x12,
  ReportSupportedOperationCodes: 0x0c,
  ReportSupportedTaskManagementFunctions: 0x0d,
} as const;

/** CDB length from the operation code's group code (SPC-4 4.2.5.1); undefined for variable/vendor groups. */
export function cdbLength(opcode: number): number | undefined {
  switch (opcode >> 5) {
    case 0: return 6;
    case 1:
    case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return undefined;
  }
}

/** Most significant set bit (field pointers name a field by its most significant bit). */
export function highestBit(value: number): number {
  return 31 - Math.clz32(value);
}

const FF4 = [0xff, 0xff, 0xff, 0xff] as const;
const FF8 = [...FF4, ...FF4] as const;

/**
 * CDB usage data (SPC-4 6.35.3): byte 0 is the opcode, then one mask per byte with a 1 for every bit the
 * device server evaluates. Bits outside the mask are reserved: a CDB with any of them set is rejected.
 * The control byte's mask is 0: NACA and LINK are unsupported.
 */
export const CdbUsage = {
  testUnitReady: [0x00, 0, 0, 0, 0, 0],
  requestSense: [0x03, 0x01, 0, 0, 0xff, 0],
  read6: [0x08, 0x1f, 0xff, 0xff, 0xff, 0],
  write6: [0x0a, 0x1f, 0xff, 0xff, 0xff, 0],
  inquiry: [0x12, 0x01, 0xff, 0xff, 0xff, 0],
  modeSelect6: [0x15, 0x11, 0, 0, 0xff, 0],
  reserve6: [0x16, 0, 0, 0, 0, 0],
  release6: [0x17, 0, 0, 0, 0, 0],
  modeSense6: [0x1a, 0x08, 0xff, 0xff, 0xff, 0],
  startStopUnit: [0x1b, 0x01, 0, 0x0f, 0xf7, 0],
  preventAllow: [0x1e, 0, 0, 0, 0x03, 0],
  readCapacity10: [0x25, 0, ...FF4, 0, 0, 0x01, 0],
  read10: [0x28, 0xfe, ...FF4, 0x3f, 0xff, 0xff, 0],
  write10: [0x2a, 0xfa, ...FF4, 0x3f, 0xff, 0xff, 0],
  writeAndVerify10: [0x2e, 0xf6, ...FF4, 0x3f, 0xff, 0xff, 0],
  verify10: [0x2f, 0xf6, ...FF4, 0x3f, 0xff, 0xff, 0],
  preFetch10: [0x34, 0x02, ...FF4, 0x3f, 0xff, 0xff, 0],
  synchronizeCache10: [0x35, 0x06, ...FF4, 0x3f, 0xff, 0xff, 0],
  readDefectData10: [0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0],
  writeSame10: [0x41, 0xf8, ...FF4, 0x3f, 0xff, 0xff, 0],
  unmap: [0x42, 0x01, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0],
  modeSelect10: [0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
  reserve10: [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  release10: [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  modeSense10: [0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
  read16: [0x88, 0xfe, ...FF8, ...FF4, 0x3f, 0],
  compareAndWrite: [0x89, 0xfa, ...FF8, 0, 0, 0, 0xff, 0x3f, 0],
  write16: [0x8a, 0xfa, ...FF8, ...FF4, 0x3f, 0],
  orWrite16: [0x8b, 0xfa, ...FF8, ...FF4, 0x3f, 0],
  writeAndVerify16: [0x8e, 0xf6, ...FF8, ...FF4, 0x3f, 0],
  verify16: [0x8f, 0xf6, ...FF8, ...FF4, 0x3f, 0],
  preFetch16: [0x90, 0x02, ...FF8, ...FF4, 0x3f, 0],
  synchronizeCache16: [0x91, 0x06, ...FF8, ...FF4, 0x3f, 0],
  writeSame16: [0x93, 0xf9, ...FF8, ...FF4, 0x3f, 0],
  writeAtomic16: [0x9c, 0xf8, ...FF8, 0xff, 0xff, 0xff, 0xff, 0x3f, 0],
  readCapacity16: [0x9e, 0x10, ...FF8, ...FF4, 0x01, 0],
  getLbaStatus: [0x9e, 0x12, ...FF8, ...FF4, 0, 0],
  reportLuns: [0xa0, 0, 0xff, 0, 0, 0, ...FF4, 0, 0],
  reportSupportedOperationCodes: [0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, ...FF4, 0, 0],
  reportSupportedTmf: [0xa3, 0x0d, 0x80, 0, 0, 0, ...FF4, 0, 0],
  read12: [0xa8, 0xfe, ...FF4, ...FF4, 0x3f, 0],
  write12: [0xaa, 0xfa, ...FF4, ...FF4, 0x3f, 0],
  writeAndVerify12: [0xae, 0xf6, ...FF4, ...FF4, 0x3f, 0],
  verify12: [0xaf, 0xf6, ...FF4, ...FF4, 0x3f, 0],
  readDefectData12: [0xb7, 0x1f, ...FF4, ...FF4, 0, 0],
} as const satisfies Record<string, readonly number[]>;

/** SANITIZE usage for one service action: IMMED, AUSE, PARAMETER LIST LENGTH (ZNR is not supported). */
export function sanitizeUsage(serviceAction: number): readonly number[] {
  return [Op.Sanitize, 0x80 | 0x20 | serviceAction, 0, 0, 0, 0, 0, 0xff, 0xff, 0];
}

/** PERSISTENT RESERVE IN/OUT usage for one service action (the reservations module validates the rest). */
export function persistentReserveUsage(opcode: number, serviceAction: number): readonly number[] {
  return opcode === Op.PersistentReserveIn
    ? [opcode, serviceAction, 0, 0, 0, 0, 0, 0xff, 0xff, 0]
    : [opcode, serviceAction, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0];
}

/**
 * Reject reserved bits: any bit outside `usage` in bytes 1..n-1. The control byte's vendor-specific
 * bits 7-6 are ignored; its NACA and LINK bits are rejected (we support neither ACA nor linked commands).
 */
export function checkReservedBits(cdb: Buffer, usage: readonly number[]): void {
  const last = usage.length - 1;
  for (let i = 1; i <= last; i++) {
    let bad = (cdb[i] ?? 0) & ~usage[i]!;
    if (i === last) bad &= 0x3f;
    if (bad !== 0) throw invalidCdbField(i, highestBit(bad));
  }
}

// ---- block commands ---------------------------------------------------------------------------

/** READ/WRITE/VERIFY/WRITE AND VERIFY/ORWRITE (6/10/12/16) fields. */
export interface RwCdb {
  readonly lba: bigint;
  /** Transfer (or verification) length in blocks; READ(6)/WRITE(6) 0 already mapped to 256. */
  readonly blocks: number;
  readonly dpo: boolean;
  readonly fua: boolean;
  /** RDPROTECT / WRPROTECT / VRPROTECT / ORPROTECT (bits 7-5 of byte 1). */
  readonly protect: number;
  /** BYTCHK (bits 2-1 of byte 1) for VERIFY and WRITE AND VERIFY. */
  readonly bytchk: number;
  /** Offset of the LBA and length fields, for field pointers. */
  readonly lbaByte: number;
  readonly lengthByte: number;
}

export function decodeRw(cdb: Buffer): RwCdb {
  switch (cdbLength(cdb[0]!)) {
    case 6:
      return {
        lba: BigInt(((cdb[1]! & 0x1f) << 16) | cdb.readUInt16BE(2)),
        blocks: cdb[4]! === 0 ? 256 : cdb[4]!,
        dpo: false, fua: false, protect: 0, bytchk: 0, lbaByte: 1, lengthByte: 4,
      };
    case 10:
      return rwFlags(cdb, BigInt(cdb.readUInt32BE(2)), cdb.readUInt16BE(7), 2, 7);
    case 12:
      return rwFlags(cdb, BigInt(cdb.readUInt32BE(2)), cdb.readUInt32BE(6), 2, 6);
    default:
      return rwFlags(cdb, cdb.readBigUInt64BE(2), cdb.readUInt32BE(10), 2, 10);
  }
}

function rwFlags(cdb: Buffer, lba: bigint, blocks: number, lbaByte: number, lengthByte: number): RwCdb {
  const b1 = cdb[1]!;
  return {
    lba, blocks, lbaByte, lengthByte,
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
    protect: b1 >> 5,
    bytchk: (b1 >> 1) & 0x3,
  };
}

export interface CompareAndWriteCdb {
  readonly lba: bigint;
  readonly blocks: number;
  readonly dpo: boolean;
  readonly fua: boolean;
  readonly protect: number;
}

export function decodeCompareAndWrite(cdb: Buffer): CompareAndWriteCdb {
  const b1 = cdb[1]!;
  return { lba: cdb.readBigUInt64BE(2), blocks: cdb[13]!, dpo: (b1 & 0x10) !== 0, fua: (b1 & 0x08) !== 0, protect: b1 >> 5 };
}

export interface WriteSameCdb {
  readonly lba: bigint;
  /** 0 means "to the end of the medium" (we report WSNZ=0). */
  readonly blocks: number;
  readonly protect: number;
  readonly anchor: boolean;
  readonly unmap: boolean;
  /** No data-out buffer: write zeroes (WRITE SAME(16) only). */
  readonly ndob: boolean;
  readonly lengthByte: number;
}

export function decodeWriteSame(cdb: Buffer): WriteSameCdb {
  const b1 = cdb[1]!;
  const is16 = cdb[0] === Op.WriteSame16;
  return {
    lba: is16 ? cdb.readBigUInt64BE(2) : BigInt(cdb.readUInt32BE(2)),
    blocks: is16 ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7),
    protect: b1 >> 5,
    anchor: (b1 & 0x10) !== 0,
    unmap: (b1 & 0x08) !== 0,
    ndob: is16 && (b1 & 0x01) !== 0,
    lengthByte: is16 ? 10 : 7,
  };
}

export interface WriteAtomicCdb {
  readonly lba: bigint;
  readonly blocks: number;
  readonly atomicBoundary: number;
  readonly fua: boolean;
  readonly protect: number;
}

/** WRITE ATOMIC(16) (SBC-4 5.48): LBA 2..9, ATOMIC BOUNDARY 10..11, TRANSFER LENGTH 12..13. */
export function decodeWriteAtomic(cdb: Buffer): WriteAtomicCdb {
  const b1 = cdb[1]!;
  return {
    lba: cdb.readBigUInt64BE(2),
    atomicBoundary: cdb.readUInt16BE(10),
    blocks: cdb.readUInt16BE(12),
    fua: (b1 & 0x08) !== 0,
    protect: b1 >> 5,
  };
}

export interface ReadDefectDataCdb {
  readonly plist: boolean;
  readonly glist: boolean;
  readonly format: number;
  readonly allocationLength: number;
  readonly twelve: boolean;
}

/** READ DEFECT DATA(10)/(12) (SBC-3 5.12/5.13). */
export function decodeReadDefectData(cdb: Buffer): ReadDefectDataCdb {
  const twelve = cdb[0] === Op.ReadDefectData12;
  const flags = twelve ? cdb[1]! : cdb[2]!;
  return {
    twelve,
    plist: (flags & 0x10) !== 0,
    glist: (flags & 0x08) !== 0,
    format: flags & 0x07,
    allocationLength: twelve ? cdb.readUInt32BE(6) : cdb.readUInt16BE(7),
  };
}

export interface SanitizeCdb {
  readonly immed: boolean;
  readonly ause: boolean;
  readonly serviceAction: number;
  readonly parameterListLength: number;
}

export function decodeSanitize(cdb: Buffer): SanitizeCdb {
  const b1 = cdb[1]!;
  return {
    immed: (b1 & 0x80) !== 0,
    ause: (b1 & 0x20) !== 0,
    serviceAction: b1 & 0x1f,
    parameterListLength: cdb.readUInt16BE(7),
  };
}

/** SYNCHRONIZE CACHE and PRE-FETCH (10/16). */
export interface CacheRangeCdb {
  readonly lba: bigint;
  /** 0 means "through the last LBA". */
  readonly blocks: number;
  readonly immed: boolean;
}

export function decodeCacheRange(cdb: Buffer): CacheRangeCdb {
  const is16 = cdbLength(cdb[0]!) === 16;
  return {
    lba: is16 ? cdb.readBigUInt64BE(2) : BigInt(cdb.readUInt32BE(2)),
    blocks: is16 ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7),
    immed: (cdb[1]! & 0x02) !== 0,
  };
}

export interface UnmapCdb {
  readonly anchor: boolean;
  readonly parameterListLength: number;
}

export function decodeUnmap(cdb: Buffer): UnmapCdb {
  return { anchor: (cdb[1]! & 0x01) !== 0, parameterListLength: cdb.readUInt16BE(7) };
}

export interface UnmapDescriptor {
  readonly lba: bigint;
  readonly blocks: number;
}

export interface GetLbaStatusCdb {
  readonly lba: bigint;
  readonly allocationLength: number;
}

export function decodeGetLbaStatus(cdb: Buffer): GetLbaStatusCdb {
  return { lba: cdb.readBigUInt64BE(2), allocationLength: cdb.readUInt32BE(10) };
}

export interface ReadCapacityCdb {
  readonly lba: bigint;
  readonly pmi: boolean;
  /** READ CAPACITY(16) only; READ CAPACITY(10) returns 8 bytes regardless. */
  readonly allocationLength: number;
}

export function decodeReadCapacity(cdb: Buffer): ReadCapacityCdb {
  if (cdb[0] === Op.ReadCapacity10) {
    return { lba: BigInt(cdb.readUInt32BE(2)), pmi: (cdb[8]! & 0x01) !== 0, allocationLength: 8 };
  }
  return { lba: cdb.readBigUInt64BE(2), pmi: (cdb[14]! & 0x01) !== 0, allocationLength: cdb.readUInt32BE(10) };
}

// ---- primary commands ---------------------------------------------------------------------------

export interface InquiryCdb {
  readonly evpd: boolean;
  readonly pageCode: number;
  readonly allocationLength: number;
}

export function decodeInquiry(cdb: Buffer): InquiryCdb {
  const evpd = (cdb[1]! & 0x01) !== 0;
  const pageCode = cdb[2]!;
  // SPC-4 6.6: PAGE CODE must be zero when EVPD is zero.
  if (!evpd && pageCode !== 0) throw invalidCdbField(2, 7);
  return { evpd, pageCode, allocationLength: cdb.readUInt16BE(3) };
}

export interface ModeSenseCdb {
  readonly dbd: boolean;
  readonly llbaa: boolean;
  /** 0 current, 1 changeable, 2 default, 3 saved. */
  readonly pageControl: number;
  readonly pageCode: number;
  readonly subpageCode: number;
  readonly allocationLength: number;
  readonly ten: boolean;
}

export function decodeModeSense(cdb: Buffer): ModeSenseCdb {
  const ten = cdb[0] === Op.ModeSense10;
  return {
    ten,
    dbd: (cdb[1]! & 0x08) !== 0,
    llbaa: ten && (cdb[1]! & 0x10) !== 0,
    pageControl: cdb[2]! >> 6,
    pageCode: cdb[2]! & 0x3f,
    subpageCode: cdb[3]!,
    allocationLength: ten ? cdb.readUInt16BE(7) : cdb[4]!,
  };
}

export interface ModeSelectCdb {
  readonly pf: boolean;
  readonly sp: boolean;
  readonly parameterListLength: number;
  readonly ten: boolean;
}

export function decodeModeSelect(cdb: Buffer): ModeSelectCdb {
  const ten = cdb[0] === Op.ModeSelect10;
  return {
    ten,
    pf: (cdb[1]! & 0x10) !== 0,
    sp: (cdb[1]! & 0x01) !== 0,
    parameterListLength: ten ? cdb.readUInt16BE(7) : cdb[4]!,
  };
}

export interface ReportLunsCdb {
  readonly selectReport: number;
  readonly allocationLength: number;
}

export function decodeReportLuns(cdb: Buffer): ReportLunsCdb {
  const selectReport = cdb[2]!;
  if (selectReport > 2) throw invalidCdbField(2, 7);
  const allocationLength = cdb.readUInt32BE(6);
  // SPC-4 6.33: an allocation length below 16 is an error.
  if (allocationLength < 16) throw invalidCdbField(6, 7);
  return { selectReport, allocationLength };
}

export interface RequestSenseCdb {
  readonly desc: boolean;
  readonly allocationLength: number;
}

export function decodeRequestSense(cdb: Buffer): RequestSenseCdb {
  return { desc: (cdb[1]! & 0x01) !== 0, allocationLength: cdb[4]! };
}

export interface StartStopUnitCdb {
  readonly immed: boolean;
  readonly powerConditionModifier: number;
  readonly powerCondition: number;
  readonly noFlush: boolean;
  readonly loej: boolean;
  readonly start: boolean;
}

export function decodeStartStopUnit(cdb: Buffer): StartStopUnitCdb {
  const b4 = cdb[4]!;
  return {
    immed: (cdb[1]! & 0x01) !== 0,
    powerConditionModifier: cdb[3]! & 0x0f,
    powerCondition: b4 >> 4,
    noFlush: (b4 & 0x04) !== 0,
    loej: (b4 & 0x02) !== 0,
    start: (b4 & 0x01) !== 0,
  };
}

export interface ReportSupportedOpcodesCdb {
  readonly rctd: boolean;
  readonly reportingOptions: number;
  readonly requestedOpcode: number;
  readonly requestedServiceAction: number;
  readonly allocationLength: number;
}

export function decodeReportSupportedOpcodes(cdb: Buffer): ReportSupportedOpcodesCdb {
  const reportingOptions = cdb[2]! & 0x07;
  if (reportingOptions > 3) throw invalidCdbField(2, 2);
  return {
    rctd: (cdb[2]! & 0x80) !== 0,
    reportingOptions,
    requestedOpcode: cdb[3]!,
    requestedServiceAction: cdb.readUInt16BE(4),
    allocationLength: cdb.readUInt32BE(6),
  };
}

export interface ReportSupportedTmfCdb {
  readonly repd: boolean;
  readonly allocationLength: number;
}

export function decodeReportSupportedTmf(cdb: Buffer): ReportSupportedTmfCdb {
  return { repd: (cdb[2]! & 0x80) !== 0, allocationLength: cdb.readUInt32BE(6) };
}

/** PERSISTENT RESERVE OUT parameter list length (bytes 5..8). */
export function persistentReserveOutLength(cdb: Buffer): number {
  return cdb.readUInt32BE(5);
}

// ---- LUN field (SAM-5 4.7) --------------------------------------------------------------------

/**
 * Decode an 8-byte LUN field using single-level peripheral (00b) or flat (01b) addressing.
 * Returns the LUN number or undefined for formats and levels we don't address.
 */
export function decodeLun(lun: bigint): number | undefined {
  const first = Number((lun >> 48n) & 0xffffn);
  if ((lun & 0xffffffffffffn) !== 0n) return undefined; // second..fourth level present
  const method = first >> 14;
  if (method === 0) return (first >> 8) & 0x3f ? undefined : first & 0xff; // bus identifier must be 0
  if (method === 1) return first & 0x3fff;
  return undefined;
}

/** Encode a LUN number for REPORT LUNS (peripheral addressing below 256, flat above). */
export function encodeLun(lun: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16BE(lun < 256 ? lun : 0x4000 | (lun & 0x3fff), 0);
  return b;
}
