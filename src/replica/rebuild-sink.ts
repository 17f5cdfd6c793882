// Replica-to-replica rebuild, pulled by the replica being rebuilt: streams the chunks a healthy
// replica wrote after `sinceIoSeq` and applies each run locally. applyRun writes every chunk with
// its source io_seq and never over a newer local write, so the sink may keep serving writes while
// it catches up. A broken stream resumes from the offset after the last applied run.
import { setTimeout as sleep } from 'node:timers/promises';
import grpc from '@grpc/grpc-js';
import {
  createReplicaControlClient,
  DEFAULT_MAX_RUN_BYTES,
  type ReplicaControlClient,
  type RebuildState,
  type RebuildStatus,
} from '../protocol/replica/control-codec.js';
import type { Logger } from '../shared/logger.js';
import { StoreError, StoreErrorCode, type ChunkRun, type StoreWriteResult } from './store-api.js';
import { errorMessage } from '../shared/errors.js';

/** What the sink needs of the local store (ReplicaStore satisfies it). */
export interface RebuildSinkStore {
  readonly info: { readonly volumeUuid: string };
  applyRun(run: Pick<ChunkRun, 'offset' | 'ioSeqs' | 'crcs' | 'zero' | 'data'>): Promise<StoreWriteResult>;
}

/** What the sink needs of the source's control client. */
export type RebuildSource = Pick<ReplicaControlClient, 'rebuild' | 'rebuildEstimate' | 'close'>;

export interface RebuildRetryOptions {
  /** Consecutive failed attempts (no run applied in between) before giving up (default 5). */
  readonly maxAttempts?: number;
  /** First backoff; doubles per consecutive failure (default 500 ms). */
  readonly backoffMs?: number;
  /** Backoff ceiling (default 30 s). */
  readonly maxBackoffMs?: number;
}

export interface RebuildSinkOptions {
  readonly store: RebuildSinkStore;
  /** host:port of the source replica's control service. */
  readonly source: string;
  readonly sinceIoSeq: number;
  /** Applied bytes per second; 0/undefined = unlimited. */
  readonly rateBytesPerSec?: number;
  /** Run size asked of the source (default 1 MiB; the source clamps). */
  readonly maxRunBytes?: number;
  readonly logger: Logger;
  readonly retry?: RebuildRetryOptions;
  /** Opens a client to the source; one per attempt, so a reconnect never inherits channel backoff. */
  readonly connect?: (address: string) => RebuildSource;
}

export interface RebuildProgress extends Omit<RebuildStatus, 'etaSeconds' | 'lastError'> {
  readonly state: RebuildState;
  /** undefined while unknown (no estimate or no rate yet); 0 once done. */
  readonly etaSeconds: number | undefined;
  readonly lastError: string | undefined;
  readonly chunksApplied: number;
  /** Chunks the sink already held at the same or a newer io_seq. */
  readonly chunksSkipped: number;
  /** Where a resumed stream starts. */
  readonly nextOffset: number;
  readonly elapsedSeconds: number;
}

/** The moving average of the rate looks this far back. */
const RATE_WINDOW_MS = 5_000;

// gRPC statuses a retry cannot fix: the request itself is wrong for this source.
const PERMANENT_GRPC = new Set<number>([
  grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.UNIMPLEMENTED,
  grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED, grpc.status.OUT_OF_RANGE, grpc.status.NOT_FOUND,
]);

function isRetryable(err: unknown): boolean {
  // A local store error is permanent except a CRC mismatch: the copy was corrupted in transit, re-fetch it.
  if (err instanceof StoreError) return err.code === StoreErrorCode.Medium;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number') return !PERMANENT_GRPC.has(code);
  return true;
}

export class RebuildSink {
  readonly #store: RebuildSinkStore;
  readonly #source: string;
  readonly #sinceIoSeq: number;
  /** Bytes/s, 0 = unlimited; changed live by setRate (the target's adaptive controller). */
  #rate: number;
  readonly #maxRunBytes: number;
  readonly #maxAttempts: number;
  readonly #backoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #connect: (address: string) => RebuildSource;
  readonly #log: Logger;
  readonly #abort = new AbortController();

  #state: RebuildState = 'idle';
  #bytesDone = 0;
  #estimate: number | undefined;
  #noEstimate = false;
  #attempts = 0;
  #lastError: string | undefined;
  #nextOffset = 0;
  #applied = 0;
  #skipped = 0;
  #startedAt = 0;
  #endedAt: number | undefined;
  /** (time, bytesDone) after each run, pruned to the rate window plus one baseline before it. */
  #samples: { t: number; bytes: number }[] = [];
  // Token bucket in bytes; may go negative (a run larger than the balance), which is then slept off.
  #tokens = 0;
  #tokensAt = 0;
  #running: Promise<RebuildProgress> | undefined;

