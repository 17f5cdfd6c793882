// The orchestrator's adaptive rate wiring against a fake volume and a fake replica control client:
// a closed-loop model where the rebuild's rate limit takes the same share of foreground ops/s. With
// adaptation, it starts below the cap (foreground load known), lowers the sink's limit live through
// SetRebuildRate until foreground is back above half its undisturbed level; without, it never does.
// A wall-clock step (NTP) must not spoil the baseline or stall the ticks: they use a monotonic clock.
import t from 'tap';
import { RebuildOrchestrator } from '../../../src/target/volume/rebuild-orchestrator.js';
import type { ReplicatedVolume } from '../../../src/target/volume/replicated-volume.js';
import type { RebuildStatus, ReplicaControlClient, StatusReply } from '../../../src/protocol/replica/control-codec.js';
import { silentLogger } from '../../../src/shared/logger.js';

t.setTimeout(60_000);

const MiB = 2 ** 20;
const BASE_OPS = 2000;
const DEVICE = 300 * MiB;

interface Harness {
  readonly orchestrator: RebuildOrchestrator;
  readonly rates: number[];
  readonly started: { rate: number | undefined };
  /** Foreground ops/s in the model now. */
  fgRate(): number;
  finish(): void;
  completed: Promise<{ id: string; bytes: number }>;
}

function setup(adaptive: boolean): Harness {
  const states = new Map([['r1', 'healthy'], ['r2', 'healthy'], ['r3', 'healthy']]);
  let rateLimit = 0; // no rebuild: no interference
  let ops = 0;
  const fgRate = (): number => BASE_OPS * Math.max(0.02, 1 - (rateLimit === 0 && states.get('r2') !== 'rebuilding' ? 0 : rateLimit) / DEVICE);
  // Monotonic, like the orchestrator: a test below steps Date.now back.
  let last = performance.now();
  const meter = setInterval(() => {
    const now = performance.now();
    ops += (fgRate() * (now - last)) / 1000;
    last = now;
  }, 10);
  const conn = (id: string): unknown => ({ hello: { controlAddress: `127.0.0.1:${id === 'r1' ? 1 : id === 'r2' ? 2 : 3}`, checkpointedIoSeq: 0 } });
  const volume = {
    replicaStates: () => [...states].map(([replicaId, state]) => ({ replicaId, state, reason: undefined, inFlight: 0, address: undefined })),
    connectionOf: (id: string) => conns.get(id),
    counters: () => ({ reads: Math.floor(ops), writes: 0, readRepairs: 0, ejections: 0, inFlight: { r1: 1 } }),
    markRebuilding: (id: string) => { states.set(id, 'rebuilding'); },
    markHealthy: (id: string) => { states.set(id, 'healthy'); },
    markDegraded: (id: string) => { states.set(id, 'degraded'); },
    currentRequestsSettled: async () => undefined,
  };
  const conns = new Map(['r1', 'r2', 'r3'].map((id) => [id, conn(id)]));
  let done = false;
  const rates: number[] = [];
  const started: { rate: number | undefined } = { rate: undefined };
  const rebuild = (): RebuildStatus => ({
    state: done ? 'done' : 'running', bytesDone: 1, bytesTotal: 1, rateBytesPerSec: rateLimit, etaSeconds: -1, source: '', attempts: 1, lastError: '',
  });
  const client = {
    address: '',
    status: async () => ({ checkpointedIoSeq: 0, ...(started.rate === undefined ? {} : { rebuild: rebuild() }) }) as unknown as StatusReply,
    startRebuild: async (req: { rateBytesPerSec: number }) => {
      started.rate = req.rateBytesPerSec;
      rateLimit = req.rateBytesPerSec;
      return { started: true };
    },
    setRebuildRate: async (req: { rateBytesPerSec: number }) => {
      rates.push(req.rateBytesPerSec);
      rateLimit = req.rateBytesPerSec;
      return { applied: true };
    },
    close: () => undefined,
  } as unknown as ReplicaControlClient;
  let resolveDone: (v: { id: string; bytes: number }) => void = () => undefined;
  const completed = new Promise<{ id: string; bytes: number }>((r) => { resolveDone = r; });
  const orchestrator = new RebuildOrchestrator({
    volume: volume as unknown as ReplicatedVolume,
    volumeUuid: 'u',
    rateBytesPerSec: 200 * MiB,
    adaptive,
    controlTickMs: 150,
    pollMs: 50,
    logger: silentLogger(),
    clientFor: () => client,
    onComplete: (id, bytes) => resolveDone({ id, bytes }),
  });
  // r2 "restarts" after the orchestrator has seen >1 s of undisturbed foreground.
  setTimeout(() => states.set('r2', 'degraded'), 1300).unref();
  return {
    orchestrator, rates, started, fgRate,
    finish: () => {
      done = true;
      clearInterval(meter);
    },
    completed,
  };
}

