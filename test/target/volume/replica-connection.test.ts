import t, { type Test } from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { ReplicaListener, type HelloVerdict } from '../../../src/target/volume/replica-listener.js';
import { ReplicaConnection } from '../../../src/target/volume/replica-connection.js';
import { ReplicaBlockDevice } from '../../../src/target/volume/replica-device.js';
import { BlockDeviceError, type BlockDevice } from '../../../src/target/volume/block-device.js';
import { TargetLink, type TargetLinkOptions } from '../../../src/replica/target-link.js';
import { StoreError, StoreErrorCode } from '../../../src/replica/store-api.js';
import { FrameReader } from '../../../src/protocol/replica/frame-reader.js';
import {
  FrameFlag, Opcode, ReplicaIoError, ReplicaStatus, encodeFrame, encodeIoSeqs, type ReplicaHello,
} from '../../../src/protocol/replica/frame.js';
import { silentLogger } from '../../../src/shared/logger.js';
import { MemoryStore } from '../../fixtures/memory-store.js';
import { rng } from '../../fixtures/pdu-builder.js';
import { waitFor } from '../../fixtures/wait-for.js';

const VOLUME_UUID = '00000000-0000-4000-8000-000000000001';

interface Pair {
  readonly store: MemoryStore;
  readonly listener: ReplicaListener;
  readonly link: TargetLink;
  readonly port: number;
  /** Every accepted connection, in order. */
  readonly connections: ReplicaConnection[];
  /** Resolves with the n-th accepted connection (1-based). */
  nth(n: number): Promise<ReplicaConnection>;
}

async function pair(t: Test, store: MemoryStore, options: {
  accept?: (hello: ReplicaHello) => HelloVerdict;
  link?: Partial<TargetLinkOptions>;
  connection?: { maxInFlight?: number; maxInFlightBytes?: number; requestTimeoutMs?: number };
} = {}): Promise<Pair> {
  const connections: ReplicaConnection[] = [];
  const waiters: (() => void)[] = [];
  const listener = new ReplicaListener({
    logger: silentLogger(),
    accept: options.accept ?? (hello => (hello.volumeUuid === VOLUME_UUID ? { ok: true, epoch: 1 } : { ok: false, reason: 'unknown volume' })),
    onConnection: conn => { connections.push(conn); for (const w of waiters.splice(0)) w(); },
    handshakeTimeoutMs: 2000,
    ...(options.connection ? { connection: options.connection } : {}),
  });
  const { port } = await listener.listen('127.0.0.1', 0);
  const link = new TargetLink({
    host: '127.0.0.1', port, store, controlAddress: '127.0.0.1:9500', logger: silentLogger(),
    minBackoffMs: 20, maxBackoffMs: 200, handshakeTimeoutMs: 2000, ...options.link,
  });
  t.teardown(async () => {
    await link.stop();
    for (const c of connections) await c.close();
    await listener.close();
  });
  link.start();
  return {
    store, listener, link, port, connections,
    async nth(n: number): Promise<ReplicaConnection> {
      while (connections.length < n) await new Promise<void>(r => waiters.push(r));
      return connections[n - 1]!;
    },
  };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

t.test('HELLO handshake and a device over the connection', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ capacityBytes: 1 << 20, blockSize: 512, chunkSize: 4096, epoch: 1, highestIoSeq: 100 });
  const p = await pair(t, store);
  const conn = await p.nth(1);
  t.equal(conn.hello.volumeUuid, VOLUME_UUID);
  t.equal(conn.hello.highestIoSeq, 100);
  t.equal(conn.hello.controlAddress, '127.0.0.1:9500');
  t.equal(conn.hello.pid, process.pid);
  await waitFor('link connected', () => p.link.state === 'connected', 5000);
  t.ok(p.link.responder, 'responder attached');
  const dev = new ReplicaBlockDevice({ connection: conn, epoch: 1 });
  t.equal(dev.blockSize, 512);
  t.equal(dev.blockCount, 2048n);
  t.equal(dev.writeCache, true);
  t.equal((dev as BlockDevice).loadState, undefined, 'no state store yet');
  await dev.write(8n, Buffer.alloc(1024, 0xab), { fua: true });
  t.strictSame(store.writeLog, [{ offset: 4096, length: 1024, ioSeq: 101, fua: true }], 'io_seq starts above HELLO highestIoSeq');
  const into = Buffer.alloc(2048);
  await dev.read(7n, 4, into);
  t.same(into, Buffer.concat([Buffer.alloc(512), Buffer.alloc(1024, 0xab), Buffer.alloc(512)]));
  await dev.flush();
  t.equal(store.stats().syncs, 1);
  t.strictSame(await dev.mapStatus(8n, 64), { blocks: 8, mapped: true }, 'chunk-granular mapped extent');
  t.strictSame(await dev.mapStatus(16n, 16), { blocks: 16, mapped: false });
  await dev.writeZeroes(8n, 8);
  await dev.unmap(0n, 8);
  t.equal(dev.nextIoSeq, 104);
  await dev.read(8n, 2, into.subarray(0, 1024));
  t.same(into.subarray(0, 1024), Buffer.alloc(1024));
  const rr = await conn.read(0, 8192, 1);
  t.strictSame([...rr.ioSeqs], [103, 102], 'per-chunk io_seqs');
  t.ok((await conn.ping()) >= 0);
  await t.rejects(dev.read(2048n, 1, Buffer.alloc(512)), { code: 'ERANGE' });
});

