// Wire codec of the replica control service: round trips, packed per-chunk arrays, the uint64 edge.
import t from 'tap';
import {
  codecs,
  replicaControlServiceDefinition,
  U64RangeError,
  type ChunkRun,
  type StatusReply,
} from '../../../src/protocol/replica/control-codec.js';

t.setTimeout(30_000);

/** Little-endian base-128 varint of a uint64, for hand-built messages protobufjs would not produce from a number. */
function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = value;
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return out;
}

const status: StatusReply = {
  volumeName: 'pvc-1',
  volumeUuid: '6f1c2a7e-0000-4000-8000-000000000001',
  replicaId: 'r0',
  state: 'ready',
  epoch: 7,
  checkpointedIoSeq: 2 ** 40,
  highestIoSeq: Number.MAX_SAFE_INTEGER,
  capacityBytes: 2 ** 53 - 4096,
  blockSize: 4096,
  chunkSize: 65536,
  uptimeSeconds: 12.5,
  pid: 4242,
  counters: {
    reads: 1, writes: 2, syncs: 3, unmaps: 4, writeZeroes: 5, readBytes: 6, writeBytes: 2 ** 45, staleChunksSkipped: 8,
    checksumMismatches: 9, chunksNeedingRepair: 10, inflight: 11, badFrames: 12,
  },
  dataConnected: true,
};

t.test('StatusReply round trip, including values beyond 32 bits', async (t) => {
  t.same(codecs.statusReply.decode(codecs.statusReply.encode(status)), status);
});

t.test('empty messages decode to zero defaults', async (t) => {
  const decoded = codecs.statusReply.decode(Buffer.alloc(0));
  t.equal(decoded.epoch, 0);
  t.equal(decoded.state, '');
  t.equal(decoded.dataConnected, false);
  t.equal(decoded.counters.badFrames, 0);
  t.same(codecs.statusRequest.decode(codecs.statusRequest.encode({})), {});
  t.same(codecs.rebuildRequest.decode(Buffer.alloc(0)), { sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: '' });
});

t.test('unary request/reply round trips', async (t) => {
  t.same(codecs.setEpochRequest.decode(codecs.setEpochRequest.encode({ epoch: 99 })), { epoch: 99 });
  t.same(codecs.setEpochReply.decode(codecs.setEpochReply.encode({ epoch: 2 ** 53 - 1 })), { epoch: 2 ** 53 - 1 });
  t.same(codecs.resizeRequest.decode(codecs.resizeRequest.encode({ capacityBytes: 2 ** 41 })), { capacityBytes: 2 ** 41 });
  t.same(codecs.resizeReply.decode(codecs.resizeReply.encode({ capacityBytes: 4096 })), { capacityBytes: 4096 });
  t.same(codecs.setRebuildRateRequest.decode(codecs.setRebuildRateRequest.encode({ rateBytesPerSec: 8 * 2 ** 20 })), { rateBytesPerSec: 8 * 2 ** 20 });
  t.same(codecs.setRebuildRateRequest.decode(codecs.setRebuildRateRequest.encode({ rateBytesPerSec: 0 })), { rateBytesPerSec: 0 }, '0 = unlimited');
  const rebuild = { sinceIoSeq: 123, fromOffset: 2 ** 33, maxRunBytes: 1 << 20, volumeUuid: 'u' };
  t.same(codecs.rebuildRequest.decode(codecs.rebuildRequest.encode(rebuild)), rebuild);
});

t.test('ChunkRun round trip with packed io_seqs and crcs', async (t) => {
  const chunks = 4;
  const chunkSize = 4096;
  const data = Buffer.alloc(chunks * chunkSize);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  data.fill(0, chunkSize, 2 * chunkSize);
  const run: ChunkRun = {
    offset: 2 ** 40,
    length: data.length,
    ioSeqs: new Float64Array([1, 2 ** 32 + 5, 0, Number.MAX_SAFE_INTEGER]),
    crcs: new Uint32Array([0xffffffff, 0, 0x12345678, 1]),
    zeroMask: new Uint8Array([0, 1, 0, 0]),
    data,
  };
  const bytes = codecs.chunkRun.encode(run);
  // Packed: io_seqs is one length-delimited field 3 (tag 0x1a); crcs one field 4 (tag 0x22) of 4 bytes per chunk.
  const packedCrcs = Buffer.from([0x22, chunks * 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x78, 0x56, 0x34, 0x12, 1, 0, 0, 0]);
  t.ok(bytes.includes(packedCrcs), 'crcs are one packed fixed32 field');
  t.ok(bytes.length < data.length + 64, 'per-chunk overhead is small');

  const back = codecs.chunkRun.decode(bytes);
  t.equal(back.offset, run.offset);
  t.equal(back.length, run.length);
  t.ok(back.ioSeqs instanceof Float64Array);
  t.same(Array.from(back.ioSeqs), Array.from(run.ioSeqs));
  t.ok(back.crcs instanceof Uint32Array);
  t.same(Array.from(back.crcs), Array.from(run.crcs));
  t.same(Array.from(back.zeroMask), [0, 1, 0, 0]);
  t.ok(Buffer.isBuffer(back.data));
  t.ok(back.data.equals(data));
});

t.test('ChunkRun exact wire bytes: packed io_seqs (field 3) and crcs (field 4)', async (t) => {
  const bytes = codecs.chunkRun.encode({
    offset: 0, length: 0, ioSeqs: new Float64Array([1, 300]), crcs: new Uint32Array([2, 3]), zeroMask: new Uint8Array([1, 0]), data: Buffer.alloc(0),
  });
  t.same([...bytes], [0x1a, 3, 1, 0xac, 0x02, 0x22, 8, 2, 0, 0, 0, 3, 0, 0, 0, 0x2a, 2, 1, 0]);
});

