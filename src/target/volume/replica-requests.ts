// What every BlockDevice over replica connections shares: the byte range of a block request,
// splitting large requests into pieces a replica accepts, and one mapping from replica statuses
// to BlockDeviceError codes (and so to sense data).

import { ReplicaIoError, ReplicaStatus } from '../../protocol/replica/frame.js';
import { BlockDeviceError } from './block-device.js';
import { errorMessage } from '../../shared/errors.js';

/** Largest single request to a replica (its responder refuses more than 16 MiB). */
export const MAX_REQUEST_BYTES = 4 << 20;

/** Byte offset of [lba, lba + blocks), checked against the capacity (keeps the numbers safe too). */
export function requestOffset(lba: bigint, blocks: number, blockCount: bigint, blockSize: number): number {
  if (lba < 0n || lba + BigInt(blocks) > blockCount) {
    throw new BlockDeviceError('ERANGE', `lba ${lba}+${blocks} beyond capacity ${blockCount}`);
  }
  return Number(lba) * blockSize;
}

/** Run `op` over `length` bytes in pieces of at most MAX_REQUEST_BYTES, all in flight at once. */
export async function inPieces(length: number, op: (at: number, n: number) => Promise<unknown>): Promise<void> {
  if (length <= MAX_REQUEST_BYTES) {
    await op(0, length);
    return;
  }
  const ops: Promise<unknown>[] = [];
  for (let at = 0; at < length; at += MAX_REQUEST_BYTES) ops.push(op(at, Math.min(MAX_REQUEST_BYTES, length - at)));
  // Every piece settles before the caller may reuse its buffer.
  const results = await Promise.allSettled(ops);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

export function blockDeviceErrorFor(err: unknown, blockSize: number): BlockDeviceError {
  if (err instanceof BlockDeviceError) return err;
  if (!(err instanceof ReplicaIoError)) return new BlockDeviceError('EIO', errorMessage(err));
  switch (err.status) {
    case ReplicaStatus.MediumError: {
      const lba = err.offset === undefined ? undefined : BigInt(Math.floor(err.offset / blockSize));
      return new BlockDeviceError('EMEDIUM', err.message, lba);
    }
    case ReplicaStatus.NoSpace: return new BlockDeviceError('ENOSPC', err.message);
    case ReplicaStatus.OutOfRange: return new BlockDeviceError('ERANGE', err.message);
    case ReplicaStatus.Closed: return new BlockDeviceError('EOFFLINE', err.message);
    default: return new BlockDeviceError('EIO', err.message);
  }
}
