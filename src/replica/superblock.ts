// The replica's superblock: who this device belongs to and where its regions are. Pure encode/decode.
//
// Two copies live in the first two 4 KiB blocks of the device (slot = generation % 2). An update
// writes the next generation into the *other* slot and fdatasyncs it, so a crash or power loss in
// the middle of an update tears at most the slot being written: its CRC32C no longer matches and
// the previous generation, still intact in the other slot, is used. A device is never left without
// a valid superblock once formatted.
//
// Layout of one slot (little-endian, 4096 bytes; unused bytes are zero and covered by the CRC):
//   0  magic "CSTSRPL1"            8
//   8  format version u32          4
//  12  slot length u32 (4096)      4
//  16  generation u64              8
//  24  volume UUID                16
//  40  block size u32              4
//  44  metadata chunk size u32     4   bytes of data covered by one metadata entry
//  48  capacity u64                8   bytes of volume data
//  56  epoch u64                   8   highest target epoch accepted (fencing)
//  64  checkpointed io_seq u64     8   every write up to it is durable
//  72  metadata offset u64         8
//  80  metadata length u64         8
//  88  data offset u64             8
//  96  flags u32                   4
// 100  journal offset u64          8
// 108  journal length u64          8
// 116  journal checkpoint seq u64  8   journal records up to it are applied to the metadata table
// 124  journal nonce u32           4   random per format: journal blocks carry it, so volume data
//                                      (which the journal also holds) can never pose as a record
// 128  volume name length u16      2, then the UTF-8 name (≤ 255 bytes) at 130
// 386  replica id length u16       2, then the UTF-8 id (≤ 64 bytes) at 388
// 456  rebuild since io_seq u64    8   with flag REBUILDING: a rebuild from this io_seq is unfinished
// 4092 CRC32C of bytes 0..4091     4

import { crc32c } from '../protocol/iscsi/digest.js';

export const SUPERBLOCK_SLOT_BYTES = 4096;
export const SUPERBLOCK_REGION_BYTES = 2 * SUPERBLOCK_SLOT_BYTES;
export const SUPERBLOCK_FORMAT_VERSION = 1;
const MAGIC = Buffer.from('CSTSRPL1', 'ascii');
const MAX_NAME_BYTES = 255;
const MAX_REPLICA_ID_BYTES = 64;
const NAME_AT = 128;
const REPLICA_ID_AT = 386;
const CRC_AT = SUPERBLOCK_SLOT_BYTES - 4;

export interface Superblock {
  readonly generation: bigint;
  readonly volumeName: string;
  /** 32 lowercase hex digits or the 8-4-4-4-12 form; stored as 16 bytes. */
  readonly volumeUuid: string;
  readonly replicaId: string;
  readonly blockSize: number;
  readonly metadataChunkSize: number;
  readonly capacityBytes: bigint;
  readonly epoch: bigint;
  readonly checkpointedIoSeq: bigint;
  readonly metadataOffset: bigint;
  readonly metadataLength: bigint;
  readonly dataOffset: bigint;
  readonly flags: number;
  readonly journalOffset: bigint;
  readonly journalLength: bigint;
  readonly journalCheckpointSeq: bigint;
  readonly journalNonce: number;
  /** Meaningful with SuperblockFlag.Rebuilding: the rebuild must cover every write newer than this. */
  readonly rebuildSinceIoSeq: bigint;
}

export const SuperblockFlag = {
  /** A rebuild of this replica started and has not finished: it is not in sync, whatever its io_seqs say. */
  Rebuilding: 1,
} as const;

export const SuperblockErrorCode = {
  /** No magic: the slot was never formatted (or belongs to something else). */
  NoMagic: 'ESB_NO_MAGIC',
  /** Magic present but the CRC does not match: a torn or corrupted write. */
  BadChecksum: 'ESB_CHECKSUM',
  UnsupportedVersion: 'ESB_VERSION',
  InvalidField: 'ESB_FIELD',
} as const;
export type SuperblockErrorCodeValue = (typeof SuperblockErrorCode)[keyof typeof SuperblockErrorCode];

export class SuperblockError extends Error {
  readonly code: SuperblockErrorCodeValue;
  constructor(code: SuperblockErrorCodeValue, message: string) {
    super(message);
    this.name = 'SuperblockError';
    this.code = code;
  }
}

/** A UUID's 16 bytes (also the volume tag of the target-state slots). */
export function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new SuperblockError(SuperblockErrorCode.InvalidField, `volume UUID '${uuid}' is not a UUID`);
  return Buffer.from(hex, 'hex');
}

function uuidString(bytes: Buffer): string {
  const h = bytes.toString('hex');
  return `${h.substring(0, 8)}-${h.substring(8, 12)}-${h.substring(12, 16)}-${h.substring(16, 20)}-${h.substring(20)}`;
}

