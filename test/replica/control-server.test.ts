// The replica control server against the real client over 127.0.0.1: unary calls, error mapping,
// deadlines, and rebuild streaming (ordering, backpressure, cancellation, shutdown).
import t, { type Test } from 'tap';
import grpc from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createReplicaControlClient,
  DEFAULT_MAX_RUN_BYTES,
  MAX_RUN_BYTES,
  U64RangeError,
  type ReplicaControlClient,
  type StatusReply,
} from '../../src/protocol/replica/control-codec.js';
import {
  ControlError,
  startControlServer,
  toGrpcStatus,
  type ControlServer,
  type ReplicaControlHandlers,
} from '../../src/replica/control-server.js';
import { StoreError, StoreErrorCode, type ChunkRun, type StoreErrorCodeValue } from '../../src/replica/store-api.js';
import { silentLogger } from '../../src/shared/logger.js';

t.setTimeout(60_000);

const UUID = '6f1c2a7e-0000-4000-8000-000000000001';
const CHUNK = 4096;

interface Harness {
  readonly server: ControlServer;
  readonly client: ReplicaControlClient;
}

async function harness(
  t: Test,
  handlers: Partial<ReplicaControlHandlers>,
  options: { maxBufferedBytes?: number; shutdownTimeoutMs?: number } = {},
): Promise<Harness> {
  const unimplemented = async (): Promise<never> => {
    throw new ControlError('UNIMPLEMENTED', 'not in this test');
  };
  const server = await startControlServer({
    handlers: {
      status: unimplemented,
      setEpoch: unimplemented,
      resize: unimplemented,
      rebuild: () => ({
        [Symbol.asyncIterator]: () => ({ next: unimplemented }),
      }),
      ...handlers,
    },
    logger: silentLogger(),
    ...options,
  });
  const client = createReplicaControlClient(server.address, { defaultDeadlineMs: 5_000 });
  t.teardown(async () => {
    client.close();
    await server.close();
  });
  return { server, client };
}

/** The gRPC status code of a rejected call, or the thrown value when it has none. */
async function codeOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: unknown }).code ?? err;
  }
  return 'resolved';
}

function makeRun(index: number, chunksPerRun: number, sinceIoSeq = 0): ChunkRun {
  const length = chunksPerRun * CHUNK;
  const data = Buffer.alloc(length, index & 0xff);
  const ioSeqs = new Float64Array(chunksPerRun).fill(sinceIoSeq + index + 1);
  const crcs = new Uint32Array(chunksPerRun).fill(index);
  const zero = new Uint8Array(chunksPerRun);
  return { offset: index * length, length, ioSeqs, crcs, zero, data };
}

const baseStatus: StatusReply = {
  volumeName: 'pvc-1', volumeUuid: UUID, replicaId: 'r0', state: 'ready', epoch: 3, checkpointedIoSeq: 100,
  highestIoSeq: 2 ** 40, capacityBytes: 1 << 30, blockSize: 4096, chunkSize: CHUNK, uptimeSeconds: 1.25, pid: process.pid,
  counters: {
    reads: 1, writes: 2, syncs: 3, unmaps: 4, writeZeroes: 5, readBytes: 6, writeBytes: 7, staleChunksSkipped: 8,
    checksumMismatches: 9, chunksNeedingRepair: 10, inflight: 11, badFrames: 12,
  },
  dataConnected: true,
};

t.test('listens on 127.0.0.1 with an ephemeral port', async (t) => {
  const { server } = await harness(t, {});
  t.match(server.address, /^127\.0\.0\.1:\d+$/);
  t.ok(server.port > 0);
});

t.test('status', async (t) => {
  const { client } = await harness(t, { status: async () => baseStatus });
  t.same(await client.status(), baseStatus);
});

t.test('setEpoch: accepted, then a lower one refused with FAILED_PRECONDITION', async (t) => {
  let epoch = 3;
  const { client } = await harness(t, {
    setEpoch: async (e) => {
      if (e < epoch) throw new StoreError(StoreErrorCode.StaleEpoch, `epoch ${e} < ${epoch}`);
      epoch = e;
    },
  });
  t.same(await client.setEpoch({ epoch: 5 }), { epoch: 5 });
  t.same(await client.setEpoch({ epoch: 5 }), { epoch: 5 }, 'same epoch is idempotent');
  t.equal(await codeOf(client.setEpoch({ epoch: 4 })), grpc.status.FAILED_PRECONDITION);
  t.equal(epoch, 5);
  const err = await client.setEpoch({ epoch: 1 }).catch((e: unknown) => e as grpc.ServiceError);
  t.match(err, { details: /epoch 1 < 5/ }, 'store message reaches the caller');
});

