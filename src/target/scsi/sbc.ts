// SBC-3 block command handlers (SPDK scsi_bdev.c's role): READ/WRITE/VERIFY/WRITE AND VERIFY,
// COMPARE AND WRITE, ORWRITE, WRITE SAME, UNMAP, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY, GET LBA
// STATUS. Every handler validates the CDB fully before touching data-out or the device.
import {
  CdbUsage, Op, ServiceAction, decodeCacheRange, decodeCompareAndWrite, decodeGetLbaStatus, decodeReadCapacity,
  decodeReadDefectData, decodeRw, decodeUnmap, decodeWriteAtomic, decodeWriteSame, type RwCdb,
} from '../../protocol/scsi/cdb.js';
import { Asc, ScsiStatus, SenseKey } from '../../protocol/scsi/constants.js';
import { CheckCondition, illegalRequest, invalidCdbField, invalidParameterField } from '../../protocol/scsi/sense.js';
import { allocIoBuffer } from '../../protocol/io-buffer.js';
import {
  GOOD, dataIn, dataOutSizeError, fetchDataOut, type CommandContext, type CommandInfo,
} from './command.js';
import type { ScsiResult } from './types.js';

const FUA = { fua: true } as const;
/** Chunk for WRITE SAME / VERIFY loops: bounded memory whatever the range. */
const CHUNK_BYTES = 1 << 20;

function lbaOutOfRange(): CheckCondition {
  return illegalRequest(Asc.LbaOutOfRange);
}

/** LBA + length beyond capacity → LOGICAL BLOCK ADDRESS OUT OF RANGE (also for zero-length at lba > capacity). */
function checkRange(ctx: CommandContext, lba: bigint, blocks: number | bigint): void {
  if (lba + BigInt(blocks) > ctx.lu.device.blockCount) throw lbaOutOfRange();
}

function checkRw(ctx: CommandContext, c: RwCdb): void {
  // No protection information: any RD/WR/VR/ORPROTECT value is an invalid field (SBC-3 4.22.2).
  if (c.protect !== 0) throw invalidCdbField(1, 7);
  checkRange(ctx, c.lba, c.blocks);
  if (c.blocks > ctx.lu.limits.maxTransferLength) throw invalidCdbField(c.lengthByte, 7);
}

function miscompare(offset: number): CheckCondition {
  return new CheckCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerify, { information: BigInt(offset) });
}

/** Offset of the first differing byte, or -1. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** Whole blocks of data-out; a trailing partial block means EDTL disagrees with the CDB. */
function wholeBlocks(ctx: CommandContext, data: Buffer): number {
  const bs = ctx.lu.device.blockSize;
  if (data.length % bs !== 0) throw dataOutSizeError();
  return data.length / bs;
}

async function read(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeRw(ctx.cdb);
  checkRw(ctx, c);
  if (c.blocks === 0) return GOOD;
  const { device, rangeLock } = ctx.lu;
  const data = allocIoBuffer(c.blocks * device.blockSize);
  const release = await rangeLock.acquire(c.lba, c.blocks, false, ctx.signal);
  try {
    await device.read(c.lba, c.blocks, data);
  } finally {
    release();
  }
  return { status: ScsiStatus.Good, data };
}

async function write(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeRw(ctx.cdb);
  checkRw(ctx, c);
  ctx.dataOutLength = 0;
  if (c.blocks === 0) return GOOD;
  const { device, rangeLock } = ctx.lu;
  const data = await fetchDataOut(ctx, c.blocks * device.blockSize);
  // EDTL < CDB length: write what the initiator sent (whole blocks), the transport reports overflow.
  const blocks = wholeBlocks(ctx, data);
  if (blocks === 0) return GOOD;
  const release = await rangeLock.acquire(c.lba, blocks, false, ctx.signal);
  try {
    await device.write(c.lba, data, c.fua ? FUA : undefined);
  } finally {
    release();
  }
  return GOOD;
}

