// QEMU's userspace iSCSI initiator (qemu-block-extra's libiscsi driver) against the target:
// pattern writes/reads through qemu-io, a full-LUN qemu-img convert + compare, and capacity.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand, requireTool, type RunResult } from '../fixtures/exec.js';
import { startPeer } from '../fixtures/peer.js';

const LUN_BYTES = 64 << 20;
const STEP_TIMEOUT_MS = 120_000;

t.setTimeout(15 * 60_000);

function explain(r: RunResult): Record<string, unknown> {
  return { code: r.code, signal: r.signal, killedBy: r.killedBy, stdout: r.stdout.slice(-3000), stderr: r.stderr.slice(-3000) };
}

t.test('qemu-io and qemu-img over iscsi://', async t => {
  const qemuIo = requireTool('qemu-io');
  const qemuImg = requireTool('qemu-img');
  const peer = await startPeer(t, { sizeBytes: LUN_BYTES });
  const url = peer.url();
  t.comment(`peer ${peer.kind} pid ${peer.pid} at ${url}`);

  const io = async (tt: Test, name: string, commands: string[]): Promise<void> => {
    const args = ['-f', 'raw'];
    for (const c of commands) args.push('-c', c);
    args.push(url);
    const r = await runCommand(qemuIo, args, { timeoutMs: STEP_TIMEOUT_MS, t: tt });
    // qemu-io reports a pattern mismatch on stdout; not every version turns it into an exit code.
    const ok = r.code === 0 && !/Pattern verification failed|failed:|error/i.test(r.stdout + r.stderr);
    tt.ok(ok, `qemu-io ${name}`, explain(r));
  };

  await t.test('capacity', async t => {
    const r = await runCommand(qemuImg, ['info', '--output=json', url], { timeoutMs: STEP_TIMEOUT_MS, t });
    t.equal(r.code, 0, 'qemu-img info', explain(r));
    const info = JSON.parse(r.stdout || '{}') as { 'virtual-size'?: number };
    t.equal(info['virtual-size'], LUN_BYTES, 'virtual size is the configured size');
  });

  await t.test('aligned 1 MiB pattern', async t => {
    await io(t, 'write+read 1M at 0', ['write -P 0xab 0 1M', 'read -P 0xab 0 1M']);
  });

  await t.test('512-aligned, not 4k-aligned', async t => {
    await io(t, 'write 3.5k at 4.5k', ['write -P 0x11 4608 3584', 'read -P 0x11 4608 3584', 'read -P 0xab 0 4608',
      'read -P 0xab 8192 1040384']);
    await io(t, 'odd sectors', ['write -P 0x22 1049088 512', 'write -P 0x33 1049600 1536', 'read -P 0x22 1049088 512',
      'read -P 0x33 1049600 1536']);
    // Sub-sector: qemu does read-modify-write, so the target sees a read then a write of one block.
    await io(t, 'sub-sector write', ['write -P 0x44 2097252 100', 'read -P 0x44 2097252 100', 'read -P 0 2097152 100']);
  });

  await t.test('large writes (need R2T / multiple bursts)', async t => {
    await io(t, '8 MiB', ['write -P 0xcd 8M 8M', 'read -P 0xcd 8M 8M']);
    await io(t, '8 MiB unaligned start', ['write -P 0xce 20971008 8M', 'read -P 0xce 20971008 8M', 'read -P 0 20970496 512']);
    // Several requests in flight at once (aio_write -q: the harness waits for all at exit).
    await io(t, 'concurrent 1 MiB writes', ['aio_write -P 0x61 32M 1M', 'aio_write -P 0x62 33M 1M', 'aio_write -P 0x63 34M 1M',
      'aio_flush', 'read -P 0x61 32M 1M', 'read -P 0x62 33M 1M', 'read -P 0x63 34M 1M']);
    await io(t, 'flush and last block', ['write -P 0x7f 67108352 512', 'flush', 'read -P 0x7f 67108352 512']);
  });

  await t.test('out of range is an error, not a crash', async t => {
    const r = await runCommand(qemuIo, ['-f', 'raw', '-c', `read 0 ${LUN_BYTES + 512}`, url], { timeoutMs: STEP_TIMEOUT_MS, t });
    t.match(r.stdout + r.stderr, /error|Input\/output|out of range|Invalid argument|beyond/i, 'read past the end fails', explain(r));
  });

  await t.test('qemu-img convert + compare over the whole LUN', async t => {
    const dir = t.testdir();
    const local = join(dir, 'random.img');
    writeFileSync(local, randomBytes(LUN_BYTES));
    const conv = await runCommand(qemuImg, ['convert', '-n', '-f', 'raw', '-O', 'raw', local, url], { timeoutMs: STEP_TIMEOUT_MS, t });
    t.equal(conv.code, 0, 'qemu-img convert onto the LUN', explain(conv));
    const cmp = await runCommand(qemuImg, ['compare', '-f', 'raw', '-F', 'raw', local, url], { timeoutMs: STEP_TIMEOUT_MS, t });
    t.equal(cmp.code, 0, 'qemu-img compare: identical', explain(cmp));
    // And the comparison is real: change one byte locally and it must differ.
    const buf = Buffer.alloc(1, 0);
    const { openSync, writeSync, closeSync, readSync } = await import('node:fs');
    const fd = openSync(local, 'r+');
    readSync(fd, buf, 0, 1, 12345);
    buf[0] = (buf[0] ?? 0) ^ 0xff;
    writeSync(fd, buf, 0, 1, 12345);
    closeSync(fd);
    const cmp2 = await runCommand(qemuImg, ['compare', '-f', 'raw', '-F', 'raw', local, url], { timeoutMs: STEP_TIMEOUT_MS, t });
    t.equal(cmp2.code, 1, 'qemu-img compare notices a one-byte difference', explain(cmp2));
  });

  peer.assertAlive(t);
});
