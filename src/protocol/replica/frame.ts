// The target↔replica data-path frame: a fixed 64-byte little-endian header, then an optional payload.
// Pure encode/decode, no I/O. Both ends (src/target/volume, src/replica) import only this module, so
// the store's error codes are mapped here by their string values, not by importing the replica.
//
//  0 magic u32   4 version u8   5 opcode u8   6 flags u16   8 status u16   10 reserved u16
// 12 tag u32    16 epoch u64   24 ioSeq u64   32 offset u64  40 length u32  44 payloadLength u32
// 48 payloadCrc u32 (CRC32C of the payload)   52 reserved 8 bytes   60 headerCrc u32 (CRC32C of 0..59)
import { crc32c } from '../iscsi/digest.js';

export const FRAME_MAGIC = 0x52545343;
export const FRAME_VERSION = 1;
export const FRAME_HEADER_LENGTH = 64;
/** Largest I/O a single READ/WRITE may carry. */
export const MAX_IO_LENGTH = 16 * 1024 * 1024;
/** Default payload cap: a maximal READ response (data + io_seq trailer) with room to spare. */
export const DEFAULT_MAX_PAYLOAD_LENGTH = MAX_IO_LENGTH + 256 * 1024;
/** HELLO payloads are small JSON documents. */
export const MAX_HELLO_PAYLOAD_LENGTH = 64 * 1024;

export const Opcode = {
  Hello: 1,
  Read: 2,
  Write: 3,
  Sync: 4,
  Unmap: 5,
  WriteZeroes: 6,
  MapStatus: 7,
  Ping: 8,
} as const;
export type OpcodeValue = (typeof Opcode)[keyof typeof Opcode];

export const FrameFlag = {
  Response: 1,
  Fua: 2,
} as const;

/** Response status codes: stable wire values. */
export const ReplicaStatus = {
  Ok: 0,
  BadPayloadCrc: 1,
  StaleEpoch: 2,
  OutOfRange: 3,
  UnknownOpcode: 4,
  Misaligned: 5,
  MediumError: 6,
  IoError: 7,
  NoSpace: 8,
  NotReady: 9,
  Invalid: 10,
  Refused: 11,
  Closed: 12,
} as const;
export type ReplicaStatusValue = (typeof ReplicaStatus)[keyof typeof ReplicaStatus];
export type ReplicaStatusName = keyof typeof ReplicaStatus;

const STATUS_NAMES: readonly ReplicaStatusName[] = (() => {
  const names: ReplicaStatusName[] = [];
  for (const [name, value] of Object.entries(ReplicaStatus)) names[value] = name as ReplicaStatusName;
  return names;
})();

/** The name of a status value, or undefined for a value this version does not know. */
export function statusName(status: number): ReplicaStatusName | undefined {
  return STATUS_NAMES[status];
}

export interface FrameHeader {
  readonly opcode: number;
  readonly flags: number;
  readonly status: number;
  readonly tag: number;
  readonly epoch: number;
  readonly ioSeq: number;
  readonly offset: number;
  readonly length: number;
  readonly payloadLength: number;
  readonly payloadCrc: number;
}

/** Header fields a sender chooses; payload length and CRCs are derived. */
export interface FrameFields {
  readonly opcode: number;
  readonly flags?: number;
  readonly status?: number;
  readonly tag: number;
  readonly epoch?: number;
  readonly ioSeq?: number;
  readonly offset?: number;
  readonly length?: number;
}

export const FrameErrorCode = {
  BadMagic: 'BAD_MAGIC',
  BadVersion: 'BAD_VERSION',
  BadHeaderCrc: 'BAD_HEADER_CRC',
  BadU64: 'BAD_U64',
  PayloadTooLarge: 'PAYLOAD_TOO_LARGE',
} as const;
export type FrameErrorCodeValue = (typeof FrameErrorCode)[keyof typeof FrameErrorCode];

