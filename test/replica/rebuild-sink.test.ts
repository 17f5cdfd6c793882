// Replica-to-replica rebuild with real stores and a real control server: full and incremental
// copies, newer sink writes kept, rate limiting, retries when the source dies, resume from the
// last applied offset, and the StartRebuild / Status wiring of main.ts.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { formatStore, ReplicaStore } from '../../src/replica/store.js';
import { startControlServer, ControlError, type ControlServer } from '../../src/replica/control-server.js';
import { RebuildSink } from '../../src/replica/rebuild-sink.js';
import { estimateRebuild } from '../../src/replica/rebuild-estimate.js';
import { createReplicaControlClient } from '../../src/protocol/replica/control-codec.js';
import { startReplica } from '../../src/replica/main.js';
import { parseReplicaConfig } from '../../src/replica/config.js';
import { silentLogger } from '../../src/shared/logger.js';
import { waitFor } from '../fixtures/wait-for.js';

t.setTimeout(60_000);

const UUID = '3c9d2f4a-1b2c-4d3e-8f40-5a6b7c8d9e0f';
const MiB = 1 << 20;
const CAPACITY = 16 * MiB;
const CHUNK = 4096;

async function openFresh(t: Test, name: string): Promise<ReplicaStore> {
  const path = join(t.testdir(), `${name}.img`);
  await formatStore(path, { volumeName: 'vol', volumeUuid: UUID, replicaId: name, capacityBytes: CAPACITY, journalBytes: MiB });
  const store = await ReplicaStore.open(path, { checkpointIntervalMs: 0 });
  t.teardown(() => store.close());
  return store;
}

/** A control server over `store`, wired like main.ts; force-closes quickly (a dying source). */
async function serve(t: Test, store: ReplicaStore, port = 0): Promise<ControlServer> {
  const server = await startControlServer({
    port,
    logger: silentLogger(),
    shutdownTimeoutMs: 50,
    handlers: {
      status: async () => { throw new ControlError('UNIMPLEMENTED', 'not here'); },
      setEpoch: async () => { throw new ControlError('UNIMPLEMENTED', 'not here'); },
      resize: async () => { throw new ControlError('UNIMPLEMENTED', 'not here'); },
      rebuild: (since, fromOffset, maxRunBytes, volumeUuid) => {
        if (volumeUuid !== store.info.volumeUuid) throw new ControlError('FAILED_PRECONDITION', 'foreign volume');
        return store.scan(since, { fromOffset, maxRunBytes });
      },
      rebuildEstimate: async (since, volumeUuid) => {
        if (volumeUuid !== store.info.volumeUuid) throw new ControlError('FAILED_PRECONDITION', 'foreign volume');
        return estimateRebuild({ chunkState: (o) => store.chunkState(o), capacityBytes: CAPACITY, chunkSize: CHUNK, sinceIoSeq: since });
      },
    },
  });
  t.teardown(() => server.close());
  return server;
}

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 12)) & 0xff;
  return b;
}

/** Same bytes and the same io_seq in every chunk. */
async function assertIdentical(t: Test, a: ReplicaStore, b: ReplicaStore, what: string): Promise<void> {
  let seqDiffs = 0;
  for (let off = 0; off < CAPACITY; off += CHUNK) if (a.chunkState(off).ioSeq !== b.chunkState(off).ioSeq) seqDiffs++;
  t.equal(seqDiffs, 0, `${what}: every chunk has the same io_seq`);
  let dataDiffs = 0;
  for (let off = 0; off < CAPACITY; off += MiB) {
    const ra = await a.read(off, MiB);
    const rb = await b.read(off, MiB);
    if (!ra.data.equals(rb.data)) dataDiffs++;
    ra.release();
    rb.release();
  }
  t.equal(dataDiffs, 0, `${what}: byte-identical data`);
}

