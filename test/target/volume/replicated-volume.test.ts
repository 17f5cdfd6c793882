import t, { type Test } from 'tap';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync, openSync, readSync, writeSync, fsyncSync, closeSync, fstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ReplicatedVolume, type ReplicatedVolumeOptions } from '../../../src/target/volume/replicated-volume.js';
import { ReplicaConnection } from '../../../src/target/volume/replica-connection.js';
import { BlockDeviceError } from '../../../src/target/volume/block-device.js';
import { formatStore, ReplicaStore } from '../../../src/replica/store.js';
import type { ReplicaStoreApi } from '../../../src/replica/store-api.js';
import { DataResponder } from '../../../src/replica/data-responder.js';
import type { ReplicaHello } from '../../../src/protocol/replica/frame.js';
import { silentLogger } from '../../../src/shared/logger.js';
import { waitFor } from '../../fixtures/wait-for.js';

const UUID = '3f2504e0-4f89-11d3-9a0c-0305e82c3301';
const MiB = 1 << 20;
const CAPACITY = 16 * MiB;
const BS = 512;
const dir = mkdtempSync(join(tmpdir(), 'replicated-volume-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Replica {
  readonly id: string;
  readonly path: string;
  readonly store: ReplicaStore;
  /** Milliseconds every store write sleeps first (a slow disk). */
  writeDelayMs: number;
  /** Milliseconds every store read sleeps first. */
  readDelayMs: number;
  /** Store calls in order: 'write-done' when a write returned, 'flush' when a flush started. */
  readonly events: string[];
  /** HELLO `instance` of later connections (undefined: none sent, as an older replica). */
  instance: string | undefined;
  /** A new data connection to this replica, past HELLO. */
  connect(): Promise<ReplicaConnection>;
}

let seq = 0;

async function replica(t: Test, id: string): Promise<Replica> {
  const path = join(dir, `${id}-${seq++}.img`);
  await formatStore(path, { volumeName: 'vol', volumeUuid: UUID, replicaId: id, capacityBytes: CAPACITY, journalBytes: MiB });
  // No data journal: every write lands in place, where the corruption test can find it.
  const store = await ReplicaStore.open(path, { dataJournalMaxBytes: 0, checkpointIntervalMs: 0 });
  const r: Replica = { id, path, store, writeDelayMs: 0, readDelayMs: 0, events: [], instance: undefined, connect: async () => { throw new Error('unset'); } };
  const slow: ReplicaStoreApi = new Proxy(store, {
    get(target, prop) {
      if (prop === 'write') {
        return async (...args: Parameters<ReplicaStore['write']>) => {
          if (r.writeDelayMs > 0) await new Promise((res) => setTimeout(res, r.writeDelayMs));
          const result = await target.write(...args);
          r.events.push('write-done');
          return result;
        };
      }
      if (prop === 'read') {
        return async (...args: Parameters<ReplicaStore['read']>) => {
          if (r.readDelayMs > 0) await new Promise((res) => setTimeout(res, r.readDelayMs));
          return target.read(...args);
        };
      }
      if (prop === 'flush') {
        return () => {
          r.events.push('flush');
          return target.flush();
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    new DataResponder(socket, slow, { logger: silentLogger() });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  const conns: ReplicaConnection[] = [];
  r.connect = async () => {
    const socket = await new Promise<Socket>((res, rej) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.once('connect', () => res(s));
      s.once('error', rej);
    });
    const info = store.info;
    const hello: ReplicaHello = {
      volumeName: info.volumeName, volumeUuid: info.volumeUuid, replicaId: info.replicaId, controlAddress: '',
      epoch: info.epoch, checkpointedIoSeq: info.checkpointedIoSeq, highestIoSeq: info.highestIoSeq,
      capacityBytes: info.capacityBytes, blockSize: info.blockSize, chunkSize: info.chunkSize, pid: 0,
      ...(r.instance !== undefined ? { instance: r.instance } : {}),
    };
    const conn = new ReplicaConnection(socket, hello, { logger: silentLogger() });
    conns.push(conn);
    return conn;
  };
  t.teardown(async () => {
    for (const c of conns) await c.close();
    for (const s of sockets) s.destroy();
    await new Promise((res) => server.close(res));
    await store.close();
  });
  return r;
}

async function cluster(t: Test, options: Partial<ReplicatedVolumeOptions> = {}): Promise<{ vol: ReplicatedVolume; replicas: Replica[]; conns: ReplicaConnection[] }> {
  const replicas = [await replica(t, 'r1'), await replica(t, 'r2'), await replica(t, 'r3')];
  const vol = new ReplicatedVolume({
    blockSize: BS, capacityBytes: CAPACITY, epoch: 1, replicaIds: ['r1', 'r2', 'r3'], logger: silentLogger(), ...options,
  });
  t.teardown(() => vol.close());
  const conns: ReplicaConnection[] = [];
  for (const r of replicas) {
    const c = await r.connect();
    conns.push(c);
    vol.attach(c);
  }
  return { vol, replicas, conns };
}

/** The replica's bytes and per-chunk io_seqs, read straight from its store. */
async function storeRead(r: Replica, offset: number, length: number): Promise<{ data: Buffer; ioSeqs: number[] }> {
  const res = await r.store.read(offset, length);
  const out = { data: Buffer.from(res.data), ioSeqs: [...res.ioSeqs] };
  res.release();
  return out;
}

/**
 * Overwrite 512 bytes of the replica's copy of volume byte `offset` behind its store. The data region
 * ends the file; the bytes there must be `expect` (checked: the layout assumption holds).
 */
function corrupt(r: Replica, offset: number, expect: Buffer): boolean {
  const fd = openSync(r.path, 'r+');
  try {
    const at = fstatSync(fd).size - CAPACITY + offset;
    const found = Buffer.alloc(BS);
    readSync(fd, found, 0, BS, at);
    if (!found.equals(expect.subarray(0, BS))) return false;
    writeSync(fd, Buffer.alloc(BS, 0xee), 0, BS, at);
    fsyncSync(fd);
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Until no replica has a request in flight (a write returns on a quorum; the third may still be busy). */
async function settled(vol: ReplicatedVolume): Promise<void> {
  await waitFor('nothing in flight', () => Object.values(vol.counters().inFlight).every((n) => n === 0), 3000);
}


function stateOf(vol: ReplicatedVolume, id: string): string {
  return vol.replicaStates().find((s) => s.replicaId === id)!.state;
}

t.test('options are checked', async (t) => {
  const base = { blockSize: BS, capacityBytes: CAPACITY, epoch: 1, logger: silentLogger() };
  t.throws(() => new ReplicatedVolume({ ...base, replicaIds: ['a', 'b', 'c'], writeQuorum: 1 }), /majority/);
  t.throws(() => new ReplicatedVolume({ ...base, replicaIds: ['a', 'b', 'c'], writeQuorum: 4 }), /majority/);
  t.throws(() => new ReplicatedVolume({ ...base, replicaIds: ['a', 'a'] }), /unique/);
  const v = new ReplicatedVolume({ ...base, replicaIds: ['a', 'b', 'c'] });
  t.equal(v.writeQuorum, 2);
  t.equal(v.volumeState(), 'offline');
  t.equal(v.blockCount, BigInt(CAPACITY / BS));
  t.equal(await v.loadState('pr'), undefined, 'without a state directory nothing is persisted');
  await v.close();
  const v4 = new ReplicatedVolume({ ...base, replicaIds: ['a', 'b', 'c', 'd'] });
  t.equal(v4.writeQuorum, 3, 'k=4: a majority is 3');
  await v4.close();
});

t.test('writes land on all three replicas; reads, big requests, unmap, flush', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await cluster(t);
  t.equal(vol.volumeState(), 'healthy');
  t.strictSame(vol.replicaStates().map((s) => s.state), ['healthy', 'healthy', 'healthy']);
  const stranger = await replicas[0]!.connect();
  t.throws(() => vol.attach(Object.assign(Object.create(Object.getPrototypeOf(stranger) as object) as ReplicaConnection, {
    hello: { ...stranger.hello, replicaId: 'r9' },
  })), /not one of/);

  const data = randomBytes(64 * 1024);
  await vol.write(8n, data, { fua: true });
  await settled(vol);
  for (const r of replicas) {
    const got = await storeRead(r, 8 * BS, data.length);
    t.ok(got.data.equals(data), `${r.id} holds the write`);
  }
  for (const c of conns) {
    const got = await c.read(8 * BS, data.length, 1);
    t.ok(got.data.equals(data), `${c.hello.replicaId} serves the write`);
  }
  // Reads rotate over the replicas and return the data.
  for (let i = 0; i < 3; i++) {
    const into = Buffer.alloc(data.length);
    await vol.read(8n, data.length / BS, into);
    t.ok(into.equals(data), `read ${i}`);
  }

  // 6 MiB: split into 4 MiB pieces, each its own io_seq.
  const big = randomBytes(6 * MiB);
  const before = vol.nextIoSeq;
  await vol.write(2048n, big);
  t.equal(vol.nextIoSeq, before + 2, 'two pieces');
  const into = Buffer.alloc(big.length);
  await vol.read(2048n, big.length / BS, into);
  t.ok(into.equals(big), 'big read');
  await settled(vol);
  for (const r of replicas) t.ok((await storeRead(r, 2048 * BS, big.length)).data.equals(big), `${r.id} holds the big write`);

  await vol.writeZeroes(8n, 8);
  await vol.unmap(16n, 8);
  await vol.flush();
  const z = Buffer.alloc(8 * BS, 0xff);
  await vol.read(8n, 8, z);
  t.ok(z.equals(Buffer.alloc(8 * BS)), 'zeroed');
  t.same(await vol.mapStatus(20000n, 8), { blocks: 8, mapped: false });
  for (const r of replicas) t.ok(r.store.stats().syncs >= 1, `${r.id} synced`);
  await t.rejects(vol.read(BigInt(CAPACITY / BS), 1, Buffer.alloc(BS)), { code: 'ERANGE' });
  const c = vol.counters();
  t.equal(c.readRepairs, 0);
  t.equal(c.ejections, 0);
  // The flush returned on a quorum; the third replica's answer may still be on its way.
  await waitFor('nothing in flight', () => Object.values(vol.counters().inFlight).every((n) => n === 0), 2000);
  t.pass('nothing left in flight');
});

t.test('a slow replica does not slow writes and is ejected after ioDeadlineMs', { timeout: 15_000 }, async (t) => {
  // Delays far apart from the bounds asserted, so a loaded CI machine cannot blur them.
  const { vol, replicas } = await cluster(t, { ioDeadlineMs: 1000 });
  replicas[2]!.writeDelayMs = 4000;
  const data = randomBytes(8192);
  const start = Date.now();
  await vol.write(0n, data);
  const took = Date.now() - start;
  t.ok(took < 1000, `the write completed in ${took} ms without the slow replica`);
  t.equal(stateOf(vol, 'r3'), 'healthy', 'not ejected before its deadline');
  t.equal(vol.counters().inFlight['r3'], 1, 'the slow replica still has it in flight');
  await waitFor('r3 degraded', () => stateOf(vol, 'r3') === 'degraded', 3000);
  t.match(vol.replicaStates()[2]!.reason, /no answer within 1000 ms/);
  t.equal(vol.volumeState(), 'degraded');
  t.equal(vol.counters().ejections, 1);
  const s2 = Date.now();
  await vol.write(16n, data);
  t.ok(Date.now() - s2 < 2000, 'later writes are not sent to the ejected replica');
  const into = Buffer.alloc(data.length);
  await vol.read(16n, data.length / BS, into);
  t.ok(into.equals(data));
});

t.test('a backlog above maxBacklog ejects the replica', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t, { maxBacklog: 16, ioDeadlineMs: 10_000 });
  // A burst every replica works through ejects nobody: the backlog counts requests behind the quorum.
  await Promise.all(Array.from({ length: 16 }, (_, i) => vol.write(BigInt(i * 256), Buffer.alloc(4096, i + 1))));
  t.equal(vol.volumeState(), 'healthy', `a burst within every replica's pace ${JSON.stringify(vol.replicaStates())}`);
  replicas[0]!.writeDelayMs = 3000;
  const start = Date.now();
  await Promise.all(Array.from({ length: 40 }, (_, i) => vol.write(BigInt(i * 256), Buffer.alloc(4096, i + 1))));
  t.ok(Date.now() - start < 1500, 'the burst did not wait for the slow replica');
  await waitFor('r1 degraded', () => stateOf(vol, 'r1') === 'degraded', 3000);
  t.match(vol.replicaStates()[0]!.reason, /requests behind the write quorum \(max 16\)/);
  t.equal(vol.counters().inFlight['r1'], 0, 'its requests are abandoned');
  t.equal(vol.volumeState(), 'degraded');
});

t.test('losing replicas: degraded, then offline (held, EOFFLINE), quorum returns', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await cluster(t, { holdMs: 600 });
  await conns[0]!.close();
  await waitFor('r1 offline', () => stateOf(vol, 'r1') === 'offline', 3000);
  t.equal(vol.volumeState(), 'degraded');
  const a = randomBytes(4096);
  await vol.write(0n, a);
  const into = Buffer.alloc(4096);
  await vol.read(0n, 8, into);
  t.ok(into.equals(a), 'I/O continues with one replica gone');

  await conns[1]!.close();
  await waitFor('r2 offline', () => stateOf(vol, 'r2') === 'offline', 3000);
  t.equal(vol.volumeState(), 'offline');
  const start = Date.now();
  const err = await vol.write(8n, randomBytes(4096)).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof BlockDeviceError && err.code === 'EOFFLINE', 'write fails offline');
  t.ok(Date.now() - start >= 550, 'only after holdMs');
  await t.rejects(vol.read(0n, 8, into), { code: 'EOFFLINE' });

  // A held write completes once quorum is back: r2 returns (needs a rebuild), the rebuild "finishes".
  const b = randomBytes(4096);
  let done = false;
  const held = vol.write(16n, b).then(() => { done = true; });
  const conn2 = await replicas[1]!.connect();
  vol.attach(conn2);
  t.equal(stateOf(vol, 'r2'), 'degraded');
  t.equal(vol.replicaStates()[1]!.reason, 'needs rebuild');
  await new Promise((res) => setTimeout(res, 50));
  t.notOk(done, 'still held: a replica needing a rebuild is not in the quorum');
  vol.markRebuilding('r2');
  t.equal(stateOf(vol, 'r2'), 'rebuilding');
  await new Promise((res) => setTimeout(res, 50));
  t.notOk(done, 'still held: a rebuilding replica is not counted');
  vol.markHealthy('r2');
  await held;
  t.equal(vol.volumeState(), 'degraded');
  for (const r of [replicas[1]!, replicas[2]!]) t.ok((await storeRead(r, 16 * BS, 4096)).data.equals(b), `${r.id} holds the held write`);
  t.throws(() => vol.markHealthy('r1'), /not connected/);
});

t.test('a corrupted chunk is read from another copy and repaired', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await cluster(t);
  const data = randomBytes(128 * 1024);
  await vol.write(64n, data);
  await settled(vol);
  t.ok(corrupt(replicas[0]!, 64 * BS + 1024, data.subarray(1024)), 'corrupted r1\'s copy behind its store');
  const bad = await conns[0]!.read(64 * BS, data.length, 1).then(() => undefined, (e: unknown) => e);
  t.match(bad, { statusName: 'MediumError' }, 'r1 reports the checksum failure');
  // Three reads: round-robin sends one to r1.
  for (let i = 0; i < 3; i++) {
    const into = Buffer.alloc(data.length);
    await vol.read(64n, data.length / BS, into);
    t.ok(into.equals(data), `read ${i} returns the good data`);
  }
  t.equal(vol.counters().readRepairs, 1);
  t.equal(stateOf(vol, 'r1'), 'healthy', 'a media error does not eject');
  const fixed = await conns[0]!.read(64 * BS, data.length, 1);
  t.ok(fixed.data.equals(data), 'r1 serves the good data again');
  t.equal(vol.volumeState(), 'healthy');
});

t.test('a media error on every copy is reported as EMEDIUM', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t);
  const data = randomBytes(128 * 1024);
  await vol.write(0n, data);
  await settled(vol);
  for (const r of replicas) t.ok(corrupt(r, 0, data), `corrupted ${r.id}`);
  await t.rejects(vol.read(0n, 8, Buffer.alloc(4096)), { code: 'EMEDIUM', lba: 0n });
  t.equal(vol.volumeState(), 'healthy');
});

