// Prometheus metrics of one volume, named as cStor's exporter names them (openebs_*, port 9500)
// where a meaning exists, so existing cStor dashboards and alerts keep working. I/O counters and
// latency histograms are fed by MeteredDevice; everything else is read from the volume when
// Prometheus scrapes (collect callbacks), so the hot path pays only for a few increments.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { IoKind, IoObserver } from './metered-device.js';
import type { ReplicaState, VolumeState } from '../volume/replicated-volume.js';

export interface ReplicaSample {
  readonly replicaId: string;
  readonly mode: ReplicaState;
  readonly inFlight: number;
}

export interface RebuildSample {
  readonly replicaId: string;
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

/** What a scrape reads from the running volume. Counters are totals since the target started. */
export interface VolumeMetricsSource {
  readonly volumeName: string;
  sizeBytes(): number;
  blockSize(): number;
  phase(): VolumeState;
  replicas(): readonly ReplicaSample[];
  rebuildsRunning(): readonly RebuildSample[];
  counters(): {
    readonly rebuildsCompleted: number;
    readonly rebuildsFailed: number;
    readonly rebuildBytes: number;
    readonly replicaConnectionErrors: number;
    readonly readRepairs: number;
    readonly checksumMismatches: number;
    readonly iscsiRejects: number;
  };
}

/** Everything one scrape reads from the source, read once. */
interface SourceSnapshot {
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly phase: VolumeState;
  readonly replicas: readonly ReplicaSample[];
  readonly rebuildsRunning: readonly RebuildSample[];
  readonly counters: ReturnType<VolumeMetricsSource['counters']>;
}

/** cStor's encoding of openebs_volume_status. */
const VOLUME_STATUS: Record<VolumeState, number> = { offline: 1, degraded: 2, healthy: 3 };
const REPLICA_MODES: readonly ReplicaState[] = ['healthy', 'degraded', 'rebuilding', 'offline'];
// 50 µs .. ~6.5 s: loopback replicas answer in tens of µs; a held I/O waits seconds.
const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 6.5];

export interface VolumeMetrics {
  readonly registry: Registry;
  readonly observer: IoObserver;
}