/** `count` contiguous 1-chunk writes from `offset`, io_seqs from `firstSeq`. */
async function writeChunks(store: ReplicaStore, offset: number, count: number, firstSeq: number): Promise<void> {
  for (let i = 0; i < count; i++) await store.write(offset + i * CHUNK, pattern(CHUNK, firstSeq + i), firstSeq + i);
}


t.test('full rebuild, then an incremental one since the previous highest io_seq', async (t) => {
  const src = await openFresh(t, 'src');
  const dst = await openFresh(t, 'dst');
  await src.write(0, pattern(256 * 1024, 1), 1);
  await src.write(5 * MiB, pattern(64 * 1024, 2), 2);
  await src.write(5 * MiB + 8192, pattern(8192, 3), 3); // overwrites part of io_seq 2 with a newer one
  await src.writeZeroes(MiB, 128 * 1024, 4);
  await src.write(9 * MiB, pattern(MiB, 5), 5);
  await src.unmap(9 * MiB + 4 * CHUNK, 2 * CHUNK, 6);
  await src.write(CAPACITY - CHUNK, pattern(CHUNK, 7), 7);
  const server = await serve(t, src);

  const sink = new RebuildSink({ store: dst, source: server.address, sinceIoSeq: 0, logger: silentLogger() });
  t.equal(sink.progress().state, 'idle');
  const p = await sink.start();
  t.equal(p.state, 'done', 'done');
  const expected = (await estimateRebuild({ chunkState: (o) => src.chunkState(o), capacityBytes: CAPACITY, chunkSize: CHUNK, sinceIoSeq: 0 })).bytes;
  t.equal(p.bytesDone, expected, 'every chunk newer than io_seq 0 was transferred');
  t.equal(p.bytesTotal, expected, 'the estimate matched');
  t.equal(p.etaSeconds, 0);
  t.equal(p.attempts, 1);
  t.equal(p.lastError, undefined);
  await assertIdentical(t, src, dst, 'full');
  t.equal(sink.status().state, 'done', 'wire form');

  const since = src.info.highestIoSeq;
  await writeChunks(src, 3 * MiB, 5, since + 1);
  await src.writeZeroes(0, CHUNK, since + 10);
  const inc = await new RebuildSink({ store: dst, source: server.address, sinceIoSeq: since, logger: silentLogger() }).start();
  t.equal(inc.state, 'done');
  t.equal(inc.bytesDone, 6 * CHUNK, 'only the 6 newer chunks were transferred');
  t.equal(inc.bytesTotal, 6 * CHUNK);
  t.equal(inc.chunksApplied, 6);
  await assertIdentical(t, src, dst, 'incremental');

  const none = await new RebuildSink({ store: dst, source: server.address, sinceIoSeq: src.info.highestIoSeq, logger: silentLogger() }).start();
  t.equal(none.state, 'done', 'nothing newer: done at once');
  t.equal(none.bytesDone, 0);
});

