// VolumeView feeding the metrics: one Prometheus scrape builds the replica view once (not once per
// replica gauge), with the same values as before, and a later scrape reads the volume afresh.
// The management service's calls are not cached.
import t from 'tap';
import { VolumeView } from '../../../src/target/management/volume-view.js';
import { createVolumeMetrics } from '../../../src/target/metrics/volume-metrics.js';
import type { ReplicaStatusPoller } from '../../../src/target/management/replica-status-poller.js';
import type { ReplicatedVolume, ReplicaStatusInfo, VolumeState } from '../../../src/target/volume/replicated-volume.js';
import type { RebuildOrchestrator, RebuildProgress } from '../../../src/target/volume/rebuild-orchestrator.js';
import { parseExposition } from '../../fixtures/prometheus.js';

const info = (replicaId: string, state: ReplicaStatusInfo['state'], write: number): ReplicaStatusInfo => ({
  replicaId, state, reason: state === 'healthy' ? undefined : 'test', inFlight: write,
  inFlightByKind: { read: 0, write, sync: 0 }, address: state === 'offline' ? undefined : '127.0.0.1:4000',
});

const running = (replicaId: string, bytesDone: number): RebuildProgress => ({
  replicaId, state: 'running', bytesDone, bytesTotal: 1 << 20, rateBytesPerSec: 0, etaSeconds: -1, source: 'r1',
  attempts: 1, lastError: '', rateLimitBytesPerSec: 0,
});

function harness(): {
  view: VolumeView;
  calls: { replicaStates: number; volumeState: number; counters: number; progress: number; sample: number; total: number };
  set: (states: ReplicaStatusInfo[], phase: VolumeState, rebuilds: RebuildProgress[]) => void;
} {
  const calls = { replicaStates: 0, volumeState: 0, counters: 0, progress: 0, sample: 0, total: 0 };
  let states = [info('r1', 'healthy', 2), info('r2', 'healthy', 0), info('r3', 'rebuilding', 1)];
  let phase: VolumeState = 'degraded';
  let rebuilds = [running('r3', 4096)];
  // Only what VolumeView reads; the casts stand in for the real volume, orchestrator and poller.
  const volume = {
    blockCount: 2048n, blockSize: 512,
    replicaStates: () => { calls.replicaStates++; return states; },
    volumeState: () => { calls.volumeState++; return phase; },
    counters: () => { calls.counters++; return { readRepairs: 4 }; },
  } as unknown as ReplicatedVolume;
  const orchestrator = { progress: () => { calls.progress++; return rebuilds; } } as unknown as RebuildOrchestrator;
  const poller = {
    sample: () => { calls.sample++; return undefined; },
    total: () => { calls.total++; return 5; },
  } as unknown as ReplicaStatusPoller;
  const view = new VolumeView({
    name: 'vol1', uuid: 'u', iqn: 'iqn.x:vol1', portal: '127.0.0.1:3260', startedAt: Date.now(),
    replicaIds: ['r1', 'r2', 'r3'], writeQuorum: 2, epoch: () => 1,
    volume, orchestrator, connectedAt: () => Date.now(), poller,
    counters: { replicaConnectionErrors: 3, rebuildsCompleted: 2, rebuildsFailed: 1, rebuildBytes: 1 << 20, iscsiRejects: () => 6 },
    sessions: () => [],
    grow: async (n) => n,
    rebuildRate: { get: () => 0, set: async () => {} },
    eject: async () => 'degraded',
  });
  return {
    view, calls,
    set: (s, p, r) => { states = s; phase = p; rebuilds = r; },
  };
}

t.test('one scrape builds the replica view once', async (t) => {
  const { view, calls, set } = harness();
  const { registry } = createVolumeMetrics(view.metricsSource());

  const m = parseExposition(await registry.metrics());
  t.equal(calls.replicaStates, 1, 'the replica view is built once per scrape');
  t.equal(calls.sample, 3, 'the poller is asked once per replica');
  t.equal(calls.volumeState, 1);
  t.equal(calls.counters, 1, 'the volume counters are read once');
  t.equal(calls.total, 1, 'the poller totals are read once');
  t.equal(calls.progress, 2, 'rebuild progress: once for the replica view, once for the running rebuilds');
  t.equal(m.get('openebs_size_of_volume'), 2048 * 512);
  t.equal(m.get('openebs_volume_status'), 2);
  t.equal(m.get('openebs_healthy_replica_count'), 2);
  t.equal(m.get('openebs_degraded_replica_count'), 1);
  t.equal(m.get('openebs_total_replica_count'), 3);
  t.equal(m.get('openebs_replica_mode{replica="r3",mode="rebuilding"}'), 1);
  t.equal(m.get('openebs_inflight_io_count{replica="r1"}'), 2);
  t.equal(m.get('openebs_rebuild_status{replica="r3"}'), 1);
  t.equal(m.get('openebs_rebuild_status{replica="r1"}'), 0);
  t.equal(m.get('openebs_rebuild_done_bytes{replica="r3"}'), 4096);
  t.equal(m.get('openebs_read_repairs_total'), 4);
  t.equal(m.get('openebs_checksum_mismatches_total'), 5);
  t.equal(m.get('openebs_iscsi_rejects_total'), 6);

  // The next scrape must not see the last one's snapshot.
  set([info('r1', 'healthy', 0), info('r2', 'healthy', 0), info('r3', 'healthy', 0)], 'healthy', []);
  const after = parseExposition(await registry.metrics());
  t.equal(calls.replicaStates, 2, 'a second scrape builds the view again, once');
  t.equal(after.get('openebs_volume_status'), 3);
  t.equal(after.get('openebs_healthy_replica_count'), 3);
  t.equal(after.get('openebs_degraded_replica_count'), 0);
  t.equal(after.get('openebs_rebuild_status{replica="r3"}'), 0);
  t.equal(after.get('openebs_rebuild_done_bytes{replica="r3"}'), undefined, 'no running rebuild, no series');

  // Management reads live, even in the same tick as a scrape.
  const managed = view.managed();
  const before = calls.replicaStates;
  const scrape = registry.metrics();
  managed.replicas();
  managed.replicas();
  await scrape;
  t.equal(calls.replicaStates, before + 3, 'two management reads and one scrape');
});
