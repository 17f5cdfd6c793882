// The adaptive rebuild rate (AIMD) as a pure controller: its single-step rules, and in a closed-loop
// model of a device shared by foreground I/O and the rebuild, the promise it exists for: foreground
// ops/s stay at least 0.5x undisturbed while the rebuild still makes real progress.
import t from 'tap';
import { RebuildRateController } from '../../../src/target/volume/rebuild-rate-controller.js';

const MiB = 2 ** 20;

t.test('idle volume: full speed from the start and stays there', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 200 * MiB });
  t.equal(c.rateBytesPerSec, 200 * MiB, 'no baseline (idle before): starts at the cap');
  for (let i = 0; i < 5; i++) t.equal(c.update({ opsPerSec: 0, inFlight: 0 }), 'idle');
  t.equal(c.rateBytesPerSec, 200 * MiB);
});

t.test('foreground below 0.6x baseline halves the rate, down to the floor and never below', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 200 * MiB, baselineOpsPerSec: 1000, floorBytesPerSec: 4 * MiB, relearnTicks: 100, smoothing: 1 });
  t.equal(c.rateBytesPerSec, 50 * MiB, 'under load already: starts at a quarter of the cap');
  t.equal(c.update({ opsPerSec: 500 }), 'decrease');
  t.equal(c.rateBytesPerSec, 25 * MiB);
  const seen: number[] = [];
  for (let i = 0; i < 10; i++) {
    c.update({ opsPerSec: 100 });
    seen.push(c.rateBytesPerSec);
  }
  t.equal(Math.min(...seen), 4 * MiB, 'reaches the floor');
  t.ok(seen.every((r) => r >= 4 * MiB), 'never below the floor');
  t.equal(c.update({ opsPerSec: 599 }) === 'increase', false, 'still below target: no increase');
});

t.test('recovery: one tick of hold after a decrease, then additive steps up to the cap', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 160 * MiB, baselineOpsPerSec: 1000, stepBytesPerSec: 20 * MiB });
  t.equal(c.update({ opsPerSec: 550 }), 'hold', 'decisions need two ticks (smoothing)');
  t.equal(c.update({ opsPerSec: 550 }), 'decrease');
  const after = c.rateBytesPerSec;
  t.equal(after, 20 * MiB);
  t.equal(c.update({ opsPerSec: 900 }), 'hold', 'the effect of the decrease shows only in the samples after it');
  t.equal(c.update({ opsPerSec: 900 }), 'increase');
  t.equal(c.rateBytesPerSec, after + 20 * MiB, 'additive step');
  for (let i = 0; i < 20; i++) c.update({ opsPerSec: 900 });
  t.equal(c.rateBytesPerSec, 160 * MiB, 'capped at the configured max');
  t.equal(c.update({ opsPerSec: 900 }), 'hold');
});

t.test('no baseline but demand appears: measured at the floor, then used', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 100 * MiB, floorBytesPerSec: 5 * MiB });
  t.equal(c.baselineOpsPerSec, undefined);
  t.equal(c.update({ opsPerSec: 300 }), 'decrease', 'drops to the floor to measure');
  t.equal(c.rateBytesPerSec, 5 * MiB);
  t.equal(c.update({ opsPerSec: 800 }), 'learn');
  t.equal(c.baselineOpsPerSec, 800, 'what it does at the floor is its undisturbed level');
  t.equal(c.update({ opsPerSec: 400 }), 'hold', 'at the floor already: nothing lower to go to');
});

t.test('a lighter workload at the floor is re-learned instead of pinning the rebuild there', async (t) => {
  const c = new RebuildRateController({
    maxBytesPerSec: 100 * MiB, baselineOpsPerSec: 1000, floorBytesPerSec: 5 * MiB, relearnTicks: 3, smoothing: 1,
  });
  while (c.rateBytesPerSec > 5 * MiB) c.update({ opsPerSec: 200 });
  t.equal(c.update({ opsPerSec: 200 }), 'hold');
  t.equal(c.update({ opsPerSec: 200 }), 'hold');
  t.equal(c.update({ opsPerSec: 200 }), 'learn', 'third tick at the floor, still below target');
  t.equal(c.baselineOpsPerSec, 200);
  t.equal(c.update({ opsPerSec: 200 }), 'increase', 'then it climbs again');
});