export function createVolumeMetrics(source: VolumeMetricsSource): VolumeMetrics {
  const registry = new Registry();
  const startedAt = Date.now();
  // Per-I/O totals are plain numbers; the counters take them at scrape time (collect), so an I/O
  // pays for additions, not for five prom-client label lookups.
  const totals = { reads: 0, writes: 0, readSeconds: 0, writeSeconds: 0, readBlocks: 0, writeBlocks: 0, readBytes: 0, writeBytes: 0, syncs: 0 };
  const c = (name: string, help: string, total: keyof typeof totals): Counter => new Counter({
    name, help, registers: [registry],
    collect() {
      this.reset();
      this.inc(totals[total]);
    },
  });
  c('openebs_reads', 'Read I/Os on the volume', 'reads');
  c('openebs_writes', 'Write I/Os on the volume', 'writes');
  c('openebs_read_time', 'Seconds spent in reads on the volume', 'readSeconds');
  c('openebs_write_time', 'Seconds spent in writes on the volume', 'writeSeconds');
  c('openebs_read_block_count', 'Blocks read from the volume', 'readBlocks');
  c('openebs_write_block_count', 'Blocks written to the volume', 'writeBlocks');
  c('openebs_total_read_bytes', 'Bytes read from the volume', 'readBytes');
  c('openebs_total_write_bytes', 'Bytes written to the volume', 'writeBytes');
  c('openebs_syncs', 'Cache flushes (SYNCHRONIZE CACHE) on the volume', 'syncs');
  const failed = new Counter({ name: 'openebs_io_errors_total', help: 'I/Os that completed with an error', labelNames: ['op'], registers: [registry] });
  const histogram = (op: string): Histogram => new Histogram({
    name: `openebs_${op}_latency_seconds`, help: `${op} latency seen by the SCSI layer`, buckets: LATENCY_BUCKETS, registers: [registry],
  });
  const latency: Record<IoKind, Histogram> = { read: histogram('read'), write: histogram('write'), sync: histogram('sync'), unmap: histogram('unmap') };

  // A source call may rebuild the whole replica view and a dozen gauges read it: the first
  // collect() of a scrape reads the source once, the others share that reading (one scrape is
  // also self-consistent). registry.metrics() runs every collect() synchronously before its first
  // await, so dropping the reading in a microtask ends it with the scrape; were that to change,
  // scrapes would read the source more often, never stale values. Done here, not in the HTTP
  // server, so every registry reader (getMetricsAsJSON too) shares it.
  let snapshot: SourceSnapshot | undefined;
  const snap = (): SourceSnapshot => {
    if (snapshot === undefined) {
      snapshot = {
        sizeBytes: source.sizeBytes(), blockSize: source.blockSize(), phase: source.phase(),
        replicas: source.replicas(), rebuildsRunning: source.rebuildsRunning(), counters: source.counters(),
      };
      queueMicrotask(() => { snapshot = undefined; });
    }
    return snapshot;
  };
  const gauge = (name: string, help: string, collect: (g: Gauge) => void, labelNames: string[] = []): Gauge => new Gauge({
    name, help, labelNames, registers: [registry], collect() { collect(this); },
  });
  gauge('openebs_size_of_volume', 'Size of the volume in bytes', (g) => g.set(snap().sizeBytes));
  gauge('openebs_sector_size', 'Logical block size of the volume in bytes', (g) => g.set(snap().blockSize));
  gauge('openebs_volume_status', 'Status of volume: (1, 2, 3, 4) = {Offline, Degraded, Healthy, Unknown}', (g) => g.set(VOLUME_STATUS[snap().phase]));
  gauge('openebs_volume_uptime', 'Seconds since the volume started serving', (g) => {
    g.set({ volName: source.volumeName, castype: 'cstor' }, (Date.now() - startedAt) / 1000);
  }, ['volName', 'castype']);
  const count = (mode: ReplicaState): number => snap().replicas.filter((r) => r.mode === mode).length;
  gauge('openebs_healthy_replica_count', 'Replicas in sync (in the write quorum)', (g) => g.set(count('healthy')));
  gauge('openebs_degraded_replica_count', 'Replicas connected but not in sync (degraded or rebuilding)', (g) => g.set(count('degraded') + count('rebuilding')));
  gauge('openebs_total_replica_count', 'Replicas connected to the target', (g) => g.set(snap().replicas.filter((r) => r.mode !== 'offline').length));
  gauge('openebs_replica_mode', 'Replica mode (1 for the current one)', (g) => {
    g.reset();
    for (const r of snap().replicas) for (const mode of REPLICA_MODES) g.set({ replica: r.replicaId, mode }, r.mode === mode ? 1 : 0);
  }, ['replica', 'mode']);
  gauge('openebs_inflight_io_count', 'Requests sent to a replica and not yet answered', (g) => {
    g.reset();
    for (const r of snap().replicas) g.set({ replica: r.replicaId }, r.inFlight);
  }, ['replica']);
  gauge('openebs_rebuild_status', 'Rebuild running for the replica (1) or not (0)', (g) => {
    g.reset();
    const running = new Set(snap().rebuildsRunning.map((r) => r.replicaId));
    for (const r of snap().replicas) g.set({ replica: r.replicaId }, running.has(r.replicaId) ? 1 : 0);
  }, ['replica']);
  gauge('openebs_rebuild_done_bytes', 'Bytes copied so far by the running rebuild', (g) => {
    g.reset();
    for (const r of snap().rebuildsRunning) g.set({ replica: r.replicaId }, r.bytesDone);
  }, ['replica']);
  gauge('openebs_rebuild_total_bytes', 'Bytes the running rebuild has to copy', (g) => {
    g.reset();
    for (const r of snap().rebuildsRunning) g.set({ replica: r.replicaId }, r.bytesTotal);
  }, ['replica']);
  // Totals kept by the volume: exposed as gauges set at scrape time (cStor's exporter does the same).
  gauge('openebs_rebuild_bytes', 'Bytes copied by finished rebuilds', (g) => g.set(snap().counters.rebuildBytes));
  gauge('openebs_rebuild_count', 'Rebuilds finished', (g) => g.set(snap().counters.rebuildsCompleted));
  gauge('openebs_total_failed_rebuild', 'Rebuilds that failed', (g) => g.set(snap().counters.rebuildsFailed));
  gauge('openebs_connection_error_total', 'Replica connections lost', (g) => g.set(snap().counters.replicaConnectionErrors));
  gauge('openebs_read_repairs_total', 'Reads served from another replica after an error, with the bad copy rewritten', (g) => g.set(snap().counters.readRepairs));
  gauge('openebs_checksum_mismatches_total', 'Blocks whose stored checksum did not match their data on a read', (g) => g.set(snap().counters.checksumMismatches));
  gauge('openebs_iscsi_rejects_total', 'iSCSI Reject PDUs sent for malformed or unsupported requests', (g) => g.set(snap().counters.iscsiRejects));
  collectDefaultMetrics({ register: registry, prefix: 'cstor_target_' });

  const observer: IoObserver = {
    observe(kind, blocks, bytes, seconds, error) {
      latency[kind].observe(seconds);
      if (error) {
        failed.inc({ op: kind });
        return;
      }
      if (kind === 'read') {
        totals.reads++;
        totals.readSeconds += seconds;
        totals.readBlocks += blocks;
        totals.readBytes += bytes;
      } else if (kind === 'write') {
        totals.writes++;
        totals.writeSeconds += seconds;
        totals.writeBlocks += blocks;
        totals.writeBytes += bytes;
      } else if (kind === 'sync') {
        totals.syncs++;
      }
    },
  };
  return { registry, observer };
}
