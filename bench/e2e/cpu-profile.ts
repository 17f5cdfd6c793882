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
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuTicks, killAll, run, sleep, which } from '../_util/proc.js';
import { completedSeconds, QEMU_WORKLOADS, qemuBenchArgs, type NamedWorkload } from '../_util/qemu-bench.js';
import { startOurTarget } from '../_util/our-target.js';

const replicas = Number(process.env['PROF_REPLICAS'] ?? '3');
const sizeMiB = Number(process.env['PROF_SIZE_MIB'] ?? '512');
const seconds = Number(process.env['PROF_SECONDS'] ?? '4');
const reps = Number(process.env['PROF_REPS'] ?? '1');
const profDir = process.env['PROF_CPU_PROF'];
const filter = (process.env['PROF_WORKLOADS'] ?? '4k-qd32-read,4k-qd32-write,1m-qd8-read,1m-qd8-write').split(',').filter(s => s !== '');
const workloads = QEMU_WORKLOADS.filter(w => filter.includes(w.name));
const IQN = 'iqn.2016-09.com.openebs.cstor:prof';

/** SIGUSR2 starts or stops (and writes) the preload's profiler in each process. */
async function toggleProfilers(pids: readonly number[]): Promise<void> {
  for (const pid of pids) process.kill(pid, 'SIGUSR2');
  await sleep(300);
}

async function qemuBench(qemuImg: string, url: string, w: NamedWorkload, count: number): Promise<{ seconds: number; cpuUs: number }> {
  // qemu-img's own CPU time: /proc of a short-lived child is racy, so bash reports it (`times`).
  const r = await run('bash', ['-c', `"$@" 2>&1; rc=$?; times; exit $rc`, 'qb', qemuImg,
    ...qemuBenchArgs(url, w, count)], 300_000);
  const completed = completedSeconds(r.stdout);
  if (r.code !== 0 || completed === undefined) throw new Error(`qemu-img bench failed: ${(r.stderr + r.stdout).slice(-400)}`);
  // `times` prints the shell's then its children's user/sys: take the second line.
  const lines = r.stdout.trim().split('\n');
  const t = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(lines[lines.length - 1] ?? '');
  const cpuUs = t === null ? NaN : ((Number(t[1]) * 60 + Number(t[2])) + (Number(t[3]) * 60 + Number(t[4]))) * 1e6;
  return { seconds: completed, cpuUs };
}

async function main(): Promise<void> {
  const qemuImg = which('qemu-img');
  if (qemuImg === undefined) throw new Error('qemu-img not found');
  const dir = await mkdtemp(join(tmpdir(), 'cpu-profile-'));
  if (profDir !== undefined) {
    // --cpu-prof is refused in NODE_OPTIONS; a preload that drives the inspector is inherited by the replicas.
    const preload = fileURLToPath(new URL('./cpu-prof-preload.js', import.meta.url));
    process.env['NODE_OPTIONS'] = `${process.env['NODE_OPTIONS'] ?? ''} --import=${preload}`.trim();
    process.env['CPUPROF_DIR'] = profDir;
    // The preload writes into it and cannot report a missing directory.
    await mkdir(profDir, { recursive: true });
  }
  const ours = startOurTarget({ dataDir: dir, sizeBytes: sizeMiB * 2 ** 20, iqn: IQN, replicas, deadlineMs: 3_600_000 });
  // The children took the environment at spawn; this process needs neither variable.
  delete process.env['NODE_OPTIONS'];
  delete process.env['CPUPROF_DIR'];
  const ourTarget = await ours;
  const { proc: target, url } = ourTarget;
  const replicaIds = Array.from({ length: replicas }, (_, i) => `r${i + 1}`);
  try {
    if (process.env['PROF_NO_PRECONDITION'] !== '1') {
      process.stderr.write(`preconditioning ${sizeMiB} MiB\n`);
      await qemuBench(qemuImg, url, { name: 'pre', bs: 1 << 20, depth: 8, write: true, step: 1 << 20 }, sizeMiB);
    }
    for (const w of workloads) {
      // Calibrate: a short run sizes the measured ones to ~`seconds`.
      const cal = await qemuBench(qemuImg, url, w, w.bs >= 1 << 20 ? 200 : 3000);
      const count = Math.max(100, Math.round((w.bs >= 1 << 20 ? 200 : 3000) / cal.seconds * seconds));
      for (let rep = 0; rep < reps; rep++) {
        const pids = replicaIds.flatMap((id) => ourTarget.replicaPids(id).slice(-1));
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
