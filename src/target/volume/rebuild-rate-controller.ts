// Adaptive rebuild rate (AIMD): keeps foreground I/O at a fair share while a replica rebuilds.
// Fed one sample of foreground ops/s per tick, it halves the rebuild's rate when foreground ops/s
// (the mean of the last `smoothing` ticks, so one noisy tick does not halve it) fall below
// `targetFraction` of their undisturbed level while there is foreground demand, and otherwise
// raises it additively up to the configured cap (straight to the cap when the volume is idle:
// nothing to protect). A single tick below `floorFraction` (the promise, 0.5) halves at once.
// After a decrease it waits for fresh samples. The undisturbed level (baseline) comes from before the rebuild; when
// there was none, or the workload changed, it is re-learned while the rebuild runs at the floor,
// where its interference is smallest. Pure: no timers, no I/O, so it is unit-tested directly.

export interface RebuildRateControllerOptions {
  /** The configured cap in bytes/s (> 0; 0 = unlimited does not adapt). */
  readonly maxBytesPerSec: number;
  /** Never below this (default 4 MiB/s, at most the cap): a rebuild always makes progress. */
  readonly floorBytesPerSec?: number;
  /** Back off when foreground ops/s < this × baseline (default 0.6: margin above the 0.5 promise). */
  readonly targetFraction?: number;
  /**
   * Additive increase per tick (default cap/16 but at most 8 MiB/s, at least the floor). Small
   * enough that the step or two before a (smoothed) decrease cannot take foreground from the 0.6
   * threshold below 0.5 on a device of a few hundred MB/s. Idle, the rate goes to the cap at once.
   */
  readonly stepBytesPerSec?: number;
  /** Foreground ops/s before the rebuild started; undefined or 0 = unknown (idle). */
  readonly baselineOpsPerSec?: number | undefined;
  /** Ticks at the floor, still below target, before the baseline is re-learned there (default 3). */
  readonly relearnTicks?: number;
  /** Decisions use the mean of this many ticks (default 2). */
  readonly smoothing?: number;
  /** One tick below this × baseline is enough to back off (default 0.5: the promise itself). */
  readonly floorFraction?: number;
}

export interface ForegroundSample {
  /** Foreground operations per second over the tick. */
  readonly opsPerSec: number;
  /** Foreground requests outstanding now: demand even when none completed (starved) in the tick. */
  readonly inFlight?: number;
}

export type RateDecision = 'hold' | 'increase' | 'decrease' | 'idle' | 'learn';

export class RebuildRateController {
  readonly #max: number;
  readonly #floor: number;
  readonly #fraction: number;
  readonly #step: number;
  readonly #relearnTicks: number;
  readonly #smoothing: number;
  readonly #floorFraction: number;
  #rate: number;
  #baseline: number | undefined;
  /** Foreground ops/s of the last ticks since the last change of direction (at most #smoothing). */
  #recent: number[] = [];
  /** Samples taken at the floor while below target (to re-learn the baseline). */
  #atFloor: number[] = [];
  /** The next sample becomes the baseline (demand appeared with none known; the rate was dropped to the floor). */
  #learning = false;

  constructor(options: RebuildRateControllerOptions) {
    if (!(options.maxBytesPerSec > 0)) throw new RangeError(`maxBytesPerSec must be > 0, got ${options.maxBytesPerSec}`);
    this.#max = options.maxBytesPerSec;
    this.#floor = Math.min(this.#max, options.floorBytesPerSec ?? 4 * 2 ** 20);
    this.#fraction = options.targetFraction ?? 0.6;
    this.#step = Math.max(this.#floor, options.stepBytesPerSec ?? Math.min(this.#max / 16, 8 * 2 ** 20));
    this.#relearnTicks = Math.max(1, options.relearnTicks ?? 3);
    this.#smoothing = Math.max(1, options.smoothing ?? 2);
    this.#floorFraction = Math.min(this.#fraction, options.floorFraction ?? 0.5);
    const b = options.baselineOpsPerSec;
    this.#baseline = b !== undefined && b > 0 ? b : undefined;
    // With foreground load already running, start at a quarter of the cap rather than hit it at full speed.
    this.#rate = this.#baseline === undefined ? this.#max : Math.max(this.#floor, this.#max / 4);
  }

  /** The rate to apply now, bytes/s. */
  get rateBytesPerSec(): number {
    return this.#rate;
  }

  get baselineOpsPerSec(): number | undefined {
    return this.#baseline;
  }

  /** One tick: returns what it decided; rateBytesPerSec holds the new rate. */
  update(sample: ForegroundSample): RateDecision {
    const ops = Math.max(0, sample.opsPerSec);
    if (ops === 0 && (sample.inFlight ?? 0) === 0) {
      // No foreground demand: full speed, and what was learned about the load stays valid.
      this.#recent = [];
      this.#learning = false;
      this.#atFloor = [];
      this.#rate = this.#max;
      return 'idle';
    }
    if (this.#learning) {
      if (ops === 0) return 'hold';
      this.#learning = false;
      this.#baseline = ops;
      this.#recent = [];
      return 'learn';
    }
    if (this.#baseline === undefined) {
      // Demand with no undisturbed level known: measure it at the floor next tick.
      this.#learning = true;
      this.#rate = this.#floor;
      return 'decrease';
    }
    if (ops > this.#baseline) {
      // More than we thought undisturbed: the load grew (or the baseline was low). Follow it, damped.
      this.#baseline += (ops - this.#baseline) / 4;
    }
    this.#recent.push(ops);
    if (this.#recent.length > this.#smoothing) this.#recent.shift();
    const severe = ops < this.#floorFraction * this.#baseline;
    // Fresh after a decrease (or a new baseline): its effect shows only in the samples after it.
    if (this.#recent.length < this.#smoothing && !severe) return 'hold';
    const level = this.#recent.reduce((a, b) => a + b, 0) / this.#recent.length;
    if (severe || level < this.#fraction * this.#baseline) {
      if (this.#rate > this.#floor) {
        this.#rate = Math.max(this.#floor, this.#rate / 2);
        this.#recent = [];
        this.#atFloor = [];
        return 'decrease';
      }
      // Already at the floor and still below: the rebuild hardly matters any more, so the load
      // itself changed. After a few such ticks, take what it does now as its undisturbed level.
      this.#atFloor.push(ops);
      if (this.#atFloor.length >= this.#relearnTicks) {
        this.#baseline = this.#atFloor.reduce((a, b) => a + b, 0) / this.#atFloor.length;
        this.#atFloor = [];
        this.#recent = [];
        return 'learn';
      }
      return 'hold';
    }
    this.#atFloor = [];
    if (this.#rate >= this.#max) return 'hold';
    this.#rate = Math.min(this.#max, this.#rate + this.#step);
    return 'increase';
  }
}
