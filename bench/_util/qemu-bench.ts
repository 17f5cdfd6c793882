// One `qemu-img bench` run over iscsi:// (libiscsi inside qemu, no kernel initiator), timed by
// qemu-img itself: "Run completed in" covers the I/O loop only, not the iSCSI login before it.
import { run } from './proc.js';

export interface QemuWorkload {
  readonly bs: number;
  readonly depth: number;
  readonly write: boolean;
  /** Bytes between consecutive requests (wraps at the image end). */
  readonly step: number;
}

/** A workload with the name it is selected by (e.g. 4k-qd32-read). */
export interface NamedWorkload extends QemuWorkload {
  readonly name: string;
}

// A large odd number of 4 KiB blocks (16411 is prime): every step jumps ~64 MiB, and the sequence
// of offsets modulo the image size visits far-apart blocks instead of neighbours.
export const STRIDE_4K = 16411 * 4096;

/** The benches' workloads: 4 KiB strided at QD1 and QD32, 1 MiB sequential at QD8, each read and write. */
export const QEMU_WORKLOADS: readonly NamedWorkload[] = [
  { name: '4k-qd1-read', bs: 4096, depth: 1, write: false, step: STRIDE_4K },
  { name: '4k-qd1-write', bs: 4096, depth: 1, write: true, step: STRIDE_4K },
  { name: '4k-qd32-read', bs: 4096, depth: 32, write: false, step: STRIDE_4K },
  { name: '4k-qd32-write', bs: 4096, depth: 32, write: true, step: STRIDE_4K },
  { name: '1m-qd8-read', bs: 1 << 20, depth: 8, write: false, step: 1 << 20 },
  { name: '1m-qd8-write', bs: 1 << 20, depth: 8, write: true, step: 1 << 20 },
];

export interface RunSample {
  readonly count: number;
  readonly seconds: number;
  readonly iops: number;
  readonly mbps: number;
}

/** The `qemu-img bench` arguments for `count` requests of workload `w` on `url`. */
export function qemuBenchArgs(url: string, w: QemuWorkload, count: number): string[] {
  return ['bench', '-f', 'raw', '-t', 'none', '-n', '-c', String(count), '-d', String(w.depth), '-s', String(w.bs),
    '-S', String(w.step), ...(w.write ? ['-w', '--pattern=165'] : []), url];
}

/** The I/O loop's seconds from qemu-img bench's output, undefined when it did not complete. */
export function completedSeconds(stdout: string): number | undefined {
  const m = /Run completed in ([\d.]+) seconds/.exec(stdout);
  return m === null ? undefined : Number(m[1]);
}

export async function qemuBench(qemuImg: string, url: string, w: QemuWorkload, count: number, timeoutMs: number): Promise<RunSample> {
  const r = await run(qemuImg, qemuBenchArgs(url, w, count), timeoutMs);
  const completed = completedSeconds(r.stdout);
  if (r.code !== 0 || completed === undefined) {
    const why = r.timedOut ? `timed out after ${timeoutMs} ms` : `exit ${r.code ?? r.signal}`;
    throw new Error(`qemu-img bench ${why}: ${(r.stderr + r.stdout).trim().slice(-400)}`);
  }
  const seconds = completed;
  const iops = count / seconds;
  return { count, seconds, iops, mbps: (iops * w.bs) / 1e6 };
}