t.test('io_seq continues above what the replicas hold across attach', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t);
  await vol.write(0n, Buffer.alloc(4096, 1));
  await vol.write(8n, Buffer.alloc(4096, 2));
  const last = vol.nextIoSeq - 1;
  await settled(vol);
  await vol.close();
  for (const r of replicas) t.equal(r.store.info.highestIoSeq, last, `${r.id} applied up to ${last}`);
  // A new target instance: the counter starts above every replica's HELLO.
  const again = new ReplicatedVolume({ blockSize: BS, capacityBytes: CAPACITY, epoch: 1, replicaIds: ['r1', 'r2', 'r3'], logger: silentLogger() });
  t.teardown(() => again.close());
  for (const r of replicas) again.attach(await r.connect());
  t.equal(again.nextIoSeq, last + 1);
  t.equal(again.volumeState(), 'healthy', 'attached before any write: healthy');
  await again.write(0n, Buffer.alloc(4096, 3));
  for (const r of replicas) t.strictSame((await storeRead(r, 0, 4096)).ioSeqs, [last + 1], `${r.id} chunk stamped ${last + 1}`);
  // A replica re-attaching after writes needs a rebuild; io_seq keeps counting.
  const fresh = await replicas[0]!.connect();
  again.attach(fresh);
  t.equal(stateOf(again, 'r1'), 'degraded');
  await again.write(8n, Buffer.alloc(4096, 4));
  t.equal(again.nextIoSeq, last + 3);
});

