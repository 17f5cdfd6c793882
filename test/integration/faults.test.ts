// Fault injection against a k=3 replicated volume with real peers: qemu-io / qemu-img over iscsi://,
// real replica processes (started by the test with --external-replicas, or by the target), a TCP
// proxy that slows one replica's link, and bytes flipped on a replica's device. Each scenario checks
// that no acknowledged write is lost (read back with patterns) and, once stopped, that
// cstor-verify finds the replicas identical.
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { openSync, readSync, writeSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand, requireTool, sleep, type RunResult } from '../fixtures/exec.js';
import { launchTarget, startTarget, type LaunchedTarget, type TargetProcess } from '../fixtures/target-process.js';
import { startReplicaProcess, type ReplicaProcess } from '../fixtures/replica-process.js';
import { startTcpProxy, type TcpProxy } from '../fixtures/tcp-proxy.js';
import { qemuIo, qemuIoSession } from '../fixtures/qemu-io-session.js';
import { waitFor } from '../fixtures/wait-for.js';
import { checkpointedIoSeq, journalAsCrashLeft } from '../fixtures/crash-journal.js';
import { readSuperblock } from '../fixtures/superblock-on-disk.js';

const MiB = 1 << 20;
const STEP_TIMEOUT_MS = 120_000;
t.setTimeout(9 * 60_000);

function explain(r: RunResult): Record<string, unknown> {
  return { code: r.code, signal: r.signal, stdout: r.stdout.slice(-2000), stderr: r.stderr.slice(-2000) };
}

/** Target log lines (pino JSON) with this message, optionally for one replica. */
function logs(target: { stderrLines(): string[] }, msg: string, replica?: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of target.stderrLines()) {
    if (!line.includes(msg)) continue;
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec['msg'] === msg && (replica === undefined || rec['replica'] === replica)) out.push(rec);
    } catch {
      // not JSON (a replica's plain stderr line)
    }
  }
  return out;
}

