// Operating a running volume the way an operator does, against `npm start` (dist/src/target/main.js)
// with 3 replica processes: the CLI finds it through --data-dir, /metrics is scraped after known
// I/O, `status --watch` shows a rebuild with an ETA, resize grows the live volume, the rebuild rate
// and replica ejection work, and sessions are listed.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { killChild, requireTool, runCommand, type RunResult } from '../fixtures/exec.js';
import { startTarget, TARGET_MAIN, type TargetProcess } from '../fixtures/target-process.js';
import { qemuIo, qemuIoSession } from '../fixtures/qemu-io-session.js';
import { parseExposition } from '../fixtures/prometheus.js';
import { parseEndpoints } from '../../src/protocol/management/endpoints.js';
import type { VolumeStatus } from '../../src/protocol/management/management-codec.js';

t.setTimeout(8 * 60_000);
const CTL = join('dist', 'src', 'ctl', 'main.js');

async function ctl(tt: Test, ...args: string[]): Promise<RunResult> {
  return runCommand(process.execPath, [CTL, ...args], { timeoutMs: 60_000, t: tt });
}

async function status(tt: Test, target: TargetProcess): Promise<VolumeStatus> {
  const r = await ctl(tt, 'status', '--data-dir', target.dataDir, '--json');
  if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as VolumeStatus;
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function metricsUrl(target: TargetProcess): string {
  const e = parseEndpoints(readFileSync(join(target.dataDir, 'state', 'endpoints.json'), 'utf8'));
  if (e.metrics === undefined) throw new Error('no metrics address in endpoints.json');
  return `http://${e.metrics}`;
}

async function scrape(target: TargetProcess): Promise<Map<string, number>> {
  return parseExposition(await (await fetch(`${metricsUrl(target)}/metrics`)).text());
}

/** qemu-io with its commands as the assertion's name; any "failed" in the output (not only "failed:") fails it. */
async function qemuIoAll(tt: Test, url: string, commands: readonly string[]): Promise<RunResult> {
  return qemuIo(tt, url, commands.join('; '), commands, { failure: /failed|error/i });
}

t.test('k=3: status, metrics after known I/O, watch a rebuild, resize, rate, eject, sessions', async (t) => {
  const target = await startTarget(t, { args: ['--size', '64M', '--replicas', '3', '--restart-delay', '3', '--rebuild-rate', '8', '--rebuild-adaptive', 'off'] });
  const url = target.url();

  const first = await status(t, target);
  t.equal(first.phase, 'Healthy');
  t.equal(first.capacityBytes, 64 << 20);
  t.equal(first.replicationFactor, 3);
  t.equal(first.consistencyFactor, 2);
  t.same(first.replicas.map((r) => [r.id, r.mode, r.quorum]), [['r1', 'Healthy', true], ['r2', 'Healthy', true], ['r3', 'Healthy', true]]);
  t.ok(first.epoch >= 1, `epoch ${first.epoch}`);
  t.equal(first.iqn, target.iqn);

  const health = await fetch(`${metricsUrl(target)}/readyz`);
  t.equal(health.status, 200, 'ready: the volume is healthy');
  t.equal((await fetch(`${metricsUrl(target)}/healthz`)).status, 200);

  // Known I/O: qemu-io issues one SCSI command per request of this size; opening a raw image writes nothing.
  const before = await scrape(target);
  await qemuIoAll(t, url, ['write -P 0x5a 0 64k', 'write -P 0x5a 64k 64k', 'write -P 0x5a 128k 64k', 'write -P 0x5a 192k 64k', 'read -P 0x5a 0 64k', 'read -P 0x5a 64k 64k']);
  const after = await scrape(target);
  const delta = (name: string): number => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  t.equal(delta('openebs_writes'), 4, 'four writes counted');
  t.equal(delta('openebs_total_write_bytes'), 4 * 65536);
  t.equal(delta('openebs_write_block_count'), 4 * 128, '512-byte blocks');
  t.ok(delta('openebs_reads') >= 2 && delta('openebs_total_read_bytes') >= 2 * 65536, 'at least the two reads (qemu may probe)');
  t.equal(delta('openebs_write_latency_seconds_count'), 4);
  t.equal(after.get('openebs_size_of_volume'), 64 << 20);
  t.equal(after.get('openebs_volume_status'), 3, 'Healthy = 3');
  t.equal(after.get('openebs_healthy_replica_count'), 3);
  t.equal(after.get('openebs_total_replica_count'), 3);
  for (const name of ['openebs_read_time', 'openebs_write_time', 'openebs_rebuild_count', 'openebs_rebuild_bytes', 'openebs_total_failed_rebuild',
    'openebs_connection_error_total', 'openebs_degraded_replica_count', 'openebs_read_repairs_total', 'openebs_checksum_mismatches_total']) {
    t.ok(after.has(name), `${name} is exported`);
  }

  // Kill r2, write while it is away, and watch its rebuild at 8 MiB/s.
  const watch = spawn(process.execPath, [CTL, 'status', '--watch', '--interval', '0.3', '--data-dir', target.dataDir], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  t.teardown(() => killChild(watch, 2000));
  let watched = '';
  watch.stdout.setEncoding('utf8').on('data', (c: string) => { watched += c; });
  process.kill(target.replicaPids('r2')[0]!, 'SIGKILL');
  await waitFor('r2 out of the quorum', async () => ((await status(t, target)).replicas[1]!.quorum ? undefined : true), 30_000);
  await qemuIoAll(t, url, ['write -P 0x66 1M 40M']);
  await waitFor('r2 rebuilt', () => (target.stdoutLines().some((l) => /^rebuild complete r2 /.test(l)) ? true : undefined), 120_000);
  killChild(watch, 2000);
  t.match(watched, /rebuild r2 [█░]+\s+\d+\.\d%\s+[\d.]+ \w?i?B \/ [\d.]+ \w?iB\s+[\d.]+ \w?iB\/s\s+ETA \d/, 'status --watch showed the rebuild with a progress bar and an ETA');
  t.match(watched, /r2\s+Rebuilding/, 'and r2 in Rebuilding mode');
  const rebuilt = await scrape(target);
  t.equal(rebuilt.get('openebs_rebuild_count'), 1, 'one rebuild finished');
  t.ok((rebuilt.get('openebs_rebuild_bytes') ?? 0) >= 40 << 20, `rebuild bytes ${rebuilt.get('openebs_rebuild_bytes')}`);
  t.ok((rebuilt.get('openebs_connection_error_total') ?? 0) >= 1, 'the lost connection was counted');
  t.equal((await status(t, target)).phase, 'Healthy');

  // Resize: grow the live volume; an old session sees CAPACITY DATA HAS CHANGED, a new one the size.
  const session = await qemuIoSession(t, url);
  const sessions = await ctl(t, 'sessions', '--data-dir', target.dataDir, '--json');
  const listed = JSON.parse(sessions.stdout) as { initiatorName: string; connections: { address: string }[]; parameters: Record<string, string> }[];
  t.equal(listed.length, 1, 'one session logged in (qemu-io)');
  t.match(listed[0]?.connections[0]?.address, /^127\.0\.0\.1:\d+$/);
  t.ok(listed[0]?.parameters['MaxBurstLength'] !== undefined, 'negotiated parameters are listed');
  const shrink = await ctl(t, 'resize', '32M', '--data-dir', target.dataDir);
  t.equal(shrink.code, 1);
  t.match(shrink.stderr, /^cstor-ctl: shrinking is not supported/);
  const grow = await ctl(t, 'resize', '96M', '--data-dir', target.dataDir);
  t.equal(grow.code, 0, 'resize 96M', { stderr: grow.stderr });
  t.equal((await status(t, target)).capacityBytes, 96 << 20);
  await session.close();
  const cap = await runCommand(requireTool('iscsi-readcapacity16'), ['-s', url], { timeoutMs: 30_000, t });
  t.equal(cap.stdout.trim(), String(96 << 20), 'READ CAPACITY (16) reports the new size in bytes');
  await qemuIoAll(t, url, ['write -P 0x77 90M 1M', 'read -P 0x77 90M 1M']);

  // Rebuild rate and ejection.
  const rate = await ctl(t, 'rebuild', 'rate', '50', '--data-dir', target.dataDir);
  t.equal(rate.stdout.trim(), 'rebuild rate 50 MiB/s');
  t.equal((await status(t, target)).rebuildRateMibPerSec, 50);
  const eject = await ctl(t, 'replica', 'eject', 'r3', '--data-dir', target.dataDir);
  t.match(eject.stdout, /^replica r3 ejected: now (Degraded|Rebuilding)/);
  await waitFor('r3 back in the quorum after its rebuild', async () => ((await status(t, target)).replicas[2]!.quorum ? true : undefined), 120_000);
  const first1 = await ctl(t, 'replica', 'eject', 'r1', '--data-dir', target.dataDir);
  t.equal(first1.code, 0, 'all three healthy: ejecting one keeps the quorum');
  const second = await ctl(t, 'replica', 'eject', 'r2', '--data-dir', target.dataDir);
  t.equal(second.code, 1, 'a second ejection would drop below the write quorum');
  t.match(second.stderr, /would leave fewer in-sync replicas than the write quorum/);
  await qemuIoAll(t, url, ['read -P 0x5a 0 256k', 'read -P 0x66 1M 40M', 'read -P 0x77 90M 1M']);

  t.equal(await target.stop(), 0, 'clean stop');
  const gone = await ctl(t, 'status', '--data-dir', target.dataDir);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /no running volume found in/, 'the endpoints file is removed on stop');
});

t.test('a metrics port in use stops the start with a message naming the flag; a bad config names its field', async (t) => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as AddressInfo).port;
  const dir = t.testdir();
  const r = await runCommand(process.execPath, [TARGET_MAIN, '--data-dir', dir, '--portal', '127.0.0.1:0', '--replica-port', '127.0.0.1:0',
    '--metrics-port', `127.0.0.1:${port}`], { timeoutMs: 60_000, t });
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`^cstor-target: cannot start: --metrics-port 127\\.0\\.0\\.1:${port}: already in use \\(use another port or 'off'\\)$`, 'm'));
  t.notMatch(r.stderr, /--portal/, 'the portal is not blamed');

  writeFileSync(join(dir, 'vol.yaml'), 'kind: CStorVolume\nspec:\n  consistencyFactor: 1\n');
  const bad = await runCommand(process.execPath, [TARGET_MAIN, '--config', join(dir, 'vol.yaml')], { timeoutMs: 30_000, t });
  t.equal(bad.code, 64);
  t.match(bad.stderr, /vol\.yaml: spec\.consistencyFactor \(--write-quorum\): '1' must be from 2 \(a majority of 3\) to 3/);
});