t.test('a write in flight when quorum is lost completes once quorum returns, with its io_seq', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await cluster(t, { holdMs: 3000 });
  replicas[1]!.writeDelayMs = 1500;
  replicas[2]!.writeDelayMs = 1500;
  const data = randomBytes(4096);
  let done = false;
  const ioSeq = vol.nextIoSeq;
  const inFlight = vol.write(40n, data).then(() => { done = true; });
  await new Promise((res) => setTimeout(res, 50));
  await conns[1]!.close();
  await conns[2]!.close();
  await waitFor('volume offline', () => vol.volumeState() === 'offline', 3000);
  await new Promise((res) => setTimeout(res, 400));
  t.notOk(done, 'held: only one healthy replica acknowledged it');
  replicas[1]!.writeDelayMs = 0;
  vol.attach(await replicas[1]!.connect());
  vol.markHealthy('r2');
  await inFlight;
  t.equal(vol.nextIoSeq, ioSeq + 1, 'no new io_seq for the re-sent write');
  for (const r of [replicas[0]!, replicas[1]!]) {
    const got = await storeRead(r, 40 * BS, 4096);
    t.ok(got.data.equals(data), `${r.id} holds the write`);
    t.strictSame(got.ioSeqs, [ioSeq], `${r.id} stamped with the original io_seq`);
  }
});

