// The target's metadata blob a replica keeps for it (persistent reservations, ...): a small
// key → bytes map with a generation, so a restarted target, or another target instance taking
// over, finds it on the replicas instead of on the old target's disk. Pure encode/decode.
//
// Two slots (slot A, slot B) in a reserved region between the superblock and the journal
// (store-layout.ts). An update goes to the slot not holding the current copy and is fdatasynced,
// so a torn write leaves the previous generation readable, as with the superblock.
//
// Layout of one slot (little-endian; bytes past the payload are not covered and may be anything):
//   0  magic "CSTTGTS1"        8
//   8  format version u32      4
//  12  slot length u32         4
//  16  generation u64          8   assigned by the target: higher = newer
//  24  epoch u64               8   the target epoch that wrote it (diagnostics)
//  32  volume UUID            16   a blob of another volume is never served
//  48  payload length u32      4
//  52  entry count u32         4
//  56  reserved u32 (0)        4
//  60  CRC32C u32              4   of bytes 0..59 then the payload
//  64  payload: per entry, key length u8, key (UTF-8), value length u32, value

import { crc32c } from '../protocol/iscsi/digest.js';
import { uuidBytes } from './superblock.js';

export const TARGET_STATE_SLOT_BYTES = 64 * 1024;
export const TARGET_STATE_FORMAT_VERSION = 1;
const HEADER_BYTES = 64;
/** Largest payload a slot holds (every entry's key and value with their lengths). */
export const MAX_TARGET_STATE_PAYLOAD = TARGET_STATE_SLOT_BYTES - HEADER_BYTES;
const MAGIC = Buffer.from('CSTTGTS1', 'ascii');
const KEY = /^[A-Za-z0-9._-]{1,64}$/;

export interface TargetStateBlob {
  /** 0 = nothing stored yet. */
  readonly generation: number;
  readonly epoch: number;
  readonly entries: ReadonlyMap<string, Buffer>;
}

export const EMPTY_TARGET_STATE: TargetStateBlob = Object.freeze({ generation: 0, epoch: 0, entries: new Map<string, Buffer>() });

export class TargetStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetStateError';
  }
}

function fail(message: string): never {
  throw new TargetStateError(message);
}

/** Validates keys, sizes and counters; throws TargetStateError (the request is refused, nothing written). */
export function checkTargetState(blob: TargetStateBlob): void {
  if (!Number.isSafeInteger(blob.generation) || blob.generation < 1) fail(`generation ${blob.generation} must be a positive integer`);
  if (!Number.isSafeInteger(blob.epoch) || blob.epoch < 0) fail(`epoch ${blob.epoch} is not a valid epoch`);
  let size = 0;
  for (const [key, value] of blob.entries) {
    if (!KEY.test(key)) fail(`invalid key ${JSON.stringify(key)}`);
    size += 1 + Buffer.byteLength(key) + 4 + value.length;
  }
  if (size > MAX_TARGET_STATE_PAYLOAD) fail(`target state of ${size} bytes exceeds the ${MAX_TARGET_STATE_PAYLOAD}-byte slot`);
}

/** One slot of exactly TARGET_STATE_SLOT_BYTES. */
export function encodeTargetState(blob: TargetStateBlob, volumeUuid: string): Buffer {
  checkTargetState(blob);
  const b = Buffer.alloc(TARGET_STATE_SLOT_BYTES);
  let at = HEADER_BYTES;
  for (const [key, value] of blob.entries) {
    at = b.writeUInt8(Buffer.byteLength(key), at);
    at += b.write(key, at, 'utf8');
    at = b.writeUInt32LE(value.length, at);
    at += value.copy(b, at);
  }
  MAGIC.copy(b, 0);
  b.writeUInt32LE(TARGET_STATE_FORMAT_VERSION, 8);
  b.writeUInt32LE(TARGET_STATE_SLOT_BYTES, 12);
  b.writeBigUInt64LE(BigInt(blob.generation), 16);
  b.writeBigUInt64LE(BigInt(blob.epoch), 24);
  uuidBytes(volumeUuid).copy(b, 32);
  b.writeUInt32LE(at - HEADER_BYTES, 48);
  b.writeUInt32LE(blob.entries.size, 52);
  b.writeUInt32LE(crcOf(b, at - HEADER_BYTES), 60);
  return b;
}

