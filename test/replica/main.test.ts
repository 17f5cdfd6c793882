// The `cstor-replica` command (built: dist/src/replica/main.js): flags, --format, and the devices it
// must refuse without touching them.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseReplicaConfig } from '../../src/replica/config.js';
import { formatStore } from '../../src/replica/store.js';

const MAIN = resolve('dist/src/replica/main.js');
const UUID = '0d1c2b3a-4f5e-4677-8899-aabbccddeeff';
const OTHER = '11111111-2222-4333-8444-555555555555';

interface Run { code: number | null; stdout: string; stderr: string }

/** Run the replica; when it prints its ready line, SIGTERM it. Bounded by 20 s. */
function run(args: string[]): Promise<Run> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('ready ')) child.kill('SIGTERM');
    });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('close', (code) => {
      clearTimeout(guard);
      resolveRun({ code, stdout, stderr });
    });
  });
}

async function digest(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `${h.digest('hex')}:${statSync(path).mtimeMs}`;
}

t.test('flags', async (t) => {
  const bad = (argv: string[]): string => {
    const r = parseReplicaConfig(argv, {});
    return r.ok ? 'ok' : r.error;
  };
  t.equal(bad([]), '--device: is required');
  t.equal(bad(['--device', 'x', '--volume', 'v']), '--replica-id: is required');
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--format', '--size', '1G']), '--volume-uuid: is required with --format');
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--size', '1G']), '--size: only applies with --format');
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--volume-uuid', 'nope']), "--volume-uuid: 'nope' is not a UUID");
  // Without dashes it was accepted, then never matched the dashed UUID the superblock holds.
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--volume-uuid', UUID.replace(/-/g, '')]),
    `--volume-uuid: '${UUID.replace(/-/g, '')}' is not a UUID`);
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--target', 'a:b:c']), "--target: 'a:b:c': write IPv6 addresses in brackets, e.g. [::1]:6060");
  t.match(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--volume-uuid', UUID, '--format', '--size', '1000']), /not a multiple of the 4096-byte chunk size/);
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--advertise', '0.0.0.0:7070']), "--advertise: '0.0.0.0:7070' must name a reachable host and a port");
  t.equal(bad(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--advertise', '10.1.2.3']), "--advertise: '10.1.2.3' must name a reachable host and a port");
  const advertised = parseReplicaConfig(['--device', 'x', '--volume', 'v', '--replica-id', 'r', '--control', '0.0.0.0:7070', '--advertise', '10.1.2.3:7070'], {});
  t.equal(advertised.ok && advertised.config.advertise, '10.1.2.3:7070', 'the pod IP is announced, not the wildcard bind');
  const ok = parseReplicaConfig(['--device', 'd.img', '--volume', 'v', '--replica-id', 'r', '--volume-uuid', UUID.toUpperCase(),
    '--format', '--size', '64M', '--target', '10.0.0.1'], {});
  t.ok(ok.ok);
  if (ok.ok) {
    t.same(ok.config.target, { host: '10.0.0.1', port: 6060 }, 'cStor replica port by default');
    t.equal(ok.config.advertise, undefined, 'the bound control address is announced by default');
    t.equal(ok.config.volumeUuid, UUID);
    t.same(ok.config.format, { capacityBytes: 64 << 20, blockSize: 512, chunkSize: 4096, force: false });
  }
});

t.test('--format creates the device, is idempotent, and the replica serves', { skip: !existsSync(MAIN) && 'run npm run build first' }, async (t) => {
  const dir = t.testdir();
  const device = join(dir, 'r.img');
  const args = ['--device', device, '--volume', 'vol', '--volume-uuid', UUID, '--replica-id', 'r1', '--target', '127.0.0.1:1', '--format', '--size', '16M'];
  const first = await run(args);
  t.equal(first.code, 0, 'exits 0 on SIGTERM', { stderr: first.stderr.slice(-2000) });
  t.match(first.stdout, /^ready replica=r1 pid=\d+ control=127\.0\.0\.1:\d+ device=/m);
  t.ok(statSync(device).size > 16 << 20, 'device file created');
  const again = await run(args);
  t.equal(again.code, 0, 'a restart with the same flags reopens the same replica');
  t.match(again.stderr, /"replica ready"/);
  const without = await run(['--device', device, '--volume', 'vol', '--replica-id', 'r1', '--target', '127.0.0.1:1']);
  t.equal(without.code, 0, 'starts without --format once formatted');
});

t.test('refuses, touching nothing: another volume, another replica, unformatted, truncated', { skip: !existsSync(MAIN) && 'run npm run build first' }, async (t) => {
  const dir = t.testdir();
  const device = join(dir, 'foreign.img');
  await formatStore(device, { volumeName: 'theirs', volumeUuid: OTHER, replicaId: 'x', capacityBytes: 16 << 20, journalBytes: 1 << 20 });
  const before = await digest(device);
  const foreign = await run(['--device', device, '--volume', 'mine', '--volume-uuid', UUID, '--replica-id', 'r1', '--format', '--size', '16M']);
  t.equal(foreign.code, 1);
  t.match(foreign.stderr, /cstor-replica: cannot start: .*belongs to volume/);
  const otherReplica = await run(['--device', device, '--volume', 'theirs', '--replica-id', 'r1']);
  t.equal(otherReplica.code, 1);
  t.match(otherReplica.stderr, /holds replica 'x' of volume 'theirs', not replica 'r1'/);
  t.equal(await digest(device), before, 'the device is untouched');

  const blank = join(dir, 'blank.img');
  writeFileSync(blank, '');
  truncateSync(blank, 32 << 20);
  const unformatted = await run(['--device', blank, '--volume', 'v', '--replica-id', 'r1']);
  t.equal(unformatted.code, 1);
  t.match(unformatted.stderr, /is not formatted as a replica/);

  const small = join(dir, 'small.img');
  await formatStore(small, { volumeName: 'v', volumeUuid: UUID, replicaId: 'r1', capacityBytes: 16 << 20, journalBytes: 1 << 20 });
  truncateSync(small, statSync(small).size - 4096);
  const smallBefore = await digest(small);
  const truncated = await run(['--device', small, '--volume', 'v', '--replica-id', 'r1']);
  t.equal(truncated.code, 1);
  t.match(truncated.stderr, /too small/);
  t.equal(await digest(small), smallBefore, 'the truncated device is untouched');

  const usage = await run(['--device', small]);
  t.equal(usage.code, 64, 'usage errors exit 64');
  t.match(usage.stderr, /--volume: is required/);
});
