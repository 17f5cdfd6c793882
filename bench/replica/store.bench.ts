// The replica block store (CRC32C per chunk + intent journal, as shipped) against fio's io_uring
// O_DIRECT engine on the same filesystem, then the replica data-path framing (ReplicaConnection →
// loopback TCP → DataResponder over the real store in a child process).
//
//   npm run bench:store
//     BENCH_SECONDS=3  per measured run          BENCH_REPS=5  repetitions (median reported)
//     BENCH_DIR=<tmpdir>  where the two 1 GiB files go (same filesystem as the repo by default)
//     BENCH_ONLY=<substring>  only workloads whose name contains it (e.g. "randwrite QD32")
//     BENCH_FIO=0  skip fio     BENCH_FRAMING=0  skip the framing part     BENCH_KEEP=1  keep the files
//     BENCH_ADDON=0  skip the "addon alone" baseline
//
// The "addon alone" rows drive the native addon (BlockFile.read/write, one pooled buffer per
// request) on fio's file with the same closed loop, offsets and queue depth and no store logic:
// what Node and the addon reach by themselves, the ceiling for the store on this machine.
//
// Prints tables then one JSON document on stdout; progress on stderr. Both sides run against a
// preconditioned (fully written) file: fio on a raw 1 GiB file, the store on a formatted store file
// with 1 GiB of data capacity whose every chunk was written through the store (so every read does
// device I/O and CRC verification: never-written chunks would be answered from the table alone).
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockFile, allocAligned, engineInfo, ioStats } from '../../src/replica/native.js';
import { ReplicaStore, formatStore } from '../../src/replica/store.js';
import type { StoreInfo } from '../../src/replica/store-api.js';
import { DataResponder } from '../../src/replica/data-responder.js';
import { ReplicaConnection } from '../../src/target/volume/replica-connection.js';
import type { ReplicaHello } from '../../src/protocol/replica/frame.js';
import { silentLogger } from '../../src/shared/logger.js';
import { formatTable, fmtInt, fmtFixed, Progress, printJson } from '../_util/report.js';
import { killAll, killAllNow, spawnTracked, which } from '../_util/proc.js';
import { summarize } from '../_util/stats.js';
import { BLOCK_WORKLOADS, percentile, preconditionFile, runFio, type Workload } from '../_util/block-workloads.js';

const CAPACITY = 1 << 30;
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? '3');
// The device here swings by ±25% from one second to the next, so each store run sits next to a fio
// run and the ratio is taken per pair (median of the pairs), besides the ratio of the medians.
const REPS = Math.max(1, Math.floor(Number(process.env['BENCH_REPS'] ?? '5')));
const ONLY = process.env['BENCH_ONLY'];
const WITH_FIO = process.env['BENCH_FIO'] !== '0';
const WITH_FRAMING = process.env['BENCH_FRAMING'] !== '0';
const WITH_ADDON = process.env['BENCH_ADDON'] !== '0';
const KEEP = process.env['BENCH_KEEP'] === '1';
// os.tmpdir() is on the repo's filesystem here; the run reports the device ids so a mismatch shows.
const BASE_DIR = process.env['BENCH_DIR'] ?? tmpdir();
const VOLUME = { volumeName: 'bench', volumeUuid: '00000000-0000-4000-8000-00000000be7c', replicaId: 'bench-r1' };

interface FramingWorkload {
  readonly name: string;
  readonly op: 'ping' | 'read' | 'write';
  readonly qd: number;
  /** The direct-store workload this one wraps (for the overhead columns). */
  readonly direct?: string;
}

const framingWorkloads: readonly FramingWorkload[] = [
  { name: 'PING QD1', op: 'ping', qd: 1 },
  { name: 'PING QD32', op: 'ping', qd: 32 },
  { name: '4k read QD1', op: 'read', qd: 1, direct: '4k randread QD1' },
  { name: '4k read QD32', op: 'read', qd: 32, direct: '4k randread QD32' },
  { name: '4k write QD1', op: 'write', qd: 1, direct: '4k randwrite QD1' },
  { name: '4k write QD32', op: 'write', qd: 32, direct: '4k randwrite QD32' },
];

