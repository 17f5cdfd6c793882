import t from 'tap';
import { Asc, ScsiStatus } from '../../src/protocol/scsi/constants.js';
import { RangeLock } from '../../src/target/scsi/range-lock.js';
import { ascOf, cdb10, makeTarget, nexus, request } from '../fixtures/scsi-harness.js';

const BS = 512;
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('ORDERED waits for older tasks and holds back newer SIMPLE ones; HEAD OF QUEUE jumps', async (t) => {
  const { target, device } = await makeTarget();
  const order: string[] = [];
  device.beforeIo = (op, lba) => delay(lba === 1n ? 30 : 5).then(() => { order.push(`${op}${lba}`); });
  const slow = target.execute(request(cdb10(0x28, 1, 1), { attr: 1 }));
  const ordered = target.execute(request(cdb10(0x2a, 2, 1), { attr: 2, data: Buffer.alloc(BS) }));
  const after = target.execute(request(cdb10(0x28, 3, 1), { attr: 1 }));
  const hoq = target.execute(request(cdb10(0x28, 4, 1), { attr: 3 }));
  await Promise.all([slow, ordered, after, hoq]);
  t.same(order, ['read4', 'read1', 'write2', 'read3']);
});

t.test('ABORT TASK: aborted task resolves with aborted; TMF resolves after it', async (t) => {
  const { target, device } = await makeTarget();
  device.beforeIo = () => delay(30);
  const req = request(cdb10(0x28, 0, 1), { tag: 77 });
  let done = false;
  const p = target.execute(req).then((r) => { done = true; return r; });
  await delay(5);
  const tmf = await target.abortTask(nexus(1), 0n, 77);
  t.equal(tmf, 'complete');
  t.ok(done, 'task finished before the TMF resolved');
  const r = await p;
  t.equal(r.aborted, true);
  t.equal(await target.abortTask(nexus(1), 0n, 77), 'task-does-not-exist');
});

t.test('abort while waiting for data-out or ordering', async (t) => {
  const { target } = await makeTarget();
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const req = { ...request(cdb10(0x2a, 0, 1), { tag: 5, data: Buffer.alloc(BS) }) };
  const fetchBlocked = {
    ...req,
    fetchData: (_n: number, signal: AbortSignal) => new Promise<Buffer>((_r, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason));
      void gate;
    }),
  };
  const p = target.execute(fetchBlocked);
  await delay(5);
  await target.abortTaskSet(nexus(1), 0n);
  t.equal((await p).aborted, true);
  release();
});

t.test('CLEAR TASK SET: other nexus gets COMMANDS CLEARED (TAS=0) or TASK ABORTED (TAS=1)', async (t) => {
  const { target, device } = await makeTarget();
  device.beforeIo = () => delay(20);
  const mine = target.execute(request(cdb10(0x28, 0, 1), { nexus: nexus(1) }));
  const theirs = target.execute(request(cdb10(0x28, 0, 1), { nexus: nexus(2) }));
  await delay(5);
  t.equal(await target.clearTaskSet(nexus(1), 0n), 'complete');
  t.equal((await mine).aborted, true);
  t.equal((await theirs).aborted, true);
  device.beforeIo = undefined;
  t.equal(ascOf(await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: nexus(2) }))), Asc.CommandsClearedByAnotherInitiator);

  // TAS=1 via MODE SELECT.
  const p = Buffer.alloc(16);
  p[4] = 0x0a; p[5] = 0x0a; p[7] = 0x10; p[9] = 0x40;
  t.equal((await target.execute(request([0x15, 0x10, 0, 0, 16, 0], { data: p }))).status, ScsiStatus.Good);
  await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: nexus(2) })); // MODE PARAMETERS CHANGED
  device.beforeIo = () => delay(20);
  const theirs2 = target.execute(request(cdb10(0x28, 0, 1), { nexus: nexus(2) }));
  await delay(5);
  await target.clearTaskSet(nexus(1), 0n);
  const r = await theirs2;
  t.equal(r.status, ScsiStatus.TaskAborted);
  t.notOk(r.aborted);
});

t.test('LOGICAL UNIT RESET: BUS DEVICE RESET everywhere, SPC-2 reservation released, mode reset', async (t) => {
  const { target } = await makeTarget();
  t.equal((await target.execute(request([0x16, 0, 0, 0, 0, 0]))).status, ScsiStatus.Good);
  t.equal(await target.logicalUnitReset(nexus(1), 0n), 'complete');
  for (const n of [nexus(1), nexus(2)]) {
    t.equal(ascOf(await target.execute(request([0, 0, 0, 0, 0, 0], { nexus: n }))), Asc.BusDeviceResetFunctionOccurred);
  }
  t.equal((await target.execute(request(cdb10(0x28, 0, 1), { nexus: nexus(2) }))).status, ScsiStatus.Good, 'reservation gone');
  await target.targetReset(nexus(1), true);
  t.equal(ascOf(await target.execute(request([0, 0, 0, 0, 0, 0]))), Asc.PowerOnOccurred);
});

t.test('RangeLock', async (t) => {
  const lock = new RangeLock();
  const a = await lock.acquire(0n, 10, false);
  const b = await lock.acquire(5n, 10, false);
  t.equal(lock.size, 2, 'shared locks coexist');
  let xGranted = false;
  const x = Promise.resolve(lock.acquire(8n, 1, true)).then((r) => { xGranted = true; return r; });
  let sGranted = false;
  const s = Promise.resolve(lock.acquire(8n, 1, false)).then((r) => { sGranted = true; return r; });
  const free = await lock.acquire(100n, 1, false);
  t.ok(free, 'disjoint range not blocked');
  await delay(1);
  t.notOk(xGranted);
  a();
  await delay(1);
  t.notOk(xGranted);
  b();
  await delay(1);
  t.ok(xGranted, 'exclusive after overlapping shared released');
  t.notOk(sGranted, 'later shared waits behind the exclusive (FIFO)');
  (await x)();
  await delay(1);
  t.ok(sGranted);
  (await s)();
  free();
  t.equal(lock.size, 0);
  const ac = new AbortController();
  const held = await lock.acquire(0n, 1, true);
  const waiting = Promise.resolve(lock.acquire(0n, 1, true, ac.signal));
  ac.abort(new Error('stop'));
  await t.rejects(waiting, /stop/);
  held();
  t.equal(lock.size, 0);
});
