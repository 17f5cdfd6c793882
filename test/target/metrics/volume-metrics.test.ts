// The metrics endpoint scraped over HTTP after known I/O through a MeteredDevice: cStor's
// openebs_* names with the values that I/O implies, the volume/replica gauges read at scrape
// time, and the health endpoints following the volume's phase.
import t from 'tap';
import { MemoryBlockDevice } from '../../../src/target/volume/memory-device.js';
import { MeteredDevice } from '../../../src/target/metrics/metered-device.js';
import { createVolumeMetrics, type VolumeMetricsSource, type ReplicaSample } from '../../../src/target/metrics/volume-metrics.js';
import type { VolumeState } from '../../../src/target/volume/replicated-volume.js';
import { MetricsServer } from '../../../src/target/metrics/metrics-server.js';
import { createRootLogger } from '../../../src/shared/logger.js';
import { parseExposition } from '../../fixtures/prometheus.js';

t.test('openebs_* metrics after known I/O, and health endpoints', async (t) => {
  let phase: VolumeState = 'degraded';
  let replicas: ReplicaSample[] = [
    { replicaId: 'r1', mode: 'healthy', inFlight: 2 },
    { replicaId: 'r2', mode: 'healthy', inFlight: 0 },
    { replicaId: 'r3', mode: 'rebuilding', inFlight: 1 },
  ];
  const inner = new MemoryBlockDevice({ blockSize: 512, blockCount: 2048n });
  const source: VolumeMetricsSource = {
    volumeName: 'vol1',
    sizeBytes: () => 2048 * 512,
    blockSize: () => 512,
    phase: () => phase,
    replicas: () => replicas,
    rebuildsRunning: () => [{ replicaId: 'r3', bytesDone: 4096, bytesTotal: 65536 }],
    counters: () => ({ rebuildsCompleted: 2, rebuildsFailed: 1, rebuildBytes: 1 << 20, replicaConnectionErrors: 3, readRepairs: 4, checksumMismatches: 5, iscsiRejects: 6 }),
  };
  const metrics = createVolumeMetrics(source);
  const device = new MeteredDevice(inner, metrics.observer);
  await device.write(0n, Buffer.alloc(8 * 512, 1));
  await device.write(8n, Buffer.alloc(4 * 512, 2), { fua: true });
  await device.writeZeroes(100n, 16);
  const into = Buffer.alloc(3 * 512);
  await device.read(0n, 3, into);
  t.equal(into[0], 1, 'data goes through the wrapper');
  await device.flush();
  await t.rejects(device.read(4096n, 1, Buffer.alloc(512)), 'a read beyond the end fails');

  const server = new MetricsServer({
    registry: metrics.registry,
    notReadyReason: () => (phase === 'offline' ? 'volume offline: fewer than 2 replicas in sync' : undefined),
    logger: createRootLogger({ level: 'silent' }),
  });
  const { port } = await server.listen('127.0.0.1', 0);
  t.teardown(() => server.close());
  const get = (path: string): Promise<Response> => fetch(`http://127.0.0.1:${port}${path}`);

  const res = await get('/metrics');
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /text\/plain/);
  const m = parseExposition(await res.text());
  t.equal(m.get('openebs_reads'), 1, 'one successful read (the failed one is counted as an error)');
  t.equal(m.get('openebs_writes'), 3, 'two writes and a write-zeroes');
  t.equal(m.get('openebs_write_block_count'), 28);
  t.equal(m.get('openebs_total_write_bytes'), 28 * 512);
  t.equal(m.get('openebs_read_block_count'), 3);
  t.equal(m.get('openebs_total_read_bytes'), 3 * 512);
  t.equal(m.get('openebs_syncs'), 1);
  t.equal(m.get('openebs_io_errors_total{op="read"}'), 1);
  t.ok((m.get('openebs_read_time') ?? -1) >= 0, 'read time accumulates');
  t.equal(m.get('openebs_read_latency_seconds_count'), 2, 'the histogram counts failed reads too');
  t.equal(m.get('openebs_write_latency_seconds_count'), 3);
  t.equal(m.get('openebs_sync_latency_seconds_count'), 1);
  t.equal(m.get('openebs_size_of_volume'), 2048 * 512);
  t.equal(m.get('openebs_volume_status'), 2, 'degraded = 2 (cStor: 1 offline, 2 degraded, 3 healthy)');
  t.ok((m.get('openebs_volume_uptime{volName="vol1",castype="cstor"}') ?? -1) >= 0);
  t.equal(m.get('openebs_healthy_replica_count'), 2);
  t.equal(m.get('openebs_degraded_replica_count'), 1);
  t.equal(m.get('openebs_total_replica_count'), 3);
  t.equal(m.get('openebs_replica_mode{replica="r3",mode="rebuilding"}'), 1);
  t.equal(m.get('openebs_replica_mode{replica="r3",mode="healthy"}'), 0);
  t.equal(m.get('openebs_inflight_io_count{replica="r1"}'), 2);
  t.equal(m.get('openebs_rebuild_status{replica="r3"}'), 1);
  t.equal(m.get('openebs_rebuild_status{replica="r1"}'), 0);
  t.equal(m.get('openebs_rebuild_done_bytes{replica="r3"}'), 4096);
  t.equal(m.get('openebs_rebuild_total_bytes{replica="r3"}'), 65536);
  t.equal(m.get('openebs_rebuild_count'), 2);
  t.equal(m.get('openebs_rebuild_bytes'), 1 << 20);
  t.equal(m.get('openebs_total_failed_rebuild'), 1);
  t.equal(m.get('openebs_connection_error_total'), 3);
  t.equal(m.get('openebs_read_repairs_total'), 4);
  t.equal(m.get('openebs_checksum_mismatches_total'), 5);
  t.equal(m.get('openebs_iscsi_rejects_total'), 6);

  t.equal((await get('/healthz')).status, 200);
  t.equal((await get('/readyz')).status, 200, 'degraded is still ready (quorum in sync)');
  phase = 'offline';
  replicas = [{ replicaId: 'r1', mode: 'healthy', inFlight: 0 }, { replicaId: 'r2', mode: 'offline', inFlight: 0 }, { replicaId: 'r3', mode: 'offline', inFlight: 0 }];
  const notReady = await get('/readyz');
  t.equal(notReady.status, 503);
  t.match(await notReady.text(), /volume offline/);
  const after = parseExposition(await (await get('/metrics')).text());
  t.equal(after.get('openebs_volume_status'), 1, 'offline = 1');
  t.equal(after.get('openebs_total_replica_count'), 1);
  t.equal((await get('/nope')).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);
});