  constructor(options: RebuildSinkOptions) {
    if (!Number.isSafeInteger(options.sinceIoSeq) || options.sinceIoSeq < 0) throw new RangeError(`invalid sinceIoSeq ${options.sinceIoSeq}`);
    this.#store = options.store;
    this.#source = options.source;
    this.#sinceIoSeq = options.sinceIoSeq;
    this.#rate = Math.max(0, options.rateBytesPerSec ?? 0);
    this.#maxRunBytes = options.maxRunBytes ?? DEFAULT_MAX_RUN_BYTES;
    this.#maxAttempts = Math.max(1, options.retry?.maxAttempts ?? 5);
    this.#backoffMs = Math.max(0, options.retry?.backoffMs ?? 500);
    this.#maxBackoffMs = Math.max(this.#backoffMs, options.retry?.maxBackoffMs ?? 30_000);
    this.#connect = options.connect ?? ((address) => createReplicaControlClient(address));
    this.#log = options.logger.child({ component: 'rebuild-sink', source: options.source, since: options.sinceIoSeq });
  }

  get source(): string {
    return this.#source;
  }

  /** The rate limit now, bytes/s (0 = unlimited). */
  get rateLimit(): number {
    return this.#rate;
  }

  /**
   * Changes the rate limit of a running (or not yet started) rebuild; 0 = unlimited. Takes effect
   * from the next run; a wait already computed at the old rate is at most one run long.
   */
  setRate(bytesPerSec: number): void {
    if (!Number.isFinite(bytesPerSec) || bytesPerSec < 0) throw new RangeError(`invalid rate ${bytesPerSec}`);
    if (bytesPerSec === this.#rate) return;
    this.#log.debug({ from: this.#rate, to: bytesPerSec }, 'rebuild rate changed');
    // Leaving unlimited: start the bucket empty now, not with credit from when the limit was off.
    if (this.#rate === 0) {
      this.#tokens = 0;
      this.#tokensAt = performance.now();
    }
    this.#rate = bytesPerSec;
  }

  /** Runs the rebuild; settles (never rejects) with the final progress, state 'done' or 'failed'. Idempotent. */
  start(): Promise<RebuildProgress> {
    this.#running ??= this.#run();
    return this.#running;
  }

  /** Cancels the stream and any wait; the start() promise then settles as 'failed' ("rebuild stopped"). */
  stop(): Promise<RebuildProgress> {
    this.#abort.abort(new Error('rebuild stopped'));
    return this.#running ?? Promise.resolve(this.progress());
  }

  progress(): RebuildProgress {
    const now = this.#endedAt ?? performance.now();
    const elapsed = this.#startedAt === 0 ? 0 : (now - this.#startedAt) / 1000;
    const rate = this.#state === 'done' || this.#state === 'failed'
      ? (elapsed > 0 ? this.#bytesDone / elapsed : 0)
      : this.#windowRate(now);
    const total = this.#estimate === undefined ? 0 : Math.max(this.#estimate, this.#bytesDone);
    let eta: number | undefined;
    if (this.#state === 'done') eta = 0;
    else if (this.#estimate !== undefined && rate > 0 && this.#state !== 'failed') eta = (total - this.#bytesDone) / rate;
    return {
      state: this.#state,
      bytesDone: this.#bytesDone,
      bytesTotal: total,
      rateBytesPerSec: rate,
      etaSeconds: eta,
      source: this.#source,
      attempts: this.#attempts,
      lastError: this.#lastError,
      chunksApplied: this.#applied,
      chunksSkipped: this.#skipped,
      nextOffset: this.#nextOffset,
      elapsedSeconds: elapsed,
    };
  }

  /** The wire form for StatusReply.rebuild. */
  status(): RebuildStatus {
    const p = this.progress();
    return {
      state: p.state, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, rateBytesPerSec: p.rateBytesPerSec,
      etaSeconds: p.etaSeconds ?? -1, source: p.source, attempts: p.attempts, lastError: p.lastError ?? '',
    };
  }

  #windowRate(now: number): number {
    const s = this.#samples;
    // Baseline: the newest sample at or before the window start, else the oldest one.
    let base = s[0];
    for (const x of s) {
      if (x.t <= now - RATE_WINDOW_MS) base = x;
      else break;
    }
    if (base === undefined || now - base.t <= 0) return 0;
    return ((this.#bytesDone - base.bytes) * 1000) / (now - base.t);
  }

  #sample(): void {
    const now = performance.now();
    this.#samples.push({ t: now, bytes: this.#bytesDone });
    // Keep one sample older than the window as the baseline.
    while (this.#samples.length > 1 && this.#samples[1]!.t <= now - RATE_WINDOW_MS) this.#samples.shift();
  }

  async #throttle(bytes: number, signal: AbortSignal): Promise<void> {
    if (this.#rate === 0) return;
    const now = performance.now();
    // Idle time refills at most one run's worth, so a pause is not followed by an unlimited burst.
    this.#tokens = Math.min(Math.max(this.#maxRunBytes, bytes), this.#tokens + ((now - this.#tokensAt) * this.#rate) / 1000);
    this.#tokensAt = now;
    this.#tokens -= bytes;
    if (this.#tokens < 0) await sleep((-this.#tokens * 1000) / this.#rate, undefined, { signal });
  }

  async #run(): Promise<RebuildProgress> {
    const signal = this.#abort.signal;
    this.#startedAt = performance.now();
    this.#tokensAt = this.#startedAt;
    this.#samples = [{ t: this.#startedAt, bytes: 0 }];
    const volumeUuid = this.#store.info.volumeUuid;
    this.#log.info({ rateBytesPerSec: this.#rate, maxRunBytes: this.#maxRunBytes }, 'rebuild started');
    let failures = 0;
    for (;;) {
      if (signal.aborted) return this.#finish('failed', errorMessage(signal.reason));
      this.#attempts++;
      this.#state = 'running';
      const client = this.#connect(this.#source);
      try {
        if (this.#estimate === undefined && !this.#noEstimate) await this.#fetchEstimate(client, volumeUuid, signal);
        const stream = client.rebuild(
          { sinceIoSeq: this.#sinceIoSeq, fromOffset: this.#nextOffset, maxRunBytes: this.#maxRunBytes, volumeUuid },
          { signal },
        );
        for await (const run of stream) {
          await this.#throttle(run.length, signal);
          const r = await this.#store.applyRun({ offset: run.offset, ioSeqs: run.ioSeqs, crcs: run.crcs, zero: run.zeroMask, data: run.data });
          this.#applied += r.applied;
          this.#skipped += r.skipped;
          this.#bytesDone += run.length;
          this.#nextOffset = run.offset + run.length;
          // Progress made: the source is healthy again, so the failure budget starts over.
          failures = 0;
          this.#sample();
        }
        return this.#finish('done', undefined);
      } catch (err) {
        if (signal.aborted) return this.#finish('failed', errorMessage(signal.reason));
        failures++;
        this.#lastError = errorMessage(err);
        const retryable = isRetryable(err);
        if (!retryable || failures >= this.#maxAttempts) {
          this.#log.error({ err, attempts: this.#attempts, failures, nextOffset: this.#nextOffset, retryable }, 'rebuild failed');
          return this.#finish('failed', this.#lastError);
        }
        const delay = Math.min(this.#backoffMs * 2 ** (failures - 1), this.#maxBackoffMs);
        this.#log.warn({ err, attempts: this.#attempts, failures, nextOffset: this.#nextOffset, delayMs: delay }, 'rebuild stream failed; retrying');
        this.#state = 'backoff';
        try {
          await sleep(delay, undefined, { signal });
        } catch {
          return this.#finish('failed', errorMessage(signal.reason));
        }
      } finally {
        client.close();
      }
    }
  }

  async #fetchEstimate(client: RebuildSource, volumeUuid: string, signal: AbortSignal): Promise<void> {
    try {
      const e = await client.rebuildEstimate({ sinceIoSeq: this.#sinceIoSeq, fromOffset: 0, maxRunBytes: 0, volumeUuid }, { signal, deadlineMs: 30_000 });
      this.#estimate = e.bytes;
    } catch (err) {
      if (signal.aborted) throw err;
      // An older source without the RPC: go on without a total (and stop asking).
      if ((err as { code?: unknown }).code === grpc.status.UNIMPLEMENTED) {
        this.#noEstimate = true;
        this.#log.info({ err }, 'the source gives no rebuild estimate; progress has no total');
        return;
      }
      throw err;
    }
  }

  #finish(state: 'done' | 'failed', error: string | undefined): RebuildProgress {
    this.#state = state;
    if (error !== undefined) this.#lastError = error;
    this.#endedAt = performance.now();
    const p = this.progress();
    if (state === 'done') this.#log.info({ bytes: p.bytesDone, seconds: p.elapsedSeconds, chunksApplied: p.chunksApplied, chunksSkipped: p.chunksSkipped, attempts: p.attempts }, 'rebuild finished');
    return p;
  }
}
