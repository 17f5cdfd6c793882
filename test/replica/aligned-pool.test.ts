import t from 'tap';
import { AlignedPool } from '../../src/replica/aligned-pool.js';

t.test('size classes and alignment', (t) => {
  const pool = new AlignedPool();
  t.equal(pool.classOf(1), 4096);
  t.equal(pool.classOf(4096), 4096);
  t.equal(pool.classOf(4097), 8192);
  t.equal(pool.classOf(1 << 20), 1 << 20);
  const b = pool.acquire(4096);
  t.equal(b.byteLength, 4096);
  const small = pool.acquire(1000);
  t.equal(small.byteLength, 1000);
  t.throws(() => new AlignedPool({ alignment: 3000 }), RangeError);
  t.throws(() => pool.classOf(-1), RangeError);
  pool.release(b);
  pool.release(small);
  t.end();
});

t.test('released buffers are reused: the hot path allocates nothing', (t) => {
  let allocs = 0;
  const pool = new AlignedPool({ alloc: (size) => { allocs++; return Buffer.alloc(size); } });
  pool.preallocate(65536, 4);
  t.equal(allocs, 4);
  for (let round = 0; round < 100; round++) {
    const bufs = [pool.acquire(65536), pool.acquire(40000), pool.acquire(65536), pool.acquire(65536)];
    for (const b of bufs) pool.release(b);
  }
  t.equal(allocs, 4, 'no allocation after warm-up');
  t.same(pool.stats, { allocated: 4, inUse: 0, free: 4 });
  const a = pool.acquire(100);
  t.same(pool.stats, { allocated: 5, inUse: 1, free: 4 });
  pool.release(a);
  t.throws(() => pool.release(a), /not in use/, 'double release');
  t.throws(() => pool.release(Buffer.alloc(4096)), /not in use/, 'foreign buffer');
  t.end();
});

t.test('free lists are bounded', (t) => {
  const pool = new AlignedPool({ maxFreePerClass: 2, alloc: (size) => Buffer.alloc(size) });
  const bufs = [pool.acquire(4096), pool.acquire(4096), pool.acquire(4096)];
  for (const b of bufs) pool.release(b);
  t.same(pool.stats, { allocated: 3, inUse: 0, free: 2 });
  t.end();
});

t.test('default allocator gives O_DIRECT-aligned native memory', (t) => {
  const pool = new AlignedPool({ alignment: 4096 });
  const b = pool.acquire(8192);
  t.equal(b.byteLength, 8192);
  t.equal(b.buffer.byteLength, 8192, 'an external buffer of its own, not a slice of the Buffer pool');
  pool.release(b);
  t.end();
});