t.test('starved foreground (nothing completed, requests outstanding) is demand, not idle', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 100 * MiB, baselineOpsPerSec: 1000, smoothing: 1 });
  const before = c.rateBytesPerSec;
  t.equal(c.update({ opsPerSec: 0, inFlight: 32 }), 'decrease');
  t.ok(c.rateBytesPerSec < before);
  t.equal(c.update({ opsPerSec: 0, inFlight: 0 }), 'idle', 'truly idle: back to full speed');
  t.equal(c.rateBytesPerSec, 100 * MiB);
});

t.test('one noisy tick does not halve the rate; two low ticks do', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 100 * MiB, baselineOpsPerSec: 1000 });
  const start = c.rateBytesPerSec;
  t.equal(c.update({ opsPerSec: 550 }), 'hold', 'one tick at 0.55x: below 0.6 but above the 0.5 promise');
  t.equal(c.update({ opsPerSec: 1000 }), 'increase', 'mean 775 >= 600');
  t.ok(c.rateBytesPerSec > start);
  const up = c.rateBytesPerSec;
  t.equal(c.update({ opsPerSec: 150 }), 'decrease', 'mean of 1000 and 150 < 600');
  t.equal(c.rateBytesPerSec, up / 2);
  t.equal(c.update({ opsPerSec: 400 }), 'decrease', 'a single tick below 0.5x backs off at once');
  t.equal(c.rateBytesPerSec, up / 4);
});

t.test('a higher foreground level raises the baseline, damped', async (t) => {
  const c = new RebuildRateController({ maxBytesPerSec: 100 * MiB, baselineOpsPerSec: 1000 });
  c.update({ opsPerSec: 2000 });
  t.equal(c.baselineOpsPerSec, 1250, 'a quarter of the way per tick');
});

t.test('closed loop: foreground keeps >= 0.5x undisturbed (bar an overshoot tick), the rebuild still progresses', async (t) => {
  // A device of D bytes/s shared by the rebuild and a closed-loop foreground: undisturbed it does
  // B ops/s; the rebuild's share of the device takes the same share of foreground ops.
  const D = 300 * MiB;
  const B = 2000;
  const fg = (rate: number): number => B * Math.max(0.02, 1 - rate / D);
  for (const cap of [100 * MiB, 200 * MiB, 400 * MiB]) {
    const c = new RebuildRateController({ maxBytesPerSec: cap, baselineOpsPerSec: B });
    const ratios: number[] = [];
    let bytes = 0;
    const ticks = 300;
    for (let i = 0; i < ticks; i++) {
      const ops = fg(c.rateBytesPerSec) * (1 + 0.05 * Math.sin(i * 1.7)); // a little noise
      bytes += c.rateBytesPerSec;
      ratios.push(ops / B);
      c.update({ opsPerSec: ops });
    }
    const settled = ratios.slice(10);
    const min = Math.min(...settled);
    const mean = settled.reduce((a, b) => a + b, 0) / settled.length;
    const below = settled.filter((r) => r < 0.5).length / settled.length;
    t.ok(below <= 0.02 && min >= 0.45 && mean >= 0.6,
      `cap ${cap / MiB} MiB/s: foreground >= 0.5x on ${(100 - below * 100).toFixed(1)}% of ticks after settling (min ${min.toFixed(2)}x, mean ${mean.toFixed(2)}x)`);
    const avgRate = bytes / ticks;
    // Without control, a cap above 0.5 D would hold foreground at 1 - cap/D < 0.5.
    t.ok(avgRate >= Math.min(cap, 0.25 * D), `rebuild averages ${(avgRate / MiB).toFixed(0)} MiB/s (not pinned at the floor)`);
  }
});
