// CPU cost per I/O of the whole data path (target + replica processes), for optimisation work on a
// shared, noisy machine: wall-clock IOPS move with the neighbours, CPU time per operation much less.
//
// Run:   npm run -s build && node dist/bench/e2e/cpu-profile.js
// Env:   PROF_REPLICAS=3  PROF_SIZE_MIB=512  PROF_WORKLOADS=4k-qd32-read,4k-qd32-write,1m-qd8-read,1m-qd8-write
//        PROF_SECONDS=4 (length of one measured run)  PROF_REPS=1
//        PROF_CPU_PROF=DIR (CPU profiles of the target and every replica during the first measured run
//        of each workload, through cpu-prof-preload.ts; they land in DIR as <pid>-<n>.cpuprofile)
//        PROF_NO_PRECONDITION=1 (reads of never-written chunks skip the device: only for write runs)
// Output: one line per run: IOPS, and CPU µs per operation for the target, the replicas (sum) and qemu-img.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll, run, spawnTracked, which } from '../_util/proc.js';

interface Workload { readonly name: string; readonly bs: number; readonly depth: number; readonly write: boolean; readonly step: number }

const STRIDE_4K = 16411 * 4096;
const ALL: readonly Workload[] = [
  { name: '4k-qd1-read', bs: 4096, depth: 1, write: false, step: STRIDE_4K },
  { name: '4k-qd1-write', bs: 4096, depth: 1, write: true, step: STRIDE_4K },
  { name: '4k-qd32-read', bs: 4096, depth: 32, write: false, step: STRIDE_4K },
  { name: '4k-qd32-write', bs: 4096, depth: 32, write: true, step: STRIDE_4K },
  { name: '1m-qd8-read', bs: 1 << 20, depth: 8, write: false, step: 1 << 20 },
  { name: '1m-qd8-write', bs: 1 << 20, depth: 8, write: true, step: 1 << 20 },
];

const replicas = Number(process.env['PROF_REPLICAS'] ?? '3');
const sizeMiB = Number(process.env['PROF_SIZE_MIB'] ?? '512');
const seconds = Number(process.env['PROF_SECONDS'] ?? '4');
const reps = Number(process.env['PROF_REPS'] ?? '1');
const profDir = process.env['PROF_CPU_PROF'];
const filter = (process.env['PROF_WORKLOADS'] ?? '4k-qd32-read,4k-qd32-write,1m-qd8-read,1m-qd8-write').split(',').filter(s => s !== '');
const workloads = ALL.filter(w => filter.includes(w.name));
const IQN = 'iqn.2016-09.com.openebs.cstor:prof';

/** utime + stime of a process (all its threads), in clock ticks (USER_HZ = 100). */
async function cpuTicks(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return NaN;
  }
}

/** SIGUSR2 starts or stops (and writes) the preload's profiler in each process. */
async function toggleProfilers(pids: readonly number[]): Promise<void> {
  for (const pid of pids) process.kill(pid, 'SIGUSR2');
  await new Promise(r => setTimeout(r, 300));
}

async function qemuBench(qemuImg: string, url: string, w: Workload, count: number): Promise<{ seconds: number; cpuUs: number }> {
  const args = ['bench', '-f', 'raw', '-t', 'none', '-n', '-c', String(count), '-d', String(w.depth), '-s', String(w.bs),
    '-S', String(w.step), ...(w.write ? ['-w', '--pattern=165'] : []), url];
  // qemu-img's own CPU time: /proc of a short-lived child is racy, so bash reports it (`times`).
  const r = await run('bash', ['-c', `"$@" >/tmp/.qb.$$ 2>&1; rc=$?; cat /tmp/.qb.$$; rm -f /tmp/.qb.$$; times; exit $rc`, 'qb', qemuImg, ...args], 300_000);
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  if (r.code !== 0 || m === null) throw new Error(`qemu-img bench failed: ${(r.stderr + r.stdout).slice(-400)}`);
  // `times` prints the shell's then its children's user/sys: take the second line.
  const lines = r.stdout.trim().split('\n');
  const t = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(lines[lines.length - 1] ?? '');
  const cpuUs = t === null ? NaN : ((Number(t[1]) * 60 + Number(t[2])) + (Number(t[3]) * 60 + Number(t[4]))) * 1e6;
  return { seconds: Number(m[1]), cpuUs };
}

