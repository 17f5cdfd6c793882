// The replica verify tool (src/replica/verify.ts, CLI verify-main.ts): identical replicas, and each
// way a replica can differ reported at the right offset with the right kind.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, openSync, readSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatStore, ReplicaStore } from '../../src/replica/store.js';
import { readSuperblock } from '../fixtures/superblock-on-disk.js';
import { verifyReplicas, VerifyOpenError, type VerifyReport } from '../../src/replica/verify.js';

const MAIN = resolve('dist/src/replica/verify-main.js');
const noBuild = !existsSync(MAIN) && 'run npm run build first';
const UUID = '3f2504e0-4f89-11d3-9a0c-0305e82c3301';
const OTHER_UUID = '11111111-2222-3333-4444-555555555555';
const MiB = 1 << 20;
const KiB = 1024;
const CHUNK = 4096;

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** How replica 2 departs from the common history. */
interface Variant {
  /** (a) the io_seq 2 write carries different bytes in its first chunk. */
  readonly differentData?: boolean;
  /** (b) the io_seq 5 write (3 chunks) never arrived. */
  readonly missedWrite?: boolean;
}

async function makeReplica(path: string, replicaId: string, variant: Variant = {}, extra: { volumeUuid?: string; capacityBytes?: number } = {}): Promise<void> {
  await formatStore(path, {
    volumeName: 'vol1', volumeUuid: extra.volumeUuid ?? UUID, replicaId, capacityBytes: extra.capacityBytes ?? 8 * MiB, journalBytes: MiB,
  });
  const store = await ReplicaStore.open(path, { checkpointIntervalMs: 0 });
  try {
    await store.write(0, pattern(64 * KiB, 1), 1);
    const second = pattern(8 * KiB, 2);
    if (variant.differentData === true) second[100] = second[100]! ^ 0xff;
    await store.write(MiB, second, 2);
    await store.writeZeroes(2 * MiB, 16 * KiB, 3);
    await store.unmap(3 * MiB, 8 * KiB, 4);
    if (variant.missedWrite !== true) await store.write(4 * MiB, pattern(12 * KiB, 5), 5);
    // A large write (not data-journaled) straddling a 1 MiB region boundary.
    await store.write(6 * MiB - 128 * KiB, pattern(256 * KiB, 6), 6);
  } finally {
    await store.close();
  }
}

/** Flip one byte of the volume's data on disk, behind the store's back. */
function corrupt(path: string, volumeOffset: number): void {
  const fd = openSync(path, 'r+');
  try {
    const at = Number(readSuperblock(fd, path).dataOffset) + volumeOffset;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0]! ^= 0x5a;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

async function threeReplicas(dir: string, variant?: Variant): Promise<string[]> {
  const paths = [1, 2, 3].map(i => join(dir, `replica-${i}.img`));
  await makeReplica(paths[0]!, 'r1');
  await makeReplica(paths[1]!, 'r2', variant);
  await makeReplica(paths[2]!, 'r3');
  return paths;
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('cstor-verify did not exit in 20 s')); }, 20_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolvePromise({ code, stdout, stderr }); });
  });
}

function kinds(report: VerifyReport): string[] {
  return report.differences.map(d => `${d.kind}@${d.offset}+${d.length}`);
}

t.test('identical replicas', { timeout: 30_000 }, async (t) => {
  const dir = t.testdir();
  const paths = await threeReplicas(dir);
  const progress: number[] = [];
  const report = await verifyReplicas(paths, { onProgress: p => progress.push(p.bytesDone) });
  t.equal(report.identical, true);
  t.same(report.differences, []);
  t.equal(report.differenceCount, 0);
  t.equal(report.chunksCompared, 8 * MiB / CHUNK);
  t.equal(report.bytesCompared, 8 * MiB);
  t.same(report.replicas.map(r => [r.replicaId, r.volumeUuid, r.capacityBytes, r.highestIoSeq]),
    [['r1', UUID, 8 * MiB, 6], ['r2', UUID, 8 * MiB, 6], ['r3', UUID, 8 * MiB, 6]]);
  t.equal(progress.length, 8, 'one progress report per 1 MiB region');
  t.equal(progress.at(-1), 8 * MiB);
  // Odd region sizes round to whole chunks and change nothing.
  const small = await verifyReplicas(paths, { regionBytes: 10_000 });
  t.equal(small.identical, true);
  t.equal(small.chunksCompared, 8 * MiB / CHUNK);
});

t.test('identical replicas: the CLI', { timeout: 30_000, skip: noBuild }, async (t) => {
  const dir = t.testdir();
  await threeReplicas(dir);
  const r = await runCli(['--data-dir', dir]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /replica-1\.img: replica r1 of vol1 .*highest io_seq 6/);
  t.match(r.stdout, /replica-3\.img: replica r3/);
  t.match(r.stdout, /^identical: 2048 chunks \(8 MiB\) compared$/m);
  t.equal(r.stderr, '', 'no progress when stderr is not a terminal');
  const json = await runCli(['--json', join(dir, 'replica-1.img'), join(dir, 'replica-2.img')]);
  t.equal(json.code, 0);
  t.equal((JSON.parse(json.stdout) as VerifyReport).identical, true);
});