/** One measured run. */
interface Sample {
  readonly iops: number;
  readonly mbps: number;
  readonly p50us: number;
  readonly p99us: number;
  /** CPU time (user + system, all threads incl. io_uring workers) per operation. */
  readonly cpuUsPerOp: number;
  /** Store writes only: 4 KiB journal blocks written per write (group commit makes it < 1 at depth). */
  readonly journalBlocksPerOp?: number;
  /** Store only: mean µs from io_uring submission to reaping the completion (the addon's ioStats). */
  readonly deviceUs?: number;
}

/** The median over repetitions (each field separately) plus the raw IOPS of every repetition. */
interface Result extends Sample {
  readonly workload: string;
  readonly engine: string;
  readonly runs: readonly number[];
  /** Store rows: median over the repetitions of this run's IOPS / the adjacent fio run's. */
  readonly pairedRatio?: number;
}

function median(values: readonly number[]): number {
  return summarize(values)?.median ?? 0;
}

/** `pairs`: each repetition's store IOPS / the IOPS of the fio run next to it. */
function combine(workload: string, engine: string, samples: readonly Sample[], pairs: readonly number[] = []): Result {
  const deviceUs = samples.flatMap(s => s.deviceUs === undefined ? [] : [s.deviceUs]);
  return {
    workload, engine,
    ...(pairs.length > 0 ? { pairedRatio: median(pairs) } : {}),
    ...(deviceUs.length > 0 ? { deviceUs: median(deviceUs) } : {}),
    iops: median(samples.map(s => s.iops)), mbps: median(samples.map(s => s.mbps)),
    p50us: median(samples.map(s => s.p50us)), p99us: median(samples.map(s => s.p99us)),
    cpuUsPerOp: median(samples.map(s => s.cpuUsPerOp)),
    ...(samples.some(s => s.journalBlocksPerOp !== undefined)
      ? { journalBlocksPerOp: median(samples.map(s => s.journalBlocksPerOp ?? 0)) } : {}),
    runs: samples.map(s => s.iops),
  };
}

/** (max - min) / median of the repetitions, as a percentage string. */
function spread(r: Result): string {
  const s = summarize(r.runs);
  if (s === undefined || s.n < 2 || s.median === 0) return '';
  return `${fmtFixed(((s.max - s.min) / s.median) * 100, 0)}%`;
}

/** Offsets for one run: uniform random aligned blocks (like fio's randread with --norandommap), or sequential. */
function offsetSource(random: boolean, bs: number, span: number, seed: number): () => number {
  const blocks = Math.floor(span / bs);
  let seq = 0;
  let rng = seed >>> 0 || 0x9e3779b9;
  if (!random) return () => (seq++ % blocks) * bs;
  return () => {
    // xorshift32: cheap, uniform enough to spread 4 KiB offsets over 1 GiB.
    rng ^= rng << 13; rng >>>= 0;
    rng ^= rng >>> 17;
    rng ^= rng << 5; rng >>>= 0;
    return (rng % blocks) * bs;
  };
}

/**
 * A closed loop of `qd` lanes, each issuing `op` back to back until the deadline; per-op latency
 * is taken around the awaited call, so it includes everything the caller would wait for.
 */
async function closedLoop(qd: number, bytesPerOp: number, op: () => Promise<void>): Promise<Sample> {
  const lat = new Float64Array(4_000_000);
  let n = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const lane = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      await op();
      if (n < lat.length) lat[n] = performance.now() - t0;
      n++;
    }
  };
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: qd }, lane));
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const sorted = lat.subarray(0, Math.min(n, lat.length)).sort();
  return {
    iops: n / elapsed, mbps: (n * bytesPerOp) / elapsed / 1e6,
    p50us: percentile(sorted, 50) * 1000, p99us: percentile(sorted, 99) * 1000,
    cpuUsPerOp: n === 0 ? 0 : (cpu.user + cpu.system) / n,
  };
}

/** io_seq source shared by everything writing to the store: strictly increasing in issue order. */
class SeqCounter {
  #next: number;
  constructor(first: number) {
    this.#next = first;
  }
  take(): number {
    return this.#next++;
  }
}