async function writeAndVerify(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeRw(ctx.cdb);
  if (c.bytchk > 1) throw invalidCdbField(1, 2);
  checkRw(ctx, c);
  ctx.dataOutLength = 0;
  if (c.blocks === 0) return GOOD;
  const { device, rangeLock } = ctx.lu;
  const data = await fetchDataOut(ctx, c.blocks * device.blockSize);
  const blocks = wholeBlocks(ctx, data);
  if (blocks === 0) return GOOD;
  const release = await rangeLock.acquire(c.lba, blocks, false, ctx.signal);
  try {
    // Verification is of the medium, so the data must be on it: write through.
    await device.write(c.lba, data, FUA);
    if (c.bytchk === 1) {
      const back = Buffer.allocUnsafe(data.length);
      await device.read(c.lba, blocks, back);
      const at = firstDifference(data, back);
      if (at >= 0) throw miscompare(at);
    }
  } finally {
    release();
  }
  return GOOD;
}

async function verify(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeRw(ctx.cdb);
  if (c.protect !== 0) throw invalidCdbField(1, 7);
  if (c.bytchk === 2) throw invalidCdbField(1, 2);
  checkRange(ctx, c.lba, c.blocks);
  const { device, rangeLock, limits } = ctx.lu;
  if (c.bytchk !== 0 && c.blocks > limits.maxTransferLength) throw invalidCdbField(c.lengthByte, 7);
  if (c.blocks === 0) return GOOD;
  const bs = device.blockSize;
  let expected: Buffer | undefined;
  let blocks = c.blocks;
  if (c.bytchk === 1) {
    expected = await fetchDataOut(ctx, c.blocks * bs);
    blocks = wholeBlocks(ctx, expected);
  } else if (c.bytchk === 3) {
    expected = await fetchDataOut(ctx, bs);
    if (expected.length !== bs) throw dataOutSizeError();
  }
  if (blocks === 0) return GOOD;
  const release = await rangeLock.acquire(c.lba, blocks, false, ctx.signal);
  try {
    const chunkBlocks = Math.max(1, Math.floor(CHUNK_BYTES / bs));
    const buf = Buffer.allocUnsafe(Math.min(blocks, chunkBlocks) * bs);
    for (let done = 0; done < blocks;) {
      const n = Math.min(chunkBlocks, blocks - done);
      const chunk = buf.subarray(0, n * bs);
      await device.read(c.lba + BigInt(done), n, chunk);
      if (c.bytchk === 1) {
        const at = firstDifference(expected!.subarray(done * bs, (done + n) * bs), chunk);
        if (at >= 0) throw miscompare(done * bs + at);
      } else if (c.bytchk === 3) {
        for (let i = 0; i < n; i++) {
          const at = firstDifference(expected!, chunk.subarray(i * bs, (i + 1) * bs));
          if (at >= 0) throw miscompare((done + i) * bs + at);
        }
      }
      done += n;
      if (ctx.signal.aborted) throw ctx.signal.reason;
    }
  } finally {
    release();
  }
  return GOOD;
}

async function compareAndWrite(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeCompareAndWrite(ctx.cdb);
  if (c.protect !== 0) throw invalidCdbField(1, 7);
  const { device, rangeLock, limits } = ctx.lu;
  const bs = device.blockSize;
  checkRange(ctx, c.lba, c.blocks);
  if (c.blocks > limits.maxCompareAndWriteLength) throw invalidCdbField(13, 7);
  ctx.dataOutLength = 0;
  if (c.blocks === 0) {
    // Zero blocks transfer nothing (SBC-3 5.2): data-out on offer means NUMBER OF LOGICAL BLOCKS is not what
    // the initiator meant (e.g. 256 truncated to one byte), so refuse rather than silently drop the write.
    if (ctx.request.expectedLength > 0) throw invalidCdbField(13, 7);
    return GOOD;
  }
  const length = c.blocks * bs;
  // The data-out buffer holds the verify data then the write data: anything else is unusable.
  if (ctx.request.expectedLength !== 2 * length) {
    ctx.dataOutLength = 2 * length;
    throw dataOutSizeError();
  }
  const data = await fetchDataOut(ctx, 2 * length);
  if (data.length !== 2 * length) throw dataOutSizeError();
  const release = await rangeLock.acquire(c.lba, c.blocks, true, ctx.signal);
  try {
    const current = Buffer.allocUnsafe(length);
    await device.read(c.lba, c.blocks, current);
    const at = firstDifference(data.subarray(0, length), current);
    if (at >= 0) throw miscompare(at);
    await device.write(c.lba, data.subarray(length), c.fua ? FUA : undefined);
  } finally {
    release();
  }
  return GOOD;
}