t.test('rate limit respected; a newer write on the sink during the rebuild is kept', async (t) => {
  const src = await openFresh(t, 'src');
  const dst = await openFresh(t, 'dst');
  await src.write(0, pattern(2 * MiB, 1), 1);
  const server = await serve(t, src);
  const sink = new RebuildSink({
    store: dst, source: server.address, sinceIoSeq: 0, rateBytesPerSec: 4 * MiB, maxRunBytes: 256 * 1024, logger: silentLogger(),
  });
  const started = performance.now();
  const done = sink.start();
  // The last chunk arrives last (offset order, ~0.5 s in): the sink's own newer write must win.
  const mine = pattern(CHUNK, 99);
  await dst.write(2 * MiB - CHUNK, mine, 1000);
  await waitFor('running progress', () => sink.progress().bytesDone > 0, 10_000);
  const mid = sink.progress();
  t.equal(mid.state, 'running');
  t.equal(mid.bytesTotal, 2 * MiB, 'total known from the estimate');
  t.ok(mid.bytesDone < 2 * MiB);
  const p = await done;
  const seconds = (performance.now() - started) / 1000;
  t.equal(p.state, 'done');
  t.ok(seconds >= 0.4, `2 MiB at 4 MiB/s took ${seconds.toFixed(2)} s`);
  t.ok(seconds < 3, 'but not much longer');
  t.ok(p.rateBytesPerSec <= 4.5 * MiB, `average rate ${(p.rateBytesPerSec / MiB).toFixed(2)} MiB/s`);
  t.equal(p.chunksSkipped, 1, 'the chunk written meanwhile was skipped');
  t.equal(dst.chunkState(2 * MiB - CHUNK).ioSeq, 1000);
  const r = await dst.read(2 * MiB - CHUNK, CHUNK);
  t.ok(r.data.equals(mine), 'the newer local data is kept');
  r.release();
  const r2 = await dst.read(0, 2 * MiB - CHUNK);
  t.ok(r2.data.equals(pattern(2 * MiB, 1).subarray(0, 2 * MiB - CHUNK)), 'the rest was copied');
  r2.release();
});

t.test('setRate changes a running rebuild\'s limit live', async (t) => {
  const src = await openFresh(t, 'src');
  const dst = await openFresh(t, 'dst');
  await src.write(0, pattern(4 * MiB, 1), 1);
  const server = await serve(t, src);
  const sink = new RebuildSink({
    store: dst, source: server.address, sinceIoSeq: 0, rateBytesPerSec: MiB, maxRunBytes: 128 * 1024, logger: silentLogger(),
  });
  t.throws(() => sink.setRate(-1), RangeError, 'a negative rate is refused');
  const started = performance.now();
  const done = sink.start();
  // 4 MiB at 1 MiB/s would take ~4 s; lifted to unlimited once it is under way.
  await waitFor('running progress', () => sink.progress().bytesDone > 0, 10_000);
  sink.setRate(0);
  t.equal(sink.rateLimit, 0);
  const p = await done;
  const seconds = (performance.now() - started) / 1000;
  t.equal(p.state, 'done');
  t.equal(p.bytesDone, 4 * MiB);
  t.ok(seconds < 2.5, `finished in ${seconds.toFixed(2)} s after the limit was lifted (4 s at the old rate)`);

  // And the other way: a slow-down takes effect within a run.
  const dst2 = await openFresh(t, 'dst2');
  const slow = new RebuildSink({ store: dst2, source: server.address, sinceIoSeq: 0, maxRunBytes: 128 * 1024, logger: silentLogger() });
  slow.setRate(2 * MiB);
  const t0 = performance.now();
  const q = await slow.start();
  const s2 = (performance.now() - t0) / 1000;
  t.equal(q.state, 'done');
  t.ok(s2 >= 1.5, `4 MiB limited to 2 MiB/s before the start took ${s2.toFixed(2)} s`);
});

t.test('the source dies mid-stream: backoff, then failed after maxAttempts', async (t) => {
  const src = await openFresh(t, 'src');
  const dst = await openFresh(t, 'dst');
  // More than the server's send buffer and the HTTP/2 windows hold, so closing it does cut the stream.
  for (let off = 0; off < 12 * MiB; off += 2 * MiB) await src.write(off, pattern(2 * MiB, off / MiB), 1 + off / MiB);
  const server = await serve(t, src);
  const sink = new RebuildSink({
    store: dst, source: server.address, sinceIoSeq: 0, rateBytesPerSec: 2 * MiB, maxRunBytes: 128 * 1024,
    retry: { maxAttempts: 3, backoffMs: 20 }, logger: silentLogger(),
  });
  const done = sink.start();
  await waitFor('some progress', () => sink.progress().bytesDone >= 256 * 1024, 10_000);
  await server.close();
  const states = new Set<string>();
  const watch = setInterval(() => states.add(sink.progress().state), 2);
  const p = await done;
  clearInterval(watch);
  t.equal(p.state, 'failed');
  t.equal(p.attempts, 3, 'the first attempt and two retries');
  t.ok(states.has('backoff'), 'went through backoff');
  t.type(p.lastError, 'string');
  t.ok(p.bytesDone > 0 && p.bytesDone < 12 * MiB);
  t.equal(p.nextOffset, p.bytesDone, 'resume point after the last applied run');
  t.equal(sink.status().lastError, p.lastError);
});

