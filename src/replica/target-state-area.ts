// Reads and writes the target state slots (target-state.ts) through the store's device handle.
// The store serialises calls (with its superblock updates, so an epoch raise and a put never
// interleave); this file owns slot choice, the O_DIRECT buffers and the generation rule.
import { StoreError, StoreErrorCode } from './store-api.js';
import {
  EMPTY_TARGET_STATE, TARGET_STATE_SLOT_BYTES, TargetStateError, encodeTargetState, selectTargetState, type TargetStateBlob,
} from './target-state.js';
import type { Logger } from '../shared/logger.js';

export interface TargetStateIo {
  read(buffer: Buffer, offset: number): Promise<number>;
  write(buffer: Buffer, offset: number): Promise<number>;
  /** fdatasync. */
  flush(): Promise<void>;
  /** O_DIRECT-aligned buffers. */
  acquire(size: number): Buffer;
  release(buffer: Buffer): void;
}

export class TargetStateArea {
  readonly #io: TargetStateIo;
  readonly #offset: number;
  readonly #volumeUuid: string;
  readonly #log: Logger | undefined;
  #blob: TargetStateBlob = EMPTY_TARGET_STATE;
  /** The slot holding #blob (-1: none yet); the next put goes to the other one. */
  #slot: 0 | 1 | -1 = -1;
  #loaded = false;

  constructor(options: { readonly io: TargetStateIo; readonly offset: number; readonly volumeUuid: string; readonly log?: Logger | undefined }) {
    this.#io = options.io;
    this.#offset = options.offset;
    this.#volumeUuid = options.volumeUuid;
    this.#log = options.log;
  }

  async get(): Promise<TargetStateBlob> {
    await this.#load();
    return this.#blob;
  }

  /**
   * Store `blob` durably. A generation below the stored one is refused (a stale writer); the same
   * generation is rewritten (a retry, or a re-push to a replica that already has it).
   */
  async put(blob: TargetStateBlob): Promise<void> {
    let slot: Buffer;
    try {
      slot = encodeTargetState(blob, this.#volumeUuid);
    } catch (err) {
      if (err instanceof TargetStateError) throw new StoreError(StoreErrorCode.Invalid, err.message);
      throw err;
    }
    await this.#load();
    if (blob.generation < this.#blob.generation) {
      throw new StoreError(StoreErrorCode.StaleEpoch, `target state generation ${blob.generation} is older than the stored ${this.#blob.generation}`);
    }
    const next: 0 | 1 = this.#slot === 0 ? 1 : 0;
    const buf = this.#io.acquire(TARGET_STATE_SLOT_BYTES);
    try {
      slot.copy(buf);
      await this.#io.write(buf.subarray(0, TARGET_STATE_SLOT_BYTES), this.#offset + next * TARGET_STATE_SLOT_BYTES);
      await this.#io.flush();
    } finally {
      this.#io.release(buf);
    }
    this.#blob = { generation: blob.generation, epoch: blob.epoch, entries: new Map(blob.entries) };
    this.#slot = next;
  }

  async #load(): Promise<void> {
    if (this.#loaded) return;
    const region = this.#io.acquire(2 * TARGET_STATE_SLOT_BYTES);
    try {
      const n = await this.#io.read(region.subarray(0, 2 * TARGET_STATE_SLOT_BYTES), this.#offset);
      // A short read (a device that ends early) reads as never written.
      region.fill(0, n, 2 * TARGET_STATE_SLOT_BYTES);
      const selected = selectTargetState(region, this.#volumeUuid);
      if (selected.problems.length > 0) this.#log?.warn({ problems: selected.problems }, 'a target state slot is unreadable; using the other');
      this.#blob = selected.blob;
      this.#slot = selected.slot;
      this.#loaded = true;
    } finally {
      this.#io.release(region);
    }
  }
}
