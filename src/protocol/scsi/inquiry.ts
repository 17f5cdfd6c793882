// Pure encoders for INQUIRY data (SPC-4 6.6) and the VPD pages a direct-access block device reports
// (SPC-4 7.8, SBC-3 6.5). The caller truncates to the allocation length.
import { createHash } from 'node:crypto';

export const VpdPage = {
  SupportedPages: 0x00,
  UnitSerialNumber: 0x80,
  DeviceIdentification: 0x83,
  BlockLimits: 0xb0,
  BlockDeviceCharacteristics: 0xb1,
  LogicalBlockProvisioning: 0xb2,
} as const;

export const SUPPORTED_VPD_PAGES: readonly number[] = [
  VpdPage.SupportedPages,
  VpdPage.UnitSerialNumber,
  VpdPage.DeviceIdentification,
  VpdPage.BlockLimits,
  VpdPage.BlockDeviceCharacteristics,
  VpdPage.LogicalBlockProvisioning,
];

/** Version descriptors (SPC-4 table 144): SAM-5, iSCSI, SPC-4, SBC-3 (no version claimed). */
export const VERSION_DESCRIPTORS: readonly number[] = [0x00a0, 0x0960, 0x0460, 0x04c0];

export interface StandardInquiryOptions {
  /** 8, 16 and 4 ASCII characters, space padded by the caller or here. */
  readonly vendor: string;
  readonly product: string;
  readonly revision: string;
  /** Peripheral qualifier (0 connected, 3 not supported) and device type (0 direct access, 0x1f unknown). */
  readonly qualifier?: number;
  readonly deviceType?: number;
}

function ascii(text: string, length: number): Buffer {
  const b = Buffer.alloc(length, 0x20);
  b.write(text.replace(/[^\x20-\x7e]/g, ' ').slice(0, length), 0, 'ascii');
  return b;
}

/** Standard INQUIRY data: 96 bytes (version descriptors at 58..73). */
export function encodeStandardInquiry(o: StandardInquiryOptions): Buffer {
  const b = Buffer.alloc(96);
  b[0] = ((o.qualifier ?? 0) << 5) | (o.deviceType ?? 0);
  b[1] = 0x00; // RMB=0: not removable
  b[2] = 0x06; // SPC-4
  b[3] = 0x12; // HiSup=1, RESPONSE DATA FORMAT=2
  b[4] = b.length - 5;
  b[5] = 0x00; // SCCS=0, ACC=0, TPGS=0, 3PC=0, PROTECT=0
  b[6] = 0x00;
  b[7] = 0x02; // CmdQue=1
  ascii(o.vendor, 8).copy(b, 8);
  ascii(o.product, 16).copy(b, 16);
  ascii(o.revision, 4).copy(b, 32);
  VERSION_DESCRIPTORS.forEach((d, i) => b.writeUInt16BE(d, 58 + 2 * i));
  return b;
}

function vpd(pageCode: number, payload: Buffer, deviceType = 0): Buffer {
  const b = Buffer.alloc(4 + payload.length);
  b[0] = deviceType;
  b[1] = pageCode;
  b.writeUInt16BE(payload.length, 2);
  payload.copy(b, 4);
  return b;
}

export function encodeSupportedVpdPages(): Buffer {
  return vpd(VpdPage.SupportedPages, Buffer.from(SUPPORTED_VPD_PAGES));
}

export function encodeUnitSerialNumber(serial: string): Buffer {
  return vpd(VpdPage.UnitSerialNumber, ascii(serial, serial.length));
}

/**
 * NAA IEEE Registered Extended (NAA 6, SPC-4 7.8.6.6.4) identifier: 4-bit NAA, 24-bit IEEE company ID,
 * then 100 bits derived from a SHA-256 of the serial so it is stable across restarts.
 */
export function naaFromSerial(serial: string, companyId: number): Buffer {
  const hash = createHash('sha256').update(serial).digest();
  const b = Buffer.alloc(16);
  b[0] = 0x60 | ((companyId >> 20) & 0x0f);
  b[1] = (companyId >> 12) & 0xff;
  b[2] = (companyId >> 4) & 0xff;
  b[3] = ((companyId & 0x0f) << 4) | (hash[0]! & 0x0f);
  hash.copy(b, 4, 1, 13);
  return b;
}

export interface DeviceIdentificationOptions {
  readonly naa: Buffer;
  readonly vendor: string;
  readonly serial: string;
  readonly relativeTargetPort: number;
  readonly targetPortGroup: number;
  /** SPC-4 protocol identifier for PIV designators (5 = iSCSI). */
  readonly protocolIdentifier: number;
}

