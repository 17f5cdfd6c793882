// A BlockDevice over k replicas with a write quorum W (a majority or more). Mutating requests take
// one io_seq from a volume-wide counter and fan out to every healthy and rebuilding replica; they
// complete once W *healthy* replicas acknowledged, so latency is that of the W-th fastest replica and
// a straggler never holds the initiator up. A replica that fails, leaves a read or a request the
// quorum already completed unanswered past ioDeadlineMs, or falls more than maxBacklog requests behind
// the quorum is ejected (degraded: no more I/O until a rebuild brings it back). Reads go to
// one healthy replica, round-robin; a media error is served from another copy and the bad copy is
// rewritten with the good data. Below W healthy replicas the volume is offline: I/O waits up to
// holdMs for quorum to return, then fails with EOFFLINE — success is never reported without quorum.
// Imports only the protocol and target-side modules, never src/replica.

import { ReplicaIoError, ReplicaStatus } from '../../protocol/replica/frame.js';
import { allocIoBuffer } from '../../protocol/io-buffer.js';
import { crc32c } from '../../protocol/iscsi/digest.js';
import type { Logger } from '../../shared/logger.js';
import type { TargetStateKeeper } from './target-state-keeper.js';
import { blockDeviceErrorFor, inPieces, requestOffset } from './replica-requests.js';
import { BlockDeviceError, type BlockDevice, type BlockDeviceWriteOptions } from './block-device.js';
import type { ReplicaConnection } from './replica-connection.js';
import { errorMessage } from '../../shared/errors.js';


export type ReplicaState = 'healthy' | 'degraded' | 'rebuilding' | 'offline';
export type VolumeState = 'healthy' | 'degraded' | 'offline';

export interface ReplicatedVolumeOptions {
  readonly blockSize: number;
  readonly capacityBytes: number;
  /** Target epoch stamped on every request (fencing). */
  readonly epoch: number;
  readonly replicaIds: readonly string[];
  /** Healthy acknowledgements a write needs (default ⌊k/2⌋+1; never below a majority). */
  readonly writeQuorum?: number;
  /** A replica that has not answered a request within this is ejected (default 5000 ms). */
  readonly ioDeadlineMs?: number;
  /** A replica more than this many requests behind the write quorum is ejected (default 256). */
  readonly maxBacklog?: number;
  /** How long I/O waits for quorum before failing with EOFFLINE (default 30 s). */
  readonly holdMs?: number;
  /** Persistent SCSI state (reservations), kept on the replicas; none = saveState fails. */
  readonly targetState?: TargetStateKeeper;
  readonly logger: Logger;
}

export interface ReplicaStatusInfo {
  readonly replicaId: string;
  readonly state: ReplicaState;
  /** Why the replica is degraded or offline. */
  readonly reason: string | undefined;
  readonly inFlight: number;
  /** In-flight requests by kind (reads, writes incl. unmap/zeroes, syncs). */
  readonly inFlightByKind: { readonly read: number; readonly write: number; readonly sync: number };
  readonly address: string | undefined;
}

export interface ReplicatedVolumeCounters {
  readonly reads: number;
  readonly writes: number;
  readonly readRepairs: number;
  readonly ejections: number;
  readonly inFlight: Readonly<Record<string, number>>;
}

type CallKind = 'read' | 'write' | 'sync';

interface PendingCall {
  readonly start: number;
  readonly kind: CallKind;
  readonly reject: (err: Error) => void;
  /** The request already completed on a quorum without this replica. */
  lagging: boolean;
  /**
   * Subject to ioDeadlineMs: reads, and fan-out requests once lagging. A fan-out request the quorum
   * still waits on is not: when every replica is slow, I/O holds (EOFFLINE after holdMs) rather than
   * ejecting the whole set and forcing full rebuilds.
   */
  expires: boolean;
  /** Called when the request settles or is abandoned (a flush waiting for earlier writes). */
  settled: (() => void)[] | undefined;
}

interface Slot {
  readonly id: string;
  readonly logger: Logger;
  state: ReplicaState;
  reason: string | undefined;
  conn: ReplicaConnection | undefined;
  unsubscribe: (() => void) | undefined;
  /** Requests sent on `conn` and not yet answered, in send order (Map keeps insertion order). */
  readonly pending: Map<number, PendingCall>;
  /** How many of them are lagging: its backlog behind the quorum. */
  lagging: number;
  /** Bumped whenever the replica is (re)admitted to the write path, so held writes are re-sent to it. */
  generation: number;
  /** Moving average of its read latency in ms (0 = no sample since it connected). */
  readMs: number;
  /**
   * It holds every mutation the volume has completed: it was healthy, and nothing completed without
   * its acknowledgement since (a request still in flight on it counts once it answers). Such a
   * replica that drops and comes back with the same store instance (HELLO `instance`: the same
   * process, so nothing it acknowledged was lost) rejoins healthy without a rebuild. Otherwise a
   * network blip that drops every replica at once would leave no healthy source to rebuild from.
   */
  intact: boolean;
  /** The store instance its intact state refers to (its HELLO at the last healthy admission). */
  instance: string | undefined;
}

