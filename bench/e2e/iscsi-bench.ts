// End-to-end benchmark: our target against Debian's tgtd, driven by `qemu-img bench` over
// iscsi:// (libiscsi inside qemu, no kernel initiator), in one run on one machine.
//
// Run:   npm run bench            (builds first)
//   or:  node dist/bench/e2e/iscsi-bench.js
// Env:   BENCH_SIZE=1GiB  BENCH_REPS=3  BENCH_SECONDS=3 (target length of one run)  BENCH_DIR=$TMPDIR
//        BENCH_REPLICAS=1,3 (our variants: replica counts)  BENCH_TGTD_BUFFERED=0 (skip the tgtd-without-O_DIRECT baseline)
//        BENCH_WORKLOADS=4k-qd1-read,1m-qd8-write (subset)  BENCH_DEADLINE_S=1800 (hard stop)
//        BENCH_REBUILD=0 (skip the rebuild part)  BENCH_REBUILD_MIB=256 (region written while a replica is down)
//        BENCH_REBUILD_RESTART_S=20 (the supervisor restart delay in the rebuild runs)
// Output: a progress line on stderr, then the tables and one JSON document on stdout.
//
// What is compared, honestly:
// - ours is `npm start` with k = 1 and k = 3 replica processes (3 is the default): each replica's
//   store does O_DIRECT with a CRC32C per 4 KiB chunk and an intent journal; every I/O crosses a
//   loopback TCP hop to the replicas. Its LUN is preconditioned through the target (a full sequential
//   write), since its data lives in the replica stores, not in a file the bench could fill beforehand;
// - tgtd with `--bsoflags direct` (O_DIRECT) goes to the device on every I/O: the like-for-like
//   baseline;
// - tgtd without bsoflags (buffered) serves from the page cache: an upper bound for the iSCSI path.
// - qemu-img bench has no random mode: it walks offsets with a fixed step and wraps. The 4 KiB
//   workloads use a large odd step (~64 MiB) so consecutive requests land far apart (no merging,
//   no readahead win), which is "strided", not random; 1 MiB workloads are sequential.
// - rebuild (k = 3): one replica is killed with SIGKILL, a region is written while it is down, the
//   supervisor restarts it and the target times the rebuild (`rebuild complete`). Once idle and
//   once under a foreground workload with the rate unlimited (--rebuild-rate 0: the raw figure),
//   and under the same load with the default adaptive rate and with that cap fixed; the foreground
//   IOPS during the rebuild are compared with its undisturbed level on the same target.
import { availableParallelism, cpus, release, tmpdir, totalmem } from 'node:os';
import { mkdtemp, open, rm, mkdir, readFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { cpuTicks, freePort, killAll, killAllNow, run, sleep, spawnTracked, which, type Spawned } from '../_util/proc.js';
import { summarize, type Summary } from '../_util/stats.js';
import { formatTable, fmtFixed, fmtInt, printJson, Progress } from '../_util/report.js';
import { QEMU_WORKLOADS, qemuBench, STRIDE_4K, type RunSample } from '../_util/qemu-bench.js';
import { startOurTarget, type OurTarget } from '../_util/our-target.js';
import { measureRebuild, type RebuildResult } from '../_util/rebuild-scenario.js';

// ---------------------------------------------------------------------------------------------
// Settings

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (m === null) throw new Error(`BENCH_SIZE: cannot parse ${JSON.stringify(text)}`);
  const unit = (m[2] ?? '').toUpperCase();
  const mult = unit === 'K' ? 2 ** 10 : unit === 'M' ? 2 ** 20 : unit === 'G' ? 2 ** 30 : unit === 'T' ? 2 ** 40 : 1;
  const bytes = Math.round(Number(m[1]) * mult);
  // Both targets use 512-byte blocks; 1 MiB multiples keep every workload's offsets aligned.
  if (bytes < 64 * 2 ** 20 || bytes % 2 ** 20 !== 0) throw new Error('BENCH_SIZE: need a multiple of 1 MiB, at least 64 MiB');
  return bytes;
}

