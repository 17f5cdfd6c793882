// Our target (dist/src/target/main.js) as a bench child: started like `npm start` with extra flags,
// its stdout lines kept with their arrival time, so benches can find replica pids
// (`replica <id> pid <N>`) and time rebuilds (`rebuild complete <id> bytes=<N> seconds=<S>`).
import { fileURLToPath } from 'node:url';
import { spawnTracked, type Spawned } from './proc.js';

export interface OurTarget {
  readonly url: string;
  readonly port: number;
  readonly proc: Spawned;
  readonly dataDir: string;
  /** Pids of replica `id`, oldest first. */
  replicaPids(id: string): number[];
  /** stdout lines so far with performance.now() at arrival. */
  lines(): readonly { readonly at: number; readonly line: string }[];
  /** Resolves with the first line (from index `from` on) matching, or rejects after timeoutMs / on exit. */
  waitForLine(pattern: RegExp, timeoutMs: number, from?: number): Promise<{ readonly at: number; readonly line: string; readonly match: RegExpExecArray }>;
}

export interface OurTargetOptions {
  readonly dataDir: string;
  readonly sizeBytes: number;
  readonly iqn: string;
  readonly replicas: number;
  /** More flags (e.g. --rebuild-rate, --restart-delay). */
  readonly extraArgs?: readonly string[];
  /** Hard kill for the process (the bench's own deadline). */
  readonly deadlineMs: number;
}

export async function startOurTarget(o: OurTargetOptions): Promise<OurTarget> {
  const mainJs = fileURLToPath(new URL('../../src/target/main.js', import.meta.url));
  const lines: { at: number; line: string }[] = [];
  const waiters = new Set<() => void>();
  const proc = spawnTracked(process.execPath, [mainJs, '--portal', '127.0.0.1:0', '--replica-port', '127.0.0.1:0', '--metrics-port', '127.0.0.1:0',
    '--data-dir', o.dataDir, '--size', String(o.sizeBytes), '--iqn', o.iqn, '--log-level', 'warn',
    '--replicas', String(o.replicas), ...(o.extraArgs ?? [])], o.deadlineMs, line => {
    lines.push({ at: performance.now(), line });
    for (const w of waiters) w();
  });
  proc.child.once('exit', () => { for (const w of waiters) w(); });

  const waitForLine: OurTarget['waitForLine'] = (pattern, timeoutMs, from = 0) => new Promise((resolve, reject) => {
    const check = (): boolean => {
      for (let i = from; i < lines.length; i++) {
        const m = pattern.exec(lines[i]!.line);
        if (m !== null) {
          done();
          resolve({ ...lines[i]!, match: m });
          return true;
        }
      }
      if (proc.exited()) {
        done();
        reject(new Error(`our target exited while waiting for ${pattern}: ${proc.log().trim().slice(-600)}`));
        return true;
      }
      return false;
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`our target printed no ${pattern} within ${timeoutMs / 1000} s: ${proc.log().trim().slice(-600)}`));
    }, timeoutMs);
    const waiter = (): void => { check(); };
    const done = (): void => {
      clearTimeout(timer);
      waiters.delete(waiter);
    };
    if (!check()) waiters.add(waiter);
  });

  let ready;
  try {
    ready = await waitForLine(/^ready .*portal=127\.0\.0\.1:(\d+)/, 60_000);
  } catch (e) {
    await proc.stop();
    throw e;
  }
  const port = Number(ready.match[1]);
  return {
    url: `iscsi://127.0.0.1:${port}/${o.iqn}/0`,
    port,
    proc,
    dataDir: o.dataDir,
    replicaPids: id => lines.flatMap(({ line }) => {
      const m = /^replica (\S+) pid (\d+)$/.exec(line);
      return m !== null && m[1] === id ? [Number(m[2])] : [];
    }),
    lines: () => lines,
    waitForLine,
  };
}