t.test('ChunkRun decodes unpacked repeated fields too (proto3 parsers must accept both)', async (t) => {
  // offset=0 (omitted), length=0, io_seqs 5 and 6 as two separate varint fields, crcs as two fixed32 fields.
  const bytes = Buffer.from([0x18, 5, 0x18, 6, 0x25, 1, 0, 0, 0, 0x25, 2, 0, 0, 0, 0x2a, 2, 0, 1]);
  const run = codecs.chunkRun.decode(bytes);
  t.same(Array.from(run.ioSeqs), [5, 6]);
  t.same(Array.from(run.crcs), [1, 2]);
  t.same(Array.from(run.zeroMask), [0, 1]);
});

t.test('inconsistent ChunkRun refused both ways', async (t) => {
  const good: ChunkRun = {
    offset: 0, length: 4096, ioSeqs: new Float64Array([1]), crcs: new Uint32Array([1]), zeroMask: new Uint8Array([0]), data: Buffer.alloc(4096),
  };
  t.throws(() => codecs.chunkRun.encode({ ...good, crcs: new Uint32Array(2) }), RangeError);
  t.throws(() => codecs.chunkRun.encode({ ...good, data: Buffer.alloc(10) }), RangeError);
  // length says 4096 but there is no data.
  const bytes = Buffer.from([0x10, ...varint(4096n), 0x1a, 1, 1, 0x22, 4, 1, 0, 0, 0, 0x2a, 1, 0]);
  t.throws(() => codecs.chunkRun.decode(bytes), RangeError);
});

t.test('uint64 above 2^53 - 1 is refused', async (t) => {
  t.throws(() => codecs.setEpochRequest.encode({ epoch: 2 ** 53 }), U64RangeError);
  t.throws(() => codecs.setEpochRequest.encode({ epoch: -1 }), U64RangeError);
  t.throws(() => codecs.setEpochRequest.encode({ epoch: 1.5 }), U64RangeError);
  t.throws(() => codecs.resizeRequest.encode({ capacityBytes: Number.NaN }), U64RangeError);
  t.throws(() => codecs.statusReply.encode({ ...status, counters: { ...status.counters, reads: 2 ** 60 } }), U64RangeError);
  t.throws(() => codecs.chunkRun.encode({
    offset: 0, length: 0, ioSeqs: new Float64Array([2 ** 53]), crcs: new Uint32Array(1), zeroMask: new Uint8Array(1), data: Buffer.alloc(0),
  }), U64RangeError);

  const exact = Buffer.from([0x08, ...varint(2n ** 53n - 1n)]);
  t.equal(codecs.setEpochRequest.decode(exact).epoch, Number.MAX_SAFE_INTEGER);
  for (const v of [2n ** 53n, 2n ** 64n - 1n]) {
    const bytes = Buffer.from([0x08, ...varint(v)]);
    t.throws(() => codecs.setEpochRequest.decode(bytes), { name: 'U64RangeError', field: 'epoch' }, `decode ${v}`);
  }
  // Inside a packed array as well.
  const seq = varint(2n ** 60n);
  const run = Buffer.from([0x1a, seq.length, ...seq, 0x22, 4, 0, 0, 0, 0, 0x2a, 1, 0]);
  t.throws(() => codecs.chunkRun.decode(run), U64RangeError);
});

t.test('server-side deserializer reports bad requests instead of throwing', async (t) => {
  const deserialize = replicaControlServiceDefinition.setEpoch.requestDeserialize;
  t.same(deserialize(codecs.setEpochRequest.encode({ epoch: 3 })), { ok: true, value: { epoch: 3 } });
  const bad = deserialize(Buffer.from([0x08, ...varint(2n ** 63n)]));
  t.equal(bad.ok, false);
  t.equal(replicaControlServiceDefinition.rebuild.responseStream, true);
  t.equal(replicaControlServiceDefinition.status.path, '/cstor.replica.v1.ReplicaControl/Status');
});

t.test('rebuild control messages round trip: StartRebuild, RebuildEstimate, status with rebuild progress', async (t) => {
  const start = { sourceAddress: '127.0.0.1:40001', sinceIoSeq: 2 ** 40 + 3, rateBytesPerSec: 50 << 20, volumeUuid: status.volumeUuid };
  t.same(codecs.startRebuildRequest.decode(codecs.startRebuildRequest.encode(start)), start);
  t.same(codecs.startRebuildReply.decode(codecs.startRebuildReply.encode({ started: true })), { started: true });
  t.same(codecs.rebuildEstimateReply.decode(codecs.rebuildEstimateReply.encode({ bytes: 2 ** 45, chunks: 2 ** 33 })), { bytes: 2 ** 45, chunks: 2 ** 33 });
  const withRebuild: StatusReply = {
    ...status,
    state: 'rebuilding',
    rebuild: {
      state: 'running', bytesDone: 2 ** 35, bytesTotal: 2 ** 36, rateBytesPerSec: 123456, etaSeconds: 42.5,
      source: '127.0.0.1:40001', attempts: 2, lastError: 'UNAVAILABLE: peer went away',
    },
  };
  t.same(codecs.statusReply.decode(codecs.statusReply.encode(withRebuild)), withRebuild);
  t.throws(() => codecs.startRebuildRequest.encode({ ...start, sinceIoSeq: 2 ** 53 }), U64RangeError, 'io_seq beyond 2^53 refused');
});
