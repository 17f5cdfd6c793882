// Brings degraded replicas back: for each one with a connection, it picks a healthy source, lets the
// degraded replica receive new writes (rebuilding), waits until the source holds every write issued
// before that moment, and asks the degraded replica to pull what it misses from the source over
// gRPC (replica to replica, never through the target). When the replica reports the rebuild done
// and it is still rebuilding (not ejected or reconnected meanwhile, which would have cost it writes)
// it rejoins the quorum. Failures back off and retry; the reason is logged and kept in status.
// With a rate cap, the rate adapts (RebuildRateController): foreground ops/s are sampled all the
// time, at every scan (ForegroundRate), so the level before a rebuild is its undisturbed baseline;
// each control tick feeds the controller the rate since the previous tick's last sample, and the
// sink's limit is changed live (SetRebuildRate) to keep foreground I/O near that level.

import type { Logger } from '../../shared/logger.js';
import { createReplicaControlClient, type RebuildStatus, type ReplicaControlClient } from '../../protocol/replica/control-codec.js';
import type { ReplicatedVolume } from './replicated-volume.js';
import { RebuildRateController } from './rebuild-rate-controller.js';
import { ForegroundRate } from './foreground-rate.js';
import { errorMessage } from '../../shared/errors.js';

export interface RebuildOrchestratorOptions {
  readonly volume: ReplicatedVolume;
  readonly volumeUuid: string;
  /** Bytes per second per rebuild (0 = unlimited). With adaptive rate: the cap. */
  readonly rateBytesPerSec: number;
  /** Adapt the rate to foreground load (default true; never with an unlimited rate). */
  readonly adaptive?: boolean;
  /** Adaptive rate: how often the foreground is measured and the rate reconsidered (default 1 s). */
  readonly controlTickMs?: number;
  /** Adaptive rate: the lowest rate it sets (default 4 MiB/s). */
  readonly floorBytesPerSec?: number;
  readonly logger: Logger;
  /** A replica finished its rebuild and is healthy again. */
  readonly onComplete?: (replicaId: string, bytes: number, seconds: number) => void;
  /** A rebuild attempt failed (it is retried with backoff). */
  readonly onFailed?: (replicaId: string, reason: string) => void;
  readonly pollMs?: number;
  /** Backoff after a failed attempt (doubles, at most 30 s). */
  readonly retryMs?: number;
  readonly clientFor?: (address: string) => ReplicaControlClient;
}

export interface RebuildProgress extends RebuildStatus {
  readonly replicaId: string;
  /** The rate limit in force (bytes/s, 0 = unlimited). */
  readonly rateLimitBytesPerSec: number;
}

/** Foreground ops/s before a rebuild are averaged over this long to get the baseline. */
const BASELINE_WINDOW_MS = 10_000;
/** Less foreground history than this gives no baseline (unknown: the controller learns one). */
const BASELINE_MIN_MS = 1000;

interface Job {
  readonly replicaId: string;
  /** Ends the job's loop (replaced, stopped). */
  cancelled: boolean;
  progress: RebuildStatus | undefined;
  rateLimit: number;
  /** An operator set the rate cap while this job ran: apply it and stop adapting. */
  capChanged: boolean;
}

export class RebuildOrchestrator {
  readonly #o: RebuildOrchestratorOptions;
  readonly #jobs = new Map<string, Job>();
  readonly #timer: NodeJS.Timeout;
  readonly #failures = new Map<string, { count: number; notBefore: number }>();
  /** Foreground samples, one per scan, kept for the baseline window (and at least two ticks). */
  readonly #foreground: ForegroundRate;
  #stopped = false;
  /** Bytes/s cap (0 = unlimited): --rebuild-rate, changed live by setRateCap. */
  #cap: number;

