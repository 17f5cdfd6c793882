import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { writeFileSync, existsSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BlockFile, allocAligned, engineInfo, ioStats, type Engine } from '../../src/replica/native.js';

// A real gc() without restarting node with --expose-gc.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MiB = 1 << 20;
const info = engineInfo();
t.comment(`io_uring: ${info.ioUring ? 'yes' : `no (${info.ioUringError ?? '?'}), tests use the thread pool twice`}`);
const engines: Engine[] = ['io_uring', 'threads'];

function fixture(t: Test, size = 4 * MiB): string {
  const dir = t.testdir({});
  const path = join(dir, 'disk.img');
  writeFileSync(path, '');
  truncateSync(path, size);
  return path;
}

function pattern(len: number, seed: number): Buffer {
  const b = allocAligned(len, 4096);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

t.test('open reports geometry and the engine', async (t) => {
  const path = fixture(t, 3 * MiB);
  for (const engine of engines) {
    const f = await BlockFile.open(path, { write: true, engine });
    t.equal(f.size, 3 * MiB);
    t.equal(f.isBlockDevice, false);
    t.equal(f.direct, true);
    t.ok(f.logicalBlockSize >= 512 && (f.logicalBlockSize & (f.logicalBlockSize - 1)) === 0, 'power of two');
    t.ok(f.physicalBlockSize >= 512);
    t.ok(f.memoryAlignment >= 1);
    t.equal(f.engine, engine === 'io_uring' && !info.ioUring ? 'threads' : engine);
    await f.close();
  }
});

t.test('open errors are coded', async (t) => {
  const dir = t.testdir({});
  await t.rejects(BlockFile.open(join(dir, 'missing.img')), { code: 'ENOENT', syscall: 'open', op: 'open' });
  await t.rejects(BlockFile.open(dir), { code: 'EINVAL' }, 'a directory is neither file nor device');
});

for (const engine of engines) {
  t.test(`${engine}: misaligned buffers, offsets and lengths are refused before the kernel`, async (t) => {
    const f = await BlockFile.open(fixture(t), { write: true, engine });
    const lbs = f.logicalBlockSize;
    const good = allocAligned(4 * lbs, 4096);
    // A view starting one byte into an aligned allocation is misaligned in memory.
    const unalignedMem = allocAligned(4 * lbs + 4096, 4096).subarray(1, 1 + 4 * lbs);
    await t.rejects(f.write(unalignedMem, 0), { code: 'EALIGN', op: 'write' });
    await t.rejects(f.read(unalignedMem, 0), { code: 'EALIGN', op: 'read' });
    await t.rejects(f.write(good, 1), { code: 'EALIGN', offset: 1 });
    await t.rejects(f.read(good.subarray(0, lbs - 1), 0), { code: 'EALIGN' });
    await t.rejects(f.write([good, unalignedMem], 0), { code: 'EALIGN' }, 'any buffer of a writev');
    await t.rejects(f.discard(1, lbs), { code: 'EALIGN', op: 'discard' });
    await t.rejects(f.writeZeroes(0, lbs + 1), { code: 'EALIGN', op: 'writeZeroes' });
    await t.rejects(f.write(good, -lbs), { code: 'EINVAL' });
    // Nothing was written by the refused calls.
    const back = allocAligned(4 * lbs, 4096);
    await f.read(back, 0);
    t.ok(back.equals(Buffer.alloc(4 * lbs)));
    await f.close();
  });

  t.test(`${engine}: read after write at various offsets, readv/writev`, async (t) => {
    const f = await BlockFile.open(fixture(t), { write: true, engine });
    const lbs = f.logicalBlockSize;
    const cases: [number, number][] = [[0, lbs], [lbs, 4096], [4096 * 3, 65536], [MiB - lbs, lbs], [2 * MiB + 8192, MiB], [4 * MiB - 4096, 4096]];
    let seed = 1;
    for (const [offset, len] of cases) {
      const data = pattern(len, seed++);
      t.equal(await f.write(data, offset), len);
      const back = allocAligned(len, 4096);
      t.equal(await f.read(back, offset), len);
      t.ok(back.equals(data), `offset ${offset} length ${len}`);
    }
    // Scatter-gather: three buffers written at once, read back as one.
    const parts = [pattern(4096, 11), pattern(8192, 12), pattern(4096, 13)];
    t.equal(await f.write(parts, MiB), 16384);
    const whole = allocAligned(16384, 4096);
    await f.read(whole, MiB);
    t.ok(whole.equals(Buffer.concat(parts)));
    const split = [allocAligned(12288, 4096), allocAligned(4096, 4096)];
    t.equal(await f.read(split, MiB), 16384);
    t.ok(Buffer.concat(split).equals(whole));
    // Many concurrent I/Os (more than the ring holds) all land.
    const n = 600;
    await Promise.all(Array.from({ length: n }, (_, i) => f.write(pattern(4096, 100 + (i % 50)), (i % 200) * 4096)));
    await f.flush();
    const check = allocAligned(4096, 4096);
    await f.read(check, 199 * 4096);
    t.ok(check.equals(pattern(4096, 100 + (599 % 50))), 'last write to a block wins when issued in order after settle');
    // Reading past EOF is short, not an error.
    const tail = allocAligned(8192, 4096);
    t.equal(await f.read(tail, 4 * MiB - 4096), 4096);
    t.equal(await f.read(tail, 4 * MiB), 0);
    await f.close();
  });

  t.test(`${engine}: I/O started from every event-loop phase settles; an idle process exits`, async (t) => {
    // io_uring ops are submitted at once, background ones at the end of the loop turn (a prepare
    // handle): whatever phase queues an op, it must reach the kernel without help.
    const f = await BlockFile.open(fixture(t), { write: true, engine });
    const buf = (): Buffer => allocAligned(4096, 4096);
    const via = <T>(schedule: (fn: () => void) => void, start: () => Promise<T>): Promise<T> =>
      new Promise<T>((resolve, reject) => schedule(() => { start().then(resolve, reject); }));
    const got = await Promise.all([
      via((fn) => setTimeout(fn, 1), () => f.write(pattern(4096, 1), 0)),
      via((fn) => setImmediate(fn), () => f.write(pattern(4096, 2), 4096)),
      via((fn) => process.nextTick(fn), () => f.write(pattern(4096, 3), 8192)),
      via((fn) => queueMicrotask(fn), () => f.read(buf(), 12288)),
      via((fn) => setImmediate(fn), () => f.write(pattern(4096, 4), 16384, { background: true })),
      via((fn) => setTimeout(fn, 1), () => f.read(buf(), 16384, { background: true })),
      // Chains: each op issued from the previous one's settlement.
      (async () => { let n = 0; for (let i = 0; i < 50; i++) n += await f.read(buf(), i * 4096); return n; })(),
    ]);
    t.same(got, [4096, 4096, 4096, 4096, 4096, 4096, 50 * 4096]);
    // After I/O, with nothing pending, the loop must not be held open.
    const script = `import { BlockFile, allocAligned } from ${JSON.stringify(new URL('../../src/replica/native.ts', import.meta.url).href)};
const f = await BlockFile.open(process.argv[1], { write: true, engine: ${JSON.stringify(engine)} });
await Promise.all(Array.from({ length: 40 }, (_, i) => f.write(allocAligned(4096, 4096), i * 4096, { background: i % 2 === 0 })));
await f.read(allocAligned(4096, 4096), 0);
await f.write(allocAligned(4096, 4096), 0, { background: true });
console.log('done');`;
    const out = execFileSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script, fixture(t)], {
      timeout: 20_000, encoding: 'utf8',
    });
    t.equal(out.trim(), 'done', 'child exited on its own once idle');
    await f.close();
  });

  t.test(`${engine}: close waits for in-flight I/O; later I/O is refused`, async (t) => {
    const f = await BlockFile.open(fixture(t), { write: true, engine });
    const settled: boolean[] = [];
    const ops = Array.from({ length: 512 }, (_, i) => {
      settled.push(false);
      return f.write(pattern(65536, i), (i % 64) * 65536).then(() => { settled[i] = true; });
    });
    const reads = Array.from({ length: 64 }, (_, i) => f.read(allocAligned(65536, 4096), i * 65536).then(() => true));
    const closed = f.close();
    t.equal(f.closed, true);
    await closed;
    t.ok(settled.every(Boolean), 'every write settled before close resolved');
    const results = await Promise.all([...ops, ...reads]);
    t.equal(results.length, 576);
    await t.rejects(f.read(allocAligned(4096), 0), { code: 'EBADF', op: 'read' });
    await t.rejects(f.write(allocAligned(4096), 0), { code: 'EBADF' });
    await t.rejects(f.flush(), { code: 'EBADF' });
    await t.rejects(f.discard(0, 4096), { code: 'EBADF' });
    t.equal(f.close(), closed, 'close is idempotent');
  });

  t.test(`${engine}: background writes land, close waits for them; ioStats counts io_uring ops`, async (t) => {
    const f = await BlockFile.open(fixture(t), { write: true, engine });
    const before = ioStats();
    // Background and foreground ops interleaved in one turn, then close right away.
    const writes = Array.from({ length: 64 }, (_, i) => f.write(pattern(4096, 100 + i), i * 4096, { background: i % 3 !== 0 }));
    const closed = f.close();
    t.same(await Promise.all(writes), Array.from({ length: 64 }, () => 4096));
    await closed;
    const g = await BlockFile.open(f.path, { engine });
    for (let i = 0; i < 64; i++) {
      const b = allocAligned(4096, 4096);
      await g.read(b, i * 4096);
      if (!b.equals(pattern(4096, 100 + i))) t.fail(`block ${i} did not land`);
    }
    const after = ioStats();
    if (f.engine === 'io_uring') {
      t.equal(after.ops - before.ops, 128, 'one ring op per write and per read');
      t.equal(after.cqes - before.cqes, 128, 'every op reaped');
      t.ok(after.enters > before.enters && after.reaps > before.reaps);
      t.ok(after.deviceNs > before.deviceNs && after.queueNs >= before.queueNs && after.settleNs > before.settleNs);
    } else {
      t.equal(after.ops, before.ops, 'the thread pool does not touch the ring counters');
    }
    await g.close();
  });

  t.test(`${engine}: buffers survive GC while in flight`, async (t) => {
    const f = await BlockFile.open(fixture(t), { write: true, engine });
    const collected = new Set<number>();
    const registry = new FinalizationRegistry<number>((i) => collected.add(i));
    const n = 256;
    const pending: Promise<number>[] = [];
    for (let i = 0; i < n; i++) {
      // The only reference to each buffer is the one the addon holds.
      const b = pattern(16384, i);
      registry.register(b, i);
      pending.push(f.write(b, i * 16384));
      if (i % 32 === 0) gc();
    }
    gc();
    gc();
    t.ok(collected.size < n, 'not every in-flight buffer was collected');
    await Promise.all(pending);
    const back = allocAligned(16384, 4096);
    for (let i = 0; i < n; i++) {
      await f.read(back, i * 16384);
      if (!back.equals(pattern(16384, i))) {
        t.fail(`block ${i} corrupted`);
        break;
      }
    }
    // Completion released the references: the buffers can now go.
    for (let k = 0; k < 100 && collected.size < n; k++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    // The last buffer may still sit in a stale stack slot of this function.
    t.ok(collected.size >= n - 1, `buffers collected after completion (no leaked references): ${collected.size}/${n}`);
    await f.close();
  });

  t.test(`${engine}: discard and writeZeroes on a file read back zeroes`, async (t) => {
    const path = fixture(t);
    const f = await BlockFile.open(path, { write: true, engine });
    const data = pattern(MiB, 5);
    await f.write(data, 0);
    await f.discard(64 * 1024, 128 * 1024);
    await f.writeZeroes(512 * 1024, 4096);
    await f.flush();
    const back = allocAligned(MiB, 4096);
    await f.read(back, 0);
    const want = Buffer.from(data);
    want.fill(0, 64 * 1024, 192 * 1024);
    want.fill(0, 512 * 1024, 512 * 1024 + 4096);
    t.ok(back.equals(want));
    t.equal(f.size, 4 * MiB, 'KEEP_SIZE');
    await f.close();
  });
}