async function runStore(store: ReplicaStore, w: Workload, seqs: SeqCounter, seed: number): Promise<Sample> {
  const nextOffset = offsetSource(w.random, w.bs, CAPACITY, seed);
  const op = w.rw === 'read'
    ? async (): Promise<void> => {
      const r = await store.read(nextOffset(), w.bs);
      r.release();
    }
    : async (): Promise<void> => {
      // Per-op acquire/release, as the DataResponder does for every WRITE payload.
      const buf = store.acquireBuffer(w.bs);
      const ioSeq = seqs.take();
      buf.writeUInt32LE(ioSeq >>> 0, 0);
      try {
        await store.write(nextOffset(), buf, ioSeq);
      } finally {
        store.releaseBuffer(buf);
      }
    };
  const journal0 = store.journalStats().blocksWritten;
  const io0 = ioStats();
  const run = await closedLoop(w.qd, w.bs, op);
  const io1 = ioStats();
  const cqes = io1.cqes - io0.cqes;
  const sample: Sample = cqes > 0 ? { ...run, deviceUs: (io1.deviceNs - io0.deviceNs) / cqes / 1000 } : run;
  const ops = sample.iops * SECONDS;
  const journalBlocks = store.journalStats().blocksWritten - journal0;
  // Checkpoints the journal asked for during the run were paid inside it; the idle one the timer
  // would fire a few seconds later is paid here instead, so it does not land in fio's run.
  if (w.rw !== 'write') return sample;
  await store.checkpoint();
  return { ...sample, journalBlocksPerOp: ops > 0 ? journalBlocks / ops : 0 };
}

/** The addon alone on `file` (fio's), same loop and offsets as the store: the per-request cost of Node and the addon. */
async function runAddon(file: BlockFile, w: Workload, seed: number): Promise<Sample> {
  const nextOffset = offsetSource(w.random, w.bs, CAPACITY, seed);
  const free: Buffer[] = [];
  return closedLoop(w.qd, w.bs, async () => {
    const buf = free.pop() ?? allocAligned(w.bs, file.memoryAlignment);
    try {
      if (w.rw === 'read') await file.read(buf, nextOffset());
      else await file.write(buf, nextOffset());
    } finally {
      free.push(buf);
    }
  });
}

