// The block workloads shared by the storage benches (addon alone, replica store) and their fio
// baseline, so both compare against fio in exactly the same way.

import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { BlockFile, allocAligned } from '../../src/replica/native.js';
import { run } from './proc.js';

export interface Workload {
  readonly name: string;
  readonly rw: 'read' | 'write';
  readonly random: boolean;
  readonly bs: number;
  readonly qd: number;
}

export const BLOCK_WORKLOADS: readonly Workload[] = [
  { name: '4k randread QD1', rw: 'read', random: true, bs: 4096, qd: 1 },
  { name: '4k randread QD32', rw: 'read', random: true, bs: 4096, qd: 32 },
  { name: '4k randwrite QD1', rw: 'write', random: true, bs: 4096, qd: 1 },
  { name: '4k randwrite QD32', rw: 'write', random: true, bs: 4096, qd: 32 },
  { name: '1M seqread QD8', rw: 'read', random: false, bs: 1 << 20, qd: 8 },
  { name: '1M seqwrite QD8', rw: 'write', random: false, bs: 1 << 20, qd: 8 },
];

export interface FioSample {
  readonly iops: number;
  readonly mbps: number;
  readonly p50us: number;
  readonly p99us: number;
  /** CPU (user + sys) per operation, in µs. */
  readonly cpuUsPerOp: number;
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

interface FioSide {
  readonly iops: number;
  readonly bw_bytes: number;
  readonly lat_ns?: { readonly percentile?: Record<string, number> };
  readonly clat_ns?: { readonly percentile?: Record<string, number> };
}

/** fio with io_uring and O_DIRECT on `file` (its first `size` bytes) for `seconds`; an error string on failure. */
export async function runFio(fio: string, file: string, w: Workload, seconds: number, size: number): Promise<FioSample | string> {
  const rw = w.random ? `rand${w.rw}` : w.rw;
  const r = await run(fio, [
    '--name=bench', `--filename=${file}`, '--direct=1', '--ioengine=io_uring', `--rw=${rw}`, `--bs=${w.bs}`,
    `--iodepth=${w.qd}`, '--time_based', `--runtime=${seconds}`, `--size=${size}`, '--norandommap',
    '--randrepeat=0', '--lat_percentiles=1', '--output-format=json',
  ], (seconds + 30) * 1000);
  if (r.code !== 0) return `fio failed (${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`;
  const doc = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as {
    jobs: { read: FioSide; write: FioSide; usr_cpu?: number; sys_cpu?: number }[];
  };
  const job = doc.jobs[0];
  const side = w.rw === 'read' ? job?.read : job?.write;
  if (job === undefined || side === undefined) return 'fio: no job in output';
  const cpuShare = ((job.usr_cpu ?? 0) + (job.sys_cpu ?? 0)) / 100;
  const pct = side.lat_ns?.percentile ?? side.clat_ns?.percentile ?? {};
  return {
    iops: side.iops, mbps: side.bw_bytes / 1e6,
    p50us: (pct['50.000000'] ?? 0) / 1000, p99us: (pct['99.000000'] ?? 0) / 1000,
    cpuUsPerOp: side.iops > 0 ? (cpuShare * 1e6) / side.iops : 0,
  };
}

/** Create `path` of `size` bytes and write all of it (O_DIRECT), so reads hit allocated extents and writes overwrite in place. */
export async function preconditionFile(path: string, size: number): Promise<void> {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
  const f = await BlockFile.open(path, { write: true, direct: true });
  const chunk = 1 << 20;
  let next = 0;
  const lane = async (): Promise<void> => {
    const buf = allocAligned(chunk, 4096);
    for (let i = 0; i < chunk; i++) buf[i] = (i * 131) & 0xff;
    while (next < size) {
      const off = next;
      next += chunk;
      await f.write(buf, off);
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
  await f.flush();
  await f.close();
}
