import t, { type Test } from 'tap';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { DataResponder, type DataResponderOptions } from '../../src/replica/data-responder.js';
import { StoreError, StoreErrorCode } from '../../src/replica/store-api.js';
import { FrameReader, type ReceivedFrame } from '../../src/protocol/replica/frame-reader.js';
import {
  FrameFlag, Opcode, ReplicaStatus, decodeIoSeqs, decodeMapStatus, encodeFrame, encodeHeader, type FrameError, type FrameFields,
} from '../../src/protocol/replica/frame.js';
import { silentLogger } from '../../src/shared/logger.js';
import { MemoryStore } from '../fixtures/memory-store.js';
import { rng } from '../fixtures/pdu-builder.js';
import { waitFor } from '../fixtures/wait-for.js';

interface Client {
  readonly socket: Socket;
  readonly responses: ReceivedFrame[];
  send(fields: FrameFields, ...payload: Buffer[]): void;
  sendRaw(buf: Buffer): void;
  /** Resolves with the response for `tag`. */
  response(tag: number): Promise<ReceivedFrame>;
  /** Resolves once `n` responses arrived. */
  count(n: number): Promise<void>;
}

interface Rig {
  readonly server: Server;
  readonly port: number;
  readonly responders: DataResponder[];
  readonly fatal: FrameError[];
  client(): Promise<Client>;
}