t.test('a flush reaches each replica after the writes sent to it earlier', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t);
  replicas[2]!.writeDelayMs = 2000;
  const start = Date.now();
  await vol.write(0n, randomBytes(4096));
  await vol.flush();
  t.ok(Date.now() - start < 1000, 'write and flush completed on the fast quorum');
  t.strictSame(replicas[2]!.events, [], 'the slow replica has not synced yet');
  await waitFor("r3's write and sync", () => replicas[2]!.events.length === 2, 5000);
  t.strictSame(replicas[2]!.events, ['write-done', 'flush'], 'its SYNC waited for its write');
  t.strictSame(replicas[0]!.events, ['write-done', 'flush']);
});

t.test('reads avoid a replica lagging behind the quorum', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t);
  const data = randomBytes(4096);
  await vol.write(0n, data);
  replicas[0]!.writeDelayMs = 3000;
  await vol.write(8n, randomBytes(4096));
  const start = Date.now();
  for (let i = 0; i < 4; i++) await vol.read(0n, 8, Buffer.alloc(4096));
  t.ok(Date.now() - start < 1500, `reads served by the caught-up replicas (${Date.now() - start} ms)`);
});

t.test('every replica slow: writes wait, nobody is ejected', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t, { ioDeadlineMs: 150 });
  for (const r of replicas) r.writeDelayMs = 400;
  const start = Date.now();
  await vol.write(0n, randomBytes(4096));
  t.ok(Date.now() - start >= 350, 'the write waited for the quorum');
  t.equal(vol.volumeState(), 'healthy', 'a replica the quorum waits on is not ejected for slowness');
  t.equal(vol.counters().ejections, 0);
});