/** A request abandoned because its replica was ejected or replaced (the replica is already handled). */
class Abandoned extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Abandoned';
  }
}

function isMediaError(err: unknown): boolean {
  return err instanceof ReplicaIoError && err.status === ReplicaStatus.MediumError;
}

function describe(err: unknown): string {
  if (err instanceof ReplicaIoError) return `${err.statusName}: ${err.message}`;
  return errorMessage(err);
}

/**
 * A healthy replica whose reads take SLOW_READ_FACTOR times the fastest one's (and over
 * SLOW_READ_MIN_MS) serves only every SLOW_READ_PROBE_EVERY-th read, which keeps its average
 * current: a slow disk or link must not set the volume's read latency (writes never wait for it).
 */
const SLOW_READ_FACTOR = 4;
const SLOW_READ_MIN_MS = 20;
const SLOW_READ_PROBE_EVERY = 64;

/** Reads in a row sent to one replica before the round robin moves on, when many are in flight. */
const READ_BURST = 32;
/** Below this many reads in flight, each read goes to the next replica (plain round robin). */
const READ_BURST_MIN_DEPTH = 8;

export class ReplicatedVolume implements BlockDevice {
  readonly blockSize: number;
  readonly writeCache = true;
  readonly writeQuorum: number;
  readonly #logger: Logger;
  readonly #epoch: number;
  #capacityBytes: number;
  #blockCount: bigint;
  readonly #ioDeadlineMs: number;
  readonly #maxBacklog: number;
  readonly #holdMs: number;
  readonly #targetState: TargetStateKeeper | undefined;
  readonly #slots: readonly Slot[];
  readonly #byId = new Map<string, Slot>();
  readonly #listeners = new Set<(n: bigint) => void>();
  /** Wake-ups for I/O waiting for quorum. */
  readonly #waiters = new Set<() => void>();
  /** Re-evaluation hooks of writes in flight (a replica's state changed). */
  readonly #active = new Set<() => void>();
  readonly #sweep: NodeJS.Timeout;
  #nextIoSeq = 1;
  /** Once any mutating request went out, a replica that (re)attaches has missed data. */
  #written = false;
  #nextCall = 0;
  #roundRobin = 0;
  /** Reads already sent to the current round-robin replica (see READ_BURST). */
  #burst = 0;
  /** Read placements so far (every SLOW_READ_PROBE_EVERY-th may go to a slow replica). */
  #readPicks = 0;
  #readsInFlight = 0;
  #closed = false;
  #volumeState: VolumeState = 'offline';
  #reads = 0;
  #writes = 0;
  #readRepairs = 0;
  #ejections = 0;