t.test('resize: grow, shrink refused, misaligned refused', async (t) => {
  let capacity = 1 << 20;
  const { client } = await harness(t, {
    resize: async (bytes) => {
      if (bytes % 4096 !== 0) throw new StoreError(StoreErrorCode.Misaligned, 'not block-aligned');
      if (bytes < capacity) throw new ControlError('FAILED_PRECONDITION', 'shrinking is not supported');
      capacity = bytes;
      return capacity;
    },
  });
  t.same(await client.resize({ capacityBytes: 2 << 20 }), { capacityBytes: 2 << 20 });
  t.equal(await codeOf(client.resize({ capacityBytes: 1 << 20 })), grpc.status.FAILED_PRECONDITION);
  t.equal(await codeOf(client.resize({ capacityBytes: (4 << 20) + 512 })), grpc.status.INVALID_ARGUMENT);
  t.equal(capacity, 2 << 20);
});

t.test('handler errors map to gRPC codes in one place', async (t) => {
  const expected: Record<StoreErrorCodeValue, grpc.status> = {
    ESTALE_EPOCH: grpc.status.FAILED_PRECONDITION,
    EUNFORMATTED: grpc.status.FAILED_PRECONDITION,
    ERANGE: grpc.status.INVALID_ARGUMENT,
    EINVAL: grpc.status.INVALID_ARGUMENT,
    EALIGN: grpc.status.INVALID_ARGUMENT,
    EMEDIUM: grpc.status.DATA_LOSS,
    EIO: grpc.status.INTERNAL,
    ENOSPC: grpc.status.RESOURCE_EXHAUSTED,
    ECLOSED: grpc.status.UNAVAILABLE,
  };
  let next: unknown;
  const { client } = await harness(t, {
    setEpoch: async () => {
      throw next;
    },
  });
  for (const [code, status] of Object.entries(expected)) {
    next = new StoreError(code as StoreErrorCodeValue, code);
    t.equal(toGrpcStatus(next).code, status, `toGrpcStatus ${code}`);
    t.equal(await codeOf(client.setEpoch({ epoch: 1 })), status, `over the wire ${code}`);
  }
  next = new Error('boom');
  t.equal(await codeOf(client.setEpoch({ epoch: 1 })), grpc.status.INTERNAL, 'plain Error is INTERNAL');
  next = new ControlError('NOT_FOUND', 'nope');
  t.equal(await codeOf(client.setEpoch({ epoch: 1 })), grpc.status.NOT_FOUND);
  next = 'a string';
  t.equal(await codeOf(client.setEpoch({ epoch: 1 })), grpc.status.INTERNAL, 'non-Error throw is INTERNAL');
});

t.test('a handler reply the wire cannot carry is INTERNAL, not a hang', async (t) => {
  const { client } = await harness(t, { setEpoch: async () => 2 ** 53 });
  t.equal(await codeOf(client.setEpoch({ epoch: 1 })), grpc.status.INTERNAL);
});

t.test('uint64 beyond 2^53 - 1: refused locally by the client, INVALID_ARGUMENT from a foreign client', async (t) => {
  let called = false;
  const { server, client } = await harness(t, {
    setEpoch: async () => {
      called = true;
    },
  });
  await t.rejects(client.setEpoch({ epoch: 2 ** 53 }), U64RangeError);
  // Nothing is sent (or thrown) until iteration starts.
  const lazy = client.rebuild({ sinceIoSeq: -1, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID });
  await t.rejects(lazy[Symbol.asyncIterator]().next(), U64RangeError);

  // A raw client sending epoch = 2^63 as a varint.
  const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const bytes = Buffer.from([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
  const code = await new Promise<unknown>((resolve) => {
    raw.makeUnaryRequest('/cstor.replica.v1.ReplicaControl/SetEpoch', (b: Buffer) => b, (b: Buffer) => b, bytes,
      { deadline: Date.now() + 5_000 }, (err) => resolve(err?.code));
  });
  t.equal(code, grpc.status.INVALID_ARGUMENT);
  t.equal(called, false, 'handler not called');
});

t.test('deadline exceeded', async (t) => {
  const { client } = await harness(t, {
    status: async () => {
      await sleep(3000);
      return baseStatus;
    },
  });
  const started = Date.now();
  t.equal(await codeOf(client.status({ deadlineMs: 50 })), grpc.status.DEADLINE_EXCEEDED);
  t.ok(Date.now() - started < 1500, 'gave up at the deadline');
});

t.test('unary call aborted by signal rejects with the reason', async (t) => {
  const { client } = await harness(t, {
    status: async () => {
      await sleep(300);
      return baseStatus;
    },
  });
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('caller gave up')), 30);
  await t.rejects(client.status({ signal: ac.signal }), { message: 'caller gave up' });
});

