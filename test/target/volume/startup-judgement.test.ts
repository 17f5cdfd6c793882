import t from 'tap';
import { judgeStartupReplicas, rebuildReason } from '../../../src/target/volume/startup-judgement.js';

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
