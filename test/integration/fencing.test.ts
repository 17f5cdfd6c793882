// Fencing and replicated target state with real processes: target processes (dist/src/target/main.js
// --external-replicas) and three (or one) replica processes that dial them through a switchable TCP router,
// the way a Kubernetes Service moves to the pod of a new target. Checks that
// (a) every target start raises the epoch and the replicas persist it before the target serves,
//     also when the previous target was killed in the middle of writes;
// (b) a target that was frozen while another took over cannot write afterwards (its replicas
//     refuse it), and nothing it tried to write appears;
// (c) persistent reservations (registrations and the reservation) survive a failover to another
//     target instance with an empty data directory: they are kept on the replicas.
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { launchTarget, type LaunchedTarget, type TargetProcess } from '../fixtures/target-process.js';
import { startReplicaProcess, type ReplicaProcess } from '../fixtures/replica-process.js';
import { startTcpProxy, type TcpProxy } from '../fixtures/tcp-proxy.js';
import { TestInitiator } from '../fixtures/initiator.js';
import { cdb10 } from '../fixtures/scsi-harness.js';
import { sleep } from '../fixtures/exec.js';
import { createReplicaControlClient, type ReplicaControlClient } from '../../src/protocol/replica/control-codec.js';

t.setTimeout(600_000);

const IQN = 'iqn.2016-09.com.openebs.cstor:vol1';
const SIZE = 64 << 20;
const BS = 512;
const GOOD = 0;
const CHECK_CONDITION = 2;
const RESERVATION_CONFLICT = 0x18;

interface Volume {
  readonly uuid: string;
  readonly router: TcpProxy;
  readonly replicas: ReplicaProcess[];
  /** Control clients of r1..rK (from their ready lines). */
  readonly controls: ReplicaControlClient[];
  /** The target the replicas first dialed, serving. */
  readonly first: TargetProcess;
  /** Start a target on `dataDir` and route the replicas to it; resolves once it serves. */
  target(dataDir: string): Promise<TargetProcess>;
  /** The epoch each replica has persisted, r1..rK. */
  epochs(): Promise<number[]>;
}

async function volume(tt: Test, k = 3): Promise<Volume> {
  const uuid = randomUUID();
  // No upstream until the first target listens: a connection before that is refused and cut.
  const router = await startTcpProxy({ host: '127.0.0.1', port: 0 });
  tt.teardown(() => router.close());
  const replicaDir = tt.testdir();
  const replicas: ReplicaProcess[] = [];
  const controls: ReplicaControlClient[] = [];
  tt.teardown(() => { for (const c of controls) c.close(); });
  const start = async (dataDir: string): Promise<LaunchedTarget> => {
    const launched = await launchTarget(tt, {
      args: ['--external-replicas', '--volume-uuid', uuid, '--size', String(SIZE), '--replicas', String(k), '--data-dir', dataDir,
        '--replica-hold', '5', '--nop-in-interval', '0'],
    });
    router.setUpstream(launched.replicaAddress.port);
    return launched;
  };
  // The first target must be listening before the replicas dial, so they connect at once.
  const launched = await start(tt.testdir());
  for (const id of ['r1', 'r2', 'r3'].slice(0, k)) {
    const r = startReplicaProcess(tt, {
      device: join(replicaDir, `replica-${id.slice(1)}.img`), replicaId: id, target: router.address, volumeUuid: uuid, sizeBytes: SIZE,
    });
    replicas.push(r);
  }
  for (const r of replicas) {
    const line = await r.ready();
    const control = /control=(\S+)/.exec(line)?.[1];
    if (control === undefined) throw new Error(`no control address in '${line}'`);
    controls.push(createReplicaControlClient(control));
  }
  return {
    uuid, router, replicas, controls,
    first: await launched.ready(90_000),
    target: async (dataDir) => (await start(dataDir)).ready(90_000),
    epochs: async () => Promise.all(controls.map(async (c) => (await c.status()).epoch)),
  };
}

/** The epoch the target logged when it assembled the volume. */
function epochOf(target: { stderrLines(): string[] }): number {
  const line = target.stderrLines().filter((l) => l.includes('"volume assembled"')).at(-1);
  if (line === undefined) throw new Error('no "volume assembled" log line');
  return (JSON.parse(line) as { epoch: number }).epoch;
}

async function session(port: number, initiatorName: string, isid = 0x400001370000n): Promise<TestInitiator> {
  const i = await TestInitiator.connect(port);
  const r = await i.login({ initiatorName, targetName: IQN, isid });
  if (r.status !== 0) throw new Error(`login failed with status ${r.status}`);
  // Clear the unit attentions a new nexus starts with.
  for (let n = 0; n < 5; n++) if ((await i.command(Buffer.alloc(6), { timeoutMs: 30_000 })).status === GOOD) break;
  return i;
}