t.test('replica 2 differs: data, a missed write, a corrupted byte', { timeout: 30_000 }, async (t) => {
  const dir = t.testdir();
  const paths = await threeReplicas(dir, { differentData: true, missedWrite: true });
  corrupt(paths[1]!, 12 * KiB + 7);
  const expected = [`unreadable@${12 * KiB}+${CHUNK}`, `data@${MiB}+${CHUNK}`, `io_seq@${4 * MiB}+${12 * KiB}`];
  const report = await verifyReplicas(paths);
  t.equal(report.identical, false);
  t.same(kinds(report), expected);
  t.equal(report.differenceCount, 3);
  t.equal(report.differentChunks, 5);
  t.equal(report.chunksCompared, 8 * MiB / CHUNK);
  const [unreadable, data, ioSeq] = report.differences;
  t.match(unreadable!.detail[1], { replicaId: 'r2', ioSeq: 1, error: /checksum mismatch|needs repair/ });
  t.equal(unreadable!.detail[0]!.error, undefined, 'only replica 2 is unreadable');
  t.same(data!.detail.map(v => v.ioSeq), [2, 2, 2]);
  t.not(data!.detail[1]!.crc, data!.detail[0]!.crc, 'the CRCs differ with the data');
  t.same(ioSeq!.detail.map(v => v.ioSeq), [5, 0, 5]);

  // Tiny regions (ranges straddle them) give the same coalesced ranges; and the limit keeps counting.
  const small = await verifyReplicas(paths, { regionBytes: 8 * KiB, maxDifferences: 2 });
  t.same(kinds(small), expected.slice(0, 2));
  t.equal(small.differenceCount, 3);
  t.equal(small.differentChunks, 5);

  await t.test('the CLI', { skip: noBuild }, async (t) => {
    const r = await runCli(['--data-dir', dir]);
    t.equal(r.code, 1, r.stderr);
    t.match(r.stdout, /^DIFFERENT: 3 difference/m);
    t.match(r.stdout, /unreadable +offset 12288\.\.16383 .*r2 io_seq 1 crc 0x[0-9a-f]{8} flags 4/);
    t.match(r.stdout, /data +offset 1048576\.\.1052671 .*r1 io_seq 2 crc 0x[0-9a-f]{8}; r2 io_seq 2/);
    t.match(r.stdout, /io_seq +offset 4194304\.\.4206591 .*r2 io_seq 0/);
    const json = await runCli(['--json', '--max-differences', '1', ...paths]);
    t.equal(json.code, 1);
    const parsed = JSON.parse(json.stdout) as VerifyReport;
    t.same(kinds(parsed), expected.slice(0, 1));
    t.equal(parsed.differenceCount, 3);
  });
});

t.test('replicas of different volumes or geometries', { timeout: 30_000 }, async (t) => {
  const dir = t.testdir();
  const a = join(dir, 'a.img');
  const other = join(dir, 'other.img');
  const bigger = join(dir, 'bigger.img');
  await makeReplica(a, 'r1');
  await makeReplica(other, 'r2', {}, { volumeUuid: OTHER_UUID });
  await makeReplica(bigger, 'r3', {}, { capacityBytes: 16 * MiB });
  const volume = await verifyReplicas([a, other, bigger]);
  t.equal(volume.identical, false);
  t.same(kinds(volume), ['volume@0+0'], 'the volume difference comes first and alone');
  t.same(volume.differences[0]!.detail.map(v => v.volumeUuid), [UUID, OTHER_UUID, UUID]);
  t.equal(volume.chunksCompared, 0);
  const geometry = await verifyReplicas([a, bigger]);
  t.same(kinds(geometry), ['geometry@0+0']);
  t.same(geometry.differences[0]!.detail.map(v => v.capacityBytes), [8 * MiB, 16 * MiB]);
  await t.test('the CLI', { skip: noBuild }, async (t) => {
    const r = await runCli([a, other]);
    t.equal(r.code, 1);
    t.match(r.stdout, /different volumes: r1: volume 3f2504e0.*r2: volume 11111111/);
  });
});

t.test('open and usage errors', { timeout: 30_000 }, async (t) => {
  const dir = t.testdir({ empty: {} });
  const a = join(dir, 'a.img');
  await makeReplica(a, 'r1');
  const junk = join(dir, 'junk.img');
  writeFileSync(junk, Buffer.alloc(64 * KiB));
  await t.rejects(verifyReplicas([a, junk]), { name: 'VerifyOpenError', message: /junk\.img is not a replica/ });
  await t.rejects(verifyReplicas([a, join(dir, 'missing.img')]), VerifyOpenError);
  await t.rejects(verifyReplicas([a, a]), { message: /same file/ });
  // The replica that did open was closed again: it opens (and verifies) fine.
  t.equal((await verifyReplicas([a])).identical, true);
  await t.test('the CLI', { skip: noBuild }, async (t) => {
    const empty = await runCli(['--data-dir', join(dir, 'empty')]);
    t.equal(empty.code, 2);
    t.match(empty.stderr, /has no replicas/);
    const notReplica = await runCli([a, junk]);
    t.equal(notReplica.code, 2);
    t.match(notReplica.stderr, /^cstor-verify: .*junk\.img is not a replica/m);
    t.equal(notReplica.stdout, '');
    t.equal((await runCli([])).code, 2);
    t.equal((await runCli(['--data-dir', dir, a])).code, 2);
    t.equal((await runCli(['--bogus'])).code, 2);
    const help = await runCli(['--help']);
    t.equal(help.code, 0);
    t.match(help.stdout, /usage: cstor-verify/);
  });
});
