// The main job end to end with its replica process: qemu-io writes and reads over iscsi:// while
// the replica process is killed with SIGKILL (the supervisor restarts it, the journal recovers it,
// I/O is held and re-issued), and across a target restart on the same data directory.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../fixtures/exec.js';
import { startTarget } from '../fixtures/target-process.js';
import { qemuIo } from '../fixtures/qemu-io-session.js';
import { waitFor } from '../fixtures/wait-for.js';

t.setTimeout(10 * 60_000);

t.test('k=1: the replica killed with SIGKILL during I/O: the volume pauses, recovers, loses nothing', async (t) => {
  const target = await startTarget(t, { args: ['--size', '64M', '--replicas', '1', '--restart-delay', '1', '--replica-hold', '30'] });
  const url = target.url();
  const [firstPid] = target.replicaPids();
  t.ok(firstPid !== undefined && firstPid > 0, `replica r1 started as pid ${firstPid}`);

  await qemuIo(t, url, 'write 0xaa to the first 16 MiB', ['write -P 0xaa 0 16M']);
  // A long write in flight while the replica dies; it must complete once the replica is back.
  const writing = qemuIo(t, url, 'write 0xbb to 16..48 MiB across the kill', ['write -P 0xbb 16M 32M', 'flush']);
  await new Promise((r) => setTimeout(r, 150));
  process.kill(firstPid!, 'SIGKILL');
  await writing;
  await waitFor('a restarted replica', () => target.replicaPids().length >= 2, 30_000);
  const pids = target.replicaPids();
  t.not(pids.at(-1), firstPid, `restarted as pid ${pids.at(-1)}`);
  await qemuIo(t, url, 'read back both patterns', ['read -P 0xaa 0 16M', 'read -P 0xbb 16M 32M', 'read -P 0 48M 16M']);
  t.ok(target.stderrLines().some((l) => l.includes('replica disconnected')), 'the disconnect was logged');
  target.assertAlive(t);
});

t.test('target restart on the same data directory: data persists, epoch advances', async (t) => {
  const dataDir = t.testdir();
  const args = ['--data-dir', dataDir, '--size', '32M'];
  const a = await startTarget(t, { args });
  await qemuIo(t, a.url(), 'write 0x5a', ['write -P 0x5a 1M 4M', 'flush']);
  t.equal(await a.stop(), 0, 'clean stop');
  const epoch1 = Number(readFileSync(join(dataDir, 'state', 'epoch'), 'utf8'));
  const b = await startTarget(t, { args });
  const epoch2 = Number(readFileSync(join(dataDir, 'state', 'epoch'), 'utf8'));
  t.ok(epoch2 > epoch1, `epoch ${epoch1} → ${epoch2}`);
  await qemuIo(t, b.url(), 'read back after restart', ['read -P 0x5a 1M 4M', 'read -P 0 0 1M']);
  t.ok(b.stderrLines().some((l) => /"recovery"/.test(l)), 'the replica logged its recovery report');
});

t.test('k=3: a replica killed with SIGKILL during writes is restarted, rebuilt from a peer, and the replicas end identical', async (t) => {
  const target = await startTarget(t, { args: ['--size', '64M', '--replicas', '3', '--restart-delay', '1'] });
  const url = target.url();
  t.same(['r1', 'r2', 'r3'].map((id) => target.replicaPids(id).length), [1, 1, 1], 'three replica processes, one line each');
  await qemuIo(t, url, 'write 0x11 to the first 16 MiB', ['write -P 0x11 0 16M']);
  const victim = target.replicaPids('r2')[0]!;
  const writing = qemuIo(t, url, 'write 0x22 to 16..48 MiB while r2 dies', ['write -P 0x22 16M 32M', 'flush']);
  await new Promise((r) => setTimeout(r, 100));
  process.kill(victim, 'SIGKILL');
  await writing;
  await waitFor('r2 rebuild complete', () => target.stdoutLines().some((l) => /^rebuild complete r2 /.test(l)), 60_000);
  t.ok(target.replicaPids('r2').length >= 2, 'r2 was restarted');
  await qemuIo(t, url, 'read back after the rebuild', ['read -P 0x11 0 16M', 'read -P 0x22 16M 32M', 'read -P 0 48M 16M']);
  t.equal(await target.stop(), 0, 'clean stop');
  const verify = await runCommand(process.execPath, [join('dist', 'src', 'replica', 'verify-main.js'), '--data-dir', target.dataDir], { timeoutMs: 60_000, t });
  t.equal(verify.code, 0, 'verify: the three replicas are identical', { stdout: verify.stdout.slice(-2000), stderr: verify.stderr.slice(-1000) });
  t.match(verify.stdout, /identical: 16384 chunks/);
});