t.test('adaptive: starts below the cap under load, lowers the rate live until foreground >= 0.5x', async (t) => {
  const h = setup(true);
  t.teardown(() => { h.finish(); h.orchestrator.stop(); });
  await new Promise((r) => setTimeout(r, 1300 + 4000));
  t.equal(h.started.rate, 50 * MiB, 'foreground load was known: started at a quarter of the 200 MiB/s cap');
  t.ok(h.rates.length > 0, `SetRebuildRate called ${h.rates.length} times: ${h.rates.map((r) => (r / MiB).toFixed(0)).join(', ')} MiB/s`);
  t.ok(h.rates.some((r, i) => i > 0 && r < h.rates[i - 1]!), 'and halved when foreground dropped below 0.6x');
  t.ok(Math.max(...h.rates) < 200 * MiB, 'never reached the cap, where foreground would be at 0.33x');
  t.ok(h.fgRate() >= 0.5 * BASE_OPS, `foreground now at ${(h.fgRate() / BASE_OPS).toFixed(2)}x of undisturbed`);
  const progress = h.orchestrator.progress();
  t.equal(progress[0]?.replicaId, 'r2');
  t.equal(progress[0]?.rateLimitBytesPerSec, h.rates.at(-1), 'progress reports the limit in force');
  h.finish();
  const c = await h.completed;
  t.equal(c.id, 'r2', 'the rebuild completes');
});

t.test('adaptive off: the configured rate, never changed', async (t) => {
  const h = setup(false);
  t.teardown(() => { h.finish(); h.orchestrator.stop(); });
  await new Promise((r) => setTimeout(r, 1300 + 2000));
  t.equal(h.started.rate, 200 * MiB, 'started at the configured rate');
  t.same(h.rates, [], 'no SetRebuildRate');
  t.ok(h.fgRate() < 0.5 * BASE_OPS, `and foreground suffers: ${(h.fgRate() / BASE_OPS).toFixed(2)}x (why adaptation exists)`);
  h.finish();
  t.equal((await h.completed).id, 'r2');
});

t.test('a wall-clock step back neither spoils the baseline nor stalls adaptation', async (t) => {
  const realNow = Date.now;
  let offset = 0;
  Date.now = () => realNow() - offset;
  t.teardown(() => { Date.now = realNow; });
  const h = setup(true);
  t.teardown(() => { h.finish(); h.orchestrator.stop(); });
  const sleep = (ms: number): Promise<unknown> => new Promise((r) => setTimeout(r, ms));
  await sleep(1000);
  offset = 3_600_000; // the clock is stepped back an hour before r2 degrades (at 1.3 s)
  await sleep(1300);
  offset = 7_200_000; // and again while it rebuilds
  const before = h.rates.length;
  await sleep(2500);
  Date.now = realNow;
  t.equal(h.started.rate, 50 * MiB, 'the baseline was measured across the step: started at a quarter of the cap');
  t.ok(h.rates.length > before, `still adapting after the step: ${h.rates.length - before} rate changes`);
  t.ok(h.fgRate() >= 0.5 * BASE_OPS, `foreground at ${(h.fgRate() / BASE_OPS).toFixed(2)}x of undisturbed`);
  h.finish();
  t.equal((await h.completed).id, 'r2', 'the rebuild completes');
});
