// A BlockDevice over a local file or block device with positional I/O (node:fs/promises FileHandle).
// FUA = write then fdatasync; flush = fdatasync. node:fs has no fallocate(PUNCH_HOLE) or SEEK_HOLE, so
// unmap writes zeroes (reads then return zeroes as LBPRZ promises) and mapStatus reports what this
// process knows to be deallocated: ranges unmapped since open, plus a new file or a grown tail (sparse);
// everything else reads as mapped. A native O_DIRECT store replaces this later.
// State (persistent reservations) lives in `<path>.state/<key>`, replaced atomically.
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { StateDir } from './state-dir.js';
import { BlockDeviceError, type BlockDevice, type BlockDeviceWriteOptions } from './block-device.js';

export interface FileBlockDeviceOptions {
  /** Size in bytes: creates a sparse file if missing, grows a smaller one. Required for a new file. */
  readonly size?: bigint;
  readonly blockSize: 512 | 4096;
  /** Report write-back caching (WCE=1; completed writes are durable after SYNCHRONIZE CACHE). Default true. */
  readonly writeCache?: boolean;
}

const ZERO_CHUNK = 1 << 20;
/** Bound on tracked deallocated extents (beyond it the smallest is forgotten: reported mapped, still zero). */
const MAX_EXTENTS = 4096;

/** Deallocated LBA ranges: sorted, disjoint, non-adjacent [start, end). */
export class ExtentSet {
  readonly #starts: bigint[] = [];
  readonly #ends: bigint[] = [];

  get size(): number {
    return this.#starts.length;
  }

  /** Index of the first extent whose end is after `lba`. */
  #firstEndingAfter(lba: bigint): number {
    let lo = 0;
    let hi = this.#ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#ends[mid]! > lba) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  add(start: bigint, end: bigint): void {
    if (end <= start) return;
    // Merge every extent overlapping or touching [start, end).
    const i = this.#firstEndingAfter(start - 1n);
    let j = i;
    while (j < this.#starts.length && this.#starts[j]! <= end) {
      if (this.#starts[j]! < start) start = this.#starts[j]!;
      if (this.#ends[j]! > end) end = this.#ends[j]!;
      j++;
    }
    this.#starts.splice(i, j - i, start);
    this.#ends.splice(i, j - i, end);
    if (this.#starts.length > MAX_EXTENTS) {
      let smallest = 0;
      for (let k = 1; k < this.#starts.length; k++) {
        if (this.#ends[k]! - this.#starts[k]! < this.#ends[smallest]! - this.#starts[smallest]!) smallest = k;
      }
      this.#starts.splice(smallest, 1);
      this.#ends.splice(smallest, 1);
    }
  }

  remove(start: bigint, end: bigint): void {
    if (end <= start || this.#starts.length === 0) return;
    const i = this.#firstEndingAfter(start);
    const keptStarts: bigint[] = [];
    const keptEnds: bigint[] = [];
    let j = i;
    while (j < this.#starts.length && this.#starts[j]! < end) {
      if (this.#starts[j]! < start) { keptStarts.push(this.#starts[j]!); keptEnds.push(start); }
      if (this.#ends[j]! > end) { keptStarts.push(end); keptEnds.push(this.#ends[j]!); }
      j++;
    }
    if (j === i) return;
    this.#starts.splice(i, j - i, ...keptStarts);
    this.#ends.splice(i, j - i, ...keptEnds);
  }

  /** The run starting at `lba` (at most maxBlocks): deallocated or not, and how long. */
  status(lba: bigint, maxBlocks: number): { readonly blocks: number; readonly mapped: boolean } {
    const i = this.#firstEndingAfter(lba);
    const max = lba + BigInt(maxBlocks);
    if (i < this.#starts.length && this.#starts[i]! <= lba) {
      const end = this.#ends[i]! < max ? this.#ends[i]! : max;
      return { blocks: Number(end - lba), mapped: false };
    }
    const next = i < this.#starts.length && this.#starts[i]! < max ? this.#starts[i]! : max;
    return { blocks: Number(next - lba), mapped: true };
  }
}

function errno(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}

/** Map an fs error to what the SCSI layer reports (media error / out of space); others pass through. */
function ioError(e: unknown, lba: bigint): unknown {
  switch (errno(e)) {
    case 'EIO': return new BlockDeviceError('EMEDIUM', `I/O error near lba ${lba}`, lba);
    case 'ENOSPC':
    case 'EDQUOT': return new BlockDeviceError('ENOSPC', 'no space left on the backing store');
    default: return e;
  }
}

/** Size of a Linux block device from sysfs (fstat reports 0 for block devices). */
async function blockDeviceBytes(rdev: number): Promise<bigint> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 4096) & 0xfff00));
  const sectors = (await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim();
  return BigInt(sectors) * 512n;
}

export class FileBlockDevice implements BlockDevice {
  readonly blockSize: number;
  readonly writeCache: boolean;
  readonly path: string;
  #blockCount: bigint;
  readonly #fh: FileHandle;
  readonly #listeners = new Set<(n: bigint) => void>();
  #zeroes: Buffer | undefined;
  readonly #deallocated = new ExtentSet();

  static async open(path: string, options: FileBlockDeviceOptions): Promise<FileBlockDevice> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (e) {
      if (errno(e) !== 'ENOENT' || options.size === undefined) throw e;
      fh = await open(path, 'wx+');
    }
    try {
      const st = await fh.stat({ bigint: true });
      let bytes: bigint;
      // Bytes of the file known to be a hole (a sparse extension), from here to the end.
      let sparseFrom: bigint | undefined;
      if (st.isBlockDevice()) {
        bytes = await blockDeviceBytes(Number(st.rdev));
      } else {
        bytes = st.size;
        if (options.size !== undefined && options.size > bytes) {
          await fh.truncate(Number(options.size));
          sparseFrom = bytes;
          bytes = options.size;
        }
      }
      const blockCount = bytes / BigInt(options.blockSize);
      if (blockCount === 0n) throw new RangeError(`${path}: smaller than one block`);
      const device = new FileBlockDevice(path, fh, options, blockCount);
      if (sparseFrom !== undefined) {
        const bs = BigInt(options.blockSize);
        device.#deallocated.add((sparseFrom + bs - 1n) / bs, blockCount);
      }
      return device;
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  readonly #state: StateDir;

  private constructor(path: string, fh: FileHandle, options: FileBlockDeviceOptions, blockCount: bigint) {
    this.path = path;
    this.#fh = fh;
    this.blockSize = options.blockSize;
    this.writeCache = options.writeCache ?? true;
    this.#blockCount = blockCount;
    this.#state = new StateDir(`${path}.state`);
  }

  get blockCount(): bigint {
    return this.#blockCount;
  }

  #range(lba: bigint, blocks: number): number {
    if (lba < 0n || lba + BigInt(blocks) > this.#blockCount) {
      throw new BlockDeviceError('ERANGE', `lba ${lba}+${blocks} beyond capacity ${this.#blockCount}`);
    }
    return Number(lba) * this.blockSize;
  }

  async read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    const position = this.#range(lba, blocks);
    const length = blocks * this.blockSize;
    try {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await this.#fh.read(into, done, length - done, position + done);
        if (bytesRead === 0) {
          into.fill(0, done, length); // beyond end of a short file: zeroes
          break;
        }
        done += bytesRead;
      }
    } catch (e) {
      throw ioError(e, lba);
    }
  }

