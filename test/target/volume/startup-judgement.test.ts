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

t.test('no copy provably complete: the most complete one with the highest io_seq is taken as it is, never none', async (t) => {
  const j = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 101, completeIoSeq: 99 },
    { replicaId: 'r2', highestIoSeq: 101, completeIoSeq: 100 },
    { replicaId: 'r3', highestIoSeq: 100, completeIoSeq: 98 },
  ]);
  t.equal(j.unproven, true);
  t.equal(j.reference, 'r2');
  t.strictSame([...j.behind.keys()].sort(), ['r1', 'r3'], 'one copy serves: two holey copies could each lack what the other holds');
  t.match(j.behind.get('r1'), /rebuilt from r2/);
  t.match(j.behind.get('r3'), /behind/);
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

t.test('late joiners: judged like at start, except the copy taken with its hole', async (t) => {
  const proven = judgeStartupReplicas([{ replicaId: 'r1', highestIoSeq: 50, completeIoSeq: 50 }]);
  t.match(lateJoinerReason({ replicaId: 'r2', highestIoSeq: 50, completeIoSeq: 49 }, proven), /above io_seq 49/);
  t.equal(lateJoinerReason({ replicaId: 'r2', highestIoSeq: 60, completeIoSeq: 60 }, proven), undefined);
  const unproven = judgeStartupReplicas([
    { replicaId: 'r1', highestIoSeq: 50, completeIoSeq: 48 },
    { replicaId: 'r2', highestIoSeq: 50, completeIoSeq: 49 },
  ]);
  t.equal(unproven.reference, 'r2');
  // r2 keeps its hole (only a rebuild clears it, and it is the source): after a blip it must rejoin, not wait for a rebuild.
  t.equal(lateJoinerReason({ replicaId: 'r2', highestIoSeq: 70, completeIoSeq: 49 }, unproven), undefined);
  t.match(lateJoinerReason({ replicaId: 'r1', highestIoSeq: 70, completeIoSeq: 48 }, unproven), /above io_seq 48/, 'any other holey copy is still rebuilt');
  t.match(lateJoinerReason({ replicaId: 'r3', highestIoSeq: 40, completeIoSeq: 40 }, unproven), /behind/);
  t.match(lateJoinerReason({ replicaId: 'r3', highestIoSeq: 70, completeIoSeq: 70, rebuildingSince: 3 }, unproven), /interrupted/);
});
