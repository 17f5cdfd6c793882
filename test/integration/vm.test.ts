// The real Linux kernel initiator (open-iscsi in a throwaway QEMU guest, see
// shared/harness/README.md) against the target: plain, CHAP + CRC32C digests, wrong secret.
// Needs the harness set up (scripts/ensure-deps.sh does it). A missing harness FAILS the
// test unless SKIP_VM=1 is set explicitly.
import t, { type Test } from 'tap';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { REPO_ROOT, runCommand, tail, type RunResult } from '../fixtures/exec.js';
import { startPeer, type Peer } from '../fixtures/peer.js';

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

t.test('VM kernel initiator', { skip: SKIP_VM ? 'SKIP_VM=1' : false }, async t => {
  if (harness === undefined) {
    t.fail('vm-initiator harness not found (expected ../shared/harness/vm-initiator beside the repo); run scripts/ensure-deps.sh or set SKIP_VM=1');
    return;
  }
  const run = async (tt: Test, peer: Peer, job: string, extra: string[] = []): Promise<RunResult> => {
    const args = ['run', '--portal', peer.portal, '--iqn', peer.iqn, '--job', job, ...extra];
    if (peer.kind === 'tgtd') args.push('--lun', String(peer.lun));
    tt.comment(`vm-initiator ${args.join(' ')}`);
    // Through bash: a copied shared/ may have lost the executable bit.
    const r = await runCommand('bash', [harness, ...args], { timeoutMs: RUN_TIMEOUT_MS, t: tt });
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