function checkField(ok: boolean, message: string): void {
  if (!ok) throw new SuperblockError(SuperblockErrorCode.InvalidField, message);
}

/** Validate the fields that any writer or reader must agree on. */
function validate(sb: Superblock): void {
  checkField(sb.blockSize === 512 || sb.blockSize === 4096, `block size ${sb.blockSize} is not 512 or 4096`);
  checkField(Number.isInteger(sb.metadataChunkSize) && sb.metadataChunkSize >= sb.blockSize
    && sb.metadataChunkSize % sb.blockSize === 0 && sb.metadataChunkSize <= 1 << 20,
  `metadata chunk size ${sb.metadataChunkSize} must be a multiple of the block size, at most 1 MiB`);
  checkField(sb.capacityBytes > 0n && sb.capacityBytes % BigInt(sb.blockSize) === 0n,
    `capacity ${sb.capacityBytes} is not a positive multiple of the block size`);
  checkField(sb.metadataOffset >= BigInt(SUPERBLOCK_REGION_BYTES), 'metadata overlaps the superblock');
  checkField(sb.dataOffset >= sb.metadataOffset + sb.metadataLength, 'data overlaps the metadata');
  checkField(sb.journalOffset >= BigInt(SUPERBLOCK_REGION_BYTES) && sb.journalLength >= 8192n
    && (sb.journalOffset + sb.journalLength <= sb.metadataOffset || sb.journalOffset >= sb.metadataOffset + sb.metadataLength),
  'journal overlaps another region');
  checkField(sb.journalOffset % 4096n === 0n && sb.journalLength % 4096n === 0n, 'journal must be 4 KiB aligned');
  checkField(sb.dataOffset % 4096n === 0n && sb.metadataOffset % 4096n === 0n, 'regions must be 4 KiB aligned');
  for (const v of [sb.generation, sb.epoch, sb.checkpointedIoSeq, sb.journalCheckpointSeq, sb.rebuildSinceIoSeq]) checkField(v >= 0n && v < 1n << 64n, 'counter out of range');
  checkField(Number.isInteger(sb.flags) && sb.flags >= 0 && sb.flags <= 0xffff_ffff, 'flags out of range');
}