async function rig(t: Test, store: MemoryStore, options: Partial<DataResponderOptions> = {}): Promise<Rig> {
  const responders: DataResponder[] = [];
  const fatal: FrameError[] = [];
  const sockets = new Set<Socket>();
  const server = createServer(socket => {
    sockets.add(socket);
    responders.push(new DataResponder(socket, store, { logger: silentLogger(), ...options, onFatal: err => fatal.push(err) }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const clients: Socket[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    for (const s of sockets) s.destroy();
    await new Promise(r => server.close(r));
  });
  return {
    server, port, responders, fatal,
    async client(): Promise<Client> {
      const socket = connect(port, '127.0.0.1');
      clients.push(socket);
      await once(socket, 'connect');
      const responses: ReceivedFrame[] = [];
      const waiters: (() => void)[] = [];
      const reader = new FrameReader({}, f => {
        responses.push({ ...f, payload: Buffer.from(f.payload) });
        for (const w of waiters.splice(0)) w();
      }, err => { throw err; });
      socket.on('data', c => reader.push(c));
      socket.on('error', () => undefined);
      const until = async (pred: () => boolean): Promise<void> => {
        while (!pred()) await new Promise<void>(r => waiters.push(r));
      };
      return {
        socket, responses,
        send: (fields, ...payload) => { for (const b of encodeFrame(fields, ...payload)) socket.write(b); },
        sendRaw: buf => { socket.write(buf); },
        response: async tag => {
          await until(() => responses.some(r => r.header.tag === tag));
          return responses.find(r => r.header.tag === tag)!;
        },
        count: n => until(() => responses.length >= n),
      };
    },
  };
}

const message = (f: ReceivedFrame): string => f.payload.toString('utf8');

t.test('QD 32 pipelining with out-of-order completion', { timeout: 15_000 }, async t => {
  const store = new MemoryStore({ capacityBytes: 1 << 20, epoch: 1 });
  const next = rng(3);
  store.delay = () => Math.floor(next() * 15);
  const r = await rig(t, store);
  const c = await r.client();
  const block = (i: number): Buffer => Buffer.alloc(4096, i + 1);
  for (let i = 0; i < 32; i++) c.send({ opcode: Opcode.Write, tag: 100 + i, epoch: 1, ioSeq: i + 1, offset: i * 4096, length: 4096 }, block(i));
  await c.count(32);
  t.ok(c.responses.every(f => f.header.status === ReplicaStatus.Ok && (f.header.flags & FrameFlag.Response) !== 0), 'all writes OK');
  const order = c.responses.map(f => f.header.tag);
  t.notSame(order, [...order].sort((a, b) => a - b), 'completions arrived out of order');
  t.equal(store.acquired.size, 0, 'pooled write buffers released');
  t.equal(store.writeLog.length, 32);
  for (let i = 0; i < 32; i++) c.send({ opcode: Opcode.Read, tag: 200 + i, epoch: 1, offset: i * 4096 + 512, length: 4096 });
  await c.count(64);
  for (let i = 0; i < 32; i++) {
    const f = await c.response(200 + i);
    t.equal(f.header.status, ReplicaStatus.Ok);
    t.ok(f.payloadCrcOk);
    t.equal(f.payload.length, 4096 + 2 * 8, 'data + two io_seqs (range straddles chunks)');
    const expected = Buffer.concat([block(i).subarray(512), i < 31 ? block(i + 1).subarray(0, 512) : Buffer.alloc(512)]);
    if (!f.payload.subarray(0, 4096).equals(expected)) t.fail(`read ${i} data`);
    t.strictSame([...decodeIoSeqs(f.payload.subarray(4096))!], [i + 1, i < 31 ? i + 2 : 0], `read ${i} io_seqs`);
  }
  await waitFor('read buffers released', () => store.outstandingReads === 0, 3000);
  t.equal(store.outstandingReads, 0, 'read buffers released after the write');
  t.equal(r.responders[0]!.counters().responses.Ok, 64);
});

t.test('bad input is answered with the right status and the connection survives', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ capacityBytes: 1 << 20, blockSize: 512, epoch: 3 });
  const r = await rig(t, store);
  const c = await r.client();
  const data = Buffer.alloc(512, 7);
  // Bad payload CRC: the header says one CRC, the bytes differ.
  const [wh] = encodeFrame({ opcode: Opcode.Write, tag: 1, epoch: 3, ioSeq: 1, offset: 0, length: 512 }, data);
  c.sendRaw(wh!);
  c.sendRaw(Buffer.alloc(512, 8));
  c.send({ opcode: Opcode.Read, tag: 2, epoch: 2, offset: 0, length: 512 });
  c.send({ opcode: Opcode.Read, tag: 3, epoch: 3, offset: 100, length: 512 });
  c.send({ opcode: Opcode.Read, tag: 4, epoch: 3, offset: 0, length: 100 });
  c.send({ opcode: Opcode.Read, tag: 5, epoch: 3, offset: (1 << 20) - 512, length: 1024 });
  c.send({ opcode: 99, tag: 6, epoch: 3 });
  c.send({ opcode: Opcode.Write, tag: 7, epoch: 3, ioSeq: 1, offset: 0, length: 1024 }, data);
  c.send({ opcode: Opcode.Hello, tag: 8, epoch: 3 });
  c.send({ opcode: Opcode.Read, tag: 9, epoch: 3, offset: 0, length: 0 });
  c.send({ opcode: Opcode.Write, tag: 10, epoch: 1, ioSeq: 1, offset: 0, length: 512 }, data);
  c.send({ opcode: Opcode.Ping, tag: 11 });
  const expected: [number, number][] = [
    [1, ReplicaStatus.BadPayloadCrc], [2, ReplicaStatus.StaleEpoch], [3, ReplicaStatus.Misaligned], [4, ReplicaStatus.Misaligned],
    [5, ReplicaStatus.OutOfRange], [6, ReplicaStatus.UnknownOpcode], [7, ReplicaStatus.Invalid], [8, ReplicaStatus.Invalid],
    [9, ReplicaStatus.Invalid], [10, ReplicaStatus.StaleEpoch], [11, ReplicaStatus.Ok],
  ];
  for (const [tag, status] of expected) {
    const f = await c.response(tag);
    t.equal(f.header.status, status, `tag ${tag}: status ${status}`);
    if (status !== ReplicaStatus.Ok) t.ok(message(f).length > 0, `tag ${tag}: message "${message(f)}"`);
  }
  t.equal(store.writeLog.length, 0, 'nothing reached the store');
  t.equal(store.acquired.size, 0, 'pooled buffers of refused writes released');
  const k = r.responders[0]!.counters();
  t.equal(k.responses.BadPayloadCrc, 1);
  t.equal(k.responses.StaleEpoch, 2);
  t.equal(k.responses.Misaligned, 2);
  t.equal(k.responses.OutOfRange, 1);
  t.equal(k.responses.UnknownOpcode, 1);
  t.equal(k.responses.Invalid, 3);
  t.equal(k.framingErrors, 0);
  // A response frame sent to the replica is dropped, not answered.
  c.send({ opcode: Opcode.Ping, flags: FrameFlag.Response, tag: 12 });
  c.send({ opcode: Opcode.Write, tag: 13, epoch: 3, ioSeq: 1, offset: 0, length: 512 }, data);
  t.equal((await c.response(13)).header.status, ReplicaStatus.Ok, 'still serving');
  t.equal(r.responders[0]!.counters().ignored, 1);
  t.notOk(c.responses.some(f => f.header.tag === 12));
});