function envInt(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name}: expected a number in [${min}, ${max}], got ${raw}`);
  return n;
}

function envReplicas(): number[] {
  const raw = process.env['BENCH_REPLICAS'] ?? '1,3';
  const list = raw.split(',').map(s => Number(s.trim()));
  if (list.length === 0 || list.some(n => !Number.isInteger(n) || n < 1 || n > 5)) throw new Error(`BENCH_REPLICAS: expected e.g. 1,3, got ${raw}`);
  return [...new Set(list)];
}

const settings = {
  sizeBytes: parseSize(process.env['BENCH_SIZE'] ?? '1GiB'),
  replicas: envReplicas(),
  rebuild: process.env['BENCH_REBUILD'] !== '0',
  rebuildRegionMiB: envInt('BENCH_REBUILD_MIB', 256, 16, 64 * 1024),
  reps: envInt('BENCH_REPS', 3, 1, 50),
  secondsPerRun: envInt('BENCH_SECONDS', 3, 0.2, 60),
  dir: process.env['BENCH_DIR'] ?? tmpdir(),
  tgtdBuffered: process.env['BENCH_TGTD_BUFFERED'] !== '0',
  deadlineS: envInt('BENCH_DEADLINE_S', 1800, 30, 24 * 3600),
  workloadFilter: (process.env['BENCH_WORKLOADS'] ?? '').split(',').map(s => s.trim()).filter(s => s !== ''),
  blockSize: 512,
  qemuCacheMode: 'none',
  qemuAio: 'native (-n)',
};

interface Workload {
  readonly name: string;
  readonly label: string;
  readonly bs: number;
  readonly depth: number;
  readonly write: boolean;
  readonly pattern: 'strided' | 'sequential';
  readonly step: number;
  /** Requests for the calibration (warm-up) run; small enough to be quick on a slow target. */
  readonly warmupCount: number;
}

// The shared workloads (qemu-bench.ts) with this bench's table label, offset pattern and warm-up
// size; keys in this order, as they appear in the JSON settings.
const ALL_WORKLOADS: readonly Workload[] = QEMU_WORKLOADS.map((w): Workload => {
  const big = w.bs >= 1 << 20;
  return {
    name: w.name,
    label: `${big ? '1M' : '4k'} QD${w.depth} ${w.write ? 'write' : 'read'}`,
    bs: w.bs,
    depth: w.depth,
    write: w.write,
    pattern: w.step === STRIDE_4K ? 'strided' : 'sequential',
    step: w.step,
    warmupCount: big ? 200 : w.depth === 1 ? 1000 : 4000,
  };
});

const workloads = settings.workloadFilter.length === 0 ? ALL_WORKLOADS
  : ALL_WORKLOADS.filter(w => settings.workloadFilter.includes(w.name));

// ---------------------------------------------------------------------------------------------
// Targets under test

interface TargetUnderTest {
  /** ours-k1, ours-k3, ..., tgtd-direct, tgtd-buffered. */
  readonly id: string;
  readonly label: string;
  readonly io: string;
  readonly url: string;
  readonly backingFile: string;
  readonly proc: Spawned;
  /** Extra cleanup after the process is gone (tgtd's control socket files). */
  readonly cleanup: () => void;
}

/** Synchronous cleanups (temp dir, tgtd socket files) that must also run on Ctrl-C. */
const syncCleanups = new Set<() => void>();

const OUR_IQN = 'iqn.2016-09.com.openebs.cstor:bench';
const TGT_IQN = 'iqn.2001-04.com.example:bench';

/** Write the whole file with non-zero data and fsync it: every block allocated, nothing sparse. */
async function precondition(path: string, bytes: number): Promise<void> {
  const chunk = randomBytes(1 << 20);
  const fh = await open(path, 'w');
  try {
    for (let off = 0; off < bytes; off += chunk.length) {
      // Vary each chunk a little so no layer can dedupe identical blocks.
      chunk.writeUInt32LE(off >>> 0, 0);
      await fh.write(chunk, 0, Math.min(chunk.length, bytes - off), off);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function startOurs(dataDir: string, replicas: number, deadlineMs: number): Promise<TargetUnderTest> {
  const t = await startOurTarget({ dataDir, sizeBytes: settings.sizeBytes, iqn: OUR_IQN, replicas, deadlineMs });
  return {
    id: `ours-k${replicas}`, label: `ours k=${replicas}`,
    io: `target + ${replicas} replica process${replicas === 1 ? '' : 'es'} (O_DIRECT store, CRC32C per chunk, journal${replicas > 1 ? ', majority writes' : ''})`,
    url: t.url, backingFile: join(dataDir, 'replica-1.img'), proc: t.proc, cleanup: () => undefined,
  };
}

async function startTgtd(tgtd: string, tgtadm: string, backingFile: string, direct: boolean,
  deadlineMs: number): Promise<TargetUnderTest> {
  // tgtd cannot bind port 0 and, when the requested portal fails to bind, silently falls back to
  // 0.0.0.0:3260 and keeps running: pick a free port, verify the portal list, retry otherwise.
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    // tgtd refuses -C values above 32767; a random one keeps us clear of other tgtd instances.
    const controlPort = 4000 + Math.floor(Math.random() * 28000);
    const proc = spawnTracked(tgtd, ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`], deadlineMs);
    // tgtd leaves its management socket and lock file behind.
    const cleanup = (): void => {
      for (const f of [`/var/run/tgtd/socket.${controlPort}`, `/var/run/tgtd/socket.${controlPort}.lock`]) rmSync(f, { force: true });
    };
    syncCleanups.add(cleanup);
    const adm = async (...args: string[]): Promise<string> => {
      const r = await run(tgtadm, ['-C', String(controlPort), '--lld', 'iscsi', ...args], 15_000);
      if (r.code !== 0) throw new Error(`tgtadm ${args.join(' ')}: exit ${r.code}: ${r.stdout}${r.stderr}`);
      return r.stdout;
    };
    let up = false;
    for (let i = 0; i < 100 && !proc.exited(); i++) {
      const r = await run(tgtadm, ['-C', String(controlPort), '--lld', 'iscsi', '--mode', 'portal', '--op', 'show'], 5000);
      if (r.code === 0) {
        up = r.stdout.includes(`127.0.0.1:${port}`) && !/0\.0\.0\.0|\[::\]/.test(r.stdout);
        if (!up) lastError = `tgtd did not bind 127.0.0.1:${port} (portals: ${r.stdout.trim()})`;
        break;
      }
      await sleep(100);
    }
    if (!up) {
      if (lastError === '') lastError = `tgtd (control port ${controlPort}) did not come up: ${proc.log().trim()}`;
      await proc.stop();
      cleanup();
      continue;
    }
    try {
      await adm('--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', TGT_IQN);
      await adm('--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '--backing-store', backingFile,
        ...(direct ? ['--bsoflags', 'direct'] : []));
      await adm('--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', 'ALL');
    } catch (e) {
      await proc.stop();
      cleanup();
      throw e;
    }
    return {
      id: direct ? 'tgtd-direct' : 'tgtd-buffered',
      label: direct ? 'tgtd O_DIRECT' : 'tgtd buffered',
      io: direct ? 'rdwr backing store, --bsoflags direct (O_DIRECT)' : 'rdwr backing store, buffered (no bsoflags)',
      // tgtd's LUN 0 is its own controller device; the disk is LUN 1.
      url: `iscsi://127.0.0.1:${port}/${TGT_IQN}/1`, backingFile, proc, cleanup,
    };
  }
  throw new Error(`could not start tgtd: ${lastError}`);
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Cell {
  readonly target: TargetUnderTest['id'];
  readonly workload: string;
  warmup?: RunSample;
  count?: number;
  readonly runs: RunSample[];
  readonly errors: string[];
}