t.test('buffered (direct:false) I/O accepts unaligned buffers', async (t) => {
  const f = await BlockFile.open(fixture(t), { write: true, direct: false });
  const data = Buffer.from('hello, block world');
  t.equal(await f.write(data, 3), data.length);
  const back = Buffer.alloc(data.length);
  t.equal(await f.read(back, 3), data.length);
  t.equal(back.toString(), data.toString());
  await f.close();
});

t.test('read-only handles refuse writes with EBADF from the kernel', async (t) => {
  const f = await BlockFile.open(fixture(t));
  await t.rejects(f.write(allocAligned(4096), 0), { code: 'EBADF', errno: -9 });
  await f.close();
});

t.test('loop device: geometry, discard and zeroes', async (t) => {
  let dev = '';
  const path = fixture(t, 16 * MiB);
  try {
    dev = execFileSync('losetup', ['-f', '--show', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    t.plan(0, `skipped: cannot create a loop device here (${(err as Error).message.split('\n')[0] ?? ''})`);
    return;
  }
  t.teardown(() => { execFileSync('losetup', ['-d', dev]); });
  t.ok(existsSync(dev));
  for (const engine of engines) {
    const f = await BlockFile.open(dev, { write: true, engine });
    t.equal(f.isBlockDevice, true);
    t.equal(f.size, 16 * MiB);
    t.ok(f.logicalBlockSize >= 512);
    const data = pattern(MiB, 9);
    await f.write(data, 0);
    await f.discard(0, 65536);
    await f.writeZeroes(65536, 65536);
    await f.flush();
    const back = allocAligned(MiB, 4096);
    await f.read(back, 0);
    const want = Buffer.from(data);
    want.fill(0, 0, 131072);
    t.ok(back.equals(want), `${engine}: discarded and zeroed ranges read back as zeroes`);
    await t.rejects(f.discard(32 * MiB, 4096), { code: 'EINVAL', op: 'discard', offset: 32 * MiB });
    await f.close();
  }
});