t.test('a read to a replica that does not answer is retried elsewhere', { timeout: 15_000 }, async (t) => {
  const { vol, replicas } = await cluster(t, { ioDeadlineMs: 200 });
  const data = randomBytes(4096);
  await vol.write(0n, data);
  await settled(vol);
  replicas[0]!.readDelayMs = 5000;
  for (let i = 0; i < 3; i++) {
    const start = Date.now();
    const into = Buffer.alloc(4096);
    await vol.read(0n, 8, into);
    t.ok(into.equals(data), `read ${i}`);
    t.ok(Date.now() - start < 2500, `read ${i} took ${Date.now() - start} ms`);
  }
  t.equal(stateOf(vol, 'r1'), 'degraded');
  t.match(vol.replicaStates()[0]!.reason, /no answer within 200 ms/);
});

t.test('a held write is re-sent to a replica re-admitted on the same connection', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await cluster(t, { ioDeadlineMs: 200, holdMs: 5000 });
  await conns[0]!.close();
  await waitFor('r1 offline', () => stateOf(vol, 'r1') === 'offline', 3000);
  replicas[2]!.writeDelayMs = 2500;
  replicas[2]!.readDelayMs = 5000;
  const data = randomBytes(4096);
  let done = false;
  const write = vol.write(80n, data).then(() => { done = true; });
  // Reads rotate over r2 and r3; the one sent to r3 times out, ejecting r3 and abandoning its write.
  const reads = [vol.read(0n, 8, Buffer.alloc(4096)), vol.read(0n, 8, Buffer.alloc(4096))];
  await waitFor('r3 degraded', () => stateOf(vol, 'r3') === 'degraded', 2000);
  t.equal(vol.volumeState(), 'offline');
  await new Promise((res) => setTimeout(res, 100));
  t.notOk(done, 'held: only r2 acknowledged');
  replicas[2]!.readDelayMs = 0;
  vol.markHealthy('r3');
  await write;
  await Promise.all(reads);
  t.ok((await storeRead(replicas[2]!, 80 * BS, 4096)).data.equals(data), 'r3 got the re-sent write');
});