/** Lists the distinct warning and error messages the target (and its replicas) logged: context for a reader of the run. */
function commentProblems(tt: Test, target: { stderrLines(): string[] }): void {
  const seen = new Map<string, number>();
  for (const line of target.stderrLines()) {
    if (!line.startsWith('{')) continue;
    try {
      const rec = JSON.parse(line) as { level?: number; msg?: string; replica?: string };
      if ((rec.level ?? 0) < 40) continue;
      const key = `${rec.level === 40 ? 'warn' : 'error'} ${rec.replica ?? '-'}: ${rec.msg}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    } catch {
      // not JSON
    }
  }
  for (const [key, n] of seen) tt.comment(`${key} (×${n})`);
}

/** `rebuild complete <id>` lines the target printed so far. */
function rebuildLines(target: { stdoutLines(): string[] }, id: string): number {
  return target.stdoutLines().filter((l) => l.startsWith(`rebuild complete ${id} `)).length;
}

async function verifyIdentical(tt: Test, dataDir: string): Promise<void> {
  const verify = await runCommand(process.execPath, [join('dist', 'src', 'replica', 'verify-main.js'), '--data-dir', dataDir], { timeoutMs: 120_000, t: tt });
  tt.equal(verify.code, 0, 'verify: the three replicas are identical', { stdout: verify.stdout.slice(-3000), stderr: verify.stderr.slice(-1000) });
  tt.match(verify.stdout, /identical/, 'verify reports identical');
}

/** A target with --external-replicas and three replica processes r1..r3 on <dataDir>/replica-N.img. */
interface ExternalVolume {
  readonly launched: LaunchedTarget;
  readonly uuid: string;
  readonly sizeBytes: number;
  readonly replicas: Map<string, ReplicaProcess>;
  start(id: string, via?: string): Promise<ReplicaProcess>;
}

async function externalVolume(tt: Test, sizeBytes: number, targetArgs: readonly string[],
  /** Once the replica port is known: the --target to give some replicas instead (a proxy in front of it). */
  route: (launched: LaunchedTarget) => Promise<Record<string, string>> = () => Promise.resolve({})):
  Promise<{ volume: ExternalVolume; target: TargetProcess }> {
  const uuid = randomUUID();
  const launched = await launchTarget(tt, {
    args: ['--external-replicas', '--volume-uuid', uuid, '--size', String(sizeBytes), '--replicas', '3', ...targetArgs],
  });
  tt.ok(launched.replicaAddress.port > 0, `the replica port is printed before replicas connect (${launched.replicaTarget})`);
  tt.equal(launched.stdoutLines().filter((l) => l.startsWith('ready ')).length, 0, 'not ready before its replicas dialed in');
  const replicas = new Map<string, ReplicaProcess>();
  const volume: ExternalVolume = {
    launched, uuid, sizeBytes, replicas,
    start: async (id, through) => {
      const n = Number(id.slice(1));
      const r = startReplicaProcess(tt, {
        device: join(launched.dataDir, `replica-${n}.img`), replicaId: id, target: through ?? launched.replicaTarget,
        volumeUuid: uuid, sizeBytes,
      });
      replicas.set(id, r);
      await r.ready();
      return r;
    },
  };
  const via = await route(launched);
  await Promise.all(['r1', 'r2', 'r3'].map((id) => volume.start(id, via[id])));
  const target = await launched.ready(60_000);
  tt.same(target.replicaPids('r1'), [], 'external mode: the target started no replica process');
  return { volume, target };
}

/** Stop the target (SIGTERM), then every replica (SIGTERM: checkpoint), each expected to exit 0. */
async function stopAll(tt: Test, target: TargetProcess, volume: ExternalVolume): Promise<void> {
  commentProblems(tt, target);
  tt.equal(await target.stop(), 0, 'target: clean stop');
  for (const [id, r] of volume.replicas) {
    if (r.exited() !== undefined) continue;
    tt.equal(await r.stop(), 0, `replica ${id}: clean stop`);
  }
}

/** Seconds qemu-io reports for each command: "1 ops; 00.02 sec (...)", from 1 s on "1 ops; 0:00:01.01 (...)". */
function commandSeconds(output: string): number[] {
  return [...output.matchAll(/ops; ([\d:]*\d+\.\d+)/g)].map((m) => (m[1] ?? '').split(':').reduce((acc, part) => acc * 60 + Number(part), 0));
}

t.test('a slow replica (500 ms each way through a proxy) does not slow acknowledged writes, and loses nothing', async (t) => {
  const DELAY_MS = 500;
  const COUNT = 20;
  // The proxy needs the target's replica port, and r2 needs the proxy's port: launch, then wire.
  let proxy: TcpProxy | undefined;
  const { volume, target } = await externalVolume(t, 64 * MiB, [], async (launched) => {
    proxy = await startTcpProxy(launched.replicaAddress);
    t.teardown(() => proxy?.close());
    proxy.setDelay('both', DELAY_MS);
    return { r2: proxy.address };
  });
  if (proxy === undefined) throw new Error('no proxy');
  t.equal(proxy.accepted, 1, 'r2 dialed through the proxy');
  const url = target.url();

  const writes = Array.from({ length: COUNT }, (_, i) => `write -P ${0x20 + i} ${i * 64}k 64k`);
  const started = Date.now();
  const w = await qemuIo(t, url, `${COUNT} sequential 64 KiB writes (QD1)`, [...writes, 'flush']);
  const wallMs = Date.now() - started;
  const perWrite = commandSeconds(w.stdout).slice(0, COUNT);
  t.equal(perWrite.length, COUNT, 'qemu-io timed every write');
  const writeMs = perWrite.reduce((a, b) => a + b, 0) * 1000;
  const bound = (COUNT * DELAY_MS) / 3;
  t.ok(writeMs < bound, `the writes took ${writeMs.toFixed(0)} ms in all (qemu-io ran ${wallMs} ms); a write waiting for r2 would take ≥ ${2 * DELAY_MS} ms each: bound ${bound} ms`);

  // Once r2 caught up it is in the read rotation again. The first read it serves shows the link
  // really is slow; after that reads avoid it (but for a rare probe), so read latency stays that of
  // the fast replicas too.
  await sleep(4 * DELAY_MS);
  const r = await qemuIo(t, url, 'read back every write', Array.from({ length: COUNT }, (_, i) => `read -P ${0x20 + i} ${i * 64}k 64k`));
  const readMs = commandSeconds(r.stdout).map((s) => s * 1000);
  const slowReads = readMs.filter((ms) => ms >= 2 * DELAY_MS * 0.9).length;
  t.ok(slowReads >= 1, `a read served by r2 waited for the slow link (slowest read ${Math.max(...readMs)} ms)`,
    { r2: target.stderrLines().filter((l) => l.includes('"r2"')).slice(-20) });
  t.ok(slowReads <= 2, `after that, reads avoided the slow replica (${slowReads} of ${COUNT} reads were slow)`, { readMs });

  // r2 either kept up (healthy) or was ejected and rebuilt; never silently dropped.
  const ejected = logs(target, 'replica ejected: no more I/O until it is rebuilt', 'r2');
  if (ejected.length > 0) {
    t.comment(`r2 was ejected (${String(ejected[0]!['reason'])}); waiting for its rebuild`);
    proxy.setDelay('both', 0);
    await target.waitForStdout(/^rebuild complete r2 /, 120_000);
    t.pass('r2 was rebuilt after its ejection');
  } else {
    t.pass('r2 stayed healthy behind the slow link');
  }
  // Let whatever the link still carries arrive, so r2 holds every write before the stop.
  proxy.setDelay('both', 0);
  await proxy.drained();
  // Target to r2: the writes' data went through the slow link too (it was not bypassed).
  t.ok(proxy.forwarded.downstream > COUNT * 64 * 1024, `r2 received the writes too (${proxy.forwarded.downstream} bytes through the proxy)`);
  await qemuIo(t, url, 'a write and flush over the fast link', ['write -P 0x7e 4M 64k', 'flush', 'read -P 0x7e 4M 64k']);
  await proxy.drained();

  // A stalled link (r2 gets nothing, answers nothing, the socket stays open): writes still complete
  // at r1+r3; r2 is ejected after the I/O deadline and rebuilt once its link resumes.
  const rebuildsBefore = rebuildLines(target, 'r2');
  const ejectionsBefore = logs(target, 'replica ejected: no more I/O until it is rebuilt', 'r2').length;
  proxy.pause();
  const stalled = await qemuIo(t, url, 'writes while r2\'s link is stalled', [
    ...Array.from({ length: 10 }, (_, i) => `write -P ${0x50 + i} ${8192 + i * 64}k 64k`), 'flush',
  ]);
  const stalledMs = commandSeconds(stalled.stdout).reduce((a, b) => a + b, 0) * 1000;
  t.ok(stalledMs < 4500, `the writes did not wait for the stalled replica (${stalledMs.toFixed(0)} ms for 10 writes and a flush)`);
  await waitFor('r2 ejected for not answering', () => logs(target, 'replica ejected: no more I/O until it is rebuilt', 'r2').length > ejectionsBefore, 60_000);
  proxy.resume();
  await waitFor('r2 rebuilt', () => rebuildLines(target, 'r2') > rebuildsBefore, 120_000);
  t.pass('r2 was ejected while stalled and rebuilt after the link resumed');
  await qemuIo(t, url, 'read back the writes made while r2 was stalled, several times (round robin reaches r2)',
    [0, 1, 2].flatMap(() => Array.from({ length: 10 }, (_, i) => `read -P ${0x50 + i} ${8192 + i * 64}k 64k`)));
  await proxy.drained();
  await sleep(500);
  await stopAll(t, target, volume);
  await verifyIdentical(t, target.dataDir);
});

t.test('two of three replicas killed: I/O fails after --replica-hold, then succeeds on the same session once quorum is back', async (t) => {
  const HOLD_S = 3;
  const { volume, target } = await externalVolume(t, 32 * MiB, ['--replica-hold', String(HOLD_S)]);
  const url = target.url();
  await qemuIo(t, url, 'write 0x41 to the first 8 MiB', ['write -P 0x41 0 8M', 'flush']);

  const loginsBefore = logs(target, 'login complete').length;
  const session = await qemuIoSession(t, url);
  const first = await session.run('write -P 0x42 8M 1M');
  t.notMatch(first.output, /failed|error/i, 'a write with three replicas succeeds', { output: first.output });

  await volume.replicas.get('r1')!.kill();
  await volume.replicas.get('r2')!.kill();
  await waitFor('the volume to go offline', () => logs(target, 'volume state changed').some((r) => r['to'] === 'offline'), 30_000);

  const held = await session.run('write -P 0x43 9M 64k', 60_000);
  t.match(held.output, /write failed/i, 'without a quorum the write fails', { output: held.output });
  t.comment(`qemu-io: ${held.output.trim().replace(/\s+/g, ' ')}`);
  t.ok(held.ms >= HOLD_S * 1000 * 0.9, `only after the hold of ${HOLD_S} s (${held.ms} ms)`);
  t.ok(held.ms < HOLD_S * 1000 + 30_000, 'and not much later');

  // One replica back: it is rebuilt from r3 (the only healthy copy), then the quorum is back.
  await volume.start('r1');
  await target.waitForStdout(/^rebuild complete r1 /, 120_000);
  const after = await session.run('write -P 0x44 9M 64k');
  t.notMatch(after.output, /failed|error/i, 'the same session writes again once a quorum is back', { output: after.output });
  const check = await session.run('read -P 0x44 9M 64k');
  t.notMatch(check.output, /failed|Pattern verification/i, 'and reads it back', { output: check.output });
  await session.close();
  t.equal(logs(target, 'login complete').length, loginsBefore + 1, 'one login for the whole session: no reconnect was needed');

  await qemuIo(t, url, 'data written before the kill is intact', ['read -P 0x41 0 8M', 'read -P 0x42 8M 1M', 'read -P 0x44 9M 64k']);
  await volume.start('r2');
  await target.waitForStdout(/^rebuild complete r2 /, 120_000);
  await stopAll(t, target, volume);
  await verifyIdentical(t, target.dataDir);

  // The data directory now belongs to this volume: another --volume-uuid is refused before anything listens.
  const other = randomUUID();
  const refused = await runCommand(process.execPath, [join('dist', 'src', 'target', 'main.js'), '--data-dir', target.dataDir,
    '--external-replicas', '--volume-uuid', other, '--portal', '127.0.0.1:0', '--replica-port', '127.0.0.1:0'], { timeoutMs: 60_000, t });
  t.equal(refused.code, 1, 'a target with another --volume-uuid on this data dir refuses to start', explain(refused));
  t.match(refused.stderr, `holds volume ${volume.uuid}, not the requested --volume-uuid ${other}`, 'and says why');
  t.notMatch(refused.stdout, /replicas listening/, 'before listening for replicas');
});

t.test('every replica link drops at once (a network blip): the replicas rejoin without a rebuild and I/O carries on', async (t) => {
  const proxies: TcpProxy[] = [];
  const { volume, target } = await externalVolume(t, 32 * MiB, [], async (launched) => {
    const routes: Record<string, string> = {};
    for (const id of ['r1', 'r2', 'r3']) {
      const proxy = await startTcpProxy(launched.replicaAddress);
      t.teardown(() => proxy.close());
      proxies.push(proxy);
      routes[id] = proxy.address;
    }
    return routes;
  });
  const url = target.url();
  await qemuIo(t, url, 'write before the blip', ['write -P 0x61 0 4M', 'flush']);
  // A replica still answering a write the quorum completed when its link drops may have missed it,
  // and is rebuilt: let the third replica answer first (milliseconds; a second is ample).
  await sleep(1000);
  const rejoined = 'replica returned with everything the volume completed: healthy without a rebuild';
  // Every replica connection is cut at the same moment; each replica redials through its proxy.
  for (const proxy of proxies) proxy.setUpstream(volume.launched.replicaAddress.port);
  await waitFor('every replica rejoined', () => logs(target, rejoined).length === 3, 60_000);
  t.same(logs(target, rejoined).map((r) => r['replica']).sort(), ['r1', 'r2', 'r3'], 'each replica rejoined healthy');
  await qemuIo(t, url, 'I/O after the blip', ['write -P 0x62 4M 1M', 'flush', 'read -P 0x61 0 4M', 'read -P 0x62 4M 1M']);
  t.equal(logs(target, 'rebuild starting').length, 0, 'no rebuild was needed');
  await stopAll(t, target, volume);
  await verifyIdentical(t, target.dataDir);
});

t.test('a corrupted chunk on one replica: every read is correct, the bad copy is repaired from another replica', async (t) => {
  // The target runs its own replicas here (the default mode), on <data-dir>/replica-N.img.
  const target = await startTarget(t, { args: ['--size', '32M', '--replicas', '3'] });
  const url = target.url();
  const OFFSET = 1 * MiB;
  const BAD_CHUNK = 5;
  await qemuIo(t, url, 'write 0x5c to 1 MiB..+64 KiB', ['write -P 0x5c 1M 64k', 'flush']);

  // Flip bytes in the middle of one data chunk of r2's file, as bit rot would.
  const device = join(target.dataDir, 'replica-2.img');
  let at = 0;
  const fd = openSync(device, 'r+');
  try {
    at = Number(readSuperblock(fd, device).dataOffset) + OFFSET + BAD_CHUNK * 4096 + 100;
    const before = Buffer.alloc(16);
    readSync(fd, before, 0, 16, at);
    t.ok(before.every((b) => b === 0x5c), 'the pattern is where the layout says');
    writeSync(fd, Buffer.alloc(16, 0xa3), 0, 16, at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }

  // Round robin over three healthy replicas: nine reads reach r2 more than once.
  const reads = Array.from({ length: 9 }, () => `read -P 0x5c 1M 64k`);
  await qemuIo(t, url, 'nine reads of the region all return the pattern', reads);
  const mismatch = target.stderrLines().filter((l) => l.includes('chunk data does not match its checksum'));
  t.ok(mismatch.length >= 1, 'r2 detected the checksum mismatch', { lines: mismatch.slice(0, 3) });
  const repairs = logs(target, 'repaired a bad copy from another replica', 'r2');
  t.ok(repairs.length >= 1, 'the target logged a read-repair of r2', { stderr: target.stderrLines().slice(-30) });
  t.equal(logs(target, 'replica ejected: no more I/O until it is rebuilt').length, 0, 'no replica was ejected for a media error');
  await qemuIo(t, url, 'reads after the repair', [...reads.slice(0, 3), 'read -P 0 0 1M', 'read -P 0 1088k 1M']);
  commentProblems(t, target);
  t.equal(await target.stop(), 0, 'clean stop');
  const after = Buffer.alloc(16);
  const rfd = openSync(device, 'r');
  try {
    readSync(rfd, after, 0, 16, at);
  } finally {
    closeSync(rfd);
  }
  t.ok(after.every((b) => b === 0x5c), 'the flipped bytes on r2\'s device hold the pattern again: the repair rewrote them', { after });
  await verifyIdentical(t, target.dataDir);
});

// Both the target and one replica went down while writes were in flight (a node failure): on r2 a
// later write landed and an earlier one did not, so its highest io_seq equals the others' but it
// has a hole below it. The restarted target has no memory of the old states: judged by the highest
// io_seq alone, r2 would serve its stale copy of the lost write's chunk to every third read.
t.test('a replica with a hole below its highest io_seq after a crash is rebuilt at target start, never read from', async (t) => {
  const target = await startTarget(t, { args: ['--size', '32M', '--replicas', '3'] });
  const dataDir = target.dataDir;
  await qemuIo(t, target.url(), 'write 0x41 to 0..1 MiB', ['write -P 0x41 0 1M', 'flush']);
  t.equal(await target.stop(), 0, 'first target: clean stop');
  const image = (n: number): string => join(dataDir, `replica-${n}.img`);
  const h = Math.max(...[1, 2, 3].map((n) => checkpointedIoSeq(image(n))));
  t.ok(h > 0, `the replicas checkpointed io_seq ${h}`);
  const CHUNK_A = (2 * MiB) / 4096;
  const lost = { chunk: CHUNK_A, ioSeq: h + 1, data: Buffer.alloc(4096, 0x42) };
  const landed = { chunk: CHUNK_A + 1, ioSeq: h + 2, data: Buffer.alloc(4096, 0x43) };
  journalAsCrashLeft(image(1), [lost, landed], h + 2);
  journalAsCrashLeft(image(2), [landed], h); // h+1 was in flight when its journal block was built
  journalAsCrashLeft(image(3), [lost, landed], h + 2);

  const again = await startTarget(t, { args: ['--size', '32M', '--replicas', '3', '--data-dir', dataDir] });
  const judged = again.stderrLines().filter((l) => l.includes(`may lack a write above io_seq ${h}`));
  t.ok(judged.length >= 1, 'the target judged r2 incomplete at start', { stderr: again.stderrLines().slice(-30) });
  await again.waitForStdout(/^rebuild complete r2 /, STEP_TIMEOUT_MS);
  // Round robin over the healthy replicas: nine reads of each chunk reach every replica.
  const reads = Array.from({ length: 9 }, () => ['read -P 0x42 2M 4k', 'read -P 0x43 2052k 4k']).flat();
  await qemuIo(t, again.url(), 'every read returns the writes that landed on the quorum', [...reads, 'read -P 0x41 0 1M']);
  commentProblems(t, again);
  t.equal(await again.stop(), 0, 'second target: clean stop');
  await verifyIdentical(t, dataDir);
});

t.test('rebuild under foreground load respects --rebuild-rate', async (t) => {
  const RATE_MIBS = 8;
  const WRITTEN = 48 * MiB;
  const { volume, target } = await externalVolume(t, 128 * MiB, ['--rebuild-rate', String(RATE_MIBS)]);
  const url = target.url();
  await volume.replicas.get('r3')!.kill();
  await qemuIo(t, url, `write ${WRITTEN / MiB} MiB while r3 is dead`, [`write -P 0x3d 0 ${WRITTEN / MiB}M`, 'flush']);

  await volume.start('r3');
  await waitFor('r3 rebuild start', () => logs(target, 'rebuild starting', 'r3').length > 0, 60_000);
  // Foreground load on another region until the rebuild completes: alternating write and read benches.
  let rebuilt = false;
  const done = target.waitForStdout(/^rebuild complete r3 bytes=(\d+) seconds=([\d.]+)$/, 180_000).finally(() => { rebuilt = true; });
  const benches: { readonly write: boolean; readonly ok: boolean; readonly duringRebuild: boolean; readonly ms: number }[] = [];
  const bench = async (write: boolean): Promise<RunResult> => runCommand(requireTool('qemu-img'), [
    'bench', '-f', 'raw', ...(write ? ['-w', '--pattern=107'] : []), '-d', '4', '-c', '256', '-s', '4k', '-S', '4k', '-o', `${64 * MiB}`, url,
  ], { timeoutMs: STEP_TIMEOUT_MS, t });
  let write = true;
  while (!rebuilt) {
    const r = await bench(write);
    benches.push({ write, ok: r.code === 0, duringRebuild: !rebuilt, ms: r.durationMs });
    if (r.code !== 0) t.fail('qemu-img bench failed during the rebuild', explain(r));
    write = !write;
  }
  const m = await done;
  const bytes = Number(m[1]);
  const seconds = Number(m[2]);
  const rate = RATE_MIBS * MiB;
  t.ok(bytes >= WRITTEN, `the rebuild copied what r3 missed (${bytes} bytes)`);
  t.ok(bytes / seconds <= rate * 1.25, `rate ${(bytes / seconds / MiB).toFixed(2)} MiB/s ≤ ${RATE_MIBS} MiB/s × 1.25 (${bytes} bytes in ${seconds} s)`);
  const during = benches.filter((b) => b.duringRebuild && b.ok);
  t.ok(during.length >= 1, `foreground I/O kept completing during the rebuild: ${during.length} benches (${during.map((b) => `${b.write ? 'w' : 'r'} ${b.ms} ms`).join(', ')})`);
  t.ok(benches.every((b) => b.ok), 'every foreground bench succeeded');
  t.ok(during.some((b) => b.write), 'including writes');

  await qemuIo(t, url, 'read back the rebuilt and the foreground regions', [
    `read -P 0x3d 0 ${WRITTEN / MiB}M`, `read -P 107 64M 1M`, `read -P 0 ${WRITTEN / MiB}M 16M`,
  ]);
  await stopAll(t, target, volume);
  await verifyIdentical(t, target.dataDir);
});