async function orWrite(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeRw(ctx.cdb);
  checkRw(ctx, c);
  ctx.dataOutLength = 0;
  if (c.blocks === 0) return GOOD;
  const { device, rangeLock } = ctx.lu;
  const data = await fetchDataOut(ctx, c.blocks * device.blockSize);
  const blocks = wholeBlocks(ctx, data);
  if (blocks === 0) return GOOD;
  const release = await rangeLock.acquire(c.lba, blocks, true, ctx.signal);
  try {
    const merged = Buffer.allocUnsafe(data.length);
    await device.read(c.lba, blocks, merged);
    for (let i = 0; i < merged.length; i++) merged[i] = merged[i]! | data[i]!;
    await device.write(c.lba, merged, c.fua ? FUA : undefined);
  } finally {
    release();
  }
  return GOOD;
}

/** Largest block count handed to one device call (BlockDevice takes a number). */
const MAX_DEVICE_BLOCKS = 1 << 30;

async function writeSame(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeWriteSame(ctx.cdb);
  if (c.protect !== 0) throw invalidCdbField(1, 7);
  // We report ANC_SUP=0: anchored unmap is not supported.
  if (c.anchor) throw invalidCdbField(1, 4);
  const { device, rangeLock, limits } = ctx.lu;
  const bs = device.blockSize;
  const capacity = device.blockCount;
  if (c.lba > capacity) throw lbaOutOfRange();
  // WSNZ=0: zero blocks means through the last LBA.
  const blocks = c.blocks === 0 ? capacity - c.lba : BigInt(c.blocks);
  checkRange(ctx, c.lba, blocks);
  if (blocks > limits.maxWriteSameLength) throw invalidCdbField(c.lengthByte, 7);
  let pattern: Buffer | undefined;
  if (!c.ndob) {
    ctx.dataOutLength = bs;
    if (ctx.request.expectedLength !== bs) throw dataOutSizeError();
    pattern = await fetchDataOut(ctx, bs);
    if (pattern.length !== bs) throw dataOutSizeError();
  }
  if (blocks === 0n) return GOOD;
  const zero = pattern === undefined || isZero(pattern);
  const release = await rangeLock.acquire(c.lba, blocks, false, ctx.signal);
  try {
    if (c.unmap || zero) {
      // UNMAP=1: deallocate (LBPRZ=1, so the blocks then read as zeroes); an all-zero pattern is the same thing.
      for (let done = 0n; done < blocks;) {
        const n = Number(blocks - done > BigInt(MAX_DEVICE_BLOCKS) ? BigInt(MAX_DEVICE_BLOCKS) : blocks - done);
        if (c.unmap) await device.unmap(c.lba + done, n);
        else await device.writeZeroes(c.lba + done, n);
        done += BigInt(n);
        if (ctx.signal.aborted) throw ctx.signal.reason;
      }
    } else {
      const chunkBlocks = Math.max(1, Math.floor(CHUNK_BYTES / bs));
      const first = Number(blocks < BigInt(chunkBlocks) ? blocks : BigInt(chunkBlocks));
      const buf = Buffer.allocUnsafe(first * bs);
      for (let i = 0; i < first; i++) pattern!.copy(buf, i * bs);
      for (let done = 0n; done < blocks;) {
        const n = Number(blocks - done > BigInt(first) ? BigInt(first) : blocks - done);
        await device.write(c.lba + done, buf.subarray(0, n * bs));
        done += BigInt(n);
        if (ctx.signal.aborted) throw ctx.signal.reason;
      }
    }
  } finally {
    release();
  }
  return GOOD;
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

async function unmap(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeUnmap(ctx.cdb);
  if (c.anchor) throw invalidCdbField(1, 0);
  if (c.parameterListLength === 0) return GOOD;
  if (c.parameterListLength < 8) throw illegalRequest(Asc.ParameterListLengthError);
  const p = await fetchDataOut(ctx, c.parameterListLength);
  if (p.length < 8) throw illegalRequest(Asc.ParameterListLengthError);
  const { device, rangeLock, limits } = ctx.lu;
  // UNMAP BLOCK DESCRIPTOR DATA LENGTH, bounded by what was sent; a trailing partial descriptor is ignored.
  const usable = Math.min(p.readUInt16BE(2), p.length - 8);
  const count = Math.floor(usable / 16);
  if (count > limits.maxUnmapBlockDescriptorCount) throw invalidParameterField(2, 7);
  const ranges: { lba: bigint; blocks: number }[] = [];
  for (let i = 0; i < count; i++) {
    const off = 8 + 16 * i;
    const lba = p.readBigUInt64BE(off);
    const blocks = p.readUInt32BE(off + 8);
    if (lba + BigInt(blocks) > device.blockCount) throw lbaOutOfRange();
    if (blocks > limits.maxUnmapLbaCount) throw invalidParameterField(off + 8, 7);
    if (blocks > 0) ranges.push({ lba, blocks });
  }
  for (const r of ranges) {
    const release = await rangeLock.acquire(r.lba, r.blocks, false, ctx.signal);
    try {
      await device.unmap(r.lba, r.blocks);
    } finally {
      release();
    }
  }
  return GOOD;
}

async function synchronizeCache(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeCacheRange(ctx.cdb);
  checkRange(ctx, c.lba, c.blocks);
  const { device, logger } = ctx.lu;
  if (c.immed) {
    // IMMED: GOOD now; a later failure can only be logged (a deferred error would need ACA-style plumbing).
    device.flush().catch((e: unknown) => logger?.error({ err: e }, 'background cache flush failed'));
    return GOOD;
  }
  await device.flush();
  return GOOD;
}

function preFetch(ctx: CommandContext): ScsiResult {
  const c = decodeCacheRange(ctx.cdb);
  checkRange(ctx, c.lba, c.blocks);
  // Nothing to stage: GOOD (not CONDITION MET) says the cache could not take it all.
  return GOOD;
}

/**
 * WRITE ATOMIC(16) (SBC-4 5.48): all or nothing with respect to every other command, by holding an
 * exclusive lock over the range for one device write. Atomic boundaries are not supported.
 */
async function writeAtomic(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeWriteAtomic(ctx.cdb);
  if (c.protect !== 0) throw invalidCdbField(1, 7);
  if (c.atomicBoundary !== 0) throw invalidCdbField(10, 7);
  checkRange(ctx, c.lba, c.blocks);
  const { device, rangeLock, limits } = ctx.lu;
  if (c.blocks > limits.maxAtomicTransferLength) throw invalidCdbField(12, 7);
  if (limits.atomicAlignment > 1 && c.lba % BigInt(limits.atomicAlignment) !== 0n) throw invalidCdbField(2, 7);
  if (limits.atomicTransferLengthGranularity > 1 && c.blocks % limits.atomicTransferLengthGranularity !== 0) {
    throw invalidCdbField(12, 7);
  }
  ctx.dataOutLength = 0;
  if (c.blocks === 0) return GOOD;
  const length = c.blocks * device.blockSize;
  const data = await fetchDataOut(ctx, length);
  // A partial atomic write is not atomic: the whole transfer or nothing.
  if (data.length !== length) throw dataOutSizeError();
  const release = await rangeLock.acquire(c.lba, c.blocks, true, ctx.signal);
  try {
    await device.write(c.lba, data, c.fua ? FUA : undefined);
  } finally {
    release();
  }
  return GOOD;
}

/** READ DEFECT DATA(10)/(12): a virtual volume has no defects; an empty list in the format asked for. */
function readDefectData(ctx: CommandContext): ScsiResult {
  const c = decodeReadDefectData(ctx.cdb);
  // Formats 000b-101b are defined (SBC-3 table 12); 110b is vendor specific, 111b reserved.
  if (c.format > 5) throw invalidCdbField(c.twelve ? 1 : 2, 2);
  const b = Buffer.alloc(c.twelve ? 8 : 4);
  // PLISTV/GLISTV: the requested lists are valid (and empty); DEFECT LIST LENGTH 0.
  b[1] = (c.plist ? 0x10 : 0) | (c.glist ? 0x08 : 0) | c.format;
  return dataIn(b, c.allocationLength);
}

function readCapacity10(ctx: CommandContext): ScsiResult {
  const c = decodeReadCapacity(ctx.cdb);
  // SBC-3 5.15: with PMI=0 the LBA field must be zero.
  if (!c.pmi && c.lba !== 0n) throw invalidCdbField(2, 7);
  const { device } = ctx.lu;
  const last = device.blockCount - 1n;
  const b = Buffer.alloc(8);
  b.writeUInt32BE(last >= 0xffffffffn ? 0xffffffff : Number(last), 0);
  b.writeUInt32BE(device.blockSize, 4);
  return { status: ScsiStatus.Good, data: b };
}

function readCapacity16(ctx: CommandContext): ScsiResult {
  const c = decodeReadCapacity(ctx.cdb);
  if (!c.pmi && c.lba !== 0n) throw invalidCdbField(2, 7);
  const { device, limits } = ctx.lu;
  const b = Buffer.alloc(32);
  b.writeBigUInt64BE(device.blockCount - 1n, 0);
  b.writeUInt32BE(device.blockSize, 8);
  b[12] = 0; // no protection information
  b[13] = limits.physicalBlockExponent & 0x0f;
  b[14] = 0x80 | 0x40; // LBPME (thin provisioned), LBPRZ (unmapped blocks read as zeroes)
  return dataIn(b, c.allocationLength);
}

/** Descriptors per GET LBA STATUS response at most (bounded work per command). */
const MAX_LBA_STATUS_DESCRIPTORS = 64;

async function getLbaStatus(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeGetLbaStatus(ctx.cdb);
  const { device } = ctx.lu;
  const capacity = device.blockCount;
  if (c.lba >= capacity) throw lbaOutOfRange();
  if (c.allocationLength === 0) return GOOD;
  const want = Math.max(1, Math.min(MAX_LBA_STATUS_DESCRIPTORS, Math.floor((c.allocationLength - 8) / 16)));
  const descriptors: Buffer[] = [];
  let lba = c.lba;
  while (lba < capacity && descriptors.length < want) {
    const remaining = capacity - lba;
    const max = remaining > 0xffffffffn ? 0xffffffff : Number(remaining);
    const extent = device.mapStatus ? await device.mapStatus(lba, max) : { blocks: max, mapped: true };
    const blocks = Math.max(1, Math.min(extent.blocks, max));
    const d = Buffer.alloc(16);
    d.writeBigUInt64BE(lba, 0);
    d.writeUInt32BE(blocks, 8);
    d[12] = extent.mapped ? 0 : 1; // PROVISIONING STATUS: mapped / deallocated
    descriptors.push(d);
    lba += BigInt(blocks);
  }
  const header = Buffer.alloc(8);
  header.writeUInt32BE(4 + 16 * descriptors.length, 0);
  return dataIn(Buffer.concat([header, ...descriptors]), c.allocationLength);
}

const IO_TIMEOUTS = [30, 60] as const;

export const sbcCommands: readonly CommandInfo[] = [
  { name: 'READ(6)', opcode: Op.Read6, usage: CdbUsage.read6, handler: read, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'READ(10)', opcode: Op.Read10, usage: CdbUsage.read10, handler: read, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'READ(12)', opcode: Op.Read12, usage: CdbUsage.read12, handler: read, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'READ(16)', opcode: Op.Read16, usage: CdbUsage.read16, handler: read, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'WRITE(6)', opcode: Op.Write6, usage: CdbUsage.write6, handler: write, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE(10)', opcode: Op.Write10, usage: CdbUsage.write10, handler: write, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE(12)', opcode: Op.Write12, usage: CdbUsage.write12, handler: write, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE(16)', opcode: Op.Write16, usage: CdbUsage.write16, handler: write, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE AND VERIFY(10)', opcode: Op.WriteAndVerify10, usage: CdbUsage.writeAndVerify10, handler: writeAndVerify, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE AND VERIFY(12)', opcode: Op.WriteAndVerify12, usage: CdbUsage.writeAndVerify12, handler: writeAndVerify, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE AND VERIFY(16)', opcode: Op.WriteAndVerify16, usage: CdbUsage.writeAndVerify16, handler: writeAndVerify, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'VERIFY(10)', opcode: Op.Verify10, usage: CdbUsage.verify10, handler: verify, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'VERIFY(12)', opcode: Op.Verify12, usage: CdbUsage.verify12, handler: verify, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'VERIFY(16)', opcode: Op.Verify16, usage: CdbUsage.verify16, handler: verify, io: 'read', timeouts: IO_TIMEOUTS },
  { name: 'COMPARE AND WRITE', opcode: Op.CompareAndWrite, usage: CdbUsage.compareAndWrite, handler: compareAndWrite, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'ORWRITE(16)', opcode: Op.OrWrite16, usage: CdbUsage.orWrite16, handler: orWrite, io: 'write', timeouts: IO_TIMEOUTS, writesMedium: true },
  { name: 'WRITE SAME(10)', opcode: Op.WriteSame10, usage: CdbUsage.writeSame10, handler: writeSame, io: 'write', timeouts: [300, 600], writesMedium: true },
  { name: 'WRITE SAME(16)', opcode: Op.WriteSame16, usage: CdbUsage.writeSame16, handler: writeSame, io: 'write', timeouts: [300, 600], writesMedium: true },
  { name: 'WRITE ATOMIC(16)', opcode: Op.WriteAtomic16, usage: CdbUsage.writeAtomic16, handler: writeAtomic, io: 'write', writesMedium: true, timeouts: IO_TIMEOUTS },
  { name: 'READ DEFECT DATA(10)', opcode: Op.ReadDefectData10, usage: CdbUsage.readDefectData10, handler: readDefectData, timeouts: [1, 1] },
  { name: 'READ DEFECT DATA(12)', opcode: Op.ReadDefectData12, usage: CdbUsage.readDefectData12, handler: readDefectData, timeouts: [1, 1] },
  { name: 'UNMAP', opcode: Op.Unmap, usage: CdbUsage.unmap, handler: unmap, io: 'write', timeouts: [60, 120], writesMedium: true },
  { name: 'SYNCHRONIZE CACHE(10)', opcode: Op.SynchronizeCache10, usage: CdbUsage.synchronizeCache10, handler: synchronizeCache, io: 'write', timeouts: [60, 120] },
  { name: 'SYNCHRONIZE CACHE(16)', opcode: Op.SynchronizeCache16, usage: CdbUsage.synchronizeCache16, handler: synchronizeCache, io: 'write', timeouts: [60, 120] },
  { name: 'PRE-FETCH(10)', opcode: Op.PreFetch10, usage: CdbUsage.preFetch10, handler: preFetch, timeouts: [1, 1] },
  { name: 'PRE-FETCH(16)', opcode: Op.PreFetch16, usage: CdbUsage.preFetch16, handler: preFetch, timeouts: [1, 1] },
  { name: 'READ CAPACITY(10)', opcode: Op.ReadCapacity10, usage: CdbUsage.readCapacity10, handler: readCapacity10, timeouts: [1, 1] },
  { name: 'READ CAPACITY(16)', opcode: Op.ServiceActionIn16, serviceAction: ServiceAction.ReadCapacity16, usage: CdbUsage.readCapacity16, handler: readCapacity16, timeouts: [1, 1] },
  { name: 'GET LBA STATUS', opcode: Op.ServiceActionIn16, serviceAction: ServiceAction.GetLbaStatus, usage: CdbUsage.getLbaStatus, handler: getLbaStatus, io: 'read', timeouts: [10, 30] },
];
