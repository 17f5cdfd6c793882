// Bounded child processes for benchmarks. Every child is spawned detached (its PID is also its
// process-group id), registered until it exits, gets a hard deadline, and is killed by its own
// PID/group, never by name: the machine may run other targets and tgtd instances we don't own.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { accessSync, constants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { killChild, signalGroup } from '../../src/shared/child-process.js';

export { killChild };

const live = new Set<ChildProcess>();

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Kill every child still registered (SIGINT handler, fatal errors). */
export async function killAll(graceMs = 3000): Promise<void> {
  await Promise.all([...live].map(c => killChild(c, graceMs)));
}

/** Synchronous last resort for process 'exit': no awaiting possible there. */
export function killAllNow(): void {
  for (const c of live) if (c.pid !== undefined && !hasExited(c)) signalGroup(c.pid, 'SIGKILL');
}

export interface Spawned {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Bounded tail of stdout+stderr, for error messages. */
  log(): string;
  exited(): boolean;
  stop(graceMs?: number): Promise<void>;
}

/**
 * Start a long-running child (a target). `deadlineMs` kills it even if we forget to: the bench as
 * a whole is bounded, so a daemon outliving it is always a bug.
 */
export function spawnTracked(cmd: string, args: readonly string[], deadlineMs: number,
  onStdoutLine?: (line: string) => void): Spawned {
  const child = spawn(cmd, [...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not spawn ${cmd}`);
  live.add(child);
  let log = '';
  let partial = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (c: string) => {
    log = (log + c).slice(-16384);
    if (onStdoutLine === undefined) return;
    const lines = (partial + c).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) onStdoutLine(l);
  });
  child.stderr?.on('data', (c: string) => {
    log = (log + c).slice(-16384);
  });
  const deadline = setTimeout(() => void killChild(child, 3000), deadlineMs);
  deadline.unref();
  child.once('exit', () => {
    clearTimeout(deadline);
    live.delete(child);
  });
  child.on('error', () => live.delete(child));
  return {
    child,
    pid,
    log: () => log,
    exited: () => hasExited(child),
    stop: (graceMs = 3000) => killChild(child, graceMs),
  };
}

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly wallMs: number;
}

/** Run a command to completion with a hard timeout (SIGTERM, SIGKILL 2 s later). */
export function run(cmd: string, args: readonly string[], timeoutMs: number): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (c: string) => { stdout = (stdout + c).slice(-1 << 20); });
    child.stderr?.on('data', (c: string) => { stderr = (stderr + c).slice(-1 << 20); });
    const timer = setTimeout(() => {
      timedOut = true;
      void killChild(child, 2000);
    }, timeoutMs);
    child.on('error', err => {
      clearTimeout(timer);
      live.delete(child);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, stdout, stderr, timedOut, wallMs: performance.now() - started });
    });
  });
}

/**
 * A currently free loopback TCP port. Racy by nature (someone may take it before the child binds),
 * which is why callers verify what actually got bound.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

/** Absolute path of an executable on PATH (plus the sbin dirs tgtd lives in), or undefined. */
export function which(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (d === '') continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** utime + stime of a live process (all its threads), in clock ticks (USER_HZ = 100); NaN when unreadable. */
export async function cpuTicks(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15 (1-based).
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return NaN;
  }
}