const rw10 = (op: 0x28 | 0x2a, lba: number, blocks: number): Buffer => Buffer.from(cdb10(op, lba, blocks));
const write10 = (i: TestInitiator, lba: number, data: Buffer, timeoutMs = 30_000) =>
  i.command(rw10(0x2a, lba, data.length / BS), { write: data, timeoutMs });
const read10 = (i: TestInitiator, lba: number, blocks: number) => i.command(rw10(0x28, lba, blocks), { read: blocks * BS, timeoutMs: 30_000 });

function prOut(i: TestInitiator, sa: number, type: number, key: bigint, saKey: bigint) {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5f;
  cdb[1] = sa;
  cdb[2] = type;
  cdb.writeUInt32BE(24, 5);
  const p = Buffer.alloc(24);
  p.writeBigUInt64BE(key, 0);
  p.writeBigUInt64BE(saKey, 8);
  return i.command(cdb, { write: p, timeoutMs: 30_000 });
}

/** PERSISTENT RESERVE IN with service action `sa`; its parameter data, or a throw naming the status. */
async function prIn(i: TestInitiator, sa: number, name: string, allocation: number): Promise<Buffer> {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5e;
  cdb[1] = sa;
  cdb.writeUInt16BE(allocation, 7);
  const r = await i.command(cdb, { read: allocation, timeoutMs: 30_000 });
  if (r.status !== GOOD) throw new Error(`${name} status ${r.status}`);
  return r.data;
}

async function readKeys(i: TestInitiator): Promise<{ generation: number; keys: bigint[] }> {
  const data = await prIn(i, 0, 'READ KEYS', 1024);
  const keys: bigint[] = [];
  for (let at = 8; at < 8 + data.readUInt32BE(4); at += 8) keys.push(data.readBigUInt64BE(at));
  return { generation: data.readUInt32BE(0), keys };
}

async function readReservation(i: TestInitiator): Promise<{ key: bigint; type: number } | undefined> {
  const data = await prIn(i, 1, 'READ RESERVATION', 256);
  if (data.readUInt32BE(4) === 0) return undefined;
  return { key: data.readBigUInt64BE(8), type: data[21]! & 0x0f };
}

const pattern = (byte: number, blocks: number): Buffer => Buffer.alloc(blocks * BS, byte);

t.test('(a) every start raises the epoch, persisted by the replicas before the target serves; also after a kill mid-write', async (t) => {
  const v = await volume(t);
  const a = v.first;
  const dataDir = a.dataDir;
  const e1 = epochOf(a);
  t.ok(e1 >= 1, `first epoch ${e1}`);
  t.same(await v.epochs(), [e1, e1, e1], 'every replica persisted it before any write');

  // Writes in flight when the target is killed.
  const ia = await session(a.port, 'iqn.2025-01.test:writer');
  const acked: number[] = [];
  const writing = (async () => {
    for (let n = 0; n < 10_000; n++) {
      const r = await write10(ia, n * 16, pattern(n % 251, 16));
      if (r.status !== GOOD) return;
      acked.push(n);
    }
  })().catch(() => undefined);
  while (acked.length < 20) await sleep(20);
  process.kill(a.pid, 'SIGKILL');
  await a.stop();
  await writing;
  ia.close();
  t.ok(acked.length >= 20, `${acked.length} writes acknowledged before the kill`);

  const b = await v.target(dataDir);
  const e2 = epochOf(b);
  t.equal(e2, e1 + 1, 'the restart took the next epoch');
  t.same(await v.epochs(), [e2, e2, e2], 'persisted by the replicas before the target served anything');
  const ib = await session(b.port, 'iqn.2025-01.test:reader');
  t.teardown(() => ib.close());
  for (const n of [acked[0]!, acked[Math.floor(acked.length / 2)]!, acked.at(-1)!]) {
    const r = await read10(ib, n * 16, 16);
    t.equal(r.status, GOOD);
    t.ok(r.data.equals(pattern(n % 251, 16)), `acknowledged write ${n} reads back after the restart`);
  }
  // A stopped and restarted target moves on again.
  ib.close();
  t.equal(await b.stop(), 0);
  const c = await v.target(dataDir);
  t.equal(epochOf(c), e2 + 1);
  t.same(await v.epochs(), [e2 + 1, e2 + 1, e2 + 1]);
});

