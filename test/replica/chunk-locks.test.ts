import t from 'tap';
import { ChunkLocks } from '../../src/replica/chunk-locks.js';

async function acquire(locks: ChunkLocks, first: number, last: number): Promise<() => void> {
  const l = locks.lock(first, last);
  return typeof l === 'function' ? l : l;
}

t.test('uncontended locks are granted at once; overlapping ones in arrival order', async (t) => {
  const locks = new ChunkLocks();
  const a = locks.lock(0, 3);
  t.type(a, 'function', 'no promise when nothing is queued');
  const b = locks.lock(10, 12);
  t.type(b, 'function', 'disjoint ranges do not wait');
  const order: string[] = [];
  const c = locks.lock(2, 11); // waits for a and b
  const d = locks.lock(3, 3); // waits for c (the last holder of chunk 3)
  t.ok(c instanceof Promise && d instanceof Promise);
  void (c as Promise<() => void>).then((u) => { order.push('c'); u(); });
  void (d as Promise<() => void>).then((u) => { order.push('d'); u(); });
  (a as () => void)();
  await new Promise((r) => setImmediate(r));
  t.same(order, [], 'c still waits for b');
  (b as () => void)();
  await new Promise((r) => setImmediate(r));
  t.same(order, ['c', 'd'], 'c, then d');
  t.equal(locks.held, 0, 'everything released');
  const e = await acquire(locks, 0, 100);
  e();
  t.equal(locks.held, 0);
});