t.test('one scrape reads the source once, and the next scrape reads it again', async (t) => {
  const calls = { sizeBytes: 0, blockSize: 0, phase: 0, replicas: 0, rebuildsRunning: 0, counters: 0 };
  let replicas: ReplicaSample[] = [{ replicaId: 'r1', mode: 'healthy', inFlight: 1 }, { replicaId: 'r2', mode: 'rebuilding', inFlight: 0 }];
  const metrics = createVolumeMetrics({
    volumeName: 'vol1',
    sizeBytes: () => { calls.sizeBytes++; return 4096; },
    blockSize: () => { calls.blockSize++; return 512; },
    phase: () => { calls.phase++; return 'degraded'; },
    replicas: () => { calls.replicas++; return replicas; },
    rebuildsRunning: () => { calls.rebuildsRunning++; return [{ replicaId: 'r2', bytesDone: 1, bytesTotal: 2 }]; },
    counters: () => { calls.counters++; return { rebuildsCompleted: 0, rebuildsFailed: 0, rebuildBytes: 0, replicaConnectionErrors: 0, readRepairs: 0, checksumMismatches: 0, iscsiRejects: 0 }; },
  });
  const server = new MetricsServer({ registry: metrics.registry, notReadyReason: () => undefined, logger: createRootLogger({ level: 'silent' }) });
  const { port } = await server.listen('127.0.0.1', 0);
  t.teardown(() => server.close());
  const scrape = async (): Promise<Map<string, number>> => parseExposition(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());

  const first = await scrape();
  t.same(calls, { sizeBytes: 1, blockSize: 1, phase: 1, replicas: 1, rebuildsRunning: 1, counters: 1 }, 'each source call once per scrape');
  t.equal(first.get('openebs_healthy_replica_count'), 1);
  t.equal(first.get('openebs_degraded_replica_count'), 1);
  t.equal(first.get('openebs_rebuild_status{replica="r2"}'), 1);

  replicas = [{ replicaId: 'r1', mode: 'healthy', inFlight: 0 }, { replicaId: 'r2', mode: 'healthy', inFlight: 0 }];
  const second = await scrape();
  t.equal(calls.replicas, 2, 'the second scrape reads afresh');
  t.equal(second.get('openebs_healthy_replica_count'), 2, 'not the first scrape\'s reading');
  t.equal(second.get('openebs_degraded_replica_count'), 0);

  await metrics.registry.getMetricsAsJSON();
  t.equal(calls.replicas, 3, 'other registry readers share one reading too');
  t.equal(calls.counters, 3);
});