t.test('(b) a frozen target cannot write after another one took over', async (t) => {
  const v = await volume(t);
  const a = v.first;
  const eA = epochOf(a);
  const ia = await session(a.port, 'iqn.2025-01.test:stale');
  t.teardown(() => ia.close());
  const before = pattern(0x11, 8);
  t.equal((await write10(ia, 100, before)).status, GOOD, 'target A writes');

  process.kill(a.pid, 'SIGSTOP');
  t.teardown(() => { try { process.kill(a.pid, 'SIGCONT'); } catch { /* exited */ } });
  // Failover: the replicas are routed to B (another instance, its own empty data directory).
  const b = await v.target(t.testdir());
  const eB = epochOf(b);
  t.ok(eB > eA, `B took epoch ${eB} above A's ${eA}`);
  t.same(await v.epochs(), [eB, eB, eB], 'the replicas persisted B\'s epoch');
  const ib = await session(b.port, 'iqn.2025-01.test:new');
  const seen = await read10(ib, 100, 8);
  t.ok(seen.data.equals(before), 'B serves what A wrote');
  ib.close();

  // B crashes and the replicas are routed back to A (a stale endpoint); A wakes up and writes.
  process.kill(b.pid, 'SIGKILL');
  await b.stop();
  v.router.setUpstream(a.replicaAddress.port);
  process.kill(a.pid, 'SIGCONT');
  const stale = await write10(ia, 100, pattern(0x22, 8), 60_000);
  t.equal(stale.status, CHECK_CONDITION, 'the stale target\'s write fails');
  let refused = false;
  for (let n = 0; n < 300 && !refused; n++) {
    refused = a.stderrLines().some((l) => l.includes('another target took over'));
    if (!refused) await sleep(100);
  }
  t.ok(refused, 'A refuses the replicas: they have seen a newer epoch');
  t.same(await v.epochs(), [eB, eB, eB], 'A did not lower or move the epoch');

  // A third target (B's data directory) takes over: A's data never landed.
  const c = await v.target(b.dataDir);
  t.ok(epochOf(c) > eB);
  const ic = await session(c.port, 'iqn.2025-01.test:check');
  t.teardown(() => ic.close());
  const after = await read10(ic, 100, 8);
  t.equal(after.status, GOOD);
  t.ok(after.data.equals(before), 'the block holds what A wrote before the takeover, not its stale write');
  t.equal(await c.stop(), 0);
  process.kill(a.pid, 'SIGCONT');
  await a.stop();
});

for (const k of [3, 1]) t.test(`(c) k=${k}: persistent reservations survive a failover to a target instance with an empty data directory`, async (t) => {
  const v = await volume(t, k);
  const a = v.first;
  const K1 = 0xabc1n;
  const K2 = 0xabc2n;
  const i1 = await session(a.port, 'iqn.2025-01.test:node1');
  const i2 = await session(a.port, 'iqn.2025-01.test:node2');
  t.equal((await prOut(i1, 0, 0, 0n, K1)).status, GOOD, 'node1 REGISTER');
  t.equal((await prOut(i2, 0, 0, 0n, K2)).status, GOOD, 'node2 REGISTER');
  t.equal((await prOut(i1, 1, 1, K1, 0n)).status, GOOD, 'node1 RESERVE (write exclusive)');
  const keysBefore = await readKeys(i1);
  t.same(keysBefore.keys, [K1, K2]);
  t.same(await readReservation(i2), { key: K1, type: 1 });
  for (const c of v.controls) t.ok((await c.getTargetState()).generation >= 3, 'each replica holds the state');
  i1.close();
  i2.close();
  t.equal(await a.stop(), 0);

  const b = await v.target(t.testdir());
  const j1 = await session(b.port, 'iqn.2025-01.test:node1');
  const j2 = await session(b.port, 'iqn.2025-01.test:node2');
  const j3 = await session(b.port, 'iqn.2025-01.test:node3');
  t.teardown(() => { j1.close(); j2.close(); j3.close(); });
  const keysAfter = await readKeys(j2);
  t.same(keysAfter, keysBefore, 'registrations and PRgeneration after the failover');
  t.same(await readReservation(j3), { key: K1, type: 1 }, 'the reservation after the failover');
  t.equal((await write10(j3, 0, pattern(0x33, 1))).status, RESERVATION_CONFLICT, 'an unregistered node is still fenced');
  t.equal((await write10(j2, 0, pattern(0x33, 1))).status, RESERVATION_CONFLICT, 'a registrant that does not hold write exclusive is fenced');
  t.equal((await write10(j1, 0, pattern(0x44, 1))).status, GOOD, 'the holder writes');
  // A change under the new target is stored on the replicas too.
  t.equal((await prOut(j1, 2, 1, K1, 0n)).status, GOOD, 'node1 RELEASE');
  t.equal(await readReservation(j2), undefined);
  t.equal((await write10(j3, 0, pattern(0x33, 1))).status, GOOD, 'released: others write again');
  j1.close();
  j2.close();
  j3.close();
  t.equal(await b.stop(), 0);
  const c = await v.target(t.testdir());
  const k1 = await session(c.port, 'iqn.2025-01.test:node1');
  t.teardown(() => k1.close());
  t.same((await readKeys(k1)).keys, [K1, K2]);
  t.equal(await readReservation(k1), undefined, 'the release survived as well');
});
