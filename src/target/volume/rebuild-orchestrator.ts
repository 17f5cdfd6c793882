// Brings degraded replicas back: for each one with a connection, it picks a healthy source, lets the
// degraded replica receive new writes (rebuilding), waits until the source holds every write issued
// before that moment, and asks the degraded replica to pull what it misses from the source over
// gRPC (replica to replica, never through the target). When the replica reports the rebuild done
// and it is still rebuilding (not ejected or reconnected meanwhile, which would have cost it writes)
// it rejoins the quorum. Failures back off and retry; the reason is logged and kept in status.

import type { Logger } from '../../shared/logger.js';
import { createReplicaControlClient, type RebuildStatus, type ReplicaControlClient } from '../../protocol/replica/control-codec.js';
import type { ReplicatedVolume } from './replicated-volume.js';

export interface RebuildOrchestratorOptions {
  readonly volume: ReplicatedVolume;
  readonly volumeUuid: string;
  /** Bytes per second per rebuild (0 = unlimited). */
  readonly rateBytesPerSec: number;
  readonly logger: Logger;
  /** A replica finished its rebuild and is healthy again. */
  readonly onComplete?: (replicaId: string, bytes: number, seconds: number) => void;
  readonly pollMs?: number;
  /** Backoff after a failed attempt (doubles, at most 30 s). */
  readonly retryMs?: number;
  readonly clientFor?: (address: string) => ReplicaControlClient;
}

export interface RebuildProgress extends RebuildStatus {
  readonly replicaId: string;
}

interface Job {
  readonly replicaId: string;
  /** Ends the job's loop (replaced, stopped). */
  cancelled: boolean;
  progress: RebuildStatus | undefined;
}

export class RebuildOrchestrator {
  readonly #o: RebuildOrchestratorOptions;
  readonly #jobs = new Map<string, Job>();
  readonly #timer: NodeJS.Timeout;
  readonly #failures = new Map<string, { count: number; notBefore: number }>();
  #stopped = false;

  constructor(options: RebuildOrchestratorOptions) {
    this.#o = options;
    this.#timer = setInterval(() => this.#scan(), options.pollMs ?? 500);
    this.#timer.unref();
  }

  /** Rebuilds running now, with the progress their replicas last reported. */
  progress(): RebuildProgress[] {
    return [...this.#jobs.values()].flatMap((j) => (j.progress === undefined ? [] : [{ replicaId: j.replicaId, ...j.progress }]));
  }

  /** Look for degraded replicas now (also done periodically). */
  #scan(): void {
    if (this.#stopped) return;
    const states = this.#o.volume.replicaStates();
    for (const r of states) {
      if (r.state !== 'degraded' || this.#jobs.has(r.replicaId)) continue;
      if (this.#o.volume.connectionOf(r.replicaId) === undefined) continue;
      const failure = this.#failures.get(r.replicaId);
      if (failure !== undefined && Date.now() < failure.notBefore) continue;
      const job: Job = { replicaId: r.replicaId, cancelled: false, progress: undefined };
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
      log.info({ source: source.replicaId, since }, 'rebuild starting');
      try {
        await client.startRebuild({
          sourceAddress: sourceConn.hello.controlAddress, sinceIoSeq: since, rateBytesPerSec: this.#o.rateBytesPerSec, volumeUuid: this.#o.volumeUuid,
        });
      } catch (err) {
        // A rebuild the replica already runs (it survived a reconnect) is followed, not restarted.
        if ((err as { code?: number }).code !== 9 /* FAILED_PRECONDITION */) throw err;
      }
      let lastLog = 0;
      for (;;) {
        await new Promise((r) => setTimeout(r, this.#o.pollMs ?? 500));
        if (job.cancelled || this.#stopped) return false;
        const state = volume.replicaStates().find((r) => r.replicaId === job.replicaId);
        if (state?.state !== 'rebuilding' || volume.connectionOf(job.replicaId) !== conn) {
          log.warn({ state: state?.state, reason: state?.reason }, 'rebuild abandoned: the replica left the write path meanwhile');
          return false;
        }
        const progress = (await client.status()).rebuild;
        if (progress === undefined) continue;
        job.progress = progress;
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          log.info({ bytesDone: progress.bytesDone, bytesTotal: progress.bytesTotal, rate: Math.round(progress.rateBytesPerSec),
            etaSeconds: progress.etaSeconds }, 'rebuild progress');
        }
        if (progress.state === 'failed') {
          log.error({ reason: progress.lastError, attempts: progress.attempts }, 'rebuild failed; will retry');
          volume.markDegraded(job.replicaId, `rebuild failed: ${progress.lastError}`);
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