/** A broken header: the framing is lost and the connection must close. */
export class FrameError extends Error {
  readonly code: FrameErrorCodeValue;
  constructor(code: FrameErrorCodeValue, message: string) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

const TWO_32 = 0x1_0000_0000;
/** High word of Number.MAX_SAFE_INTEGER (2^53 - 1). */
const MAX_SAFE_HIGH = 0x1f_ffff;

function writeU64(buf: Buffer, value: number, at: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${field} must be a safe non-negative integer, got ${value}`);
  buf.writeUInt32LE(value % TWO_32, at);
  buf.writeUInt32LE(Math.floor(value / TWO_32), at + 4);
}

/** -1 when the value does not fit a safe integer. */
function readU64(buf: Buffer, at: number): number {
  const high = buf.readUInt32LE(at + 4);
  if (high > MAX_SAFE_HIGH) return -1;
  return high * TWO_32 + buf.readUInt32LE(at);
}

function u32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw new RangeError(`${field} must be a u32, got ${value}`);
  return value;
}

function u16(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) throw new RangeError(`${field} must be a u16, got ${value}`);
  return value;
}

/** The 64-byte header for a payload of `payloadLength` bytes whose CRC32C is `payloadCrc`. */
export function encodeHeader(fields: FrameFields, payloadLength = 0, payloadCrc = 0): Buffer {
  // allocUnsafe is fine: every byte is written below.
  const h = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
  h.writeUInt32LE(FRAME_MAGIC, 0);
  h[4] = FRAME_VERSION;
  h[5] = fields.opcode & 0xff;
  h.writeUInt16LE(u16(fields.flags ?? 0, 'flags'), 6);
  h.writeUInt16LE(u16(fields.status ?? 0, 'status'), 8);
  h.writeUInt16LE(0, 10);
  h.writeUInt32LE(u32(fields.tag, 'tag'), 12);
  writeU64(h, fields.epoch ?? 0, 16, 'epoch');
  writeU64(h, fields.ioSeq ?? 0, 24, 'ioSeq');
  writeU64(h, fields.offset ?? 0, 32, 'offset');
  h.writeUInt32LE(u32(fields.length ?? 0, 'length'), 40);
  h.writeUInt32LE(u32(payloadLength, 'payloadLength'), 44);
  h.writeUInt32LE(payloadLength === 0 ? 0 : payloadCrc >>> 0, 48);
  h.fill(0, 52, 60);
  h.writeUInt32LE(crc32c(h.subarray(0, 60)), 60);
  return h;
}

/**
 * [header, ...payload parts], to be written in order (cork + write each, or writev). The payload may be
 * several parts (a READ response's data and its io_seq trailer) so nothing is concatenated.
 */
export function encodeFrame(fields: FrameFields, ...payload: Buffer[]): Buffer[] {
  return encodeFrameWithCrc(fields, undefined, ...payload);
}

/**
 * encodeFrame when the CRC32C of the first part is already known (a store read's verified
 * checksum): the payload CRC continues from it over the other parts, with no second pass.
 */
export function encodeFrameWithCrc(fields: FrameFields, firstPartCrc: number | undefined, ...payload: Buffer[]): Buffer[] {
  let length = 0;
  let crc = 0;
  for (let i = 0; i < payload.length; i++) {
    const part = payload[i]!;
    if (part.length === 0) continue;
    if (length > 0) crc = crc32c(part, crc);
    else crc = i === 0 && firstPartCrc !== undefined ? firstPartCrc : crc32c(part);
    length += part.length;
  }
  return [encodeHeader(fields, length, crc), ...payload];
}

/** Decode and validate a 64-byte header (magic, version, header CRC, u64 range); throws FrameError. */
export function decodeHeader(h: Buffer): FrameHeader {
  if (h.length < FRAME_HEADER_LENGTH) throw new RangeError(`header needs ${FRAME_HEADER_LENGTH} bytes, got ${h.length}`);
  const magic = h.readUInt32LE(0);
  if (magic !== FRAME_MAGIC) throw new FrameError(FrameErrorCode.BadMagic, `bad frame magic 0x${magic.toString(16)}`);
  if (h[4] !== FRAME_VERSION) throw new FrameError(FrameErrorCode.BadVersion, `unsupported frame version ${h[4]}`);
  const received = h.readUInt32LE(60);
  const computed = crc32c(h.subarray(0, 60));
  if (received !== computed) {
    throw new FrameError(FrameErrorCode.BadHeaderCrc,
      `header CRC mismatch: received 0x${received.toString(16)}, computed 0x${computed.toString(16)}`);
  }
  const epoch = readU64(h, 16);
  const ioSeq = readU64(h, 24);
  const offset = readU64(h, 32);
  if (epoch < 0 || ioSeq < 0 || offset < 0) throw new FrameError(FrameErrorCode.BadU64, 'u64 field above 2^53 - 1');
  return {
    opcode: h[5]!,
    flags: h.readUInt16LE(6),
    status: h.readUInt16LE(8),
    tag: h.readUInt32LE(12),
    epoch,
    ioSeq,
    offset,
    length: h.readUInt32LE(40),
    payloadLength: h.readUInt32LE(44),
    payloadCrc: h.readUInt32LE(48),
  };
}

// ---- Payloads -------------------------------------------------------------------------------------

/** The replica's HELLO: who it is and where its data stands. */
export interface ReplicaHello {
  readonly volumeName: string;
  readonly volumeUuid: string;
  readonly replicaId: string;
  readonly controlAddress: string;
  readonly epoch: number;
  readonly checkpointedIoSeq: number;
  readonly highestIoSeq: number;
  readonly capacityBytes: number;
  readonly blockSize: number;
  readonly chunkSize: number;
  readonly pid: number;
  /** Present while the replica's own rebuild is unfinished: it is out of sync since this io_seq. */
  readonly rebuildingSince?: number;
  /**
   * Random per opening of the replica's store, the same on every reconnection while that process
   * serves it. A replica that comes back with the instance it left with still holds every write it
   * acknowledged (a restart may lose unflushed ones), so the target can take it back without a rebuild.
   */
  readonly instance?: string;
  /**
   * Every mutation with io_seq ≤ this that reached the replica is applied: nothing below it is
   * missing. Below highestIoSeq after a crash with writes in flight (a later write landed, an
   * earlier one did not), so a target judging copies at its start does not take a copy with a hole
   * for a complete one. Absent (an older replica): only highestIoSeq is known.
   */
  readonly completeIoSeq?: number;
}

const HELLO_STRINGS = ['volumeName', 'volumeUuid', 'replicaId', 'controlAddress'] as const;
const HELLO_NUMBERS = ['epoch', 'checkpointedIoSeq', 'highestIoSeq', 'capacityBytes', 'blockSize', 'chunkSize', 'pid'] as const;

export function encodeHello(hello: ReplicaHello): Buffer {
  const out: Record<string, string | number> = {};
  for (const k of HELLO_STRINGS) out[k] = hello[k];
  for (const k of HELLO_NUMBERS) out[k] = hello[k];
  if (hello.rebuildingSince !== undefined) out['rebuildingSince'] = hello.rebuildingSince;
  if (hello.instance !== undefined) out['instance'] = hello.instance;
  if (hello.completeIoSeq !== undefined) out['completeIoSeq'] = hello.completeIoSeq;
  return Buffer.from(JSON.stringify(out), 'utf8');
}

/** Parse and validate a HELLO payload; throws a plain Error (the handshake is refused, not the framing). */
export function decodeHello(payload: Buffer): ReplicaHello {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new Error('HELLO payload is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('HELLO payload is not an object');
  const obj = parsed as Record<string, unknown>;
  const out: Record<string, string | number> = {};
  for (const k of HELLO_STRINGS) {
    const v = obj[k];
    if (typeof v !== 'string' || v.length > 1024) throw new Error(`HELLO field ${k} must be a string`);
    out[k] = v;
  }
  for (const k of HELLO_NUMBERS) {
    const v = obj[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`HELLO field ${k} must be a safe non-negative integer`);
    out[k] = v;
  }
  const since = obj['rebuildingSince'];
  if (since !== undefined) {
    if (typeof since !== 'number' || !Number.isSafeInteger(since) || since < 0) throw new Error('HELLO field rebuildingSince must be a safe non-negative integer');
    out['rebuildingSince'] = since;
  }
  const complete = obj['completeIoSeq'];
  if (complete !== undefined) {
    if (typeof complete !== 'number' || !Number.isSafeInteger(complete) || complete < 0) throw new Error('HELLO field completeIoSeq must be a safe non-negative integer');
    out['completeIoSeq'] = complete;
  }
  const instance = obj['instance'];
  if (instance !== undefined) {
    if (typeof instance !== 'string' || instance.length === 0 || instance.length > 128) throw new Error('HELLO field instance must be a string of 1 to 128 characters');
    out['instance'] = instance;
  }
  const hello = out as unknown as ReplicaHello;
  if (hello.blockSize !== 512 && hello.blockSize !== 4096) throw new Error(`HELLO blockSize ${hello.blockSize} is not 512 or 4096`);
  if (hello.chunkSize < hello.blockSize || hello.chunkSize % hello.blockSize !== 0) {
    throw new Error(`HELLO chunkSize ${hello.chunkSize} is not a multiple of blockSize ${hello.blockSize}`);
  }
  if (hello.capacityBytes % hello.blockSize !== 0) throw new Error(`HELLO capacityBytes ${hello.capacityBytes} is not a multiple of blockSize`);
  if (hello.highestIoSeq < hello.checkpointedIoSeq) throw new Error('HELLO highestIoSeq is below checkpointedIoSeq');
  return hello;
}

/** How many metadata chunks [offset, offset+length) touches: the count of io_seqs in a READ response. */
export function chunksTouched(offset: number, length: number, chunkSize: number): number {
  if (length <= 0) return 0;
  return Math.floor((offset + length - 1) / chunkSize) - Math.floor(offset / chunkSize) + 1;
}

/** One u64 LE per io_seq (the READ response trailer). */
export function encodeIoSeqs(ioSeqs: ArrayLike<number>): Buffer {
  const n = ioSeqs.length;
  const out = Buffer.allocUnsafe(n * 8);
  for (let i = 0; i < n; i++) writeU64(out, ioSeqs[i]!, i * 8, 'ioSeq');
  return out;
}

/** Inverse of encodeIoSeqs; undefined when the length is not a multiple of 8 or a value is unsafe. */
export function decodeIoSeqs(buf: Buffer): Float64Array | undefined {
  if (buf.length % 8 !== 0) return undefined;
  const n = buf.length / 8;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = readU64(buf, i * 8);
    if (v < 0) return undefined;
    out[i] = v;
  }
  return out;
}

export const MAP_STATUS_PAYLOAD_LENGTH = 9;

export function encodeMapStatus(length: number, mapped: boolean): Buffer {
  const out = Buffer.allocUnsafe(MAP_STATUS_PAYLOAD_LENGTH);
  writeU64(out, length, 0, 'length');
  out[8] = mapped ? 1 : 0;
  return out;
}

export function decodeMapStatus(buf: Buffer): { readonly length: number; readonly mapped: boolean } | undefined {
  if (buf.length !== MAP_STATUS_PAYLOAD_LENGTH) return undefined;
  const length = readU64(buf, 0);
  if (length < 0) return undefined;
  return { length, mapped: buf[8] !== 0 };
}

/** Error messages travel as UTF-8, cut to a bounded size. */
export function encodeErrorMessage(message: string, maxBytes = 1024): Buffer {
  const buf = Buffer.from(message, 'utf8');
  return buf.length <= maxBytes ? buf : buf.subarray(0, maxBytes);
}

// ---- Errors ---------------------------------------------------------------------------------------

/** A request the replica answered with a non-OK status (or that the connection could not complete). */
export class ReplicaIoError extends Error {
  readonly status: ReplicaStatusValue;
  /** For MEDIUM_ERROR: the failing byte offset. */
  readonly offset: number | undefined;
  constructor(status: ReplicaStatusValue, message: string, offset?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ReplicaIoError';
    this.status = status;
    this.offset = offset;
  }

  get statusName(): ReplicaStatusName {
    return statusName(this.status) ?? 'Invalid';
  }
}

/** The status a replica answers for a store error code (StoreErrorCode values in src/replica/store-api.ts). */
export function statusForStoreErrorCode(code: string | undefined): ReplicaStatusValue {
  switch (code) {
    case 'EMEDIUM': return ReplicaStatus.MediumError;
    case 'ERANGE': return ReplicaStatus.OutOfRange;
    case 'EALIGN': return ReplicaStatus.Misaligned;
    case 'ESTALE_EPOCH': return ReplicaStatus.StaleEpoch;
    case 'ENOSPC': return ReplicaStatus.NoSpace;
    case 'ECLOSED': return ReplicaStatus.Closed;
    case 'EINVAL': return ReplicaStatus.Invalid;
    default: return ReplicaStatus.IoError;
  }
}

/** The error for a non-OK response: status, the replica's message, and the failing offset for media errors. */
export function errorForStatus(status: number, message: string, offset?: number): ReplicaIoError {
  const known = statusName(status) === undefined ? ReplicaStatus.IoError : status as ReplicaStatusValue;
  const name = statusName(status) ?? `status ${status}`;
  const text = message.length > 0 ? `${name}: ${message}` : name;
  return known === ReplicaStatus.MediumError && offset !== undefined
    ? new ReplicaIoError(known, text, offset)
    : new ReplicaIoError(known, text);
}
