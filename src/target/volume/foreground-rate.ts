// A volume's foreground I/O rate from (time, completed ops) samples taken at one cadence: the
// rebuild orchestrator's baseline (ops/s over the seconds before a rebuild) and the adaptive rate's
// per-tick measurement (ops/s since the sample the previous tick ended on, or the first one after
// a rate change) both come from here, the counters read once per sample. Times are monotonic
// (performance.now): a wall-clock step must not make an interval zero or negative, stretch it by
// hours or stall the ticks.

export interface ForegroundReading {
  /** Foreground operations completed so far (reads + writes). */
  readonly ops: number;
  /** Foreground requests outstanding now. */
  readonly inFlight: number;
}

/** A measured interval between two samples. */
export interface ForegroundInterval {
  /** When it began and ended, in the sampler's clock (ms). */
  readonly from: number;
  readonly to: number;
  readonly opsPerSec: number;
  /** Foreground requests outstanding at its end. */
  readonly inFlight: number;
}

export interface ForegroundRateOptions {
  /** The volume's counters now (called once per sample). */
  readonly read: () => ForegroundReading;
  /** Samples are kept this long: the longest window asked for. */
  readonly keepMs: number;
  /** Monotonic milliseconds (default performance.now; injectable for tests). */
  readonly now?: () => number;
}

interface Sample extends ForegroundReading {
  readonly t: number;
}

export class ForegroundRate {
  readonly #read: () => ForegroundReading;
  readonly #keepMs: number;
  readonly #now: () => number;
  /** Oldest first, times strictly increasing, pruned to keepMs (plus the sample just before it). */
  readonly #samples: Sample[] = [];

  constructor(options: ForegroundRateOptions) {
    this.#read = options.read;
    this.#keepMs = options.keepMs;
    this.#now = options.now ?? (() => performance.now());
  }

  /** The sampler's clock, for callers that compare their own moments with samples'. */
  now(): number {
    return this.#now();
  }

  /** Reads the counters once and records them. */
  sample(): void {
    const t = this.#now();
    const last = this.#samples.at(-1);
    // No later than the previous sample (a coarse or misbehaving clock): no interval to measure.
    if (last !== undefined && t <= last.t) return;
    const { ops, inFlight } = this.#read();
    this.#samples.push({ t, ops, inFlight });
    // Keep the newest sample at or before the window's start, so a full window stays measurable.
    while (this.#samples.length > 2 && this.#samples[1]!.t <= t - this.#keepMs) this.#samples.shift();
  }

  /**
   * Ops/s over the last `ms` before the newest sample (from the newest sample at or before that
   * window's start, else the oldest); undefined when the samples span less than `minMs`.
   */
  opsPerSecOver(ms: number, minMs = ms): number | undefined {
    const last = this.#samples.at(-1);
    let first = this.#samples[0];
    if (last === undefined || first === undefined) return undefined;
    for (const s of this.#samples) {
      if (s.t > last.t - ms) break;
      first = s;
    }
    const span = last.t - first.t;
    return span > 0 && span >= minMs ? ((last.ops - first.ops) * 1000) / span : undefined;
  }

  /**
   * Ops/s from the first sample taken at or after `since` to the newest, once they are at least
   * `minMs` apart (and more than 0). Not from an earlier sample: after a rate change, that would
   * mix in foreground measured at the old rate.
   */
  opsPerSecSince(since: number, minMs: number): ForegroundInterval | undefined {
    const a = this.#samples.find((s) => s.t >= since);
    const b = this.#samples.at(-1);
    if (a === undefined || b === undefined || b.t - a.t <= 0 || b.t - a.t < minMs) return undefined;
    return { from: a.t, to: b.t, opsPerSec: ((b.ops - a.ops) * 1000) / (b.t - a.t), inFlight: b.inFlight };
  }
}
