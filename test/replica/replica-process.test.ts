// The replica as main.ts assembles it (store + control service + dialer), with real peers: the
// target's replica listener on one side, the gRPC control client on the other.
import t from 'tap';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startReplica } from '../../src/replica/main.js';
import { parseReplicaConfig } from '../../src/replica/config.js';
import { ReplicaListener } from '../../src/target/volume/replica-listener.js';
import type { ReplicaConnection } from '../../src/target/volume/replica-connection.js';
import { createReplicaControlClient } from '../../src/protocol/replica/control-codec.js';
import { silentLogger } from '../../src/shared/logger.js';

const UUID = '6a1f0c3e-2b4d-4e5f-8a9b-0c1d2e3f4a5b';
const MiB = 1 << 20;

t.test('data path, status, epoch, resize and the rebuild stream of a real replica', async (t) => {
  const dir = t.testdir();
  let resolveConn!: (c: ReplicaConnection) => void;
  const connected = new Promise<ReplicaConnection>((r) => { resolveConn = r; });
  const listener = new ReplicaListener({
    logger: silentLogger(),
    accept: (hello) => (hello.volumeUuid === UUID ? { ok: true } : { ok: false, reason: 'unknown volume' }),
    onConnection: (c) => resolveConn(c),
  });
  const addr = await listener.listen('127.0.0.1', 0);
  t.teardown(() => listener.close());
  const parsed = parseReplicaConfig(['--device', join(dir, 'r.img'), '--volume', 'vol', '--volume-uuid', UUID, '--replica-id', 'r1',
    '--target', `127.0.0.1:${addr.port}`, '--format', '--size', '16M'], {});
  if (!parsed.ok) throw new Error(parsed.error);
  const replica = await startReplica(parsed.config, silentLogger());
  t.teardown(() => replica.stop());
  const conn = await connected;
  t.equal(conn.hello.replicaId, 'r1');
  t.equal(conn.hello.capacityBytes, 16 * MiB);
  t.equal(conn.hello.controlAddress, replica.control.address, 'HELLO announces the control address');

  const a = Buffer.alloc(64 * 1024, 0xa1);
  const b = Buffer.alloc(8192, 0xb2);
  await conn.write(0, a, { epoch: 1, ioSeq: 1, fua: false });
  await conn.write(MiB, b, { epoch: 1, ioSeq: 2, fua: true });
  await conn.unmap(2 * MiB, 4096, { epoch: 1, ioSeq: 3 });
  const r = await conn.read(0, 8192, 1);
  t.ok(r.data.equals(a.subarray(0, 8192)), 'read back over the data path');
  t.same([...r.ioSeqs], [1, 1], 'with the io_seq of each chunk');
  await t.rejects(conn.write(0, a, { epoch: 0, ioSeq: 4, fua: false }), /epoch/i, 'an older epoch is refused');

  const control = createReplicaControlClient(replica.control.address);
  t.teardown(() => control.close());
  const status = await control.status();
  t.equal(status.replicaId, 'r1');
  t.equal(status.volumeUuid, UUID);
  t.equal(status.state, 'ready');
  t.equal(status.epoch, 1, 'the epoch raised by the data path is persisted');
  t.equal(status.highestIoSeq, 3);
  t.equal(status.counters.writes, 2);
  t.equal(status.counters.unmaps, 1);
  t.ok(status.counters.badFrames >= 1, 'the stale-epoch request counts as refused');
  t.equal(status.dataConnected, true);
  t.equal(status.pid, process.pid);

  t.same(await control.setEpoch({ epoch: 5 }), { epoch: 5 });
  const stale = await control.setEpoch({ epoch: 4 }).then(() => undefined, (e: grpc.ServiceError) => e.code);
  t.equal(stale, grpc.status.FAILED_PRECONDITION, 'a lower epoch is refused');
  await t.rejects(conn.write(0, a, { epoch: 1, ioSeq: 5, fua: false }), /epoch/i, 'the data path is fenced at the new epoch');

  t.same(await control.resize({ capacityBytes: 32 * MiB }), { capacityBytes: 32 * MiB });
  const shrink = await control.resize({ capacityBytes: 8 * MiB }).then(() => undefined, (e: grpc.ServiceError) => e.code);
  t.equal(shrink, grpc.status.FAILED_PRECONDITION, 'shrinking is refused');
  t.equal((await control.status()).capacityBytes, 32 * MiB);

  const runs = [];
  for await (const run of control.rebuild({ sinceIoSeq: 1, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID })) runs.push(run);
  t.same(runs.map((x) => [x.offset, x.length, [...x.ioSeqs], [...x.zeroMask]]), [
    [MiB, 8192, [2, 2], [0, 0]],
    [2 * MiB, 4096, [3], [1]],
  ], 'only chunks newer than io_seq 1');
  t.ok(runs[0]!.data.equals(b), 'with their data');
  const all = [];
  for await (const run of control.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: UUID })) all.push(run);
  t.equal(all[0]!.length, 64 * 1024, 'everything for a new replica');
  const foreign = await (async () => {
    try {
      for await (const _ of control.rebuild({ sinceIoSeq: 0, fromOffset: 0, maxRunBytes: 0, volumeUuid: '00000000-0000-4000-8000-000000000000' })) void _;
      return undefined;
    } catch (e) {
      return (e as grpc.ServiceError).code;
    }
  })();
  t.equal(foreign, grpc.status.FAILED_PRECONDITION, 'another volume cannot rebuild from it');
});