/** A cluster whose replicas send a store instance, as real replica processes do. */
async function instanced(t: Test, options: Partial<ReplicatedVolumeOptions> = {}): ReturnType<typeof cluster> {
  const c = await cluster(t, options);
  // The first connections carried none: re-attach each once with its instance (before any write, so healthy).
  for (const [i, r] of c.replicas.entries()) {
    r.instance = `instance-of-${r.id}`;
    c.conns[i] = await r.connect();
    c.vol.attach(c.conns[i]!);
  }
  return c;
}

t.test('every replica drops at once and returns with its store instance: healthy without a rebuild, held write completes', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await instanced(t, { holdMs: 5000 });
  const a = randomBytes(4096);
  await vol.write(0n, a);
  await settled(vol);
  // A network blip on the target's node: every replica connection drops together.
  for (const c of conns) await c.close();
  await waitFor('volume offline', () => vol.volumeState() === 'offline', 3000);
  const b = randomBytes(4096);
  let done = false;
  const held = vol.write(8n, b).then(() => { done = true; });
  await new Promise((res) => setTimeout(res, 50));
  t.notOk(done, 'held while no replica is connected');
  for (const r of replicas) vol.attach(await r.connect());
  t.strictSame(vol.replicaStates().map((s) => s.state), ['healthy', 'healthy', 'healthy'], 'each returned intact');
  t.equal(vol.volumeState(), 'healthy');
  await held;
  await settled(vol);
  for (const r of replicas) {
    t.ok((await storeRead(r, 0, 4096)).data.equals(a), `${r.id} holds the write from before the blip`);
    t.ok((await storeRead(r, 8 * BS, 4096)).data.equals(b), `${r.id} holds the write held across it`);
  }
});

