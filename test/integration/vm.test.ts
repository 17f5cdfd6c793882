// The real Linux kernel initiator (open-iscsi in a throwaway QEMU guest, see
// shared/harness/README.md) against the target: plain, CHAP + CRC32C digests, wrong secret.
// Needs the harness set up (scripts/ensure-deps.sh does it). A missing harness FAILS the
// test unless SKIP_VM=1 is set explicitly.
import t, { type Test } from 'tap';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { REPO_ROOT, runCommand, sleep, tail, type RunResult } from '../fixtures/exec.js';
import { BASELINE_TGTD, startPeer, type Peer } from '../fixtures/peer.js';
import { startTarget, type TargetProcess } from '../fixtures/target-process.js';

const SKIP_VM = process.env['SKIP_VM'] === '1';
const MUTUAL_CHAP = { user: 'cstor-target', secret: 'mutual-secret-4567' };
const CHAP = { user: 'vm-initiator', secret: 'cstor-ts-secret-1' }; // 17 bytes >= 12
// Per-run bound on top of the harness's own deadlines (TCG: smoke ~13 s, fio-verify ~38 s,
// fs ~14 s plus boot, a refused login ≤ ~45 s).
const RUN_TIMEOUT_MS = 10 * 60_000;

t.setTimeout(45 * 60_000);

/** ../shared/harness/vm-initiator beside the clone (CI layout), else /work/shared. */
function harnessPath(): string | undefined {
  for (const p of [process.env['VM_INITIATOR'], resolve(REPO_ROOT, '..', 'shared', 'harness', 'vm-initiator'),
    '/work/shared/harness/vm-initiator']) {
    if (p !== undefined && p !== '' && existsSync(p)) return p;
  }
  return undefined;
}

function logsDir(r: RunResult): string | undefined {
  return /^logs\s+(\S+)/m.exec(r.stdout)?.[1];
}

/** The harness summary plus the interesting tails of the run's log dir, for failure messages. */
function diagnostics(r: RunResult, peer: Peer): Record<string, unknown> {
  const dir = logsDir(r);
  const files: Record<string, string> = {};
  if (dir !== undefined && existsSync(dir)) {
    for (const f of ['markers.log', 'console.log', 'results/failures.txt', 'results/kv.txt', 'results/dmesg.txt', 'results/iscsid.log']) {
      const p = join(dir, f);
      if (existsSync(p) && statSync(p).isFile()) files[f] = tail(readFileSync(p, 'utf8'), 25);
    }
    const fio = join(dir, 'results', 'fio');
    if (existsSync(fio)) files['results/fio/'] = readdirSync(fio).join(' ');
  }
  return {
    code: r.code, killedBy: r.killedBy, logs: dir, stdout: tail(r.stdout, 30), stderr: tail(r.stderr, 30),
    ...files, targetLogTail: peer.logTail(30),
  };
}

const harness = harnessPath();

/** Our target process seen as a Peer, for the k=3 scenarios that also need its replica pids. */
function targetPeer(p: TargetProcess): Peer {
  return {
    kind: 'target', host: p.host, port: p.port, portal: `${p.host}:${p.port}`, iqn: p.iqn, lun: 0, pid: p.pid,
    url: () => p.url(0),
    assertAlive: (tt, message) => p.assertAlive(tt, message),
    logTail: (n = 40) => p.stderrLines().slice(-n).join('\n'),
    stop: async () => { await p.stop(); },
  };
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) return false;
    await sleep(200);
  }
  return true;
}

/** `npm run verify` on a stopped volume's data dir: exit 0 = the replicas are identical. */
async function verifyReplicas(t: Test, dataDir: string): Promise<void> {
  const v = await runCommand(process.execPath, [join('dist', 'src', 'replica', 'verify-main.js'), '--data-dir', dataDir],
    { timeoutMs: 5 * 60_000, t });
  t.equal(v.code, 0, 'verify: the three replicas are identical', { stdout: tail(v.stdout, 20), stderr: tail(v.stderr, 20) });
  t.match(v.stdout, /identical/, 'verify reports identical');
}

