// One read-mostly view of the running volume for the management service and the metrics: it
// adapts the volume (k = 1 or replicated), the rebuild orchestrator, the replica status poller and
// the iSCSI node to the small interfaces those two consume.
import type { ManagedReplica, ManagedVolume } from './management-handlers.js';
import type { ReplicaStatusPoller } from './replica-status-poller.js';
import type { VolumeMetricsSource } from '../metrics/volume-metrics.js';
import type { Session } from '../../protocol/management/management-codec.js';
import type { ReplicatedVolume, VolumeState } from '../volume/replicated-volume.js';
import type { ReplicaVolume } from '../volume/replica-volume.js';
import type { RebuildOrchestrator } from '../volume/rebuild-orchestrator.js';

/** Totals main.ts keeps from volume and orchestrator events. */
export interface OperationalCounters {
  replicaConnectionErrors: number;
  rebuildsCompleted: number;
  rebuildsFailed: number;
  rebuildBytes: number;
  iscsiRejects: () => number;
}

export interface VolumeViewOptions {
  readonly name: string;
  readonly uuid: string;
  readonly iqn: string;
  readonly portal: string;
  readonly startedAt: number;
  readonly replicaIds: readonly string[];
  readonly writeQuorum: number;
  readonly epoch: () => number;
  readonly volume: ReplicatedVolume | ReplicaVolume;
  readonly orchestrator: RebuildOrchestrator | undefined;
  /** When each replica's current connection was made. */
  readonly connectedAt: (replicaId: string) => number | undefined;
  readonly poller: ReplicaStatusPoller;
  readonly counters: OperationalCounters;
  readonly sessions: () => readonly Session[];
  readonly grow: (capacityBytes: number) => Promise<number>;
  readonly rebuildRate: { get(): number; set(mib: number): Promise<void> };
  readonly eject: (id: string, reason: string) => Promise<ManagedReplica['mode']>;
}

function isReplicated(v: ReplicatedVolume | ReplicaVolume): v is ReplicatedVolume {
  return 'replicaStates' in v;
}

export class VolumeView {
  readonly #o: VolumeViewOptions;

  constructor(options: VolumeViewOptions) {
    this.#o = options;
  }

  #replicas(): ManagedReplica[] {
    const o = this.#o;
    const rebuilds = new Map((o.orchestrator?.progress() ?? []).map((p) => [p.replicaId, p]));
    // k = 1: the single replica's own view (its device counts no per-kind queue).
    const states = isReplicated(o.volume)
      ? o.volume.replicaStates()
      : [{ replicaId: o.replicaIds[0]!, state: o.volume.connected ? 'healthy' as const : 'offline' as const,
        reason: o.volume.connected ? undefined : 'not connected', inFlight: 0, inFlightByKind: { read: 0, write: 0, sync: 0 },
        address: o.volume.connection?.remoteAddress }];
    return states.map((s) => {
      const sample = o.poller.sample(s.replicaId)?.status;
      const rebuild = rebuilds.get(s.replicaId) ?? (s.state === 'rebuilding' ? sample?.rebuild : undefined);
      return {
        id: s.replicaId,
        mode: s.state,
        reason: s.reason,
        checkpointedIoSeq: sample?.checkpointedIoSeq ?? 0,
        inflightReads: s.inFlightByKind.read,
        inflightWrites: s.inFlightByKind.write,
        inflightSyncs: s.inFlightByKind.sync,
        connectedAt: s.state === 'offline' ? undefined : o.connectedAt(s.replicaId),
        address: s.address,
        rebuild: rebuild === undefined ? undefined : {
          state: rebuild.state, bytesDone: rebuild.bytesDone, bytesTotal: rebuild.bytesTotal,
          rateBytesPerSec: rebuild.rateBytesPerSec, etaSeconds: rebuild.etaSeconds, source: rebuild.source,
        },
      };
    });
  }

  #phase(): VolumeState {
    const v = this.#o.volume;
    return isReplicated(v) ? v.volumeState() : v.connected ? 'healthy' : 'offline';
  }

  managed(): ManagedVolume {
    const o = this.#o;
    return {
      name: o.name, uuid: o.uuid, iqn: o.iqn, portal: o.portal, startedAt: o.startedAt,
      replicationFactor: o.replicaIds.length, consistencyFactor: o.writeQuorum,
      epoch: o.epoch,
      phase: () => this.#phase(),
      capacityBytes: () => Number(o.volume.blockCount) * o.volume.blockSize,
      blockSize: () => o.volume.blockSize,
      replicas: () => this.#replicas(),
      grow: o.grow,
      rebuildRateMiBs: () => o.rebuildRate.get(),
      setRebuildRateMiBs: (mib) => o.rebuildRate.set(mib),
      eject: o.eject,
      sessions: o.sessions,
    };
  }

  metricsSource(): VolumeMetricsSource {
    const o = this.#o;
    return {
      volumeName: o.name,
      sizeBytes: () => Number(o.volume.blockCount) * o.volume.blockSize,
      blockSize: () => o.volume.blockSize,
      phase: () => this.#phase(),
      replicas: () => this.#replicas().map((r) => ({ replicaId: r.id, mode: r.mode, inFlight: r.inflightReads + r.inflightWrites + r.inflightSyncs })),
      rebuildsRunning: () => (o.orchestrator?.progress() ?? [])
        .filter((p) => p.state === 'running' || p.state === 'backoff')
        .map((p) => ({ replicaId: p.replicaId, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal })),
      counters: () => ({
        rebuildsCompleted: o.counters.rebuildsCompleted,
        rebuildsFailed: o.counters.rebuildsFailed,
        rebuildBytes: o.counters.rebuildBytes,
        replicaConnectionErrors: o.counters.replicaConnectionErrors,
        readRepairs: isReplicated(o.volume) ? o.volume.counters().readRepairs : 0,
        checksumMismatches: o.poller.total('checksumMismatches'),
        iscsiRejects: o.counters.iscsiRejects(),
      }),
    };
  }
}
