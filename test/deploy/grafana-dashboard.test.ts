// deploy/grafana-dashboard.json: valid JSON with unique panel ids, and every series its queries
// use is one the target's registry actually exports (a renamed metric must break this test,
// not silently blank a dashboard panel).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../fixtures/exec.js';
import { createVolumeMetrics } from '../../src/target/metrics/volume-metrics.js';

interface Panel { id: number; title: string; targets: { expr: string }[] }

t.test('the dashboard only queries metrics the target exports', async (t) => {
  const dashboard = JSON.parse(readFileSync(join(REPO_ROOT, 'deploy', 'grafana-dashboard.json'), 'utf8')) as { panels: Panel[]; uid: string };
  t.type(dashboard.uid, 'string');
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');

  const { registry } = createVolumeMetrics({
    volumeName: 'v', sizeBytes: () => 0, blockSize: () => 512, phase: () => 'healthy', replicas: () => [], rebuildsRunning: () => [],
    counters: () => ({ rebuildsCompleted: 0, rebuildsFailed: 0, rebuildBytes: 0, replicaConnectionErrors: 0, readRepairs: 0, checksumMismatches: 0, iscsiRejects: 0 }),
  });
  const exported = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    exported.add(m.name);
    if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(`${m.name}${s}`);
  }
  let checked = 0;
  for (const panel of dashboard.panels) {
    t.ok(panel.targets.length > 0, `${panel.title}: has a query`);
    for (const { expr } of panel.targets) {
      for (const [name] of expr.matchAll(/\bopenebs_[a-z_]+/g)) {
        t.ok(exported.has(name), `${panel.title}: ${name} is exported`);
        checked++;
      }
    }
  }
  t.ok(checked >= 20, `${checked} metric references checked`);
});