/** Format the store and write its whole capacity through it (every chunk then has data and a CRC). */
async function preconditionStore(path: string, seqs: SeqCounter): Promise<void> {
  await formatStore(path, { ...VOLUME, capacityBytes: CAPACITY });
  const store = await ReplicaStore.open(path);
  try {
    const chunk = 1 << 20;
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < CAPACITY) {
        const off = next;
        next += chunk;
        const buf = store.acquireBuffer(chunk);
        for (let i = 0; i < chunk; i += 4096) buf.writeUInt32LE((off + i) >>> 12, i);
        try {
          await store.write(off, buf, seqs.take());
        } finally {
          store.releaseBuffer(buf);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, lane));
    await store.flush();
  } finally {
    await store.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Framing: the replica side runs in a child process (this file with --serve), as in production
// where the replica is its own process; the target side (ReplicaConnection) runs here.

interface ServeReady {
  readonly port: number;
  readonly info: StoreInfo;
}

/** Child mode: open the store, answer data connections on loopback, print READY, stop on SIGTERM. */
async function serve(path: string, deadlineMs: number): Promise<void> {
  const store = await ReplicaStore.open(path);
  const logger = silentLogger();
  const sockets = new Set<Socket>();
  const server = createServer(socket => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    // The bench skips HELLO: both ends are constructed as if past the handshake.
    new DataResponder(socket, store, { logger });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    server.close();
    for (const s of sockets) s.destroy();
    void store.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // Never outlive the bench, even if the parent dies without signalling us.
  setTimeout(stop, deadlineMs).unref();
  const ready: ServeReady = { port, info: store.info };
  process.stdout.write(`READY ${JSON.stringify(ready)}\n`);
}

async function startReplica(path: string, deadlineMs: number): Promise<{ ready: ServeReady; stop: () => Promise<void> }> {
  let onReady: (r: ServeReady) => void = () => undefined;
  const readyP = new Promise<ServeReady>(resolve => { onReady = resolve; });
  const child = spawnTracked(process.execPath, [fileURLToPath(import.meta.url), '--serve', path, String(deadlineMs)], deadlineMs + 10_000, line => {
    if (line.startsWith('READY ')) onReady(JSON.parse(line.slice(6)) as ServeReady);
  });
  const timeout = new Promise<never>((_, reject) => {
    const t = setTimeout(() => reject(new Error(`replica child did not start: ${child.log()}`)), 30_000);
    t.unref();
    void readyP.finally(() => clearTimeout(t));
  });
  const exited = new Promise<never>((_, reject) => {
    child.child.once('exit', code => reject(new Error(`replica child exited (${code}): ${child.log()}`)));
  });
  exited.catch(() => undefined);
  try {
    const ready = await Promise.race([readyP, timeout, exited]);
    return { ready, stop: () => child.stop(5000) };
  } catch (err) {
    await child.stop(2000);
    throw err;
  }
}

async function openConnection(port: number, info: StoreInfo): Promise<ReplicaConnection> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  const hello: ReplicaHello = {
    volumeName: info.volumeName, volumeUuid: info.volumeUuid, replicaId: info.replicaId, controlAddress: '',
    epoch: info.epoch, checkpointedIoSeq: info.checkpointedIoSeq, highestIoSeq: info.highestIoSeq,
    capacityBytes: info.capacityBytes, blockSize: info.blockSize, chunkSize: info.chunkSize, pid: 0,
  };
  return new ReplicaConnection(socket, hello, { logger: silentLogger(), maxInFlight: 64 });
}

async function runFraming(conn: ReplicaConnection, w: FramingWorkload, epoch: number, seqs: SeqCounter, seed: number): Promise<Sample> {
  const bs = 4096;
  const nextOffset = offsetSource(true, bs, CAPACITY, seed);
  if (w.op === 'ping') return closedLoop(w.qd, 0, async () => { await conn.ping(); });
  if (w.op === 'read') return closedLoop(w.qd, bs, async () => { await conn.read(nextOffset(), bs, epoch); });
  const payload = Buffer.alloc(bs, 0x5a);
  return closedLoop(w.qd, bs, async () => {
    await conn.write(nextOffset(), payload, { epoch, ioSeq: seqs.take() });
  });
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const progress = new Progress();
  const info = engineInfo();
  const fio = WITH_FIO ? which('fio') : undefined;
  const notes: string[] = [];
  if (!info.ioUring) notes.push(`io_uring unavailable (${info.ioUringError ?? '?'}): the store ran on the thread pool`);
  if (WITH_FIO && fio === undefined) notes.push('fio not installed (apt-get install -y fio): no fio rows');
  const selected = BLOCK_WORKLOADS.filter(w => ONLY === undefined || w.name.includes(ONLY));
  const selectedFraming = WITH_FRAMING ? framingWorkloads.filter(w => ONLY === undefined || w.name.includes(ONLY)) : [];

  const dir = await mkdtemp(join(BASE_DIR, 'replica-store-bench-'));
  const rawPath = join(dir, 'raw.img');
  const storePath = join(dir, 'store.img');
  const repoDev = (await stat(fileURLToPath(new URL('.', import.meta.url)))).dev;
  if ((await stat(dir)).dev !== repoDev) notes.push(`${dir} is not on the repo's filesystem`);
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    await killAll(3000);
    if (!KEEP) await rm(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)); });
  process.once('exit', () => killAllNow());

  const storeResults: Result[] = [];
  const framingResults: Result[] = [];
  let storeInfo: StoreInfo | undefined;
  try {
    const seqs = new SeqCounter(1);
    if (selected.length > 0 || selectedFraming.length > 0) {
      progress.update(`preconditioning the store ${storePath} (1 GiB through the store)`);
      await preconditionStore(storePath, seqs);
    }
    if (fio !== undefined && selected.length > 0) {
      progress.update(`preconditioning ${rawPath} (1 GiB)`);
      await preconditionFile(rawPath, CAPACITY);
    }

    if (selected.length > 0) {
      const store = await ReplicaStore.open(storePath);
      try {
        storeInfo = store.info;
        const addonFile = fio !== undefined && WITH_ADDON ? await BlockFile.open(rawPath, { write: true }) : undefined;
        const ours = new Map<string, Sample[]>();
        const theirs = new Map<string, Sample[]>();
        const bare = new Map<string, Sample[]>();
        const paired = new Map<string, number[]>();
        const pairedBare = new Map<string, number[]>();
        for (let rep = 0; rep < REPS; rep++) {
          for (const w of selected) {
            // Rotate who goes first so drift (device cache, thermal) does not favour one side.
            const order = ['store', 'fio', 'addon'] as const;
            const sides = [0, 1, 2].map((i) => order[(i + rep) % 3]!);
            let storeRun: Sample | undefined;
            let fioRun: Sample | undefined;
            let addonRun: Sample | undefined;
            for (const side of sides) {
              if (side === 'store') {
                progress.update(`rep ${rep + 1}/${REPS} ${w.name}: store`);
                const s = await runStore(store, w, seqs, 0x1234567 + rep * 7919);
                ours.set(w.name, [...(ours.get(w.name) ?? []), s]);
                storeRun = s;
              } else if (side === 'addon') {
                if (addonFile === undefined) continue;
                progress.update(`rep ${rep + 1}/${REPS} ${w.name}: addon alone`);
                const s = await runAddon(addonFile, w, 0x1234567 + rep * 7919);
                bare.set(w.name, [...(bare.get(w.name) ?? []), s]);
                addonRun = s;
              } else if (fio !== undefined) {
                progress.update(`rep ${rep + 1}/${REPS} ${w.name}: fio`);
                const s = await runFio(fio, rawPath, w, SECONDS, CAPACITY);
                if (typeof s === 'string') notes.push(`${w.name}: ${s}`);
                else {
                  theirs.set(w.name, [...(theirs.get(w.name) ?? []), s]);
                  fioRun = s;
                }
              }
            }
            if (storeRun !== undefined && fioRun !== undefined && fioRun.iops > 0) {
              paired.set(w.name, [...(paired.get(w.name) ?? []), storeRun.iops / fioRun.iops]);
            }
            if (addonRun !== undefined && fioRun !== undefined && fioRun.iops > 0) {
              pairedBare.set(w.name, [...(pairedBare.get(w.name) ?? []), addonRun.iops / fioRun.iops]);
            }
          }
        }
        await addonFile?.close();
        for (const w of selected) {
          const o = ours.get(w.name);
          const t = theirs.get(w.name);
          const a = bare.get(w.name);
          if (o !== undefined) storeResults.push(combine(w.name, 'store', o, paired.get(w.name)));
          if (a !== undefined) storeResults.push(combine(w.name, 'addon alone', a, pairedBare.get(w.name)));
          if (t !== undefined) storeResults.push(combine(w.name, 'fio io_uring', t));
        }
        const st = store.stats();
        if (st.checksumMismatches > 0) notes.push(`store reported ${st.checksumMismatches} checksum mismatches`);
      } finally {
        await store.close();
      }
    }
    // The raw file is no longer needed: free the space before the framing part.
    await rm(rawPath, { force: true });

    if (selectedFraming.length > 0) {
      progress.update('framing: starting the replica child');
      const budgetMs = (selectedFraming.length * REPS * (SECONDS + 5) + 60) * 1000;
      const replica = await startReplica(storePath, budgetMs);
      try {
        const conn = await openConnection(replica.ready.port, replica.ready.info);
        storeInfo ??= replica.ready.info;
        const fseqs = new SeqCounter(replica.ready.info.highestIoSeq + 1);
        const samples = new Map<string, Sample[]>();
        try {
          for (let rep = 0; rep < REPS; rep++) {
            for (const w of selectedFraming) {
              progress.update(`rep ${rep + 1}/${REPS} framing ${w.name}`);
              const s = await runFraming(conn, w, replica.ready.info.epoch, fseqs, 0x7654321 + rep * 104729);
              samples.set(w.name, [...(samples.get(w.name) ?? []), s]);
            }
          }
        } finally {
          await conn.close();
        }
        for (const w of selectedFraming) framingResults.push(combine(w.name, 'framing', samples.get(w.name) ?? []));
      } finally {
        await replica.stop();
      }
    }
  } finally {
    progress.done();
    await cleanup();
  }

  // ---- report ----
  const fioOf = (wl: string): Result | undefined => storeResults.find(r => r.workload === wl && r.engine === 'fio io_uring');
  const directOf = (wl: string | undefined): Result | undefined =>
    wl === undefined ? undefined : storeResults.find(r => r.workload === wl && r.engine === 'store');
  const ratio = (r: Result): number | null => {
    const ref = fioOf(r.workload);
    return r.engine === 'fio io_uring' ? 1 : (ref === undefined || ref.iops === 0 ? null : r.iops / ref.iops);
  };
  const layout = storeInfo === undefined ? '' : `, store blockSize ${storeInfo.blockSize} chunk ${storeInfo.chunkSize}`;
  process.stdout.write(`replica store: ${SECONDS}s per run, median of ${REPS} (each store run next to a fio run), 1 GiB preconditioned, O_DIRECT${layout}, ` +
    `io_uring ${info.ioUring ? 'on' : 'off'}; fio --ioengine=io_uring --direct=1 on a raw file in the same directory; ` +
    `"addon alone": the native addon on fio's file, same loop, no store logic\n\n`);
  if (storeResults.length > 0) {
    process.stdout.write(`${formatTable([
      { header: 'workload' }, { header: 'engine' }, { header: 'IOPS', align: 'right' }, { header: 'MB/s', align: 'right' },
      { header: 'p50 µs', align: 'right' }, { header: 'p99 µs', align: 'right' }, { header: 'x fio', align: 'right' },
      { header: 'x fio paired', align: 'right' }, { header: 'spread', align: 'right' }, { header: 'CPU µs/op', align: 'right' },
      { header: 'dev µs', align: 'right' }, { header: 'jrnl/op', align: 'right' },
    ], storeResults.map(r => {
      const x = ratio(r);
      return [
        r.workload, r.engine, fmtInt(r.iops), fmtFixed(r.mbps, 1), fmtFixed(r.p50us, 1), fmtFixed(r.p99us, 1),
        r.engine === 'fio io_uring' || x === null ? '' : fmtFixed(x, 2),
        r.pairedRatio === undefined ? '' : fmtFixed(r.pairedRatio, 2), spread(r), fmtFixed(r.cpuUsPerOp, 1),
        r.deviceUs === undefined ? '' : fmtFixed(r.deviceUs, 1),
        r.journalBlocksPerOp === undefined ? '' : fmtFixed(r.journalBlocksPerOp, 2),
      ];
    }))}\n`);
    process.stdout.write('x fio = ratio of the median IOPS; x fio paired = median of (store or addon run / the fio run next to it); ' +
      'spread = (max - min) / median IOPS over the repetitions;\nCPU µs/op = user+sys of the whole process (fio: its usr_cpu+sys_cpu); ' +
      'dev µs = mean time from io_uring submission to reaping, all the store\'s I/O; jrnl/op = journal blocks written per store write\n\n');
  }
  if (framingResults.length > 0) {
    process.stdout.write('data-path framing: ReplicaConnection -> loopback TCP -> DataResponder over the store (child process), 4 KiB random\n\n');
    process.stdout.write(`${formatTable([
      { header: 'workload' }, { header: 'ops/s', align: 'right' }, { header: 'p50 µs', align: 'right' },
      { header: 'p99 µs', align: 'right' }, { header: 'x direct', align: 'right' }, { header: '+p50 µs', align: 'right' },
      { header: 'spread', align: 'right' },
    ], framingResults.map(r => {
      const w = framingWorkloads.find(f => f.name === r.workload);
      const d = directOf(w?.direct);
      return [
        r.workload, fmtInt(r.iops), fmtFixed(r.p50us, 1), fmtFixed(r.p99us, 1),
        d === undefined ? '' : fmtFixed(r.iops / d.iops, 2), d === undefined ? '' : fmtFixed(r.p50us - d.p50us, 1), spread(r),
      ];
    }))}\n\n`);
  }
  for (const n of notes) process.stdout.write(`note: ${n}\n`);
  printJson({
    bench: 'replica-store', seconds: SECONDS, reps: REPS, capacity: CAPACITY, ioUring: info.ioUring, threads: info.threads,
    store: storeInfo === undefined ? null : { blockSize: storeInfo.blockSize, chunkSize: storeInfo.chunkSize },
    results: storeResults.map(r => ({ ...r, ratioToFio: ratio(r) })),
    framing: framingResults.map(r => {
      const d = directOf(framingWorkloads.find(f => f.name === r.workload)?.direct);
      return { ...r, ratioToDirect: d === undefined ? null : r.iops / d.iops, addedP50us: d === undefined ? null : r.p50us - d.p50us };
    }),
    notes,
  });
}

const fail = (err: unknown): void => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
};

if (process.argv[2] === '--serve') {
  serve(process.argv[3] ?? '', Number(process.argv[4] ?? '600000')).catch((err: unknown) => {
    fail(err);
    process.exit(1);
  });
} else {
  main().catch(fail);
}