function crcOf(slot: Buffer, payloadLength: number): number {
  return crc32c(Buffer.concat([slot.subarray(0, 60), slot.subarray(HEADER_BYTES, HEADER_BYTES + payloadLength)]));
}

export type TargetStateSlot =
  | { readonly state: 'empty' }
  | { readonly state: 'valid'; readonly blob: TargetStateBlob }
  | { readonly state: 'invalid'; readonly reason: string };

/** Decode one slot: never formatted (no magic) is empty; anything that fails a check is invalid. */
export function decodeTargetState(slot: Buffer, volumeUuid: string): TargetStateSlot {
  if (slot.length < TARGET_STATE_SLOT_BYTES || !slot.subarray(0, 8).equals(MAGIC)) return { state: 'empty' };
  const invalid = (reason: string): TargetStateSlot => ({ state: 'invalid', reason });
  if (slot.readUInt32LE(8) !== TARGET_STATE_FORMAT_VERSION || slot.readUInt32LE(12) !== TARGET_STATE_SLOT_BYTES) {
    return invalid(`unsupported target state format ${slot.readUInt32LE(8)}`);
  }
  const length = slot.readUInt32LE(48);
  if (length > MAX_TARGET_STATE_PAYLOAD) return invalid(`payload length ${length} out of range`);
  if (crcOf(slot, length) !== slot.readUInt32LE(60)) return invalid('checksum mismatch (torn or corrupted write)');
  if (!slot.subarray(32, 48).equals(uuidBytes(volumeUuid))) return invalid('written for another volume');
  if (slot.readUInt32LE(56) !== 0) return invalid('reserved field is not zero');
  const generation = slot.readBigUInt64LE(16);
  const epoch = slot.readBigUInt64LE(24);
  if (generation < 1n || generation > BigInt(Number.MAX_SAFE_INTEGER) || epoch > BigInt(Number.MAX_SAFE_INTEGER)) {
    return invalid('generation or epoch out of range');
  }
  const count = slot.readUInt32LE(52);
  const end = HEADER_BYTES + length;
  const entries = new Map<string, Buffer>();
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + 1 > end) return invalid('truncated entry');
    const keyLength = slot.readUInt8(at++);
    if (at + keyLength + 4 > end) return invalid('truncated entry');
    const key = slot.toString('utf8', at, at + keyLength);
    at += keyLength;
    const valueLength = slot.readUInt32LE(at);
    at += 4;
    if (at + valueLength > end) return invalid('truncated entry');
    if (!KEY.test(key) || entries.has(key)) return invalid(`bad or duplicate key ${JSON.stringify(key)}`);
    entries.set(key, Buffer.from(slot.subarray(at, at + valueLength)));
    at += valueLength;
  }
  if (at !== end) return invalid('trailing bytes after the entries');
  return { state: 'valid', blob: { generation: Number(generation), epoch: Number(epoch), entries } };
}

/** The newest valid copy of the two slots (the region), and which slot holds it (-1: none). */
export function selectTargetState(region: Buffer, volumeUuid: string): { readonly blob: TargetStateBlob; readonly slot: 0 | 1 | -1; readonly problems: readonly string[] } {
  let best: { blob: TargetStateBlob; slot: 0 | 1 } | undefined;
  const problems: string[] = [];
  for (const slot of [0, 1] as const) {
    const at = slot * TARGET_STATE_SLOT_BYTES;
    const decoded = decodeTargetState(region.subarray(at, at + TARGET_STATE_SLOT_BYTES), volumeUuid);
    if (decoded.state === 'invalid') problems.push(`slot ${slot}: ${decoded.reason}`);
    if (decoded.state === 'valid' && (best === undefined || decoded.blob.generation > best.blob.generation)) best = { blob: decoded.blob, slot };
  }
  return best === undefined ? { blob: EMPTY_TARGET_STATE, slot: -1, problems } : { ...best, problems };
}