function designator(codeSet: number, piv: boolean, association: number, type: number, data: Buffer, protocol = 0): Buffer {
  const b = Buffer.alloc(4 + data.length);
  b[0] = ((piv ? protocol : 0) << 4) | codeSet;
  b[1] = (piv ? 0x80 : 0) | (association << 4) | type;
  b[3] = data.length;
  data.copy(b, 4);
  return b;
}

export function encodeDeviceIdentification(o: DeviceIdentificationOptions): Buffer {
  const port = Buffer.alloc(4);
  port.writeUInt16BE(o.relativeTargetPort & 0xffff, 2);
  const group = Buffer.alloc(4);
  group.writeUInt16BE(o.targetPortGroup & 0xffff, 2);
  return vpd(VpdPage.DeviceIdentification, Buffer.concat([
    designator(1, false, 0, 3, o.naa), // NAA, logical unit
    designator(2, false, 0, 1, Buffer.concat([ascii(o.vendor, 8), Buffer.from(o.serial, 'ascii')])), // T10 vendor ID
    designator(1, true, 1, 4, port, o.protocolIdentifier), // relative target port
    designator(1, true, 1, 5, group, o.protocolIdentifier), // target port group
  ]));
}

export interface BlockLimits {
  readonly maxCompareAndWriteLength: number;
  readonly optimalTransferLengthGranularity: number;
  readonly maxTransferLength: number;
  readonly optimalTransferLength: number;
  readonly maxUnmapLbaCount: number;
  readonly maxUnmapBlockDescriptorCount: number;
  readonly optimalUnmapGranularity: number;
  readonly maxWriteSameLength: bigint;
  readonly maxAtomicTransferLength: number;
  readonly atomicAlignment: number;
  readonly atomicTransferLengthGranularity: number;
}

export function encodeBlockLimits(l: BlockLimits): Buffer {
  const p = Buffer.alloc(0x3c);
  // byte 0 (page byte 4): WSNZ=0 — a WRITE SAME with 0 blocks writes to the end of the medium.
  p[1] = l.maxCompareAndWriteLength;
  p.writeUInt16BE(l.optimalTransferLengthGranularity, 2);
  p.writeUInt32BE(l.maxTransferLength, 4);
  p.writeUInt32BE(l.optimalTransferLength, 8);
  p.writeUInt32BE(0, 12); // MAXIMUM PREFETCH LENGTH
  p.writeUInt32BE(l.maxUnmapLbaCount, 16);
  p.writeUInt32BE(l.maxUnmapBlockDescriptorCount, 20);
  p.writeUInt32BE(l.optimalUnmapGranularity, 24);
  p.writeUInt32BE(0, 28); // UGAVALID=0
  p.writeBigUInt64BE(l.maxWriteSameLength, 32);
  // SBC-4 atomic fields; atomic boundaries are not supported (both boundary fields stay 0).
  p.writeUInt32BE(l.maxAtomicTransferLength, 40);
  p.writeUInt32BE(l.atomicAlignment, 44);
  p.writeUInt32BE(l.atomicTransferLengthGranularity, 48);
  return vpd(VpdPage.BlockLimits, p);
}

export function encodeBlockDeviceCharacteristics(): Buffer {
  const p = Buffer.alloc(0x3c);
  p.writeUInt16BE(0x0001, 0); // MEDIUM ROTATION RATE: non-rotating medium
  // WABEREQ=01b: after SANITIZE BLOCK ERASE reads succeed (deallocated blocks read as zeroes);
  // WACEREQ=00b: CRYPTOGRAPHIC ERASE is not supported.
  p[3] = 0x40;
  return vpd(VpdPage.BlockDeviceCharacteristics, p);
}

export function encodeLogicalBlockProvisioning(): Buffer {
  const p = Buffer.alloc(4);
  p[0] = 0; // THRESHOLD EXPONENT
  p[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ=001b
  p[2] = 0x02; // PROVISIONING TYPE: thin
  return vpd(VpdPage.LogicalBlockProvisioning, p);
}

/** INQUIRY data for a LUN that is not supported: peripheral qualifier 011b, device type 1Fh. */
export function encodeUnsupportedLunInquiry(o: StandardInquiryOptions): Buffer {
  return encodeStandardInquiry({ ...o, qualifier: 3, deviceType: 0x1f });
}