t.test('resumes from the last applied offset when the source comes back', async (t) => {
  const src = await openFresh(t, 'src');
  const dst = await openFresh(t, 'dst');
  for (let off = 0; off < 8 * MiB; off += 2 * MiB) await src.write(off, pattern(2 * MiB, off / MiB), 1 + off / MiB);
  await src.write(12 * MiB, pattern(MiB, 2), 20);
  const first = await serve(t, src);
  const sink = new RebuildSink({
    store: dst, source: first.address, sinceIoSeq: 0, rateBytesPerSec: 8 * MiB, maxRunBytes: 128 * 1024,
    retry: { maxAttempts: 20, backoffMs: 50, maxBackoffMs: 100 }, logger: silentLogger(),
  });
  const done = sink.start();
  await waitFor('some progress', () => sink.progress().bytesDone >= 512 * 1024, 10_000);
  await first.close();
  await waitFor('backoff', () => sink.progress().state === 'backoff', 10_000);
  const stalledAt = sink.progress().nextOffset;
  t.ok(stalledAt > 0 && stalledAt < 9 * MiB);
  await serve(t, src, first.port);
  const p = await done;
  t.equal(p.state, 'done');
  t.ok(p.attempts >= 2, `attempts ${p.attempts}`);
  t.equal(p.bytesDone, 9 * MiB, 'nothing transferred twice: the retry resumed at the offset reached');
  t.equal(p.chunksSkipped, 0);
  await assertIdentical(t, src, dst, 'resumed');
});

t.test('stop() cancels a running rebuild', async (t) => {
  const src = await openFresh(t, 'src');
  const dst = await openFresh(t, 'dst');
  await src.write(0, pattern(MiB, 1), 1);
  const server = await serve(t, src);
  const sink = new RebuildSink({ store: dst, source: server.address, sinceIoSeq: 0, rateBytesPerSec: 256 * 1024, logger: silentLogger() });
  const done = sink.start();
  await waitFor('running', () => sink.progress().state === 'running', 10_000);
  await sleep(50);
  const p = await sink.stop();
  t.equal(p.state, 'failed');
  t.match(p.lastError, /stopped/);
  t.equal(await done, p);
});

t.test('a foreign volume is refused without retries', async (t) => {
  const src = await openFresh(t, 'src');
  await src.write(0, pattern(CHUNK, 1), 1);
  const server = await serve(t, src);
  const other = { info: { volumeUuid: '00000000-0000-4000-8000-000000000000' }, applyRun: async () => ({ applied: 0, skipped: 0 }) };
  const p = await new RebuildSink({ store: other, source: server.address, sinceIoSeq: 0, retry: { maxAttempts: 5, backoffMs: 10 }, logger: silentLogger() }).start();
  t.equal(p.state, 'failed');
  t.equal(p.attempts, 1);
  t.match(p.lastError, /foreign volume/);
});