/** Pages of the file in the page cache, via util-linux fincore (informational). */
async function residentBytes(path: string): Promise<number | undefined> {
  const fincore = which('fincore');
  if (fincore === undefined) return undefined;
  const r = await run(fincore, ['--bytes', '--noheadings', '--output', 'RES', path], 10_000);
  const n = Number(r.stdout.trim());
  return r.code === 0 && Number.isFinite(n) ? n : undefined;
}

/** CPU seconds (user+sys) and peak RSS of a live process, from /proc. */
async function procUsage(pid: number): Promise<{ cpuSeconds: number; peakRssMiB: number } | undefined> {
  try {
    const ticks = await cpuTicks(pid);
    if (Number.isNaN(ticks)) return undefined;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
    // USER_HZ is 100 on every Linux we run on.
    return { cpuSeconds: ticks / 100, peakRssMiB: hwm === null ? NaN : Number(hwm[1]) / 1024 };
  } catch {
    return undefined;
  }
}

async function versionOf(cmd: string | undefined, args: readonly string[]): Promise<string> {
  if (cmd === undefined) return 'not installed';
  try {
    const r = await run(cmd, args, 10_000);
    return (r.stdout + r.stderr).trim().split('\n')[0] ?? '';
  } catch (e) {
    return `error: ${(e as Error).message}`;
  }
}

