import t from 'tap';
import { judgeStartupReplicas, lateJoinerReason, rebuildReason } from '../../../src/target/volume/startup-judgement.js';

t.test('copies that are complete serve; one behind, with a hole, or mid-rebuild is rebuilt', async (t) => {
  const j = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 101, completeIoSeq: 101 },
    { replicaId: 'r2', highestIoSeq: 101, completeIoSeq: 99 },
    { replicaId: 'r3', highestIoSeq: 90, completeIoSeq: 90 },
  ]);
  t.equal(j.highestIoSeq, 101);
  t.equal(j.unproven, false);
  t.strictSame([...j.behind.keys()].sort(), ['r2', 'r3']);
  t.match(j.behind.get('r2'), /above io_seq 99/, 'the same highest io_seq with a hole below it is not complete');
  t.match(j.behind.get('r3'), /behind the other replicas/);
  const interrupted = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 101, completeIoSeq: 101 },
    { replicaId: 'r2', highestIoSeq: 101, completeIoSeq: 101, rebuildingSince: 50 },
  ]);
  t.strictSame([...interrupted.behind.entries()], [['r2', 'its rebuild was interrupted']]);
});

t.test('a replica without completeIoSeq (an older one) is judged by its highest io_seq', async (t) => {
  t.equal(rebuildReason({ replicaId: 'r1', highestIoSeq: 10 }, 10), undefined);
  t.match(rebuildReason({ replicaId: 'r1', highestIoSeq: 9 }, 10), /behind/);
  t.equal(rebuildReason({ replicaId: 'r1', highestIoSeq: 12, completeIoSeq: 12 }, 10), undefined, 'ahead of the reference: complete');
});

t.test('no copy provably complete: the ones with the highest io_seq are taken as they are, never none', async (t) => {
  const j = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 101, completeIoSeq: 99 },
    { replicaId: 'r2', highestIoSeq: 101, completeIoSeq: 100 },
    { replicaId: 'r3', highestIoSeq: 100, completeIoSeq: 98 },
  ]);
  t.equal(j.unproven, true);
  t.strictSame([...j.behind.keys()], ['r3'], 'only the copy behind the highest is rebuilt');
  const allRebuilding = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 5, completeIoSeq: 4, rebuildingSince: 1 },
    { replicaId: 'r2', highestIoSeq: 5, completeIoSeq: 4, rebuildingSince: 1 },
  ]);
  t.equal(allRebuilding.behind.size, 2, 'an interrupted rebuild is never taken as a complete copy');
  t.equal(allRebuilding.unproven, false);
  const empty = judgeStartupReplicas([]);
  t.equal(empty.highestIoSeq, 0);
  t.equal(empty.behind.size, 0);
});

t.test('late joiners: judged like at start, except that holes no longer count once holey copies were taken', async (t) => {
  const proven = judgeStartupReplicas([{ replicaId: 'r1', highestIoSeq: 50, completeIoSeq: 50 }]);
  t.match(lateJoinerReason({ replicaId: 'r2', highestIoSeq: 50, completeIoSeq: 49 }, proven), /above io_seq 49/);
  t.equal(lateJoinerReason({ replicaId: 'r2', highestIoSeq: 60, completeIoSeq: 60 }, proven), undefined);
  const unproven = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 50, completeIoSeq: 48 },
    { replicaId: 'r2', highestIoSeq: 50, completeIoSeq: 49 },
  ]);
  t.equal(unproven.unproven, true);
  // r1 keeps its hole (only a rebuild clears it, and it is a source): after a blip it must rejoin, not wait for a rebuild.
  t.equal(lateJoinerReason({ replicaId: 'r1', highestIoSeq: 70, completeIoSeq: 48 }, unproven), undefined);
  t.match(lateJoinerReason({ replicaId: 'r3', highestIoSeq: 40, completeIoSeq: 40 }, unproven), /behind/);
  t.match(lateJoinerReason({ replicaId: 'r3', highestIoSeq: 70, completeIoSeq: 70, rebuildingSince: 3 }, unproven), /interrupted/);
});
