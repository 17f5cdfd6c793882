// Where the store's regions sit on the device. Pure arithmetic, shared by format and open.
//
//   [0, 8 KiB)                 superblock, two 4 KiB slots (superblock.ts)
//   [64 KiB, 192 KiB)          the target's metadata blob, two 64 KiB slots (target-state.ts)
//   [1 MiB, +journal)          intent journal ring (journal.ts)
//   [metadata, +table)         16 bytes per chunk, sized for the largest capacity the volume may grow to
//   [data, +capacity)          the volume's blocks, chunk i at data + i * chunkSize
// Regions start on 1 MiB boundaries so data I/O is aligned for any device up to 1 MiB sectors.

import { ENTRY_BYTES } from './metadata-table.js';
import { TARGET_STATE_SLOT_BYTES } from './target-state.js';

export const REGION_ALIGN = 1 << 20;
export const DEFAULT_JOURNAL_BYTES = 128 << 20;
export const MIN_JOURNAL_BYTES = 1 << 20;
export const DEFAULT_CHUNK_SIZE = 4096;
/** The target state slots sit in the gap before the journal, which every layout starts at REGION_ALIGN. */
export const TARGET_STATE_OFFSET = 64 * 1024;
export const TARGET_STATE_REGION_BYTES = 2 * TARGET_STATE_SLOT_BYTES;

export interface StoreLayout {
  readonly journalOffset: number;
  readonly journalLength: number;
  readonly metadataOffset: number;
  readonly metadataLength: number;
  readonly dataOffset: number;
  /** The largest capacity the metadata region can describe. */
  readonly maxCapacityBytes: number;
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function computeLayout(options: { chunkSize: number; journalBytes: number; maxCapacityBytes: number }): StoreLayout {
  const journalOffset = REGION_ALIGN;
  const journalLength = options.journalBytes;
  const metadataOffset = alignUp(journalOffset + journalLength, REGION_ALIGN);
  const maxChunks = Math.ceil(options.maxCapacityBytes / options.chunkSize);
  const metadataLength = alignUp(maxChunks * ENTRY_BYTES, REGION_ALIGN);
  return {
    journalOffset,
    journalLength,
    metadataOffset,
    metadataLength,
    dataOffset: metadataOffset + metadataLength,
    maxCapacityBytes: (metadataLength / ENTRY_BYTES) * options.chunkSize,
  };
}

/**
 * For a block device of `deviceBytes`: the layout whose data region fills the device, so the volume
 * can later grow to the whole device.
 */
export function layoutForDevice(deviceBytes: number, chunkSize: number, journalBytes: number): StoreLayout {
  // The table for the whole device is an over-estimate by at most 16/chunkSize of the device.
  return computeLayout({ chunkSize, journalBytes, maxCapacityBytes: deviceBytes });
}

/**
 * For a sparse file: reserve (as a hole, free until used) a table for 16× the capacity and at
 * least 64 GiB, so the volume can be grown online without moving data.
 */
export function layoutForFile(capacityBytes: number, chunkSize: number, journalBytes: number): StoreLayout {
  const maxCapacityBytes = Math.max(capacityBytes * 16, 64 * 2 ** 30);
  return computeLayout({ chunkSize, journalBytes, maxCapacityBytes });
}
