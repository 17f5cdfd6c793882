// SANITIZE (SBC-4 5.30, 4.11): OVERWRITE, BLOCK ERASE and EXIT FAILURE MODE (CRYPTOGRAPHIC ERASE is not
// supported: no media encryption). The sanitize operation belongs to the logical unit, not to the command
// that started it: it runs to completion even if that command is aborted, the logical unit or target is
// reset or the I_T nexus goes away. Meanwhile every command but INQUIRY, REPORT LUNS and REQUEST SENSE
// gets NOT READY / SANITIZE IN PROGRESS (the logical unit asks inProgress). A failed operation leaves the
// logical unit in failure mode (media access → MEDIUM ERROR / SANITIZE COMMAND FAILED) until a sanitize
// succeeds or, when the failed one had AUSE=1, until EXIT FAILURE MODE.
import { SanitizeAction, decodeSanitize, sanitizeUsage, Op } from '../../protocol/scsi/cdb.js';
import { Asc } from '../../protocol/scsi/constants.js';
import { illegalRequest, invalidCdbField, invalidParameterField } from '../../protocol/scsi/sense.js';
import { GOOD, fetchDataOut, type CommandContext, type CommandInfo, type LogicalUnitServices } from './command.js';
import type { ScsiResult } from './types.js';

/** Default pace of sanitize I/O: a bulk rewrite of the whole volume (fanned out to every replica) must not saturate the backend. */
export const DEFAULT_SANITIZE_BYTES_PER_SECOND = 32 << 20;
const CHUNK_BYTES = 1 << 20;
/** Largest block count handed to one unmap call. */
const MAX_UNMAP_BLOCKS = 1 << 30;

export class SanitizeState {
  readonly bytesPerSecond: number;
  #running: Promise<void> | undefined;
  /** Set while in failure mode: whether the failed operation allows EXIT FAILURE MODE. */
  #failure: { readonly ause: boolean } | undefined;

  constructor(bytesPerSecond: number = DEFAULT_SANITIZE_BYTES_PER_SECOND) {
    this.bytesPerSecond = bytesPerSecond;
  }

  get inProgress(): boolean {
    return this.#running !== undefined;
  }

  get failed(): boolean {
    return this.#failure !== undefined;
  }

  /** Start `operation` detached from any task; the promise settles with its outcome. */
  run(ause: boolean, operation: () => Promise<void>): Promise<void> {
    const done = (async () => {
      try {
        await operation();
        this.#failure = undefined;
      } catch (e) {
        this.#failure = { ause };
        throw e;
      } finally {
        this.#running = undefined;
      }
    })();
    this.#running = done;
    // Nobody may be waiting (IMMED, aborted command): failure mode records the outcome.
    done.catch(() => {});
    return done;
  }