  constructor(options: RebuildOrchestratorOptions) {
    this.#o = options;
    this.#cap = options.rateBytesPerSec;
    this.#foreground = new ForegroundRate({
      read: () => {
        const c = options.volume.counters();
        return { ops: c.reads + c.writes, inFlight: Object.values(c.inFlight).reduce((a, b) => a + b, 0) };
      },
      keepMs: Math.max(BASELINE_WINDOW_MS, 2 * (options.controlTickMs ?? 1000)),
    });
    // History from the start, not one scan later: a replica degraded soon after has a baseline.
    this.#foreground.sample();
    this.#timer = setInterval(() => this.#scan(), options.pollMs ?? 500);
    this.#timer.unref();
  }

  get rateCapBytesPerSec(): number {
    return this.#cap;
  }

  /**
   * An operator's new cap (0 = unlimited). Running rebuilds take it at once as a fixed rate; later
   * ones adapt under it as usual.
   */
  setRateCap(bytesPerSec: number): void {
    if (!Number.isFinite(bytesPerSec) || bytesPerSec < 0) throw new RangeError(`rebuild rate ${bytesPerSec} B/s`);
    this.#cap = Math.round(bytesPerSec);
    for (const j of this.#jobs.values()) j.capChanged = true;
    this.#o.logger.info({ rateBytesPerSec: this.#cap, running: [...this.#jobs.keys()] }, 'rebuild rate cap changed');
  }

  /** Rebuilds running now, with the progress their replicas last reported. */
  progress(): RebuildProgress[] {
    return [...this.#jobs.values()].flatMap((j) =>
      (j.progress === undefined ? [] : [{ replicaId: j.replicaId, ...j.progress, rateLimitBytesPerSec: j.rateLimit }]));
  }

  /** Look for degraded replicas now (also done periodically). */
  #scan(): void {
    if (this.#stopped) return;
    this.#foreground.sample();
    const states = this.#o.volume.replicaStates();
    for (const r of states) {
      if (r.state !== 'degraded' || this.#jobs.has(r.replicaId)) continue;
      if (this.#o.volume.connectionOf(r.replicaId) === undefined) continue;
      const failure = this.#failures.get(r.replicaId);
      if (failure !== undefined && Date.now() < failure.notBefore) continue;
      const job: Job = { replicaId: r.replicaId, cancelled: false, progress: undefined, rateLimit: this.#cap, capChanged: false };
      this.#jobs.set(r.replicaId, job);
      void this.#run(job).then((ok) => {
        this.#jobs.delete(job.replicaId);
        if (ok) {
          this.#failures.delete(job.replicaId);
          return;
        }
        const count = (this.#failures.get(job.replicaId)?.count ?? 0) + 1;
        const delay = Math.min(30_000, (this.#o.retryMs ?? 1000) * 2 ** (count - 1));
        this.#failures.set(job.replicaId, { count, notBefore: Date.now() + delay });
      });
    }
  }

  async #run(job: Job): Promise<boolean> {
    const volume = this.#o.volume;
    const log = this.#o.logger.child({ replica: job.replicaId });
    const conn = volume.connectionOf(job.replicaId);
    const source = volume.replicaStates().find((r) => r.state === 'healthy' && volume.connectionOf(r.replicaId) !== undefined);
    if (conn === undefined || source === undefined) {
      log.warn({ reason: source === undefined ? 'no healthy source replica' : 'not connected' }, 'rebuild postponed');
      return false;
    }
    const sourceConn = volume.connectionOf(source.replicaId)!;
    const client = (this.#o.clientFor ?? createReplicaControlClient)(conn.hello.controlAddress);
    const started = Date.now();
    try {
      // Where its data stops being trustworthy: an unfinished rebuild's start, or what it reports applied now.
      const status = await client.status();
      const since = conn.hello.rebuildingSince ?? Math.min(status.checkpointedIoSeq, conn.hello.checkpointedIoSeq);
      // From here on the replica receives every new write; the rebuild covers everything before.
      volume.markRebuilding(job.replicaId);
      await volume.currentRequestsSettled(source.replicaId);
      const controller = this.#o.adaptive !== false && this.#cap > 0
        ? new RebuildRateController({
          maxBytesPerSec: this.#cap,
          baselineOpsPerSec: this.#foreground.opsPerSecOver(BASELINE_WINDOW_MS, BASELINE_MIN_MS),
          ...(this.#o.floorBytesPerSec !== undefined ? { floorBytesPerSec: this.#o.floorBytesPerSec } : {}),
        })
        : undefined;
      job.rateLimit = Math.round(controller?.rateBytesPerSec ?? this.#cap);
      job.capChanged = false;
      log.info({ source: source.replicaId, since, rateBytesPerSec: job.rateLimit, adaptive: controller !== undefined,
        baselineOpsPerSec: controller?.baselineOpsPerSec }, 'rebuild starting');
      try {
        await client.startRebuild({
          sourceAddress: sourceConn.hello.controlAddress, sinceIoSeq: since, rateBytesPerSec: job.rateLimit, volumeUuid: this.#o.volumeUuid,
        });
      } catch (err) {
        // A rebuild the replica already runs (it survived a reconnect) is followed, not restarted,
        // at the rate chosen now (best effort: an older replica keeps its own).
        if ((err as { code?: number }).code !== 9 /* FAILED_PRECONDITION */) throw err;
        await client.setRebuildRate({ rateBytesPerSec: job.rateLimit }).catch(() => undefined);
      }
      let lastLog = 0;
      const tickMs = this.#o.controlTickMs ?? 1000;
      // A tick measures from the first sample at or after this (the rebuild's start, then the last
      // rate change or where the previous tick ended): none of it at an older rate, none twice.
      let measureFrom = this.#foreground.now();
      let adapting = controller !== undefined;
      for (;;) {
        await new Promise((r) => setTimeout(r, this.#o.pollMs ?? 500));
        if (job.cancelled || this.#stopped) return false;
        const state = volume.replicaStates().find((r) => r.replicaId === job.replicaId);
        if (state?.state !== 'rebuilding' || volume.connectionOf(job.replicaId) !== conn) {
          log.warn({ state: state?.state, reason: state?.reason }, 'rebuild abandoned: the replica left the write path meanwhile');
          return false;
        }
        if (job.capChanged) {
          job.capChanged = false;
          adapting = false;
          try {
            await client.setRebuildRate({ rateBytesPerSec: this.#cap });
            job.rateLimit = this.#cap;
          } catch (err) {
            log.warn({ err }, 'could not change the rebuild rate');
          }
        }
        const fg = adapting ? this.#foreground.opsPerSecSince(measureFrom, tickMs) : undefined;
        if (fg !== undefined && controller !== undefined) {
          measureFrom = fg.to;
          const decision = controller.update(fg);
          const rate = Math.round(controller.rateBytesPerSec);
          // Backing off is worth a line: it explains a slow rebuild. Ticks and increases are debug.
          log[decision === 'decrease' || decision === 'learn' ? 'info' : 'debug']({
            opsPerSec: Math.round(fg.opsPerSec), inFlight: fg.inFlight, baselineOpsPerSec: Math.round(controller.baselineOpsPerSec ?? 0),
            decision, rate,
          }, 'rebuild rate tick');
          if (rate !== job.rateLimit) {
            try {
              await client.setRebuildRate({ rateBytesPerSec: rate });
              job.rateLimit = rate;
              measureFrom = this.#foreground.now();
            } catch (err) {
              // A replica without the RPC keeps the rate it started with.
              if ((err as { code?: number }).code === 12 /* UNIMPLEMENTED */) adapting = false;
              log.warn({ err }, 'could not change the rebuild rate');
            }
          }
        }
        const progress = (await client.status()).rebuild;
        if (progress === undefined) continue;
        job.progress = progress;
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          log.info({ bytesDone: progress.bytesDone, bytesTotal: progress.bytesTotal, rate: Math.round(progress.rateBytesPerSec),
            rateLimit: job.rateLimit, etaSeconds: progress.etaSeconds }, 'rebuild progress');
        }
        if (progress.state === 'failed') {
          log.error({ reason: progress.lastError, attempts: progress.attempts }, 'rebuild failed; will retry');
          volume.markDegraded(job.replicaId, `rebuild failed: ${progress.lastError}`);
          this.#o.onFailed?.(job.replicaId, progress.lastError);
          return false;
        }
        if (progress.state === 'done') {
          volume.markHealthy(job.replicaId);
          const seconds = (Date.now() - started) / 1000;
          log.info({ bytes: progress.bytesDone, seconds }, 'rebuild complete');
          this.#o.onComplete?.(job.replicaId, progress.bytesDone, seconds);
          return true;
        }
      }
    } catch (err) {
      log.error({ err }, 'rebuild attempt failed; will retry');
      this.#o.onFailed?.(job.replicaId, errorMessage(err));
      const state = volume.replicaStates().find((r) => r.replicaId === job.replicaId);
      if (state?.state === 'rebuilding') volume.markDegraded(job.replicaId, 'rebuild attempt failed');
      return false;
    } finally {
      client.close();
    }
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    for (const j of this.#jobs.values()) j.cancelled = true;
  }
}