function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Rebuild (k = 3)

interface RebuildRow {
  readonly scenario: string;
  readonly rate: string;
  readonly load: string;
  readonly result?: RebuildResult;
  readonly error?: string;
}

const REBUILD_VICTIM = 'r2';
/** The supervisor's restart delay in the rebuild runs: long enough to write the region while the replica is down. */
const REBUILD_RESTART_S = envInt('BENCH_REBUILD_RESTART_S', 20, 1, 120);
/** The foreground load: our most latency-bound workload that still keeps the replicas busy. */
const REBUILD_FG = ALL_WORKLOADS.find(w => w.name === '4k-qd32-read')!;

async function preconditionLun(qemuImg: string, url: string): Promise<void> {
  await qemuBench(qemuImg, url, { bs: 1 << 20, depth: 8, write: true, step: 1 << 20 }, settings.sizeBytes / (1 << 20), 600_000);
}

/**
 * Rebuilds of r2 on one k=3 data dir: idle and under load with --rebuild-rate 0 (unlimited, the raw
 * figure), then under the same load with the default adaptive rate and with the same cap fixed
 * (--rebuild-adaptive off), each on a restarted target.
 */
async function rebuildPart(qemuImg: string, dir: string, fresh: boolean, deadlineMs: number, progress: Progress,
  notes: string[], started: number): Promise<RebuildRow[]> {
  const rows: RebuildRow[] = [];
  const regionBytes = Math.min(settings.rebuildRegionMiB * 2 ** 20, settings.sizeBytes);
  const say = (text: string): void => progress.update(`rebuild: ${text}  (elapsed ${fmtDuration(performance.now() - started)})`);
  const timeoutMs = 240_000;
  let fgCount: number | undefined;

  const scenario = async (target: OurTarget, name: string, rate: string, withLoad: boolean): Promise<void> => {
    try {
      if (withLoad && fgCount === undefined) {
        // About one second per run on this target, undisturbed: a warm-up (cold runs are slower), then a calibration.
        const warm = await qemuBench(qemuImg, target.url, REBUILD_FG, REBUILD_FG.warmupCount, 60_000);
        const s = await qemuBench(qemuImg, target.url, REBUILD_FG, Math.max(200, Math.round(warm.iops)), 60_000);
        fgCount = Math.max(200, Math.round(s.iops));
      }
      say(`${name}: ${rate}`);
      const result = await measureRebuild({
        qemuImg, target, victim: REBUILD_VICTIM, regionBytes, timeoutMs,
        onProgress: text => say(`${name}: ${text}`),
        ...(withLoad && fgCount !== undefined
          ? { foreground: { label: REBUILD_FG.label, workload: REBUILD_FG, count: fgCount, maxMs: 90_000 } }
          : {}),
      });
      if (result.regionOverlappedRestart) notes.push(`rebuild ${name}: ${REBUILD_VICTIM} restarted before the ${regionBytes / 2 ** 20} MiB region was written (${result.regionWriteSeconds.toFixed(1)} s)`);
      if (result.foreground?.cutShort === true) notes.push(`rebuild ${name}: the foreground load stopped (90 s) before the rebuild ended`);
      rows.push({ scenario: name, rate, load: withLoad ? REBUILD_FG.label : 'none', result });
    } catch (e) {
      rows.push({ scenario: name, rate, load: withLoad ? REBUILD_FG.label : 'none', error: (e as Error).message });
    }
  };

  const start = (extra: string[]): Promise<OurTarget> => startOurTarget({
    dataDir: dir, sizeBytes: settings.sizeBytes, iqn: OUR_IQN, replicas: 3, deadlineMs,
    extraArgs: ['--restart-delay', String(REBUILD_RESTART_S), ...extra],
  });
  say('starting ours k=3 with --rebuild-rate 0');
  const raw = await start(['--rebuild-rate', '0']);
  try {
    if (fresh) {
      say('preconditioning');
      await preconditionLun(qemuImg, raw.url);
    }
    await scenario(raw, 'idle', 'unlimited', false);
    await scenario(raw, 'under load', 'unlimited', true);
  } finally {
    await raw.proc.stop(10_000);
  }
  say('restarting ours k=3 with the default rate (adaptive)');
  const adaptive = await start([]);
  try {
    await scenario(adaptive, 'under load', 'adaptive, cap 200 MiB/s (default)', true);
  } finally {
    await adaptive.proc.stop(10_000);
  }
  // What the adaptation buys: the same cap as a fixed rate.
  say('restarting ours k=3 with --rebuild-adaptive off');
  const fixed = await start(['--rebuild-adaptive', 'off']);
  try {
    await scenario(fixed, 'under load', 'fixed 200 MiB/s (--rebuild-adaptive off)', true);
  } finally {
    await fixed.proc.stop(10_000);
  }
  return rows;
}