t.test('QD 32 pipelining with out-of-order completion', { timeout: 15_000 }, async t => {
  const store = new MemoryStore({ capacityBytes: 4 << 20, blockSize: 4096, chunkSize: 4096, epoch: 1 });
  const next = rng(11);
  store.delay = () => Math.floor(next() * 20);
  const p = await pair(t, store, { connection: { maxInFlight: 32 } });
  const conn = await p.nth(1);
  const order: number[] = [];
  const writes = Array.from({ length: 32 }, (_, i) =>
    conn.write(i * 8192, Buffer.alloc(8192, i + 1), { epoch: 1, ioSeq: i + 1 }).then(() => order.push(i)));
  await Promise.all(writes);
  t.notSame(order, [...order].sort((a, b) => a - b), 'completions out of order');
  const reads = await Promise.all(Array.from({ length: 32 }, (_, i) => conn.read(i * 8192, 8192, 1)));
  reads.forEach((r, i) => {
    if (!r.data.equals(Buffer.alloc(8192, i + 1))) t.fail(`read ${i}`);
    if (r.ioSeqs[0] !== i + 1 || r.ioSeqs[1] !== i + 1) t.fail(`io_seqs ${i}`);
  });
  t.equal(conn.counters().completed, 64);
  t.equal(store.acquired.size, 0);
});

t.test('in-flight bound queues the rest', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  store.delay = () => 3;
  const p = await pair(t, store, { connection: { maxInFlight: 4 } });
  const conn = await p.nth(1);
  const all = Array.from({ length: 40 }, () => conn.read(0, 512, 1));
  const k = conn.counters();
  t.equal(k.inFlight, 4);
  t.equal(k.queued, 36);
  await Promise.all(all);
  t.equal(conn.counters().queued, 0);
});

t.test('in-flight byte bound queues writes', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  store.delay = () => 3;
  const p = await pair(t, store, { connection: { maxInFlight: 64, maxInFlightBytes: 4096 } });
  const conn = await p.nth(1);
  const all = Array.from({ length: 20 }, (_, i) => conn.write(i * 512, Buffer.alloc(512, i), { epoch: 1, ioSeq: i + 1 }));
  all.push(conn.write(0, Buffer.alloc(16384), { epoch: 1, ioSeq: 100 }));
  t.equal(conn.counters().inFlight, 8, '4096 bytes of 512-byte writes');
  t.equal(conn.counters().queued, 13);
  await Promise.all(all);
  t.equal(store.writeLog.length, 21, 'a write larger than the bound still goes (alone)');
});

t.test('errors map to ReplicaIoError and BlockDeviceError', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ capacityBytes: 1 << 20, epoch: 2 });
  store.fail = (op, offset) => {
    if (op === 'read' && offset === 4096) return new StoreError(StoreErrorCode.Medium, 'bad chunk', 4096);
    if (op === 'write' && offset === 0) return new StoreError(StoreErrorCode.NoSpace, 'pool full');
    if (op === 'write' && offset === 512) return new StoreError(StoreErrorCode.Io, 'disk error');
    return undefined;
  };
  const p = await pair(t, store);
  const conn = await p.nth(1);
  const dev = new ReplicaBlockDevice({ connection: conn, epoch: 2 });
  const medium = await rejection(dev.read(8n, 8, Buffer.alloc(4096)));
  t.ok(medium instanceof BlockDeviceError);
  t.equal((medium as BlockDeviceError).code, 'EMEDIUM');
  t.equal((medium as BlockDeviceError).lba, 8n, 'first bad LBA');
  t.equal(((await rejection(dev.write(0n, Buffer.alloc(512)))) as BlockDeviceError).code, 'ENOSPC');
  t.equal(((await rejection(dev.write(1n, Buffer.alloc(512)))) as BlockDeviceError).code, 'EIO');
  const range = await rejection(conn.read(1 << 20, 512, 2));
  t.equal((range as ReplicaIoError).status, ReplicaStatus.OutOfRange);
  const stale = await rejection(conn.read(0, 512, 1));
  t.equal((stale as ReplicaIoError).status, ReplicaStatus.StaleEpoch, 'epoch fencing');
  const fenced = new ReplicaBlockDevice({ connection: conn, epoch: 1 });
  t.equal(((await rejection(fenced.flush())) as BlockDeviceError).code, 'EIO');
  t.ok(conn.isOpen, 'errors do not close the connection');
});

