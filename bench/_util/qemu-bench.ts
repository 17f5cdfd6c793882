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