t.test('VM kernel initiator', { skip: SKIP_VM ? 'SKIP_VM=1' : false }, async t => {
  if (harness === undefined) {
    t.fail('vm-initiator harness not found (expected ../shared/harness/vm-initiator beside the repo); run scripts/ensure-deps.sh or set SKIP_VM=1');
    return;
  }
  const run = async (tt: Test, peer: Peer, job: string, extra: string[] = [],
    onLine?: (line: string, stream: 'stdout' | 'stderr') => void): Promise<RunResult> => {
    const args = ['run', '--portal', peer.portal, '--iqn', peer.iqn, '--job', job, ...extra];
    if (peer.kind === 'tgtd') args.push('--lun', String(peer.lun));
    tt.comment(`vm-initiator ${args.join(' ')}`);
    // Through bash: a copied shared/ may have lost the executable bit.
    const r = await runCommand('bash', [harness, ...args], { timeoutMs: RUN_TIMEOUT_MS, t: tt, ...(onLine !== undefined ? { onLine } : {}) });
    tt.comment(`${job}: exit ${r.code} in ${(r.durationMs / 1000).toFixed(1)} s${logsDir(r) !== undefined ? `, logs ${logsDir(r)}` : ''}`);
    return r;
  };

  await t.test('plain: smoke, fio-verify, fs', async t => {
    const peer = await startPeer(t, { sizeBytes: 1 << 30 });
    for (const job of ['smoke', 'fio-verify', 'fs']) {
      const r = await run(t, peer, job);
      t.equal(r.code, 0, `${job} passes`, diagnostics(r, peer));
      t.match(r.stdout, /RESULT: PASS/, `${job} reports PASS`);
      if (!peer.assertAlive(t, `target alive after ${job}`)) break;
    }
  });

  // Long runs only on request: a 1 GiB verify and a bigger filesystem job.
  await t.test('soak (SOAK=1)', { skip: process.env['SOAK'] === '1' ? false : 'set SOAK=1' }, async t => {
    const peer = await startPeer(t, { sizeBytes: 2 << 30 });
    for (const [job, extra] of [['fio-verify', ['--size', '1G']], ['fs', ['--size', '1G', '--fs-files', '2000']]] as const) {
      const r = await run(t, peer, job, [...extra]);
      t.equal(r.code, 0, `${job} ${extra.join(' ')} passes`, diagnostics(r, peer));
      if (!peer.assertAlive(t, `target alive after ${job}`)) break;
    }
  });

  // Issue 4's done criterion: the kernel initiator keeps verifying while one of three replicas is
  // killed; the supervisor restarts it, it is rebuilt from a peer, and the replicas end identical.
  const k3 = BASELINE_TGTD ? 'ours only (k=3 replicas)' : false;
  await t.test('k=3: r2 killed with SIGKILL during fio-verify, restarted, rebuilt, replicas identical', { skip: k3 }, async t => {
    const target = await startTarget(t, { args: ['--size', '512M', '--replicas', '3', '--restart-delay', '1'] });
    const peer = targetPeer(target);
    const victim = target.replicaPids('r2')[0];
    t.ok(victim !== undefined, `r2 runs as pid ${victim}`);
    let killedAt: number | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    // The harness reports guest steps on stderr: kill once the sequential verify-write is under way.
    const onLine = (line: string): void => {
      if (killTimer !== undefined || !/STEP fio verify-write-seq/.test(line) || victim === undefined) return;
      killTimer = setTimeout(() => {
        try {
          process.kill(victim, 'SIGKILL');
          killedAt = Date.now();
        } catch {
          // Already gone: killedAt stays undefined and the assertion below fails.
        }
      }, 4000);
    };
    t.teardown(() => clearTimeout(killTimer));
    const r = await run(t, peer, 'fio-verify', [], onLine);
    t.ok(killedAt !== undefined, 'r2 was killed while fio wrote');
    t.equal(r.code, 0, 'fio-verify passes across the kill', diagnostics(r, peer));
    t.match(r.stdout, /RESULT: PASS/, 'fio-verify reports PASS');
    t.ok(target.replicaPids('r2').length >= 2, `r2 was restarted (pids ${target.replicaPids('r2').join(', ')})`);
    const rebuilt = await waitFor(() => target.stdoutLines().some(l => /^rebuild complete r2 /.test(l)), 120_000);
    t.ok(rebuilt, 'the target printed "rebuild complete r2"', { stdout: target.stdoutLines().slice(-10) });
    const line = target.stdoutLines().find(l => /^rebuild complete r2 /.test(l)) ?? '';
    t.comment(line);
    // r2 missed the writes made while it was down: the rebuild must have carried them.
    t.ok(Number(/bytes=(\d+)/.exec(line)?.[1] ?? 0) > 0, 'the rebuild copied data');
    if (!peer.assertAlive(t)) return;
    t.equal(await target.stop(), 0, 'clean stop');
    await verifyReplicas(t, target.dataDir);
  });

  await t.test('k=3: fio-verify write, target restart on the same data dir, verify read', { skip: k3 }, async t => {
    const dataDir = t.testdir();
    const args = ['--data-dir', dataDir, '--size', '512M', '--replicas', '3', '--restart-delay', '1'];
    const a = await startTarget(t, { args });
    const w = await run(t, targetPeer(a), 'fio-verify', ['--verify-mode', 'write']);
    t.equal(w.code, 0, 'the verify-write pass passes', diagnostics(w, targetPeer(a)));
    t.equal(await a.stop(), 0, 'clean stop after the write pass');
    const b = await startTarget(t, { args });
    const r = await run(t, targetPeer(b), 'fio-verify', ['--verify-mode', 'read']);
    t.equal(r.code, 0, 'the verify-read pass after the restart finds every block', diagnostics(r, targetPeer(b)));
    t.match(r.stdout, /RESULT: PASS/, 'verify-read reports PASS');
    t.equal(await b.stop(), 0, 'clean stop after the read pass');
    await verifyReplicas(t, dataDir);
  });

  // Issue 5's done criterion: `cstor-ctl resize` grows a live volume and the kernel initiator sees
  // the new size after a rescan (the target also raises CAPACITY DATA HAS CHANGED on the session).
  await t.test('resize a live k=3 volume: the kernel sees the new size after a rescan', { skip: k3 }, async t => {
    const target = await startTarget(t, { args: ['--size', '64M', '--replicas', '3'] });
    const peer = targetPeer(target);
    const grownSectors = (96 << 20) / 512;
    // In the guest: note the size, then rescan once a second until it changes (bounded), and fail
    // unless it became exactly the new size.
    const guest = [
      'b=$(basename "$DEV"); s0=$(cat /sys/block/$b/size); echo "before=$s0"; s=$s0',
      'for i in $(seq 1 120); do echo 1 > /sys/block/$b/device/rescan; s=$(cat /sys/block/$b/size); [ "$s" != "$s0" ] && break; sleep 1; done',
      `echo "after=$s"; [ "$s0" = ${(64 << 20) / 512} ] && [ "$s" = ${grownSectors} ]`,
    ].join('; ');
    let resized: Promise<RunResult> | undefined;
    const logins = (): number => target.stderrLines().filter(l => l.includes('login complete') && l.includes('Normal')).length;
    const watcher = setInterval(() => {
      if (resized === undefined && logins() > 0) {
        resized = runCommand(process.execPath, [join('dist', 'src', 'ctl', 'main.js'), 'resize', '96M', '--data-dir', target.dataDir], { timeoutMs: 60_000, t });
      }
    }, 200);
    t.teardown(() => clearInterval(watcher));
    const r = await run(t, peer, 'exec', ['--exec', guest, '--timeout', '300']);
    clearInterval(watcher);
    t.ok(resized !== undefined, 'the resize ran while the guest was logged in');
    const rr = await resized;
    t.equal(rr?.code, 0, 'cstor-ctl resize 96M', { stderr: rr?.stderr });
    t.equal(r.code, 0, 'the guest saw 64 MiB, then 96 MiB after a rescan', diagnostics(r, peer));
    t.ok(target.stderrLines().some(l => l.includes('volume resized')), 'the target logged the resize');
    t.equal(await target.stop(), 0, 'clean stop');
  });

  await t.test('CHAP + CRC32C digests', async t => {
    const peer = await startPeer(t, { sizeBytes: 1 << 30, chap: CHAP, mutualChap: MUTUAL_CHAP, digest: 'CRC32C,None' });
    const chap = ['--chap', `${CHAP.user}:${CHAP.secret}`, '--digest', 'CRC32C'];
    const r = await run(t, peer, 'smoke', chap);
    t.equal(r.code, 0, 'smoke with one-way CHAP and CRC32C passes', diagnostics(r, peer));
    t.match(r.stdout, /HeaderDigest=CRC32C DataDigest=CRC32C/, 'both digests negotiated to CRC32C');
    // The data jobs with mutual CHAP: the initiator checks the target's answer too.
    for (const job of ['fio-verify', 'fs']) {
      const m = await run(t, peer, job, [...chap, '--mutual-chap', `${MUTUAL_CHAP.user}:${MUTUAL_CHAP.secret}`]);
      t.equal(m.code, 0, `${job} with mutual CHAP and CRC32C passes`, diagnostics(m, peer));
      t.match(m.stdout, /RESULT: PASS/, `${job} reports PASS`);
      if (!peer.assertAlive(t, `target alive after ${job}`)) break;
    }

    const bad = await run(t, peer, 'info', ['--chap', `${CHAP.user}:wrong-secret-123`, '--expect-login-fail']);
    t.equal(bad.code, 0, 'a wrong CHAP secret is refused', diagnostics(bad, peer));
    peer.assertAlive(t);
  });
});