t.test('store errors are mapped', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ capacityBytes: 1 << 20, epoch: 1 });
  store.fail = (op, offset) => {
    if (op === 'read' && offset === 8192) return new StoreError(StoreErrorCode.Medium, 'checksum mismatch', 12288);
    if (op === 'read' && offset === 0) return new StoreError(StoreErrorCode.Io, 'disk gone');
    if (op === 'write') return new StoreError(StoreErrorCode.NoSpace, 'full');
    if (op === 'flush') return new Error('unexpected');
    return undefined;
  };
  const r = await rig(t, store);
  const c = await r.client();
  c.send({ opcode: Opcode.Read, tag: 1, epoch: 1, offset: 8192, length: 8192 });
  c.send({ opcode: Opcode.Read, tag: 2, epoch: 1, offset: 0, length: 512 });
  c.send({ opcode: Opcode.Write, tag: 3, epoch: 1, ioSeq: 1, offset: 0, length: 512 }, Buffer.alloc(512));
  c.send({ opcode: Opcode.Sync, tag: 4, epoch: 1 });
  c.send({ opcode: Opcode.MapStatus, tag: 5, epoch: 1, offset: 0, length: 65536 });
  const medium = await c.response(1);
  t.equal(medium.header.status, ReplicaStatus.MediumError);
  t.equal(medium.header.offset, 12288, 'failing offset in the header');
  t.equal((await c.response(2)).header.status, ReplicaStatus.IoError);
  t.equal((await c.response(3)).header.status, ReplicaStatus.NoSpace);
  t.equal((await c.response(4)).header.status, ReplicaStatus.IoError, 'a non-store error is IO_ERROR');
  const ms = await c.response(5);
  t.strictSame(decodeMapStatus(ms.payload), { length: 65536, mapped: false });
  t.equal(store.acquired.size, 0);
});

t.test('a corrupted header closes only that connection', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  const r = await rig(t, store);
  const a = await r.client();
  const b = await r.client();
  const bad = encodeHeader({ opcode: Opcode.Ping, tag: 1 });
  bad.writeUInt8(bad.readUInt8(30) ^ 1, 30);
  const closed = once(a.socket, 'close');
  a.sendRaw(bad);
  await closed;
  t.equal(r.fatal.length, 1, 'fatal callback once');
  t.equal(r.fatal[0]!.code, 'BAD_HEADER_CRC');
  b.send({ opcode: Opcode.Ping, tag: 2 });
  t.equal((await b.response(2)).header.status, ReplicaStatus.Ok, 'the other connection is fine');
});

t.test('epoch fencing: a newer epoch is persisted, older ones refused afterwards', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  const r = await rig(t, store);
  const c = await r.client();
  c.send({ opcode: Opcode.Write, tag: 1, epoch: 5, ioSeq: 1, offset: 0, length: 512 }, Buffer.alloc(512, 1));
  t.equal((await c.response(1)).header.status, ReplicaStatus.Ok);
  t.equal(store.info.epoch, 5, 'store epoch raised');
  t.equal((await c.response(1)).header.epoch, 5, 'responses carry the store epoch');
  c.send({ opcode: Opcode.Write, tag: 2, epoch: 4, ioSeq: 2, offset: 0, length: 512 }, Buffer.alloc(512, 2));
  t.equal((await c.response(2)).header.status, ReplicaStatus.StaleEpoch);
  t.equal(store.data[0], 1, 'stale write not applied');
});

t.test('reading pauses at maxInFlight and resumes', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  store.delay = () => 5;
  const r = await rig(t, store, { maxInFlight: 4 });
  const c = await r.client();
  let maxSeen = 0;
  const sampler = setInterval(() => { maxSeen = Math.max(maxSeen, store.stats().inflight); }, 1);
  for (let i = 0; i < 40; i++) c.send({ opcode: Opcode.Read, tag: i + 1, epoch: 1, offset: 0, length: 512 });
  await c.count(40);
  clearInterval(sampler);
  t.ok(c.responses.every(f => f.header.status === ReplicaStatus.Ok));
  t.ok(maxSeen <= 4, `at most 4 in the store at once (saw ${maxSeen})`);
  t.ok(r.responders[0]!.counters().pauses > 0, 'reading paused');
});

t.test('responses of a closed connection are dropped and buffers released', { timeout: 10_000 }, async t => {
  const store = new MemoryStore({ epoch: 1 });
  store.delay = () => 30;
  const r = await rig(t, store);
  const c = await r.client();
  for (let i = 0; i < 8; i++) c.send({ opcode: Opcode.Read, tag: i + 1, epoch: 1, offset: 0, length: 4096 });
  c.send({ opcode: Opcode.Write, tag: 99, epoch: 1, ioSeq: 1, offset: 0, length: 512 }, Buffer.alloc(512));
  await new Promise(res => setTimeout(res, 10));
  c.socket.destroy();
  await r.responders[0]!.closed;
  await waitFor('read results and write buffers released', () => store.outstandingReads === 0 && store.acquired.size === 0, 3000);
  t.equal(store.outstandingReads, 0, 'read results released');
  t.equal(store.acquired.size, 0, 'write buffers released');
});