t.test('rebuild streams many runs in order with the request forwarded', async (t) => {
  const calls: unknown[][] = [];
  const total = 300;
  const { client } = await harness(t, {
    async *rebuild(since, from, maxRun, uuid) {
      calls.push([since, from, maxRun, uuid]);
      for (let i = 0; i < total; i++) yield makeRun(i, 4, since);
    },
  });
  let n = 0;
  for await (const run of client.rebuild({ sinceIoSeq: 10, fromOffset: 4096, maxRunBytes: 0, volumeUuid: UUID })) {
    const want = makeRun(n, 4, 10);
    if (run.offset !== want.offset || run.length !== want.length || run.ioSeqs[3] !== want.ioSeqs[3] ||
      run.crcs[0] !== n || run.zeroMask.length !== 4 || !run.data.equals(want.data)) {
      t.fail(`run ${n} differs`);
      break;
    }
    n++;
  }
  t.equal(n, total);
  t.same(calls, [[10, 4096, DEFAULT_MAX_RUN_BYTES, UUID]], 'maxRunBytes 0 means the default');

  for await (const _ of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 2 ** 40, volumeUuid: UUID })) break;
  t.same(calls[1], [0, 0, MAX_RUN_BYTES, UUID], 'huge maxRunBytes clamped');
});

t.test('rebuild: zero runs, wrong volume, failure mid-stream', async (t) => {
  const { client } = await harness(t, {
    async *rebuild(since, _from, _max, uuid) {
      if (uuid !== UUID) throw new ControlError('FAILED_PRECONDITION', `volume ${uuid} is not ${UUID}`);
      if (since === 1) return;
      yield makeRun(0, 1);
      yield makeRun(1, 1);
      throw new StoreError(StoreErrorCode.Medium, 'chunk 2 needs repair', 2 * CHUNK);
    },
  });
  const empty = [];
  for await (const run of client.rebuild({ sinceIoSeq: 1, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID })) empty.push(run);
  t.equal(empty.length, 0);

  const wrong = async (): Promise<void> => {
    for await (const _ of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: 'other' })) t.fail('no runs');
  };
  t.equal(await codeOf(wrong()), grpc.status.FAILED_PRECONDITION);

  const got: number[] = [];
  const partial = async (): Promise<void> => {
    for await (const run of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID })) got.push(run.offset);
  };
  t.equal(await codeOf(partial()), grpc.status.DATA_LOSS);
  t.same(got, [0, CHUNK], 'runs before the failure were delivered');
});

t.test('rebuild backpressure: a slow consumer holds the producer back', async (t) => {
  const runBytes = 256 * 1024;
  const total = 400; // 100 MiB if produced eagerly
  let produced = 0;
  const { client } = await harness(t, {
    async *rebuild() {
      for (let i = 0; i < total; i++) {
        produced++;
        yield makeRun(i, runBytes / CHUNK);
      }
    },
  }, { maxBufferedBytes: 512 * 1024 });

  let consumed = 0;
  let maxAhead = 0;
  for await (const run of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: runBytes, volumeUuid: UUID })) {
    if (run.length !== runBytes) t.fail(`run ${consumed} is ${run.length} bytes`);
    consumed++;
    if (consumed === 1 || consumed === 20) {
      // Stall: whatever the producer can run ahead now is all that is buffered between the two.
      await sleep(500);
      maxAhead = Math.max(maxAhead, produced - consumed);
    }
    if (consumed === 40) break;
  }
  t.equal(consumed, 40);
  t.ok(maxAhead < 48, `producer ran ${maxAhead} runs ahead of a stalled consumer (bounded, not ${total})`);
  t.ok(produced < total / 2, `producer stopped early (${produced} of ${total})`);
});