async function main(): Promise<void> {
  const qemuImg = which('qemu-img');
  if (qemuImg === undefined) throw new Error('qemu-img not found');
  const dir = await mkdtemp(join(tmpdir(), 'cpu-profile-'));
  const replicaPids = new Map<string, number>();
  let resolveReady: (line: string) => void = () => undefined;
  const ready = new Promise<string>(r => { resolveReady = r; });
  const mainJs = fileURLToPath(new URL('../../src/target/main.js', import.meta.url));
  if (profDir !== undefined) {
    // --cpu-prof is refused in NODE_OPTIONS; a preload that drives the inspector is inherited by the replicas.
    const preload = fileURLToPath(new URL('./cpu-prof-preload.js', import.meta.url));
    process.env['NODE_OPTIONS'] = `${process.env['NODE_OPTIONS'] ?? ''} --import=${preload}`.trim();
    process.env['CPUPROF_DIR'] = profDir;
  }
  const target = spawnTracked(process.execPath, [mainJs, '--portal', '127.0.0.1:0', '--replica-port', '127.0.0.1:0', '--metrics-port', '127.0.0.1:0', '--data-dir', dir,
    '--size', `${sizeMiB}M`, '--iqn', IQN, '--log-level', 'warn', '--replicas', String(replicas)], 3_600_000, line => {
    const rp = /^replica (\S+) pid (\d+)/.exec(line);
    if (rp !== null) replicaPids.set(rp[1]!, Number(rp[2]));
    if (line.startsWith('ready ')) resolveReady(line);
  });
  delete process.env['NODE_OPTIONS'];
  delete process.env['CPUPROF_DIR'];
  try {
    let readyTimer: NodeJS.Timeout | undefined;
    const line = await Promise.race([ready, new Promise<string>((_, rej) => {
      readyTimer = setTimeout(() => rej(new Error(`not ready: ${target.log()}`)), 30_000);
    })]).finally(() => clearTimeout(readyTimer));
    const port = /portal=127\.0\.0\.1:(\d+)/.exec(line)![1];
    const url = `iscsi://127.0.0.1:${port}/${IQN}/0`;
    if (process.env['PROF_NO_PRECONDITION'] !== '1') {
      process.stderr.write(`preconditioning ${sizeMiB} MiB\n`);
      await qemuBench(qemuImg, url, { name: 'pre', bs: 1 << 20, depth: 8, write: true, step: 1 << 20 }, sizeMiB);
    }
    for (const w of workloads) {
      // Calibrate: a short run sizes the measured ones to ~`seconds`.
      const cal = await qemuBench(qemuImg, url, w, w.bs >= 1 << 20 ? 200 : 3000);
      const count = Math.max(100, Math.round((w.bs >= 1 << 20 ? 200 : 3000) / cal.seconds * seconds));
      for (let rep = 0; rep < reps; rep++) {
        const pids = [...replicaPids.values()];
        const t0 = await cpuTicks(target.pid);
        const r0 = await Promise.all(pids.map(cpuTicks));
        const profiled = profDir !== undefined && rep === 0;
        if (profiled) await toggleProfilers([target.pid, ...pids]);
        const res = await qemuBench(qemuImg, url, w, count);
        if (profiled) await toggleProfilers([target.pid, ...pids]);
        const t1 = await cpuTicks(target.pid);
        const r1 = await Promise.all(pids.map(cpuTicks));
        const tUs = ((t1 - t0) * 1e4) / count;
        const rUs = r1.reduce((s, v, i) => s + (v - r0[i]!), 0) * 1e4 / count;
        const qUs = res.cpuUs / count;
        if (profiled) process.stdout.write(`profiles: ${profDir} (target pid ${target.pid}, replicas ${pids.join(' ')})\n`);
        process.stdout.write(`${w.name.padEnd(13)} k=${replicas} n=${count} iops=${Math.round(count / res.seconds)} ` +
          `cpu_us/op target=${tUs.toFixed(1)} replicas=${rUs.toFixed(1)} (${pids.length}) qemu=${qUs.toFixed(1)} ` +
          `total=${(tUs + rUs + qUs).toFixed(1)}\n`);
      }
    }
  } finally {
    // SIGTERM to the target alone (not its group: a second SIGTERM would kill a replica before it
    // writes its profile); it stops its replicas gracefully.
    const exited = new Promise<void>(r => { if (target.exited()) r(); else target.child.once('exit', () => r()); });
    process.kill(target.pid, 'SIGTERM');
    await Promise.race([exited, new Promise(r => setTimeout(r, 20_000))]);
    await target.stop(3000);
    await killAll();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch(err => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  void killAll().finally(() => process.exit(1));
});