  constructor(options: ReplicatedVolumeOptions) {
    const k = options.replicaIds.length;
    if (k === 0) throw new Error('a replicated volume needs at least one replica');
    if (new Set(options.replicaIds).size !== k) throw new Error('replica ids must be unique');
    const majority = Math.floor(k / 2) + 1;
    const w = options.writeQuorum ?? majority;
    // Below a majority two disjoint write sets could both "succeed": acknowledged data could be lost.
    if (!Number.isInteger(w) || w < majority || w > k) {
      throw new Error(`write quorum ${w} must be an integer from ${majority} (a majority of ${k}) to ${k}`);
    }
    if (options.capacityBytes % options.blockSize !== 0) {
      throw new Error(`capacity ${options.capacityBytes} is not a multiple of the block size ${options.blockSize}`);
    }
    this.writeQuorum = w;
    this.blockSize = options.blockSize;
    this.#logger = options.logger;
    this.#epoch = options.epoch;
    this.#capacityBytes = options.capacityBytes;
    this.#blockCount = BigInt(options.capacityBytes / options.blockSize);
    this.#ioDeadlineMs = options.ioDeadlineMs ?? 5000;
    this.#maxBacklog = Math.max(1, options.maxBacklog ?? 256);
    this.#holdMs = options.holdMs ?? 30_000;
    this.#targetState = options.targetState;
    this.#slots = options.replicaIds.map((id) => ({
      id, logger: options.logger.child({ replica: id }), state: 'offline' as ReplicaState, reason: 'not connected yet',
      conn: undefined, unsubscribe: undefined, pending: new Map<number, PendingCall>(), lagging: 0, generation: 0, readMs: 0,
      intact: false, instance: undefined,
    }));
    for (const s of this.#slots) this.#byId.set(s.id, s);
    this.#sweep = setInterval(() => this.#checkDeadlines(), Math.max(10, Math.min(1000, Math.floor(this.#ioDeadlineMs / 4))));
    this.#sweep.unref();
  }

  get blockCount(): bigint {
    return this.#blockCount;
  }

  /** The io_seq the next mutating request will take. */
  get nextIoSeq(): number {
    return this.#nextIoSeq;
  }

  volumeState(): VolumeState {
    const healthy = this.#healthyCount();
    if (healthy === this.#slots.length) return 'healthy';
    return healthy >= this.writeQuorum ? 'degraded' : 'offline';
  }

  replicaStates(): ReplicaStatusInfo[] {
    return this.#slots.map((s) => {
      const byKind = { read: 0, write: 0, sync: 0 };
      for (const p of s.pending.values()) byKind[p.kind]++;
      return { replicaId: s.id, state: s.state, reason: s.reason, inFlight: s.pending.size, inFlightByKind: byKind, address: s.conn?.remoteAddress };
    });
  }

  counters(): ReplicatedVolumeCounters {
    const inFlight: Record<string, number> = {};
    for (const s of this.#slots) inFlight[s.id] = s.pending.size;
    return { reads: this.#reads, writes: this.#writes, readRepairs: this.#readRepairs, ejections: this.#ejections, inFlight };
  }

  /**
   * A replica (re)connected. Before the first write it joins healthy; afterwards it has missed
   * writes and stays degraded until a rebuild (markRebuilding, then markHealthy) — unless it is
   * intact (see Slot.intact) and returns with the same store instance: then it rejoins healthy and
   * receives the mutations still in flight, as a replica re-admitted after a rebuild does.
   */
  attach(connection: ReplicaConnection, capacityBytes = connection.hello.capacityBytes): void {
    if (this.#closed) throw new Error('the volume is closed');
    const hello = connection.hello;
    const slot = this.#byId.get(hello.replicaId);
    if (slot === undefined) throw new Error(`replica ${hello.replicaId} is not one of this volume's replicas`);
    if (hello.blockSize !== this.blockSize) {
      throw new Error(`replica ${hello.replicaId} has block size ${hello.blockSize}, the volume ${this.blockSize}`);
    }
    if (capacityBytes < this.#capacityBytes) {
      throw new Error(`replica ${hello.replicaId} holds ${capacityBytes} bytes, the volume ${this.#capacityBytes}`);
    }
    if (slot.conn !== undefined) this.#detach(slot, 'replaced by a new connection', true);
    // Above anything any replica has applied, so no write of ours is mistaken for a replayed older one.
    this.#nextIoSeq = Math.max(this.#nextIoSeq, hello.highestIoSeq + 1);
    slot.conn = connection;
    slot.readMs = 0;
    const returned = this.#written && slot.intact && hello.instance !== undefined && hello.instance === slot.instance;
    if (this.#written && !returned) {
      slot.state = 'degraded';
      slot.reason = 'needs rebuild';
      slot.intact = false;
    } else {
      slot.state = 'healthy';
      slot.reason = undefined;
      slot.intact = true;
      slot.instance = hello.instance;
      // Mutations in flight go to it as to any new connection (same io_seq: one it applied is skipped).
      if (returned) slot.logger.info({ instance: hello.instance }, 'replica returned with everything the volume completed: healthy without a rebuild');
    }
    slot.unsubscribe = connection.onClose((reason) => {
      if (slot.conn !== connection) return;
      if (!this.#closed) slot.logger.warn({ reason, state: slot.state }, 'replica disconnected');
      this.#detach(slot, `disconnected: ${reason}`, false);
      this.#changed();
    });
    slot.logger.info({ state: slot.state, highestIoSeq: hello.highestIoSeq, address: connection.remoteAddress }, 'replica attached');
    if (slot.state === 'healthy') void this.#targetState?.push({ id: slot.id, controlAddress: hello.controlAddress });
    if (!connection.isOpen) this.#detach(slot, 'disconnected before attach', false);
    this.#changed();
  }

  loadState(key: string): Promise<Buffer | undefined> {
    return Promise.resolve(this.#targetState?.load(key));
  }

  /** On every replica receiving writes; done once a write quorum of healthy ones stored it. */
  saveState(key: string, value: Buffer): Promise<void> {
    if (this.#targetState === undefined) return Promise.reject(new Error('no target state store'));
    const replicas = this.#slots.filter((s) => s.conn !== undefined && (s.state === 'healthy' || s.state === 'rebuilding'))
      .map((s) => ({ id: s.id, controlAddress: s.conn!.hello.controlAddress, counts: s.state === 'healthy' }));
    return this.#targetState.save(key, value, replicas);
  }

  /** Take a replica out of the quorum and the read set (e.g. found lagging at start). */
  markDegraded(replicaId: string, reason: string): void {
    const slot = this.#byId.get(replicaId);
    if (slot === undefined) throw new Error(`unknown replica ${replicaId}`);
    this.#eject(slot, reason);
  }

  /**
   * Resolves once every request already sent to `replicaId` has settled: a rebuild source must hold
   * every write issued before its sink started to receive new writes, before it is scanned.
   */
  currentRequestsSettled(replicaId: string): Promise<void> {
    const slot = this.#byId.get(replicaId);
    if (slot === undefined) throw new Error(`unknown replica ${replicaId}`);
    const calls = [...slot.pending.values()];
    if (calls.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      let left = calls.length;
      for (const c of calls) (c.settled ??= []).push(() => { if (--left === 0) resolve(); });
    });
  }

  /** The connection of an attached replica (its HELLO names its control address). */
  connectionOf(replicaId: string): ReplicaConnection | undefined {
    return this.#byId.get(replicaId)?.conn;
  }

  /** A rebuild finished: the replica is in sync and back in the quorum and the read set. */
  markHealthy(replicaId: string): void {
    this.#setState(replicaId, 'healthy');
  }

  /** A rebuild started: the replica receives new writes but is neither counted nor read from. */
  markRebuilding(replicaId: string): void {
    this.#setState(replicaId, 'rebuilding');
  }

  #setState(replicaId: string, state: 'healthy' | 'rebuilding'): void {
    const slot = this.#byId.get(replicaId);
    if (slot === undefined) throw new Error(`unknown replica ${replicaId}`);
    if (slot.conn === undefined) throw new Error(`replica ${replicaId} is not connected`);
    slot.state = state;
    slot.reason = undefined;
    slot.generation++;
    // Healthy only once a rebuild made it complete; while rebuilding it may still lack older data.
    slot.intact = state === 'healthy';
    slot.instance = slot.conn.hello.instance;
    slot.logger.info({ state }, 'replica state changed');
    // A rebuild carries data only: the target state follows once the replica is back in the quorum.
    if (state === 'healthy') void this.#targetState?.push({ id: slot.id, controlAddress: slot.conn.hello.controlAddress });
    this.#changed();
  }

  // ---- BlockDevice ----

  async read(lba: bigint, blocks: number, into: Buffer): Promise<void> {
    if (blocks === 0) return;
    const offset = requestOffset(lba, blocks, this.#blockCount, this.blockSize);
    const deadline = Date.now() + this.#holdMs;
    this.#reads++;
    this.#readsInFlight++;
    try {
      await inPieces(blocks * this.blockSize, (at, n) => this.#readPiece(offset + at, n, into.subarray(at, at + n), deadline));
    } finally {
      this.#readsInFlight--;
    }
  }

  async write(lba: bigint, data: Buffer, options?: BlockDeviceWriteOptions): Promise<void> {
    if (data.length === 0) return;
    const offset = requestOffset(lba, data.length / this.blockSize, this.#blockCount, this.blockSize);
    const fua = options?.fua === true;
    const deadline = Date.now() + this.#holdMs;
    this.#writes++;
    // Our own copy: stragglers still send it after the caller got its buffer back.
    const copy = allocIoBuffer(data.length);
    data.copy(copy);
    await inPieces(copy.length, (at, n) => {
      const piece = copy.subarray(at, at + n);
      // One CRC32C for every replica's frame (the copy never changes).
      const payloadCrc = crc32c(piece);
      return this.#mutate(deadline, (c, ioSeq) => c.write(offset + at, piece, { epoch: this.#epoch, ioSeq, fua, payloadCrc }));
    });
  }

  async flush(): Promise<void> {
    // A replica syncs only writes it completed, so its SYNC goes out once every request sent to it
    // earlier settled: W acknowledgements then cover every write that completed before the flush.
    await this.#mutate(Date.now() + this.#holdMs, async (c, _ioSeq, prior) => {
      if (prior.length > 0) {
        await Promise.all(prior.map((p) => new Promise<void>((res) => { (p.settled ??= []).push(res); })));
      }
      await c.sync(this.#epoch);
    }, 'sync');
  }

  unmap(lba: bigint, blocks: number): Promise<void> {
    return this.#mutateRange(lba, blocks, (c, offset, n, ioSeq) => c.unmap(offset, n, { epoch: this.#epoch, ioSeq }));
  }

  writeZeroes(lba: bigint, blocks: number): Promise<void> {
    return this.#mutateRange(lba, blocks, (c, offset, n, ioSeq) => c.writeZeroes(offset, n, { epoch: this.#epoch, ioSeq }));
  }

  /** A data-less mutation of a block range (unmap, write zeroes), split like writes and sent at quorum. */
  async #mutateRange(lba: bigint, blocks: number,
    send: (c: ReplicaConnection, offset: number, length: number, ioSeq: number) => Promise<unknown>): Promise<void> {
    if (blocks === 0) return;
    const offset = requestOffset(lba, blocks, this.#blockCount, this.blockSize);
    const deadline = Date.now() + this.#holdMs;
    this.#writes++;
    await inPieces(blocks * this.blockSize, (at, n) => this.#mutate(deadline, (c, ioSeq) => send(c, offset + at, n, ioSeq)));
  }

  async mapStatus(lba: bigint, maxBlocks: number): Promise<{ readonly blocks: number; readonly mapped: boolean }> {
    const n = Math.max(1, maxBlocks);
    const offset = requestOffset(lba, n, this.#blockCount, this.blockSize);
    const { value: extent } = await this.#onAnyHealthy(Date.now() + this.#holdMs,
      (c) => c.mapStatus(offset, n * this.blockSize, this.#epoch), (slot, conn, err) => this.#failed(slot, conn, err));
    return { blocks: Math.max(1, Math.floor(extent.length / this.blockSize)), mapped: extent.mapped };
  }


  /**
   * The volume grew to `capacityBytes` (its in-sync replicas were resized first); SCSI tells every
   * initiator through CAPACITY DATA HAS CHANGED. Shrinking is refused.
   */
  grow(capacityBytes: number): void {
    if (capacityBytes < this.#capacityBytes) throw new Error(`cannot shrink from ${this.#capacityBytes} to ${capacityBytes} bytes`);
    if (capacityBytes % this.blockSize !== 0) throw new Error(`${capacityBytes} is not a multiple of the block size ${this.blockSize}`);
    if (capacityBytes === this.#capacityBytes) return;
    this.#capacityBytes = capacityBytes;
    this.#blockCount = BigInt(capacityBytes / this.blockSize);
    this.#logger.info({ capacityBytes }, 'volume grown');
    for (const l of this.#listeners) l(this.#blockCount);
  }

  onCapacityChange(listener: (newBlockCount: bigint) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#listeners.clear();
    const conns: ReplicaConnection[] = [];
    for (const s of this.#slots) {
      if (s.conn !== undefined) conns.push(s.conn);
      this.#detach(s, 'volume closed', false);
    }
    this.#changed();
    await Promise.all(conns.map((c) => c.close()));
  }

  // ---- internals ----



  /**
   * One mutating request to every healthy and rebuilding replica; resolves on W healthy acks. If the
   * healthy set shrinks below W it waits (until the deadline) for replicas to come back and sends the
   * same request — same io_seq, so a replica that already applied it skips it — to the newcomers.
   */
  async #mutate(
    deadline: number, send: (c: ReplicaConnection, ioSeq: number, prior: readonly PendingCall[]) => Promise<unknown>,
    kind: 'write' | 'sync' = 'write',
  ): Promise<void> {
    const takesIoSeq = kind === 'write';
    await this.#waitQuorum(deadline);
    const ioSeq = takesIoSeq ? this.#nextIoSeq++ : 0;
    if (takesIoSeq) this.#written = true;
    await new Promise<void>((resolve, reject) => {
      const sent = new Map<Slot, {
        readonly conn: ReplicaConnection; readonly generation: number; readonly ticket: { id: number }; ok: boolean;
        /** The request failed or was abandoned on that connection. */
        failed: boolean;
      }>();
      let finished = false;
      const finish = (err?: Error): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.#active.delete(poke);
        if (err === undefined) {
          for (const slot of this.#slots) {
            const e = sent.get(slot);
            if (e?.ok === true) continue;
            if (e !== undefined && !e.failed && e.conn === slot.conn) {
              // Still in flight there: it lags behind the quorum (and is intact only if it answers).
              this.#lagging(slot, e.ticket.id);
            } else if (takesIoSeq) {
              slot.intact = false; // a data mutation completed that this replica never applied
            }
          }
          resolve();
        } else {
          reject(err);
        }
      };
      const poke = (): void => {
        if (finished) return;
        if (this.#closed) {
          finish(new BlockDeviceError('EOFFLINE', 'the volume is closed'));
          return;
        }
        let acks = 0;
        for (const slot of this.#slots) {
          const conn = slot.conn;
          if (conn === undefined || (slot.state !== 'healthy' && slot.state !== 'rebuilding')) continue;
          const entry = sent.get(slot);
          // New, reconnected, or re-admitted (its earlier copy of this request may have been abandoned).
          if (entry === undefined || entry.conn !== conn || entry.generation !== slot.generation) {
            const e = { conn, generation: slot.generation, ticket: { id: -1 }, ok: false, failed: false };
            sent.set(slot, e);
            this.#call(slot, (c, prior) => send(c, ioSeq, prior), { ticket: e.ticket, withPrior: kind === 'sync', expires: false, kind }).then(
              () => { e.ok = true; poke(); },
              (err: unknown) => {
                e.failed = true;
                this.#failed(slot, conn, err);
                poke();
              },
            );
          } else if (entry.ok && slot.state === 'healthy') {
            acks++;
          }
        }
        if (acks >= this.writeQuorum) finish();
      };
      const timer = setTimeout(() => {
        finish(new BlockDeviceError('EOFFLINE', `write quorum of ${this.writeQuorum} not reached within ${this.#holdMs} ms`));
      }, Math.max(0, deadline - Date.now()));
      this.#active.add(poke);
      poke();
    });
  }

  async #readPiece(offset: number, length: number, into: Buffer, deadline: number): Promise<void> {
    const bad: { readonly slot: Slot; readonly conn: ReplicaConnection }[] = [];
    const { value, slot } = await this.#onAnyHealthy(deadline, (c) => c.read(offset, length, this.#epoch), (s, conn, err) => {
      if (isMediaError(err)) {
        s.logger.warn({ err, offset, length }, 'replica media error on read; trying another copy');
        bad.push({ slot: s, conn });
      } else {
        this.#failed(s, conn, err);
      }
    });
    value.data.copy(into, 0, 0, length);
    // Error path only: the caller waits for the repair so the next read of the range is clean.
    for (const b of bad) await this.#repair(slot, b.slot, b.conn, offset, length);
  }

  /**
   * `op` on one healthy replica after another (each at most once, waiting for quorum up to
   * `deadline`) until one succeeds; `onError` decides what a failure means for that replica.
   */
  async #onAnyHealthy<T>(deadline: number, op: (c: ReplicaConnection) => Promise<T>,
    onError: (slot: Slot, conn: ReplicaConnection, err: unknown) => void): Promise<{ value: T; slot: Slot }> {
    const tried = new Set<Slot>();
    // Created only when needed: an Error captures a stack trace, too costly for every read.
    let lastErr: unknown;
    for (;;) {
      await this.#waitQuorum(deadline);
      const slot = this.#pickHealthy(tried);
      if (slot === undefined) throw blockDeviceErrorFor(lastErr ?? new BlockDeviceError('EOFFLINE', 'no healthy replica'), this.blockSize);
      tried.add(slot);
      const conn = slot.conn!;
      try {
        return { value: await this.#call(slot, op, { expires: true, kind: 'read' }), slot };
      } catch (err) {
        lastErr = err;
        onError(slot, conn, err);
      }
    }
  }

  /** Rewrite whole chunks of a bad copy with the good copy's data and io_seqs (best effort). */
  async #repair(good: Slot, bad: Slot, badConn: ReplicaConnection, offset: number, length: number): Promise<void> {
    const chunk = badConn.hello.chunkSize;
    const start = Math.floor(offset / chunk) * chunk;
    const end = Math.min(this.#capacityBytes, Math.ceil((offset + length) / chunk) * chunk);
    const goodConn = good.conn!;
    let source: { readonly data: Buffer; readonly ioSeqs: Float64Array };
    try {
      // A chunk flagged for repair accepts only a write covering all of it: fetch whole chunks.
      source = await this.#call(good, (c) => c.read(start, end - start, this.#epoch), { expires: true, kind: 'read' });
    } catch (err) {
      good.logger.warn({ err, offset: start, length: end - start }, 'read for repair failed');
      if (!isMediaError(err)) this.#failed(good, goodConn, err);
      return;
    }
    const { data, ioSeqs } = source;
    try {
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < ioSeqs.length; i++) {
        const seq = ioSeqs[i]!;
        if (seq === 0) continue; // never written: nothing to restore
        const at = start + i * chunk;
        const piece = data.subarray(at - start, Math.min(end, at + chunk) - start);
        if (bad.conn !== badConn || bad.state !== 'healthy') return;
        // The good copy's io_seq: a newer write that reached the bad copy meanwhile is not undone.
        writes.push(this.#call(bad, (c) => c.write(at, piece, { epoch: this.#epoch, ioSeq: seq }), { expires: true, kind: 'write' }));
      }
      const results = await Promise.allSettled(writes);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
      this.#readRepairs++;
      bad.logger.info({ offset: start, length: end - start, from: good.id }, 'repaired a bad copy from another replica');
    } catch (err) {
      bad.logger.warn({ err, offset: start, length: end - start }, 'read repair failed');
      this.#failed(bad, badConn, err);
    }
  }

  /** Send one request to a replica, tracked for the deadline sweep and the backlog limit. */
  #call<T>(
    slot: Slot, op: (c: ReplicaConnection, prior: readonly PendingCall[]) => Promise<T>,
    options: { readonly expires: boolean; readonly kind: CallKind; readonly ticket?: { id: number }; readonly withPrior?: boolean },
  ): Promise<T> {
    const conn = slot.conn;
    if (conn === undefined) return Promise.reject(new Abandoned('not connected'));
    return new Promise<T>((resolve, reject) => {
      const id = this.#nextCall++;
      if (options.ticket !== undefined) options.ticket.id = id;
      // Only a flush looks at what is already in flight; everything else skips the copy.
      const prior = options.withPrior === true ? [...slot.pending.values()] : [];
      slot.pending.set(id, { start: Date.now(), kind: options.kind, reject, lagging: false, expires: options.expires, settled: undefined });
      const settle = (ok: boolean): boolean => {
        const p = slot.pending.get(id);
        if (p === undefined) return false;
        if (p.lagging) slot.lagging--;
        if (!ok && p.lagging) this.#lostCompletedWrite(slot, p);
        if (p.kind === 'read') {
          const ms = Date.now() - p.start;
          slot.readMs = slot.readMs === 0 ? Math.max(ms, 0.1) : slot.readMs * 0.8 + ms * 0.2;
        }
        slot.pending.delete(id);
        if (p.settled !== undefined) for (const f of p.settled) f();
        return true;
      };
      op(conn, prior).then(
        (v) => { if (settle(true)) resolve(v); },
        (err: unknown) => { if (settle(false)) reject(err); },
      );
    });
  }

  /**
   * A write completed on a quorum while this replica still has it in flight. The backlog counts only
   * such requests, so a burst that every replica is working through ejects nobody.
   */
  #lagging(slot: Slot, id: number): void {
    const p = slot.pending.get(id);
    if (p === undefined || p.lagging) return;
    p.lagging = true;
    p.expires = true;
    slot.lagging++;
    if (slot.lagging > this.#maxBacklog) {
      const n = slot.lagging;
      // Not from inside the completing write's bookkeeping: state changes re-enter every write in flight.
      queueMicrotask(() => {
        if (slot.pending.has(id)) this.#eject(slot, `${n} requests behind the write quorum (max ${this.#maxBacklog})`);
      });
    }
  }

  /** A request to `conn` failed: eject its replica unless it has been handled already. */
  #failed(slot: Slot, conn: ReplicaConnection, err: unknown): void {
    if (err instanceof Abandoned || slot.conn !== conn) return;
    if (err instanceof ReplicaIoError && err.status === ReplicaStatus.Closed) return; // onClose handles it
    this.#eject(slot, describe(err));
  }

  #eject(slot: Slot, reason: string): void {
    if (slot.state !== 'healthy' && slot.state !== 'rebuilding') return;
    slot.state = 'degraded';
    slot.reason = reason;
    slot.intact = false; // it stops receiving writes, and may have failed one
    this.#ejections++;
    slot.logger.warn({ reason }, 'replica ejected: no more I/O until it is rebuilt');
    this.#abandon(slot, `replica ejected: ${reason}`);
    this.#changed();
  }

  #detach(slot: Slot, reason: string, close: boolean): void {
    const conn = slot.conn;
    slot.unsubscribe?.();
    slot.unsubscribe = undefined;
    slot.conn = undefined;
    slot.state = 'offline';
    slot.reason = reason;
    this.#abandon(slot, reason);
    if (close && conn !== undefined) void conn.close().catch(() => undefined);
  }

  /** A lagging request (one the quorum completed without it) failed or was abandoned on `slot`. */
  #lostCompletedWrite(slot: Slot, call: PendingCall): void {
    // A mutation it will now never apply; a flush it missed loses no data.
    if (call.kind === 'write') slot.intact = false;
  }

  #abandon(slot: Slot, reason: string): void {
    const calls = [...slot.pending.values()];
    slot.pending.clear();
    slot.lagging = 0;
    for (const c of calls) {
      // Decided here, not in the request's rejection handler: attach() replacing a connection
      // judges the replica at once.
      if (c.lagging) this.#lostCompletedWrite(slot, c);
      c.reject(new Abandoned(reason));
      if (c.settled !== undefined) for (const f of c.settled) f();
    }
  }

  #checkDeadlines(): void {
    const now = Date.now();
    for (const slot of this.#slots) {
      if (slot.state !== 'healthy' && slot.state !== 'rebuilding') continue;
      // Oldest first (insertion order): stop at the first request still within its deadline.
      for (const p of slot.pending.values()) {
        if (now - p.start <= this.#ioDeadlineMs) break;
        if (p.expires) {
          this.#eject(slot, `no answer within ${this.#ioDeadlineMs} ms`);
          break;
        }
      }
    }
  }

  /** Replica states changed: wake I/O waiting for quorum and let writes in flight re-evaluate. */
  #changed(): void {
    const state = this.volumeState();
    if (state !== this.#volumeState) {
      const level = state === 'healthy' ? 'info' : 'warn';
      this.#logger[level]({ from: this.#volumeState, to: state, healthy: this.#healthyCount(), writeQuorum: this.writeQuorum }, 'volume state changed');
      this.#volumeState = state;
    }
    if (this.#closed || state !== 'offline') {
      const waiters = [...this.#waiters];
      this.#waiters.clear();
      for (const wake of waiters) wake();
    }
    for (const poke of [...this.#active]) poke();
  }

  #healthyCount(): number {
    let n = 0;
    for (const s of this.#slots) if (s.state === 'healthy') n++;
    return n;
  }

  /**
   * Round-robin over healthy replicas, skipping those still working through writes the quorum already
   * completed while another is caught up: a read queues behind overlapping writes on its replica (so
   * any healthy copy is correct), but a lagging one answers late.
   */
  #pickHealthy(exclude: ReadonlySet<Slot>): Slot | undefined {
    const k = this.#slots.length;
    let fastest = Number.POSITIVE_INFINITY;
    for (const s of this.#slots) if (s.state === 'healthy' && s.conn !== undefined && s.readMs > 0 && s.readMs < fastest) fastest = s.readMs;
    const slowAbove = Math.max(SLOW_READ_MIN_MS, fastest * SLOW_READ_FACTOR);
    const probe = ++this.#readPicks % SLOW_READ_PROBE_EVERY === 0;
    let fallback = -1;
    for (let i = 0; i < k; i++) {
      const slot = this.#slots[(this.#roundRobin + i) % k]!;
      if (slot.state !== 'healthy' || slot.conn === undefined || exclude.has(slot)) continue;
      if (slot.lagging > 0 || (slot.readMs > slowAbove && !probe)) {
        if (fallback < 0) fallback = i;
        continue;
      }
      // Under load a burst of reads stays on one replica: they reach it in one write and wake one
      // process, instead of every replica process per batch (CPU, not disks, bounds small reads).
      const burst = this.#readsInFlight >= READ_BURST_MIN_DEPTH ? READ_BURST : 1;
      if (i > 0) {
        this.#roundRobin = (this.#roundRobin + i + (burst === 1 ? 1 : 0)) % k;
        this.#burst = burst === 1 ? 0 : 1;
      } else if (++this.#burst >= burst) {
        this.#roundRobin = (this.#roundRobin + 1) % k;
        this.#burst = 0;
      }
      return slot;
    }
    if (fallback < 0) return undefined;
    this.#roundRobin = (this.#roundRobin + fallback + 1) % k;
    return this.#slots[(this.#roundRobin + k - 1) % k];
  }

  #waitQuorum(deadline: number): Promise<void> {
    if (this.#closed) return Promise.reject(new BlockDeviceError('EOFFLINE', 'the volume is closed'));
    if (this.#healthyCount() >= this.writeQuorum) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        this.#waitQuorum(deadline).then(resolve, reject);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(wake);
        reject(new BlockDeviceError('EOFFLINE', `fewer than ${this.writeQuorum} healthy replicas for ${this.#holdMs} ms`));
      }, Math.max(0, deadline - Date.now()));
      this.#waiters.add(wake);
    });
  }


}
