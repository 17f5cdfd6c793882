// Fencing at target start against real replicas (store, gRPC control server and target link of
// startReplica, in this process) dialing a real ReplicaListener: a write quorum persists the epoch
// before I/O, a replica that cannot is left out, the target state is read from the quorum, and a
// target whose epoch was superseded can neither write data nor target state.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseReplicaConfig } from '../../../src/replica/config.js';
import { startReplica, type RunningReplica } from '../../../src/replica/main.js';
import { superblockOnDisk } from '../../fixtures/superblock-on-disk.js';
import { createReplicaControlClient } from '../../../src/protocol/replica/control-codec.js';
import { ReplicaListener } from '../../../src/target/volume/replica-listener.js';
import type { ReplicaConnection } from '../../../src/target/volume/replica-connection.js';
import { establishEpoch, fenceReplica, FenceError } from '../../../src/target/volume/epoch-fence.js';
import { TargetStateKeeper, type StateReplica } from '../../../src/target/volume/target-state-keeper.js';
import { ReplicatedVolume } from '../../../src/target/volume/replicated-volume.js';
import { silentLogger } from '../../../src/shared/logger.js';
import { waitFor } from '../../fixtures/wait-for.js';

t.setTimeout(180_000);

const UUID = '5b6c7d8e-9f00-4112-8334-556677889900';
const BS = 512;
const CAPACITY = 8 << 20;

interface Cluster {
  readonly replicas: RunningReplica[];
  readonly paths: string[];
  /** The current data connection of each replica, by id. */
  readonly conns: Map<string, ReplicaConnection>;
  connections(): ReplicaConnection[];
}


async function cluster(t: Test, k: number): Promise<Cluster> {
  const dir = t.testdir();
  const conns = new Map<string, ReplicaConnection>();
  const listener = new ReplicaListener({
    logger: silentLogger(),
    accept: () => ({ ok: true }),
    onConnection: (c) => {
      void conns.get(c.hello.replicaId)?.close();
      conns.set(c.hello.replicaId, c);
    },
  });
  const addr = await listener.listen('127.0.0.1', 0);
  const replicas: RunningReplica[] = [];
  const paths: string[] = [];
  t.teardown(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await Promise.all([...conns.values()].map((c) => c.close()));
    await listener.close();
  });
  for (let i = 1; i <= k; i++) {
    const device = join(dir, `r${i}.img`);
    paths.push(device);
    const parsed = parseReplicaConfig(['--device', device, '--volume', 'vol', '--volume-uuid', UUID, '--replica-id', `r${i}`,
      '--target', `127.0.0.1:${addr.port}`, '--format', '--size', String(CAPACITY)], {});
    if (!parsed.ok) throw new Error(parsed.error);
    replicas.push(await startReplica(parsed.config, silentLogger()));
  }
  await waitFor(`${k} replicas`, () => conns.size === k && [...conns.values()].every((c) => c.isOpen), 30_000);
  return { replicas, paths, conns, connections: () => [...conns.values()].sort((a, b) => a.hello.replicaId.localeCompare(b.hello.replicaId)) };
}

/** The epoch in the replica file's superblock, as a restart would find it (written with O_DIRECT + fdatasync). */
function epochOnDisk(path: string): number {
  return Number(superblockOnDisk(path).epoch);
}

const stateReplicas = (conns: readonly ReplicaConnection[]): StateReplica[] =>
  conns.map((c) => ({ id: c.hello.replicaId, controlAddress: c.hello.controlAddress, counts: true }));