t.test('reconnect with backoff after the target side closes', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  const disconnects: string[] = [];
  const p = await pair(t, store, { link: { onDisconnected: reason => disconnects.push(reason) } });
  const first = await p.nth(1);
  store.delay = () => 200;
  const pending = rejection(first.read(0, 512, 1));
  const dev = new ReplicaBlockDevice({ connection: first, epoch: 1 });
  const pendingDev = rejection(dev.write(0n, Buffer.alloc(512)));
  await new Promise(r => setTimeout(r, 20));
  await first.close();
  const err = await pending;
  t.equal((err as ReplicaIoError).status, ReplicaStatus.Closed, 'pending request failed with CLOSED');
  t.equal(((await pendingDev) as BlockDeviceError).code, 'EOFFLINE');
  t.equal(((await rejection(first.ping())) as ReplicaIoError).status, ReplicaStatus.Closed, 'new requests fail too');
  store.delay = undefined;
  const second = await p.nth(2);
  t.ok(second.isOpen);
  await second.ping();
  t.equal(p.link.counters().connects, 2);
  t.ok(disconnects.length >= 1);
  t.match(first.hello.instance, /^[0-9a-f-]{36}$/, 'the HELLO names the store instance');
  t.equal(second.hello.instance, first.hello.instance, 'the same on every reconnection of the link');
  t.equal(second.hello.completeIoSeq, store.completeIoSeq, 'the HELLO says through which io_seq the store is complete');
});

t.test('refused HELLO is retried at the maximum backoff', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ volumeUuid: 'someone-else', epoch: 1 });
  const refusals: string[] = [];
  const started = Date.now();
  const p = await pair(t, store, { link: { maxBackoffMs: 150, onRefused: m => refusals.push(m) } });
  while (refusals.length < 3) await new Promise(r => setTimeout(r, 10));
  const elapsed = Date.now() - started;
  t.match(refusals[0], /unknown volume/, 'target message reported');
  t.ok(elapsed >= 2 * 150 * 0.75, `retried at the max backoff (${elapsed} ms for 3 tries)`);
  t.equal(p.connections.length, 0);
  t.equal(p.link.counters().connects, 0);
  t.equal(p.link.counters().refusals, refusals.length);
});

t.test('link keeps retrying while the target is down, then connects', { timeout: 10_000 }, async t => {
  // Reserve a port, free it, and let the link fail against it first.
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as { port: number }).port;
  await new Promise(r => probe.close(r));
  const store = new MemoryStore({ epoch: 1 });
  const link = new TargetLink({ host: '127.0.0.1', port, store, controlAddress: 'x', logger: silentLogger(), minBackoffMs: 10, maxBackoffMs: 50 });
  link.start();
  const conns: ReplicaConnection[] = [];
  const listener = new ReplicaListener({ logger: silentLogger(), accept: () => ({ ok: true }), onConnection: c => conns.push(c) });
  t.teardown(async () => { await link.stop(); for (const c of conns) await c.close(); await listener.close(); });
  while (link.counters().failures < 3) await new Promise(r => setTimeout(r, 5));
  await listener.listen('127.0.0.1', port);
  while (conns.length === 0) await new Promise(r => setTimeout(r, 5));
  await conns[0]!.ping();
  t.equal(link.state, 'connected');
  await link.stop();
  t.equal(link.state, 'stopped');
  await conns[0]!.closed;
  t.notOk(conns[0]!.isOpen, 'stop() closed the connection');
});