t.test('a returning replica needs a rebuild if a write completed without it, or if its store instance changed', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await instanced(t);
  // r3 away while a write completes on r1 and r2.
  await conns[2]!.close();
  await waitFor('r3 offline', () => stateOf(vol, 'r3') === 'offline', 3000);
  await vol.write(0n, randomBytes(4096));
  vol.attach(await replicas[2]!.connect());
  t.equal(stateOf(vol, 'r3'), 'degraded', 'it missed a write');
  t.equal(vol.replicaStates()[2]!.reason, 'needs rebuild');

  // r2 restarted (a new store instance) while nothing was written: it may have lost unflushed writes.
  await conns[1]!.close();
  await waitFor('r2 offline', () => stateOf(vol, 'r2') === 'offline', 3000);
  replicas[1]!.instance = 'instance-of-r2-after-a-restart';
  vol.attach(await replicas[1]!.connect());
  t.equal(stateOf(vol, 'r2'), 'degraded', 'another instance');

  // r1 drops and returns with nothing completed meanwhile (volume offline): intact.
  await conns[0]!.close();
  await waitFor('r1 offline', () => stateOf(vol, 'r1') === 'offline', 3000);
  vol.attach(await replicas[0]!.connect());
  t.equal(stateOf(vol, 'r1'), 'healthy', 'nothing completed without it');
});

t.test('a write completed while still in flight on a replica that then drops makes it need a rebuild', { timeout: 15_000 }, async (t) => {
  const { vol, replicas, conns } = await instanced(t);
  replicas[2]!.writeDelayMs = 3000;
  await vol.write(0n, randomBytes(4096));
  t.equal(vol.counters().inFlight['r3'], 1, 'r3 still has it');
  await conns[2]!.close();
  await waitFor('r3 offline', () => stateOf(vol, 'r3') === 'offline', 3000);
  replicas[2]!.writeDelayMs = 0;
  vol.attach(await replicas[2]!.connect());
  t.equal(stateOf(vol, 'r3'), 'degraded', 'the write it owed was abandoned with its connection');

  // A new connection replacing one that still owes a completed write: judged at once, not healthy.
  replicas[2]!.writeDelayMs = 3000;
  vol.markRebuilding('r3');
  vol.markHealthy('r3');
  await vol.write(16n, randomBytes(4096));
  t.equal(vol.counters().inFlight['r3'], 1, 'r3 owes the write');
  vol.attach(await replicas[2]!.connect());
  t.equal(stateOf(vol, 'r3'), 'degraded', 'the connection it replaced still owed a completed write');
  replicas[2]!.writeDelayMs = 0;

  // One that answers what it owed before dropping stays intact.
  replicas[1]!.writeDelayMs = 300;
  await vol.write(8n, randomBytes(4096));
  await waitFor('r2 answered', () => vol.counters().inFlight['r2'] === 0, 3000);
  await conns[1]!.close();
  await waitFor('r2 offline', () => stateOf(vol, 'r2') === 'offline', 3000);
  replicas[1]!.writeDelayMs = 0;
  vol.attach(await replicas[1]!.connect());
  t.equal(stateOf(vol, 'r2'), 'healthy', 'it answered every write before it dropped');
});