  async write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    const position = this.#range(lba, data.length / this.blockSize);
    try {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await this.#fh.write(data, done, data.length - done, position + done);
        done += bytesWritten;
      }
      if (options?.fua) await this.#fh.datasync();
    } catch (e) {
      throw ioError(e, lba);
    }
    this.#deallocated.remove(lba, lba + BigInt(data.length / this.blockSize));
  }

  async flush(): Promise<void> {
    try {
      await this.#fh.datasync();
    } catch (e) {
      throw ioError(e, 0n);
    }
  }

  /** No hole punching in node:fs: deallocation is a zero write (reads return zeroes either way). */
  async unmap(lba: bigint, blocks: number): Promise<void> {
    await this.writeZeroes(lba, blocks);
    this.#deallocated.add(lba, lba + BigInt(blocks));
  }

  async mapStatus(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }> {
    return this.#deallocated.status(lba, maxBlocks);
  }

  async writeZeroes(lba: bigint, blocks: number): Promise<void> {
    this.#range(lba, blocks);
    const chunkBlocks = Math.max(1, Math.floor(ZERO_CHUNK / this.blockSize));
    this.#zeroes ??= Buffer.alloc(chunkBlocks * this.blockSize);
    for (let done = 0; done < blocks;) {
      const n = Math.min(chunkBlocks, blocks - done);
      await this.write(lba + BigInt(done), this.#zeroes.subarray(0, n * this.blockSize));
      done += n;
    }
  }

  /** Grow the backing file (not block devices) and tell listeners (CAPACITY DATA HAS CHANGED). */
  async grow(bytes: bigint): Promise<void> {
    const blockCount = bytes / BigInt(this.blockSize);
    if (blockCount <= this.#blockCount) return;
    await this.#fh.truncate(Number(bytes));
    this.#deallocated.add(this.#blockCount, blockCount);
    this.#blockCount = blockCount;
    for (const l of this.#listeners) l(blockCount);
  }

  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  loadState(key: string): Promise<Buffer | undefined> {
    return this.#state.load(key);
  }

  saveState(key: string, value: Buffer): Promise<void> {
    return this.#state.save(key, value);
  }

  async close(): Promise<void> {
    this.#listeners.clear();
    await this.#fh.close();
  }
}

