// Raw O_DIRECT I/O through the blockio addon, io_uring vs thread pool, against fio's io_uring engine
// on the same preconditioned file with the same block sizes and queue depths.
//
//   npm run bench:native            (BENCH_SECONDS=2 per run, BENCH_FILE=<tmpdir>/blockio-bench.img)
//
// Prints a table then one JSON document on stdout; progress on stderr.
import { rm, stat } from 'node:fs/promises';
import { openSync, closeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockFile, allocAligned, engineInfo, type Engine } from '../../src/replica/native.js';
import { formatTable, fmtInt, fmtFixed, Progress, printJson } from '../_util/report.js';
import { run, which } from '../_util/proc.js';

const FILE_SIZE = 1 << 30;
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? '2');
const FILE = process.env['BENCH_FILE'] ?? join(tmpdir(), 'blockio-bench.img');

interface Workload {
  readonly name: string;
  readonly rw: 'read' | 'write';
  readonly random: boolean;
  readonly bs: number;
  readonly qd: number;
}

const workloads: readonly Workload[] = [
  { name: '4k randread QD1', rw: 'read', random: true, bs: 4096, qd: 1 },
  { name: '4k randread QD32', rw: 'read', random: true, bs: 4096, qd: 32 },
  { name: '4k randwrite QD1', rw: 'write', random: true, bs: 4096, qd: 1 },
  { name: '4k randwrite QD32', rw: 'write', random: true, bs: 4096, qd: 32 },
  { name: '1M seqread QD8', rw: 'read', random: false, bs: 1 << 20, qd: 8 },
  { name: '1M seqwrite QD8', rw: 'write', random: false, bs: 1 << 20, qd: 8 },
];

interface Result {
  readonly workload: string;
  readonly engine: string;
  readonly iops: number;
  readonly mbps: number;
  readonly p50us: number;
  readonly p99us: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function runOurs(engine: Engine, w: Workload): Promise<Result> {
  const f = await BlockFile.open(FILE, { write: true, direct: true, engine });
  const blocks = FILE_SIZE / w.bs;
  const lat = new Float64Array(4_000_000);
  let n = 0;
  let seq = 0;
  let rng = 0x9e3779b9;
  const nextOffset = (): number => {
    if (!w.random) return (seq++ % blocks) * w.bs;
    // xorshift32: cheap, good enough to spread 4 KiB offsets over the file.
    rng ^= rng << 13; rng >>>= 0;
    rng ^= rng >>> 17;
    rng ^= rng << 5; rng >>>= 0;
    return (rng % blocks) * w.bs;
  };
  const deadline = performance.now() + SECONDS * 1000;
  const lane = async (): Promise<void> => {
    const buf = allocAligned(w.bs, 4096);
    buf.fill(0xa5);
    while (performance.now() < deadline) {
      const off = nextOffset();
      const t0 = performance.now();
      if (w.rw === 'read') await f.read(buf, off);
      else await f.write(buf, off);
      if (n < lat.length) lat[n] = performance.now() - t0;
      n++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: w.qd }, lane));
  const elapsed = (performance.now() - start) / 1000;
  await f.close();
  const sorted = lat.subarray(0, Math.min(n, lat.length)).sort();
  return {
    workload: w.name, engine: f.engine, iops: n / elapsed, mbps: (n * w.bs) / elapsed / 1e6,
    p50us: percentile(sorted, 50) * 1000, p99us: percentile(sorted, 99) * 1000,
  };
}

interface FioSide {
  readonly iops: number;
  readonly bw_bytes: number;
  readonly lat_ns?: { readonly percentile?: Record<string, number> };
  readonly clat_ns?: { readonly percentile?: Record<string, number> };
}

