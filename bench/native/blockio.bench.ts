// Raw O_DIRECT I/O through the blockio addon, io_uring vs thread pool, against fio's io_uring engine
// on the same preconditioned file with the same block sizes and queue depths.
//
//   npm run bench:native            (BENCH_SECONDS=2 per run, BENCH_FILE=<tmpdir>/blockio-bench.img)
//
// Prints a table then one JSON document on stdout; progress on stderr.
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockFile, allocAligned, engineInfo, type Engine } from '../../src/replica/native.js';
import { formatTable, fmtInt, fmtFixed, Progress, printJson } from '../_util/report.js';
import { which } from '../_util/proc.js';
import { BLOCK_WORKLOADS, percentile, preconditionFile, runFio, type Workload } from '../_util/block-workloads.js';

const FILE_SIZE = 1 << 30;
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? '2');
const FILE = process.env['BENCH_FILE'] ?? join(tmpdir(), 'blockio-bench.img');

interface Result {
  readonly workload: string;
  readonly engine: string;
  readonly iops: number;
  readonly mbps: number;
  readonly p50us: number;
  readonly p99us: number;
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

async function precondition(progress: Progress): Promise<void> {
  const st = await stat(FILE).catch(() => undefined);
  if (st?.size === FILE_SIZE && process.env['BENCH_REUSE'] === '1') return;
  progress.update(`preconditioning ${FILE} (1 GiB)`);
  await preconditionFile(FILE, FILE_SIZE);
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
  for (const w of BLOCK_WORKLOADS) {
    for (const engine of ['io_uring', 'threads'] as const) {
      progress.update(`${w.name}: ${engine}`);
      results.push(await runOurs(engine, w));
    }
    if (fio !== undefined) {
      progress.update(`${w.name}: fio`);
      const f = await runFio(fio, FILE, w, SECONDS, FILE_SIZE);
      const r = typeof f === 'string' ? f : { workload: w.name, engine: 'fio io_uring', iops: f.iops, mbps: f.mbps, p50us: f.p50us, p99us: f.p99us };
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
