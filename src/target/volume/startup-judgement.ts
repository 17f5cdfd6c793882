// Which replicas hold a complete copy when the target starts. It has no memory of the last run's
// replica states, so it judges the copies by what their HELLOs report: the highest io_seq applied,
// the io_seq below which nothing is missing (completeIoSeq), and an unfinished rebuild. A copy
// that lacks a write some other copy applied must be rebuilt before it serves reads or counts
// toward the quorum, or it would serve stale data for that write's blocks.

export interface StartupHello {
  readonly replicaId: string;
  readonly highestIoSeq: number;
  readonly completeIoSeq?: number;
  readonly rebuildingSince?: number;
}

export interface StartupJudgement {
  /** The highest io_seq any present replica applied: the reference for replicas joining later. */
  readonly highestIoSeq: number;
  /** Replicas to rebuild before they serve, with the reason. */
  readonly behind: ReadonlyMap<string, string>;
  /**
   * No copy was provably complete (every one crashed with writes in flight): the most complete of
   * those with the highest io_seq was taken as it is, since refusing all of them would keep the
   * volume offline for good, and every other copy is rebuilt from it. Only one is taken: two holey
   * copies could each hold a write the other lacks, and would answer the same read differently.
   */
  readonly unproven: boolean;
  /** The copy taken as it is when unproven. */
  readonly reference?: string;
}

/** Why a replica must be rebuilt before it serves, measured against the highest io_seq at start; undefined if complete. */
export function rebuildReason(hello: StartupHello, highestIoSeq: number): string | undefined {
  if (hello.rebuildingSince !== undefined) return 'its rebuild was interrupted';
  if (hello.highestIoSeq < highestIoSeq) return 'behind the other replicas';
  // An older replica reports no completeIoSeq: its highest io_seq is all there is to go by.
  const complete = hello.completeIoSeq ?? hello.highestIoSeq;
  if (complete < highestIoSeq) return `may lack a write above io_seq ${complete} (it stopped with writes in flight)`;
  return undefined;
}

export function judgeStartupReplicas(hellos: readonly StartupHello[]): StartupJudgement {
  const highestIoSeq = hellos.reduce((max, h) => Math.max(max, h.highestIoSeq), 0);
  const behind = new Map<string, string>();
  for (const h of hellos) {
    const reason = rebuildReason(h, highestIoSeq);
    if (reason !== undefined) behind.set(h.replicaId, reason);
  }
  if (behind.size < hellos.length) return { highestIoSeq, behind, unproven: false };
  let reference: StartupHello | undefined;
  for (const h of hellos) {
    if (h.rebuildingSince !== undefined || h.highestIoSeq !== highestIoSeq) continue;
    const complete = h.completeIoSeq ?? h.highestIoSeq;
    if (reference === undefined || complete > (reference.completeIoSeq ?? reference.highestIoSeq)) reference = h;
  }
  if (reference === undefined) return { highestIoSeq, behind, unproven: false };
  behind.delete(reference.replicaId);
  for (const h of hellos) {
    if (h !== reference && !(h.rebuildingSince !== undefined || h.highestIoSeq < highestIoSeq)) {
      behind.set(h.replicaId, `no copy is provably complete: rebuilt from ${reference.replicaId}, the most complete one`);
    }
  }
  return { highestIoSeq, behind, unproven: true, reference: reference.replicaId };
}

/**
 * A replica that joins after the start, judged against the start's reference. The copy taken with
 * its hole when no copy was provably complete keeps that hole (only a rebuild clears it, and it is
 * the rebuild source): reconnecting after a blip, it is judged by its highest io_seq alone, or it
 * would be sent to a rebuild it cannot get. Every other copy is judged as at the start.
 */
export function lateJoinerReason(hello: StartupHello, start: StartupJudgement): string | undefined {
  if (hello.replicaId !== start.reference) return rebuildReason(hello, start.highestIoSeq);
  const { replicaId, highestIoSeq, rebuildingSince } = hello;
  return rebuildReason({ replicaId, highestIoSeq, ...(rebuildingSince !== undefined ? { rebuildingSince } : {}) }, start.highestIoSeq);
}