async function runFio(fio: string, w: Workload): Promise<Result | string> {
  const rw = w.random ? `rand${w.rw}` : w.rw;
  const r = await run(fio, [
    '--name=bench', `--filename=${FILE}`, '--direct=1', '--ioengine=io_uring', `--rw=${rw}`, `--bs=${w.bs}`,
    `--iodepth=${w.qd}`, '--time_based', `--runtime=${SECONDS}`, `--size=${FILE_SIZE}`, '--norandommap',
    '--randrepeat=0', '--lat_percentiles=1', '--output-format=json',
  ], (SECONDS + 30) * 1000);
  if (r.code !== 0) return `fio failed (${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`;
  const doc = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { read: FioSide; write: FioSide }[] };
  const side = w.rw === 'read' ? doc.jobs[0]?.read : doc.jobs[0]?.write;
  if (side === undefined) return 'fio: no job in output';
  const pct = side.lat_ns?.percentile ?? side.clat_ns?.percentile ?? {};
  return {
    workload: w.name, engine: 'fio io_uring', iops: side.iops, mbps: side.bw_bytes / 1e6,
    p50us: (pct['50.000000'] ?? 0) / 1000, p99us: (pct['99.000000'] ?? 0) / 1000,
  };
}

/** Writes the whole file once so reads hit allocated extents and writes overwrite in place. */
async function precondition(progress: Progress): Promise<void> {
  const st = await stat(FILE).catch(() => undefined);
  if (st?.size === FILE_SIZE && process.env['BENCH_REUSE'] === '1') return;
  progress.update(`preconditioning ${FILE} (1 GiB)`);
  const fd = openSync(FILE, 'w');
  ftruncateSync(fd, FILE_SIZE);
  closeSync(fd);
  const f = await BlockFile.open(FILE, { write: true });
  const chunk = 1 << 20;
  let next = 0;
  const lane = async (): Promise<void> => {
    const buf = allocAligned(chunk, 4096);
    for (let i = 0; i < chunk; i++) buf[i] = (i * 131) & 0xff;
    while (next < FILE_SIZE) {
      const off = next;
      next += chunk;
      await f.write(buf, off);
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
  await f.flush();
  await f.close();
}

async function main(): Promise<void> {
  const progress = new Progress();
  const info = engineInfo();
  const fio = which('fio');
  await precondition(progress);
  const results: Result[] = [];
  const notes: string[] = [];
  if (!info.ioUring) notes.push(`io_uring unavailable (${info.ioUringError ?? '?'}): "io_uring" rows ran on the thread pool`);
  if (fio === undefined) notes.push('fio not installed (apt-get install -y fio): no fio rows');
  for (const w of workloads) {
    for (const engine of ['io_uring', 'threads'] as const) {
      progress.update(`${w.name}: ${engine}`);
      results.push(await runOurs(engine, w));
    }
    if (fio !== undefined) {
      progress.update(`${w.name}: fio`);
      const r = await runFio(fio, w);
      if (typeof r === 'string') notes.push(`${w.name}: ${r}`);
      else results.push(r);
    }
  }
  progress.done();
  if (process.env['BENCH_KEEP'] !== '1') await rm(FILE, { force: true });

  const fioOf = (wl: string): Result | undefined => results.find((r) => r.workload === wl && r.engine === 'fio io_uring');
  const rows = results.map((r) => {
    const ref = fioOf(r.workload);
    return [
      r.workload, r.engine, fmtInt(r.iops), fmtFixed(r.mbps, 1), fmtFixed(r.p50us, 1), fmtFixed(r.p99us, 1),
      ref !== undefined && ref !== r ? fmtFixed(r.iops / ref.iops, 2) : '',
    ];
  });
  process.stdout.write(`blockio: ${SECONDS}s per run, O_DIRECT, ${FILE} (1 GiB, preconditioned), thread pool ${info.threads} threads\n\n`);
  process.stdout.write(`${formatTable([
    { header: 'workload' }, { header: 'engine' }, { header: 'IOPS', align: 'right' }, { header: 'MB/s', align: 'right' },
    { header: 'p50 µs', align: 'right' }, { header: 'p99 µs', align: 'right' }, { header: 'x fio', align: 'right' },
  ], rows)}\n\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);
  printJson({
    bench: 'blockio', seconds: SECONDS, fileSize: FILE_SIZE, ioUring: info.ioUring, threads: info.threads,
    results: results.map((r) => ({ ...r, ratioToFio: r.engine === 'fio io_uring' ? 1 : (fioOf(r.workload) === undefined ? null : r.iops / fioOf(r.workload)!.iops) })),
    notes,
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
