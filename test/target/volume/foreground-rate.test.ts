// The foreground-rate sampler against a hand-driven clock and counters: one counters read per
// sample, ops/s over a window (covered whole, pruned to what is kept) and since a moment (from
// the first sample at or after it), and never a rate over a zero or negative interval.
import t from 'tap';
import { ForegroundRate } from '../../../src/target/volume/foreground-rate.js';

function setup(keepMs = 10_000): { f: ForegroundRate; at: (t: number, ops: number, inFlight?: number) => void; reads: () => number } {
  let now = 0;
  let ops = 0;
  let inFlight = 0;
  let reads = 0;
  const f = new ForegroundRate({ read: () => { reads++; return { ops, inFlight }; }, keepMs, now: () => now });
  return {
    f,
    at: (time, o, q = 0) => { now = time; ops = o; inFlight = q; f.sample(); },
    reads: () => reads,
  };
}

t.test('since a moment: ops/s and requests in flight from the first sample at or after it, counters read once per sample', async (t) => {
  const { f, at, reads } = setup();
  t.equal(f.opsPerSecSince(0, 0), undefined, 'no samples');
  at(1000, 0);
  t.equal(f.opsPerSecSince(0, 0), undefined, 'one sample: no interval yet');
  at(1500, 400, 7);
  t.same(f.opsPerSecSince(1000, 500), { from: 1000, to: 1500, opsPerSec: 800, inFlight: 7 }, 'since the previous sample');
  t.equal(reads(), 2, 'one read per sample');
  t.equal(f.opsPerSecSince(1000, 501), undefined, 'shorter than asked for');
  t.equal(f.opsPerSecSince(1001, 0), undefined, 'a sample before `since` is not a start: only one after it');
  at(2000, 500, 3);
  t.same(f.opsPerSecSince(1001, 0), { from: 1500, to: 2000, opsPerSec: 200, inFlight: 3 }, 'from the first sample after `since`');
  t.same(f.opsPerSecSince(-Infinity, 1000), { from: 1000, to: 2000, opsPerSec: 500, inFlight: 3 }, 'across several samples');
});

t.test('ops/s over a window: from the newest sample at or before its start, pruned to keepMs', async (t) => {
  const { f, at } = setup(10_000);
  at(0, 0);
  at(500, 100);
  t.equal(f.opsPerSecOver(10_000, 1000), undefined, 'less history than the minimum');
  t.equal(f.opsPerSecOver(500), 200, 'exactly the window');
  for (let s = 1; s <= 30; s++) at(s * 1000, 100 + s * 1000); // 1000 ops/s from 0.5 s on
  t.equal(f.opsPerSecOver(10_000, 1000), 1000, 'the last 10 s');
  t.equal(f.opsPerSecOver(2500), 1000, 'a window between samples reaches back to the one before it');
  at(31_000, 100 + 30_000 + 5000); // a burst in the last second
  t.equal(f.opsPerSecOver(10_000), (10_000 + 4000) / 10, 'averaged over the window');
  t.equal(f.opsPerSecOver(60_000), undefined, 'a full minute is not known');
  t.equal(f.opsPerSecOver(60_000, 1000), 1400, 'samples older than keepMs are gone: a longer window spans the 10 s kept, not 31 s');
});

t.test('a clock that stands still or steps back records nothing: no zero or negative interval', async (t) => {
  const { f, at, reads } = setup();
  at(1000, 0);
  at(2000, 1000);
  at(2000, 1500); // same instant
  at(1500, 2000); // earlier
  t.equal(reads(), 2, 'those samples were not taken');
  t.same(f.opsPerSecSince(0, 0), { from: 1000, to: 2000, opsPerSec: 1000, inFlight: 0 });
  t.equal(f.opsPerSecOver(1000), 1000);
  const { f: g, at: atG } = setup();
  atG(1000, 0);
  atG(1000, 50);
  t.equal(g.opsPerSecSince(0, 0), undefined, 'one distinct instant: no rate');
  t.equal(g.opsPerSecOver(0, 0), undefined, 'not even over an empty window');
});