/** Encode one 4096-byte slot. */
export function encodeSuperblock(sb: Superblock): Buffer {
  validate(sb);
  const name = Buffer.from(sb.volumeName, 'utf8');
  const replica = Buffer.from(sb.replicaId, 'utf8');
  checkField(name.length > 0 && name.length <= MAX_NAME_BYTES, `volume name must be 1..${MAX_NAME_BYTES} bytes`);
  checkField(replica.length > 0 && replica.length <= MAX_REPLICA_ID_BYTES, `replica id must be 1..${MAX_REPLICA_ID_BYTES} bytes`);
  const b = Buffer.alloc(SUPERBLOCK_SLOT_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(SUPERBLOCK_FORMAT_VERSION, 8);
  b.writeUInt32LE(SUPERBLOCK_SLOT_BYTES, 12);
  b.writeBigUInt64LE(sb.generation, 16);
  uuidBytes(sb.volumeUuid).copy(b, 24);
  b.writeUInt32LE(sb.blockSize, 40);
  b.writeUInt32LE(sb.metadataChunkSize, 44);
  b.writeBigUInt64LE(sb.capacityBytes, 48);
  b.writeBigUInt64LE(sb.epoch, 56);
  b.writeBigUInt64LE(sb.checkpointedIoSeq, 64);
  b.writeBigUInt64LE(sb.metadataOffset, 72);
  b.writeBigUInt64LE(sb.metadataLength, 80);
  b.writeBigUInt64LE(sb.dataOffset, 88);
  b.writeUInt32LE(sb.flags, 96);
  b.writeBigUInt64LE(sb.journalOffset, 100);
  b.writeBigUInt64LE(sb.journalLength, 108);
  b.writeBigUInt64LE(sb.journalCheckpointSeq, 116);
  b.writeUInt32LE(sb.journalNonce >>> 0, 124);
  b.writeBigUInt64LE(sb.rebuildSinceIoSeq, 456);
  b.writeUInt16LE(name.length, NAME_AT);
  name.copy(b, NAME_AT + 2);
  b.writeUInt16LE(replica.length, REPLICA_ID_AT);
  replica.copy(b, REPLICA_ID_AT + 2);
  b.writeUInt32LE(crc32c(b.subarray(0, CRC_AT)), CRC_AT);
  return b;
}

/** Decode one slot; throws SuperblockError (NoMagic, BadChecksum, UnsupportedVersion, InvalidField). */
export function decodeSuperblock(slot: Buffer): Superblock {
  if (slot.length < SUPERBLOCK_SLOT_BYTES || !slot.subarray(0, 8).equals(MAGIC)) {
    throw new SuperblockError(SuperblockErrorCode.NoMagic, 'no replica superblock');
  }
  if (crc32c(slot.subarray(0, CRC_AT)) !== slot.readUInt32LE(CRC_AT)) {
    throw new SuperblockError(SuperblockErrorCode.BadChecksum, 'superblock checksum mismatch (torn or corrupted write)');
  }
  const version = slot.readUInt32LE(8);
  if (version !== SUPERBLOCK_FORMAT_VERSION || slot.readUInt32LE(12) !== SUPERBLOCK_SLOT_BYTES) {
    throw new SuperblockError(SuperblockErrorCode.UnsupportedVersion, `superblock format version ${version} is not supported`);
  }
  const nameLength = slot.readUInt16LE(NAME_AT);
  const replicaLength = slot.readUInt16LE(REPLICA_ID_AT);
  checkField(nameLength > 0 && nameLength <= MAX_NAME_BYTES, 'volume name length out of range');
  checkField(replicaLength > 0 && replicaLength <= MAX_REPLICA_ID_BYTES, 'replica id length out of range');
  const sb: Superblock = {
    generation: slot.readBigUInt64LE(16),
    volumeUuid: uuidString(slot.subarray(24, 40)),
    blockSize: slot.readUInt32LE(40),
    metadataChunkSize: slot.readUInt32LE(44),
    capacityBytes: slot.readBigUInt64LE(48),
    epoch: slot.readBigUInt64LE(56),
    checkpointedIoSeq: slot.readBigUInt64LE(64),
    metadataOffset: slot.readBigUInt64LE(72),
    metadataLength: slot.readBigUInt64LE(80),
    dataOffset: slot.readBigUInt64LE(88),
    flags: slot.readUInt32LE(96),
    journalOffset: slot.readBigUInt64LE(100),
    journalLength: slot.readBigUInt64LE(108),
    journalCheckpointSeq: slot.readBigUInt64LE(116),
    journalNonce: slot.readUInt32LE(124),
    rebuildSinceIoSeq: slot.readBigUInt64LE(456),
    volumeName: slot.toString('utf8', NAME_AT + 2, NAME_AT + 2 + nameLength),
    replicaId: slot.toString('utf8', REPLICA_ID_AT + 2, REPLICA_ID_AT + 2 + replicaLength),
  };
  validate(sb);
  return sb;
}

export type SuperblockState =
  | { readonly state: 'valid'; readonly superblock: Superblock; readonly slot: 0 | 1; readonly otherSlotError?: SuperblockErrorCodeValue }
  | { readonly state: 'unformatted' }
  | { readonly state: 'corrupt'; readonly errors: readonly [string, string] };

/**
 * Pick the superblock from the two slots (the first 8 KiB of the device): the valid copy with the
 * highest generation. Both without magic = unformatted; anything else without a valid copy = corrupt
 * (never treated as unformatted, so a damaged device is not reformatted by accident).
 */
export function selectSuperblock(region: Buffer): SuperblockState {
  const results = ([0, 1] as const).map(slot => {
    try {
      const start = slot * SUPERBLOCK_SLOT_BYTES;
      return { slot, sb: decodeSuperblock(region.subarray(start, start + SUPERBLOCK_SLOT_BYTES)) };
    } catch (err) {
      if (err instanceof SuperblockError) return { slot, err };
      throw err;
    }
  });
  const valid = results.filter((r): r is { slot: 0 | 1; sb: Superblock } => 'sb' in r);
  if (valid.length === 0) {
    const codes = results.map(r => ('err' in r ? r.err.code : ''));
    if (codes.every(c => c === SuperblockErrorCode.NoMagic)) return { state: 'unformatted' };
    return { state: 'corrupt', errors: [messageOf(results[0]), messageOf(results[1])] };
  }
  const best = valid.reduce((a, b) => (b.sb.generation > a.sb.generation ? b : a));
  const other = results[best.slot === 0 ? 1 : 0];
  return other !== undefined && 'err' in other
    ? { state: 'valid', superblock: best.sb, slot: best.slot, otherSlotError: other.err.code }
    : { state: 'valid', superblock: best.sb, slot: best.slot };
}

function messageOf(r: { err?: SuperblockError } | undefined): string {
  return r?.err?.message ?? 'valid';
}

/** The next generation of `sb` with `changes`, and the device offset of the slot it must go to. */
export function nextSuperblock(sb: Superblock, changes: Partial<Omit<Superblock, 'generation'>>): { superblock: Superblock; offset: number } {
  const superblock: Superblock = { ...sb, ...changes, generation: sb.generation + 1n };
  return { superblock, offset: Number(superblock.generation % 2n) * SUPERBLOCK_SLOT_BYTES };
}