t.test('StartRebuild and Status through main.ts', async (t) => {
  const dir = t.testdir();
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(chunk.toString()); cb(); } }));
  const start = async (id: string, log = silentLogger()): Promise<Awaited<ReturnType<typeof startReplica>>> => {
    const parsed = parseReplicaConfig(['--device', join(dir, `${id}.img`), '--volume', 'vol', '--volume-uuid', UUID, '--replica-id', id,
      '--target', '127.0.0.1:1', '--format', '--size', '16M'], {});
    if (!parsed.ok) throw new Error(parsed.error);
    const r = await startReplica(parsed.config, log);
    t.teardown(() => r.stop());
    return r;
  };
  const source = await start('r1');
  const target = await start('r2', logger);
  await source.store.write(0, pattern(MiB, 1), 1);
  await source.store.writeZeroes(4 * MiB, 64 * 1024, 2);

  const control = createReplicaControlClient(target.control.address);
  t.teardown(() => control.close());
  const sourceControl = createReplicaControlClient(source.control.address);
  t.teardown(() => sourceControl.close());
  const est = await sourceControl.rebuildEstimate({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID });
  t.same(est, { bytes: MiB + 64 * 1024, chunks: 272 });
  t.equal((await control.status()).rebuild, undefined, 'no rebuild yet');
  t.same(await control.setRebuildRate({ rateBytesPerSec: MiB }), { applied: false }, 'SetRebuildRate with no rebuild running');

  const request = { sourceAddress: source.control.address, sinceIoSeq: 0, rateBytesPerSec: 2 * MiB, volumeUuid: UUID };
  t.same(await control.startRebuild(request), { started: true });
  const second = await control.startRebuild(request).then(() => undefined, (err: { code?: number }) => err.code);
  t.equal(second, grpc.status.FAILED_PRECONDITION, 'one rebuild at a time');
  const foreign = await control.startRebuild({ ...request, volumeUuid: '00000000-0000-4000-8000-000000000000' }).then(() => undefined, (err: { code?: number }) => err.code);
  t.equal(foreign, grpc.status.FAILED_PRECONDITION, 'foreign volume refused');
  const during = await control.status();
  t.equal(during.state, 'rebuilding');
  t.equal(during.rebuild?.state, 'running');
  t.equal(during.rebuild?.source, source.control.address);
  t.same(await control.setRebuildRate({ rateBytesPerSec: 64 * MiB }), { applied: true }, 'SetRebuildRate on the running rebuild');
  t.equal(target.rebuild?.rateLimit, 64 * MiB, 'the sink took the new rate');

  const deadline = Date.now() + 10_000;
  let status = during;
  while (status.rebuild?.state !== 'done' && Date.now() < deadline) {
    await sleep(20);
    status = await control.status();
  }
  t.equal(status.rebuild?.state, 'done');
  t.equal(status.rebuild?.bytesDone, MiB + 64 * 1024);
  t.equal(status.rebuild?.bytesTotal, MiB + 64 * 1024);
  t.equal(status.rebuild?.etaSeconds, 0);
  t.equal(status.state, 'ready');
  await waitFor('completion log', () => lines.some((l) => l.includes('rebuild complete')), 10_000);
  const line = JSON.parse(lines.find((l) => l.includes('rebuild complete'))!) as { bytes: number; seconds: number };
  t.equal(line.bytes, MiB + 64 * 1024);
  t.type(line.seconds, 'number');
  await assertIdentical(t, source.store, target.store, 'via StartRebuild');
  t.same(await control.startRebuild({ ...request, sinceIoSeq: 2 }), { started: true }, 'a new rebuild once the previous one is done');
});

t.test('estimateRebuild counts chunks newer than since, yielding between batches', async (t) => {
  const seqs = [0, 5, 3, 9, 0, 7];
  const e = await estimateRebuild({ chunkState: (o) => ({ ioSeq: seqs[o / CHUNK]! }), capacityBytes: seqs.length * CHUNK, chunkSize: CHUNK, sinceIoSeq: 4, batchChunks: 2 });
  t.same(e, { bytes: 3 * CHUNK, chunks: 3 });
  const ac = new AbortController();
  ac.abort(new Error('gone'));
  await t.rejects(estimateRebuild({ chunkState: () => ({ ioSeq: 1 }), capacityBytes: 4 * CHUNK, chunkSize: CHUNK, sinceIoSeq: 0, batchChunks: 1, signal: ac.signal }), /gone/);
});
