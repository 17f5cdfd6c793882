// One rebuild measurement on our target with k > 1: SIGKILL one replica process, write a known
// region while it is down, let the supervisor restart it, and time the rebuild from the target's
// `rebuild complete <id> bytes=<N> seconds=<S>` line. Optionally a foreground workload runs as back
// to back ~1 s qemu-img bench runs from before the restart to after the rebuild: each run is
// classified by its I/O interval as during the rebuild or outside it (undisturbed), so the
// foreground IOPS during the rebuild can be compared with its undisturbed level on the same target.
import { sleep } from './proc.js';
import { qemuBench, type QemuWorkload } from './qemu-bench.js';
import { summarize, type Summary } from './stats.js';
import type { OurTarget } from './our-target.js';

export interface ForegroundLoad {
  readonly label: string;
  readonly workload: QemuWorkload;
  /** Requests per run (calibrated to about a second). */
  readonly count: number;
  /** Stop the load after this long even if the rebuild still runs (it then finishes unloaded). */
  readonly maxMs: number;
}

export interface RebuildScenarioOptions {
  readonly qemuImg: string;
  readonly target: OurTarget;
  /** The replica to kill (e.g. r2). */
  readonly victim: string;
  readonly regionBytes: number;
  readonly foreground?: ForegroundLoad;
  /** Bound for restart + rebuild. */
  readonly timeoutMs: number;
  readonly onProgress?: (text: string) => void;
}

export interface ForegroundSample {
  readonly startMs: number;
  readonly endMs: number;
  readonly iops: number;
  readonly phase: 'undisturbed' | 'during' | 'partial';
}

export interface RebuildResult {
  readonly bytes: number;
  readonly seconds: number;
  readonly mbps: number;
  readonly regionWriteSeconds: number;
  /** The replica came back before the region was fully written (part of it then arrived as new writes). */
  readonly regionOverlappedRestart: boolean;
  readonly foreground?: {
    readonly label: string;
    readonly undisturbed: Summary | undefined;
    readonly during: Summary | undefined;
    /** median during / median undisturbed. */
    readonly ratio: number | undefined;
    /** The load stopped before the rebuild ended (maxMs). */
    readonly cutShort: boolean;
    readonly samples: readonly ForegroundSample[];
  };
}

export async function measureRebuild(o: RebuildScenarioOptions): Promise<RebuildResult> {
  const { target, victim } = o;
  const pid = target.replicaPids(victim).at(-1);
  if (pid === undefined) throw new Error(`no pid known for replica ${victim}`);
  const fromLine = target.lines().length;
  const say = o.onProgress ?? ((): void => undefined);

  say(`SIGKILL ${victim} (pid ${pid}), writing ${o.regionBytes / 2 ** 20} MiB while it is down`);
  process.kill(pid, 'SIGKILL');
  const w0 = performance.now();
  await qemuBench(o.qemuImg, target.url, { bs: 1 << 20, depth: 8, write: true, step: 1 << 20 }, o.regionBytes / (1 << 20), 300_000);
  const regionEnd = performance.now();

  // Foreground load from now (the replica is still down: the controller learns its level) to after the rebuild.
  const samples: { startMs: number; endMs: number; iops: number }[] = [];
  let stopLoad = false;
  let loadError: Error | undefined;
  let loadEnded = false;
  const fg = o.foreground;
  const load = fg === undefined ? Promise.resolve() : (async () => {
    const until = performance.now() + fg.maxMs;
    while (!stopLoad && performance.now() < until) {
      try {
        const s = await qemuBench(o.qemuImg, target.url, fg.workload, fg.count, 60_000);
        const end = performance.now();
        samples.push({ startMs: end - s.seconds * 1000, endMs: end, iops: s.iops });
      } catch (e) {
        loadError = e as Error;
        break;
      }
    }
    loadEnded = true;
  })();

  try {
    const restarted = await target.waitForLine(new RegExp(`^replica ${victim} pid (\\d+)$`), o.timeoutMs, fromLine);
    say(`${victim} restarted (pid ${restarted.match[1]}), rebuilding${fg !== undefined ? ` under ${fg.label}` : ''}`);
    const done = await target.waitForLine(new RegExp(`^rebuild complete ${victim} bytes=(\\d+) seconds=([\\d.]+)`), o.timeoutMs, fromLine);
    const bytes = Number(done.match[1]);
    const seconds = Number(done.match[2]);
    // A few more runs after the rebuild: the volume's healthy level.
    if (fg !== undefined) {
      const after = samples.length;
      const end = performance.now() + 15_000;
      while (!loadEnded && samples.length < after + 3 && performance.now() < end) await sleep(100);
    }
    stopLoad = true;
    await load;
    if (loadError !== undefined) throw loadError;

    const result = {
      bytes, seconds, mbps: seconds > 0 ? bytes / seconds / 1e6 : 0,
      regionWriteSeconds: (regionEnd - w0) / 1000,
      regionOverlappedRestart: restarted.at < regionEnd,
    };
    if (fg === undefined) return result;
    const rebuildEnd = done.at;
    const rebuildStart = rebuildEnd - seconds * 1000;
    const classified: ForegroundSample[] = samples.map(s => {
      const overlap = Math.max(0, Math.min(s.endMs, rebuildEnd) - Math.max(s.startMs, rebuildStart));
      const share = overlap / Math.max(1, s.endMs - s.startMs);
      return { ...s, phase: share === 0 ? 'undisturbed' : share >= 0.5 ? 'during' : 'partial' };
    });
    const undisturbed = summarize(classified.filter(s => s.phase === 'undisturbed').map(s => s.iops));
    const during = summarize(classified.filter(s => s.phase === 'during').map(s => s.iops));
    return {
      ...result,
      foreground: {
        label: fg.label, undisturbed, during,
        ratio: undisturbed === undefined || during === undefined || undisturbed.median === 0 ? undefined : during.median / undisturbed.median,
        cutShort: (samples.at(-1)?.endMs ?? 0) < rebuildEnd,
        samples: classified.map(s => ({ ...s, startMs: Math.round(s.startMs - w0), endMs: Math.round(s.endMs - w0), iops: Math.round(s.iops) })),
      },
    };
  } finally {
    stopLoad = true;
    await load;
  }
}