function rebuildTable(rows: readonly RebuildRow[]): string {
  const regionMiB = Math.min(settings.rebuildRegionMiB * 2 ** 20, settings.sizeBytes) / 2 ** 20;
  const body = rows.map(r => {
    const x = r.result;
    const fg = x?.foreground;
    const iops = (v: Summary | undefined): string => (v === undefined ? 'n/a' : `${fmtInt(v.median)} (${fmtInt(v.min)}–${fmtInt(v.max)}, n=${v.n})`);
    if (x === undefined) return [r.scenario, r.rate, r.load, `error: ${r.error ?? '?'}`.slice(0, 60), '', '', '', '', ''];
    return [
      r.scenario, r.rate, r.load,
      fmtFixed(x.bytes / 2 ** 20, 0), fmtFixed(x.seconds, 1), fmtFixed(x.mbps, 1),
      fg === undefined ? '' : iops(fg.undisturbed),
      fg === undefined ? '' : iops(fg.during),
      fg?.ratio === undefined ? '' : `${fmtFixed(fg.ratio, 2)}x`,
    ];
  });
  const table = formatTable([
    { header: 'rebuild' }, { header: 'rate' }, { header: 'foreground' },
    { header: 'MiB', align: 'right' }, { header: 's', align: 'right' }, { header: 'MB/s', align: 'right' },
    { header: 'fg IOPS undisturbed', align: 'right' }, { header: 'fg IOPS during rebuild', align: 'right' },
    { header: 'during/undisturbed', align: 'right' },
  ], body);
  return [
    `Rebuild, k=3: ${REBUILD_VICTIM} killed with SIGKILL, ${regionMiB} MiB written while it is down (restart delay ${REBUILD_RESTART_S} s),`,
    '  timed by the target (`rebuild complete ... bytes= seconds=`: from the rebuild start to the replica back in the quorum).',
    '  Foreground: back-to-back ~1 s qemu-img bench runs; "during" = runs at least half inside the rebuild, "undisturbed" = runs',
    '  wholly outside it (before: the replica down, after: healthy again). The target: foreground >= 0.5x undisturbed.',
    '',
    table,
  ].join('\n');
}