t.test('listener drops a silent peer and refuses a non-HELLO', { timeout: 10_000 }, async t => {
  const listener = new ReplicaListener({ logger: silentLogger(), accept: () => ({ ok: true }), onConnection: () => t.fail('no connection'), handshakeTimeoutMs: 100 });
  const { port } = await listener.listen('127.0.0.1', 0);
  t.teardown(() => listener.close());
  const silent = connect(port, '127.0.0.1');
  silent.on('error', () => undefined);
  const start = Date.now();
  await once(silent, 'close');
  t.ok(Date.now() - start < 2000, 'silent peer dropped after the handshake timeout');

  const wrong = connect(port, '127.0.0.1');
  wrong.on('error', () => undefined);
  await once(wrong, 'connect');
  for (const b of encodeFrame({ opcode: Opcode.Ping, tag: 9 })) wrong.write(b);
  const answers: number[] = [];
  const reader = new FrameReader({}, f => answers.push(f.header.status), () => undefined);
  wrong.on('data', c => reader.push(c));
  await once(wrong, 'close');
  t.strictSame(answers, [ReplicaStatus.Invalid]);

  const bad = connect(port, '127.0.0.1');
  bad.on('error', () => undefined);
  await once(bad, 'connect');
  const hdr = encodeFrame({ opcode: Opcode.Hello, tag: 0 }, Buffer.from('{"not":"a hello"}'))[0]!;
  hdr.writeUInt32LE(0, 0);
  bad.write(hdr);
  await once(bad, 'close');
  t.pass('broken HELLO header closes the socket');
});

/** A target-side ReplicaConnection against a hand-driven fake replica. */
async function fake(t: Test): Promise<{ conn: ReplicaConnection; replica: Socket; requests: { opcode: number; tag: number; length: number; offset: number }[] }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection');
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const [replica] = (await accepted) as [Socket];
  replica.on('error', () => undefined);
  const requests: { opcode: number; tag: number; length: number; offset: number }[] = [];
  const reader = new FrameReader({}, f => requests.push({ opcode: f.header.opcode, tag: f.header.tag, length: f.header.length, offset: f.header.offset }), () => undefined);
  replica.on('data', c => reader.push(c));
  const hello: ReplicaHello = {
    volumeName: 'v', volumeUuid: VOLUME_UUID, replicaId: 'r', controlAddress: '', epoch: 1, checkpointedIoSeq: 0,
    highestIoSeq: 0, capacityBytes: 1 << 20, blockSize: 512, chunkSize: 4096, pid: 1,
  };
  const conn = new ReplicaConnection(socket, hello, { logger: silentLogger(), requestTimeoutMs: 300 });
  t.teardown(async () => { await conn.close(); replica.destroy(); await new Promise(r => server.close(r)); });
  return { conn, replica, requests };
}


t.test('READ payload CRC mismatch fails the request, not the connection', { timeout: 10_000 }, async t => {
  const { conn, replica, requests } = await fake(t);
  const p = conn.read(0, 512, 1);
  await waitFor('1 request', () => requests.length === 1, 5000);
  const req = requests[0]!;
  const [h, d, s] = encodeFrame({ opcode: Opcode.Read, flags: FrameFlag.Response, tag: req.tag, length: 512 }, Buffer.alloc(512, 3), encodeIoSeqs([1]));
  const corrupt = Buffer.from(d!);
  corrupt.writeUInt8(9, 7);
  replica.write(h!); replica.write(corrupt); replica.write(s!);
  t.equal(((await rejection(p)) as ReplicaIoError).status, ReplicaStatus.BadPayloadCrc);
  t.ok(conn.isOpen);
  const q = conn.ping();
  await waitFor('2 requests', () => requests.length === 2, 5000);
  for (const b of encodeFrame({ opcode: Opcode.Ping, flags: FrameFlag.Response, tag: requests[1]!.tag })) replica.write(b);
  await q;
  t.pass('connection still usable');
});

t.test('an unknown tag or a short READ drops or fails as it should', { timeout: 10_000 }, async t => {
  const { conn, replica, requests } = await fake(t);
  const short = conn.read(0, 512, 1);
  await waitFor('1 request', () => requests.length === 1, 5000);
  for (const b of encodeFrame({ opcode: Opcode.Read, flags: FrameFlag.Response, tag: requests[0]!.tag, length: 512 }, Buffer.alloc(100))) replica.write(b);
  t.equal(((await rejection(short)) as ReplicaIoError).status, ReplicaStatus.Invalid, 'wrong READ payload size');
  const pending = conn.sync(1);
  for (const b of encodeFrame({ opcode: Opcode.Sync, flags: FrameFlag.Response, tag: 0xdead })) replica.write(b);
  t.equal(((await rejection(pending)) as ReplicaIoError).status, ReplicaStatus.Closed, 'unknown tag drops the connection');
  t.notOk(conn.isOpen);
});

t.test('an unanswered request times out and drops the connection', { timeout: 10_000 }, async t => {
  const { conn } = await fake(t);
  const reasons: string[] = [];
  conn.onClose(r => reasons.push(r));
  const err = await rejection(conn.write(0, Buffer.alloc(512), { epoch: 1, ioSeq: 1 }));
  t.equal((err as ReplicaIoError).status, ReplicaStatus.Closed);
  t.match(reasons[0], /unanswered/);
});