  /** EXIT FAILURE MODE: allowed when not in failure mode or when the failed operation had AUSE=1. */
  exitFailureMode(): boolean {
    if (this.#failure && !this.#failure.ause) return false;
    this.#failure = undefined;
    return true;
  }

  /** Resolves when the running operation (if any) ends, whatever its outcome (tests, close). */
  async settled(): Promise<void> {
    await this.#running?.catch(() => {});
  }
}

/** OVERWRITE parameter list (SBC-4 table 77): the pattern to write and how many passes. */
interface OverwriteParameters {
  readonly invert: boolean;
  readonly count: number;
  readonly pattern: Buffer;
}

function overwriteParameters(p: Buffer, blockSize: number): OverwriteParameters {
  const b0 = p[0]!;
  // TEST is vendor specific: we define no test modes.
  if (b0 & 0x60) throw invalidParameterField(0, 6);
  const count = b0 & 0x1f;
  if (count === 0) throw invalidParameterField(0, 4);
  if (p[1] !== 0) throw invalidParameterField(1, highestSet(p[1]!));
  const length = p.readUInt16BE(2);
  if (length === 0 || length > blockSize) throw invalidParameterField(2, 7);
  if (4 + length > p.length) throw invalidParameterField(2, 7);
  return { invert: (b0 & 0x80) !== 0, count, pattern: p.subarray(4, 4 + length) };
}

function highestSet(v: number): number {
  return 31 - Math.clz32(v);
}

/** Wait so that `bytes` done since `start` stay at or under the configured rate. */
async function pace(start: number, bytes: number, bytesPerSecond: number, signal?: AbortSignal): Promise<void> {
  if (!(bytesPerSecond > 0)) return;
  const due = start + (bytes / bytesPerSecond) * 1000;
  const wait = due - Date.now();
  if (wait > 0) await new Promise<void>((resolve) => setTimeout(resolve, wait));
  signal?.throwIfAborted();
}

async function overwrite(lu: LogicalUnitServices, o: OverwriteParameters): Promise<void> {
  const { device } = lu;
  const bs = device.blockSize;
  const chunkBlocks = Math.max(1, Math.floor(CHUNK_BYTES / bs));
  const buf = Buffer.allocUnsafe(chunkBlocks * bs);
  const capacity = device.blockCount;
  const start = Date.now();
  let bytes = 0;
  for (let pass = 0; pass < o.count; pass++) {
    // INVERT: the pattern is inverted between consecutive passes.
    const pattern = o.invert && pass % 2 === 1 ? Buffer.from(o.pattern.map((x) => ~x & 0xff)) : o.pattern;
    for (let off = 0; off < buf.length; off += pattern.length) pattern.copy(buf, off, 0, Math.min(pattern.length, buf.length - off));
    for (let lba = 0n; lba < capacity;) {
      const n = Number(capacity - lba < BigInt(chunkBlocks) ? capacity - lba : BigInt(chunkBlocks));
      await device.write(lba, buf.subarray(0, n * bs));
      lba += BigInt(n);
      bytes += n * bs;
      await pace(start, bytes, lu.sanitize.bytesPerSecond);
    }
  }
  await device.flush();
}

async function blockErase(lu: LogicalUnitServices): Promise<void> {
  const { device } = lu;
  const capacity = device.blockCount;
  const start = Date.now();
  const stepBlocks = BigInt(Math.max(1, Math.floor((16 * CHUNK_BYTES) / device.blockSize)));
  let bytes = 0;
  for (let lba = 0n; lba < capacity;) {
    let n = capacity - lba < stepBlocks ? capacity - lba : stepBlocks;
    if (n > BigInt(MAX_UNMAP_BLOCKS)) n = BigInt(MAX_UNMAP_BLOCKS);
    // Deallocated blocks read as zeroes (LBPRZ=1), and GET LBA STATUS reports them deallocated.
    await device.unmap(lba, Number(n));
    lba += n;
    bytes += Number(n) * device.blockSize;
    await pace(start, bytes, lu.sanitize.bytesPerSecond);
  }
  await device.flush();
}

async function sanitize(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeSanitize(ctx.cdb);
  const { lu } = ctx;
  const state = lu.sanitize;
  if (c.serviceAction === SanitizeAction.ExitFailureMode) {
    if (c.parameterListLength !== 0) throw invalidCdbField(7, 7);
    if (!state.exitFailureMode()) throw invalidCdbField(1, 4);
    return GOOD;
  }
  let operation: () => Promise<void>;
  if (c.serviceAction === SanitizeAction.Overwrite) {
    // SBC-4: at least the 4-byte header plus one pattern byte, at most a block of pattern.
    if (c.parameterListLength < 5 || c.parameterListLength > lu.device.blockSize + 4) throw invalidCdbField(7, 7);
    const p = await fetchDataOut(ctx, c.parameterListLength);
    if (p.length < c.parameterListLength) throw illegalRequest(Asc.ParameterListLengthError);
    const o = overwriteParameters(p, lu.device.blockSize);
    operation = () => overwrite(lu, o);
  } else {
    if (c.parameterListLength !== 0) throw invalidCdbField(7, 7);
    operation = () => blockErase(lu);
  }
  // Commands already running finish first; new ones are refused as soon as the operation starts.
  const release = await lu.rangeLock.acquire(0n, lu.device.blockCount, true, ctx.signal);
  const done = state.run(c.ause, async () => {
    try {
      await operation();
    } finally {
      release();
    }
  });
  if (c.immed) return GOOD;
  // The command waits for the operation; aborting the command leaves the operation running.
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(ctx.signal.reason);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    done.then(resolve, reject).finally(() => ctx.signal.removeEventListener('abort', onAbort));
  });
  return GOOD;
}

const TIMEOUTS = [3600, 7200] as const;

export const sanitizeCommands: readonly CommandInfo[] = [
  SanitizeAction.Overwrite, SanitizeAction.BlockErase, SanitizeAction.ExitFailureMode,
].map((sa): CommandInfo => ({
  name: `SANITIZE/${sa}`, opcode: Op.Sanitize, serviceAction: sa, usage: sanitizeUsage(sa), handler: sanitize,
  io: 'write', writesMedium: sa !== SanitizeAction.ExitFailureMode, timeouts: TIMEOUTS,
}));