t.test('k=3: a quorum persists the epoch and the target state is read back from it', async (t) => {
  const c = await cluster(t, 3);
  const first = await establishEpoch({ connections: c.connections(), writeQuorum: 2, logger: silentLogger() });
  t.equal(first.epoch, 1, 'above every replica (all at 0)');
  t.equal(first.fenced.length, 3);
  t.same(first.refused, []);
  t.equal(first.targetState.generation, 0, 'nothing stored yet');
  t.same(c.paths.map(epochOnDisk), [1, 1, 1], 'persisted in every superblock before returning');

  const keeper = new TargetStateKeeper({ epoch: first.epoch, writeQuorum: 2, initial: first.targetState, logger: silentLogger() });
  t.teardown(() => keeper.close());
  await keeper.save('pr', Buffer.from('registrations v1'), stateReplicas(c.connections()));
  await keeper.save('other', Buffer.from('x'), stateReplicas(c.connections()));
  t.equal(keeper.generation, 2);
  for (const r of c.replicas) t.equal((await r.store.targetState()).generation, 2, `${r.store.info.replicaId} stored generation 2`);

  // The next start, with a floor above the replicas: the epoch goes above it, and the blob comes back.
  const second = await establishEpoch({ connections: c.connections(), writeQuorum: 2, floor: 5, logger: silentLogger() });
  t.equal(second.epoch, 6);
  t.same(c.paths.map(epochOnDisk), [6, 6, 6]);
  t.equal(second.targetState.generation, 2);
  t.equal(second.targetState.entries.get('pr')?.toString(), 'registrations v1');

  // One replica with an older blob (it missed a save): the newest of the quorum wins.
  const keeper2 = new TargetStateKeeper({ epoch: second.epoch, writeQuorum: 2, initial: second.targetState, logger: silentLogger() });
  t.teardown(() => keeper2.close());
  await keeper2.save('pr', Buffer.from('registrations v2'), stateReplicas(c.connections().slice(1)));
  const third = await establishEpoch({ connections: c.connections(), writeQuorum: 2, logger: silentLogger() });
  t.equal(third.epoch, 7);
  t.equal(third.targetState.generation, 3);
  t.equal(third.targetState.entries.get('pr')?.toString(), 'registrations v2');

  // The old keeper (epoch 1) is fenced: its save fails and changes nothing.
  await t.rejects(keeper.save('pr', Buffer.from('stale'), stateReplicas(c.connections())), /healthy replicas/);
  for (const r of c.replicas.slice(1)) t.equal((await r.store.targetState()).entries.get('pr')?.toString(), 'registrations v2');
});

t.test('k=3: a replica that cannot persist the epoch is left out; below a quorum start fails', async (t) => {
  const c = await cluster(t, 3);
  await c.replicas[2]!.control.close();
  const fence = await establishEpoch({ connections: c.connections(), writeQuorum: 2, deadlineMs: 3000, logger: silentLogger() });
  t.same(fence.fenced.map((x) => x.hello.replicaId), ['r1', 'r2']);
  t.same(fence.refused.map((x) => x.connection.hello.replicaId), ['r3']);
  t.same(c.paths.map(epochOnDisk), [1, 1, 0], 'r3 never persisted it');
  await c.replicas[1]!.control.close();
  await t.rejects(establishEpoch({ connections: c.connections(), writeQuorum: 2, deadlineMs: 3000, logger: silentLogger() }), FenceError);
});

t.test('two targets starting at once with the same epoch: exactly one gets a quorum', async (t) => {
  const c = await cluster(t, 3);
  const results = await Promise.allSettled([1, 2].map(() =>
    establishEpoch({ connections: c.connections(), writeQuorum: 2, logger: silentLogger() })));
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r) => r.status === 'rejected');
  t.equal(won.length, 1, 'one target is fenced in');
  t.equal(lost.length, 1, 'the other fails to start');
  t.ok(lost[0] !== undefined && (lost[0] as PromiseRejectedResult).reason instanceof FenceError);
  const winner = (won[0] as PromiseFulfilledResult<{ epoch: number }>).value;
  t.equal(winner.epoch, 1);
  t.same(c.paths.map(epochOnDisk), [1, 1, 1]);
  // The same epoch cannot be claimed again by a start; a late replica's (non-exclusive) fence can.
  const probe = createReplicaControlClient(c.connections()[0]!.hello.controlAddress);
  t.teardown(() => probe.close());
  await t.rejects(probe.setEpoch({ epoch: 1, exclusive: true }), 'a claimed epoch is refused to another start');
  t.same(await probe.setEpoch({ epoch: 1 }), { epoch: 1 });
});