async function main(): Promise<number> {
  const started = performance.now();
  const progress = new Progress();
  const qemuImg = which('qemu-img');
  if (qemuImg === undefined) throw new Error('qemu-img not found (apt-get install qemu-utils qemu-block-extra)');
  const tgtd = which('tgtd');
  const tgtadm = which('tgtadm');
  const notes: string[] = [];

  const machine = {
    nproc: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    qemuImg: await versionOf(qemuImg, ['--version']),
    tgtd: await versionOf(tgtd, ['--version']),
    benchDirFs: (await run('stat', ['-f', '-c', '%T', settings.dir], 5000)).stdout.trim(),
  };

  const work = await mkdtemp(join(settings.dir, 'iscsi-bench-'));
  const removeWork = (): void => rmSync(work, { recursive: true, force: true });
  syncCleanups.add(removeWork);
  const deadlineMs = settings.deadlineS * 1000;
  const targets: TargetUnderTest[] = [];
  const cells: Cell[] = [];
  const rebuilds: RebuildRow[] = [];
  const usage: Record<string, unknown> = {};
  const residency: Record<string, { before?: number; after?: number }> = {};

  // Hard stop for the whole bench: whatever hangs, nothing outlives it.
  const watchdog = setTimeout(() => {
    progress.done();
    process.stderr.write(`iscsi-bench: deadline of ${settings.deadlineS}s exceeded, killing children\n`);
    killAllNow();
    for (const f of syncCleanups) f();
    process.exit(2);
  }, deadlineMs);
  watchdog.unref();

  try {
    // Same size, same filesystem, fully written, before any target opens it.
    const files = {
      direct: join(work, 'tgtd-direct.img'),
      buffered: join(work, 'tgtd-buffered.img'),
    };
    for (const k of settings.replicas) await mkdir(join(work, `ours-k${k}`));
    const toWrite = [...(tgtd !== undefined && tgtadm !== undefined ? [files.direct] : []),
      ...(tgtd !== undefined && tgtadm !== undefined && settings.tgtdBuffered ? [files.buffered] : [])];
    for (const [i, f] of toWrite.entries()) {
      progress.update(`preconditioning backing file ${i + 1}/${toWrite.length} (${settings.sizeBytes / 2 ** 20} MiB)`);
      await precondition(f, settings.sizeBytes);
    }

    progress.update('starting targets');
    for (const k of settings.replicas) {
      const ours = await startOurs(join(work, `ours-k${k}`), k, deadlineMs);
      targets.push(ours);
      // Ours keeps its data in the replica stores: fill the whole LUN through the target.
      progress.update(`preconditioning ${ours.label}'s LUN through the target (${settings.sizeBytes / 2 ** 20} MiB)`);
      await preconditionLun(qemuImg, ours.url);
    }
    if (tgtd === undefined || tgtadm === undefined) {
      notes.push('tgtd/tgtadm not installed (apt-get install tgt): no baseline measured');
    } else {
      targets.push(await startTgtd(tgtd, tgtadm, files.direct, true, deadlineMs));
      if (settings.tgtdBuffered) targets.push(await startTgtd(tgtd, tgtadm, files.buffered, false, deadlineMs));
    }
    for (const t of targets) residency[t.id] = { ...(await residentBytes(t.backingFile).then(b => (b === undefined ? {} : { before: b }))) };

    const runTimeoutMs = 15_000 + settings.secondsPerRun * 10_000;
    const totalRuns = workloads.length * targets.length * (settings.reps + 1);
    let done = 0;
    const tick = (what: string): void => {
      done++;
      progress.update(`[${done}/${totalRuns}] ${what}  (elapsed ${fmtDuration(performance.now() - started)})`);
    };

    for (const w of workloads) {
      const row = targets.map(t => {
        const c: Cell = { target: t.id, workload: w.name, runs: [], errors: [] };
        cells.push(c);
        return c;
      });
      // Calibration doubles as warm-up: size each measured run to ~secondsPerRun on this target.
      for (const [i, t] of targets.entries()) {
        const c = row[i]!;
        try {
          if (t.proc.exited()) throw new Error(`${t.label} exited: ${t.proc.log().trim().slice(-400)}`);
          const s = await qemuBench(qemuImg, t.url, w, w.warmupCount, runTimeoutMs);
          c.warmup = s;
          c.count = Math.max(50, Math.min(5_000_000, Math.round(s.iops * settings.secondsPerRun)));
          tick(`${w.label} ${t.label} warm-up: ${fmtInt(s.iops)} IOPS`);
        } catch (e) {
          c.errors.push(`warm-up: ${(e as Error).message}`);
          tick(`${w.label} ${t.label} warm-up FAILED`);
        }
      }
      // Interleave targets within each repetition so drift over time (thermal, neighbours, page
      // cache, filesystem state) hits all of them alike.
      for (let rep = 0; rep < settings.reps; rep++) {
        for (const [i, t] of targets.entries()) {
          const c = row[i]!;
          if (c.count === undefined) { tick(`${w.label} ${t.label} skipped`); continue; }
          try {
            if (t.proc.exited()) throw new Error(`${t.label} exited: ${t.proc.log().trim().slice(-400)}`);
            const s = await qemuBench(qemuImg, t.url, w, c.count, runTimeoutMs);
            c.runs.push(s);
            tick(`${w.label} ${t.label} rep ${rep + 1}/${settings.reps}: ${fmtInt(s.iops)} IOPS, ${fmtFixed(s.mbps, 1)} MB/s`);
          } catch (e) {
            c.errors.push(`rep ${rep + 1}: ${(e as Error).message}`);
            tick(`${w.label} ${t.label} rep ${rep + 1}/${settings.reps} FAILED`);
          }
        }
      }
    }
    for (const t of targets) {
      usage[t.id] = await procUsage(t.proc.pid);
      const after = await residentBytes(t.backingFile);
      if (after !== undefined) residency[t.id] = { ...residency[t.id], after };
    }

    if (settings.rebuild) {
      // The matrix is done: its targets go, so the rebuild runs have the machine to themselves.
      progress.update('stopping the matrix targets');
      await Promise.all(targets.map(async t => {
        await t.proc.stop(10_000);
        t.cleanup();
      }));
      const dir = join(work, 'ours-k3');
      const fresh = !settings.replicas.includes(3);
      if (fresh) await mkdir(dir);
      rebuilds.push(...await rebuildPart(qemuImg, dir, fresh, deadlineMs, progress, notes, started));
    }
  } finally {
    progress.update('stopping targets');
    await Promise.all(targets.map(async t => {
      await t.proc.stop(3000);
      t.cleanup();
    }));
    await killAll();
    await rm(work, { recursive: true, force: true });
    syncCleanups.delete(removeWork);
    progress.done();
    clearTimeout(watchdog);
  }

  // ---- report
  const summaries = cells.map(c => ({
    ...c,
    iops: summarize(c.runs.map(r => r.iops)),
    mbps: summarize(c.runs.map(r => r.mbps)),
  }));
  const find = (w: string, t: string): (typeof summaries)[number] | undefined =>
    summaries.find(s => s.workload === w && s.target === t);
  const ratio = (a: Summary | undefined, b: Summary | undefined): number | undefined =>
    a === undefined || b === undefined || b.median === 0 ? undefined : a.median / b.median;

  const rows: string[][] = [];
  const ratios: Record<string, Record<string, number | null>> = {};
  const baselineId = 'tgtd-direct';
  const ourIds = targets.filter(t => t.id.startsWith('ours-')).map(t => t.id);
  for (const w of workloads) {
    ratios[w.name] = {};
    const direct = find(w.name, baselineId);
    for (const id of ourIds) {
      for (const other of targets.filter(t => !t.id.startsWith('ours-'))) {
        const r = ratio(find(w.name, id)?.iops, find(w.name, other.id)?.iops);
        ratios[w.name]![`${id}/${other.id}`] = r === undefined ? null : Math.round(r * 1000) / 1000;
      }
    }
    for (const [i, t] of targets.entries()) {
      const s = find(w.name, t.id);
      const r = t.id === baselineId ? undefined : ratio(s?.iops, direct?.iops);
      const range = (x: Summary | undefined, f: (n: number) => string): string =>
        x === undefined ? 'error' : `${f(x.median)} (${f(x.min)}–${f(x.max)})`;
      rows.push([
        i === 0 ? `${w.label}` : '',
        i === 0 ? (w.pattern === 'strided' ? 'strided' : 'seq') : '',
        t.label,
        range(s?.iops, fmtInt),
        range(s?.mbps, n => fmtFixed(n, n >= 100 ? 0 : 1)),
        t.id === baselineId ? '' : r === undefined ? 'n/a' : `${fmtFixed(r, 2)}x`,
      ]);
    }
  }
  const table = formatTable([
    { header: 'workload' }, { header: 'pattern' }, { header: 'target' },
    { header: 'IOPS median (min–max)', align: 'right' }, { header: 'MB/s median (min–max)', align: 'right' },
    { header: 'this/tgtd O_DIRECT', align: 'right' },
  ], rows);

  const errors = summaries.filter(s => s.errors.length > 0);
  const header = [
    `iSCSI end-to-end bench: qemu-img bench over iscsi://127.0.0.1 (libiscsi), ${settings.reps} reps x ~${settings.secondsPerRun}s per cell, ` +
      `LUN ${settings.sizeBytes / 2 ** 20} MiB preconditioned (fully written), ${machine.nproc} CPUs, node ${machine.node}`,
    ...targets.map(t => `  ${t.label.padEnd(14)} ${t.io}`),
    `  strided = 4 KiB requests stepping ${STRIDE_4K / 2 ** 20 | 0} MiB+ apart with wrap-around (qemu-img bench has no random mode); seq = sequential`,
    '  ours and tgtd O_DIRECT hit the disk on every I/O; tgtd buffered serves a LUN that fits in RAM from the page cache.',
    '  this/tgtd O_DIRECT = median IOPS of that row divided by median IOPS of tgtd O_DIRECT (>1: faster than tgtd O_DIRECT).',
  ];
  process.stdout.write(`${header.join('\n')}\n\n${table}\n\n`);
  if (rebuilds.length > 0) process.stdout.write(`${rebuildTable(rebuilds)}\n\n`);
  for (const e of errors) process.stdout.write(`errors ${e.target} ${e.workload}: ${e.errors.join(' | ')}\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);

  printJson({
    bench: 'iscsi-e2e',
    date: new Date().toISOString(),
    durationSeconds: Math.round((performance.now() - started) / 100) / 10,
    settings: { ...settings, stride4kBytes: STRIDE_4K, tool: 'qemu-img bench -f raw -t none -n', workloads },
    machine,
    targets: targets.map(t => ({ id: t.id, label: t.label, io: t.io, url: t.url, usage: usage[t.id] ?? null,
      pageCacheResidentBytes: residency[t.id] ?? null })),
    results: summaries.map(s => ({
      target: s.target, workload: s.workload, count: s.count ?? null, warmup: s.warmup ?? null, runs: s.runs,
      iops: s.iops ?? null, mbps: s.mbps ?? null, errors: s.errors,
    })),
    ratios,
    rebuild: rebuilds.map(r => ({ scenario: r.scenario, rate: r.rate, load: r.load, ...(r.result ?? {}), error: r.error ?? null })),
    notes,
  });
  return errors.length > 0 ? 1 : 0;
}

// Ctrl-C: kill our children by PID (targets, tgtd, qemu-img), then remove the temp dir and tgtd's
// socket files; main's finally block may never get to run once we exit here.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\niscsi-bench: ${sig}, stopping children\n`);
    void killAll(2000).finally(() => {
      for (const f of syncCleanups) f();
      process.exit(130);
    });
  });
}
process.on('exit', killAllNow);

main().then(code => { process.exitCode = code; }, err => {
  process.stderr.write(`\niscsi-bench: ${(err as Error).stack ?? String(err)}\n`);
  void killAll(2000).finally(() => {
    for (const f of syncCleanups) f();
    process.exit(1);
  });
});