t.test('rebuild cancellation stops the producer', async (t) => {
  let produced = 0;
  let finished = false;
  let signalAborted = false;
  const { client } = await harness(t, {
    async *rebuild(_s, _f, _m, _u, signal) {
      try {
        for (let i = 0; ; i++) {
          produced++;
          yield makeRun(i, 16);
          await sleep(1);
        }
      } finally {
        signalAborted = signal.aborted;
        finished = true;
      }
    },
  });

  let n = 0;
  for await (const _ of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID })) {
    if (++n === 5) break;
  }
  const deadline = Date.now() + 5_000;
  while (!finished && Date.now() < deadline) await sleep(10);
  t.ok(finished, 'producer generator finalized after the client broke out');
  t.ok(signalAborted, 'handler saw the abort signal');
  const atStop = produced;
  await sleep(200);
  t.equal(produced, atStop, 'nothing produced after cancellation');
});

t.test('rebuild aborted through the client signal', async (t) => {
  let finished = false;
  const { client } = await harness(t, {
    async *rebuild(_s, _f, _m, _u, signal) {
      try {
        for (let i = 0; !signal.aborted; i++) {
          yield makeRun(i, 1);
          await sleep(5);
        }
      } finally {
        finished = true;
      }
    },
  });
  const ac = new AbortController();
  const reason = new Error('rebuild superseded');
  let n = 0;
  const consume = async (): Promise<void> => {
    for await (const _ of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID }, { signal: ac.signal })) {
      if (++n === 3) ac.abort(reason);
    }
  };
  await t.rejects(consume(), reason);
  const deadline = Date.now() + 5_000;
  while (!finished && Date.now() < deadline) await sleep(10);
  t.ok(finished, 'server-side producer finalized');
});

t.test('rebuild deadline exceeded on a stalled stream', async (t) => {
  const { client } = await harness(t, {
    async *rebuild(_s, _f, _m, _u, signal) {
      yield makeRun(0, 1);
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    },
  });
  let n = 0;
  const consume = async (): Promise<void> => {
    for await (const _ of client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID }, { deadlineMs: 150 })) n++;
  };
  t.equal(await codeOf(consume()), grpc.status.DEADLINE_EXCEEDED);
  t.equal(n, 1);
});

t.test('close() forces shutdown when a stream does not finish in time', async (t) => {
  let finished = false;
  const { server, client } = await harness(t, {
    async *rebuild() {
      try {
        for (let i = 0; ; i++) yield makeRun(i, 64);
      } finally {
        finished = true;
      }
    },
  }, { shutdownTimeoutMs: 200, maxBufferedBytes: 256 * 1024 });

  const it = client.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID })[Symbol.asyncIterator]();
  t.equal((await it.next()).done, false);
  // The consumer stalls; the stream is active when close() starts.
  const started = Date.now();
  await server.close();
  t.ok(Date.now() - started < 2_000, `close took ${Date.now() - started} ms`);
  const deadline = Date.now() + 5_000;
  while (!finished && Date.now() < deadline) await sleep(10);
  t.ok(finished, 'producer stopped by the forced shutdown');
  // Drain what the client had buffered; the stream then ends with an error, not a clean end.
  const drain = async (): Promise<void> => {
    for (;;) if ((await it.next()).done) throw new Error('ended cleanly');
  };
  t.not(await codeOf(drain()), 'resolved');
});

t.test('target state: round trip, stale writes refused, absent handlers UNIMPLEMENTED', async (t) => {
  let stored = { generation: 0, epoch: 0, entries: new Map<string, Buffer>() as ReadonlyMap<string, Buffer> };
  const { client } = await harness(t, {
    getTargetState: async () => stored,
    putTargetState: async (state) => {
      if (state.generation < stored.generation) throw new StoreError(StoreErrorCode.StaleEpoch, 'older generation');
      stored = state;
    },
  });
  t.equal((await client.getTargetState()).generation, 0);
  const put = await client.putTargetState({ generation: 2, epoch: 7, entries: new Map([['pr', Buffer.from([1, 2, 3])], ['empty', Buffer.alloc(0)]]) });
  t.equal(put.generation, 2);
  const got = await client.getTargetState();
  t.equal(got.generation, 2);
  t.equal(got.epoch, 7);
  t.same([...got.entries.keys()].sort(), ['empty', 'pr']);
  t.same([...got.entries.get('pr')!], [1, 2, 3]);
  t.equal(got.entries.get('empty')!.length, 0);
  t.equal(await codeOf(client.putTargetState({ generation: 1, epoch: 7, entries: new Map() })), grpc.status.FAILED_PRECONDITION);

  const { client: bare } = await harness(t, {});
  t.equal(await codeOf(bare.getTargetState()), grpc.status.UNIMPLEMENTED);
  t.equal(await codeOf(bare.putTargetState({ generation: 1, epoch: 1, entries: new Map() })), grpc.status.UNIMPLEMENTED);
});