t.test('k=1: the single replica persists it; a late replica is fenced alone', async (t) => {
  const c = await cluster(t, 1);
  const fence = await establishEpoch({ connections: c.connections(), writeQuorum: 1, floor: 2, logger: silentLogger() });
  t.equal(fence.epoch, 3);
  t.same(c.paths.map(epochOnDisk), [3]);
  await fenceReplica(c.connections()[0]!.hello.controlAddress, 4);
  t.same(c.paths.map(epochOnDisk), [4]);
  await t.rejects(fenceReplica(c.connections()[0]!.hello.controlAddress, 2), 'an older epoch is refused');
  const status = createReplicaControlClient(c.connections()[0]!.hello.controlAddress);
  t.teardown(() => status.close());
  t.equal((await status.status()).epoch, 4);
});

t.test('a superseded target can no longer write: its requests are refused and nothing lands', async (t) => {
  const c = await cluster(t, 3);
  const a = await establishEpoch({ connections: c.connections(), writeQuorum: 2, logger: silentLogger() });
  const volume = new ReplicatedVolume({
    blockSize: BS, capacityBytes: CAPACITY, epoch: a.epoch, replicaIds: ['r1', 'r2', 'r3'], holdMs: 3000, logger: silentLogger(),
  });
  t.teardown(() => volume.close());
  for (const conn of c.connections()) volume.attach(conn);
  const before = Buffer.alloc(4096, 0xa1);
  await volume.write(8n, before);

  // Target B takes over through the control plane while A still holds every data connection.
  const b = await establishEpoch({ connections: c.connections(), writeQuorum: 2, logger: silentLogger() });
  t.ok(b.epoch > a.epoch);
  await t.rejects(volume.write(8n, Buffer.alloc(4096, 0xa2)), { name: 'BlockDeviceError' }, 'the stale write fails');
  for (const r of c.replicas) {
    const got = await r.store.read(8 * BS, 4096);
    t.ok(got.data.equals(before), `${r.store.info.replicaId} still holds the data written before the takeover`);
    got.release();
    t.equal(r.store.info.epoch, b.epoch);
  }
});

t.test('ReplicatedVolume keeps its SCSI state on the replicas: quorum saves, re-push on rejoin', async (t) => {
  const c = await cluster(t, 3);
  const fence = await establishEpoch({ connections: c.connections(), writeQuorum: 2, logger: silentLogger() });
  const keeper = new TargetStateKeeper({ epoch: fence.epoch, writeQuorum: 2, initial: fence.targetState, logger: silentLogger() });
  t.teardown(() => keeper.close());
  const volume = new ReplicatedVolume({
    blockSize: BS, capacityBytes: CAPACITY, epoch: fence.epoch, replicaIds: ['r1', 'r2', 'r3'], holdMs: 3000,
    targetState: keeper, logger: silentLogger(),
  });
  t.teardown(() => volume.close());
  for (const conn of c.connections()) volume.attach(conn);
  t.equal(await volume.loadState('pr'), undefined);
  await volume.saveState('pr', Buffer.from('one'));
  t.equal((await volume.loadState('pr'))?.toString(), 'one');
  const generations = async (): Promise<number[]> => Promise.all(c.replicas.map(async (r) => (await r.store.targetState()).generation));
  t.same(await generations(), [1, 1, 1]);

  volume.markDegraded('r3', 'test: ejected');
  await volume.saveState('pr', Buffer.from('two'));
  t.same(await generations(), [2, 2, 1], 'a degraded replica is not written');
  volume.markRebuilding('r3');
  volume.markHealthy('r3');
  const deadline = Date.now() + 20_000;
  while ((await generations())[2] !== 2 && Date.now() < deadline) await sleep(50);
  t.same(await generations(), [2, 2, 2], 'back in the quorum: the replica got the current state');
  t.equal((await c.replicas[2]!.store.targetState()).entries.get('pr')?.toString(), 'two');

  volume.markDegraded('r2', 'test: ejected');
  volume.markDegraded('r3', 'test: ejected');
  await t.rejects(volume.saveState('pr', Buffer.from('three')), /needs 2/, 'below a write quorum the save fails');
  t.equal((await volume.loadState('pr'))?.toString(), 'two', 'and the state is unchanged');
});
