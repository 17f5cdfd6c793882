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
   * No copy was provably complete (every one crashed with writes in flight): those with the highest
   * io_seq were taken as they are, since refusing all of them would keep the volume offline for good.
   */
  readonly unproven: boolean;
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
  // Unproven: no copy is complete, but some would be by their highest io_seq alone.
  const unproven = !hellos.some((h) => rebuildReason(h, highestIoSeq) === undefined)
    && hellos.some((h) => rebuildReason(withoutHole(h), highestIoSeq) === undefined);
  const start = { highestIoSeq, unproven };
  const behind = new Map<string, string>();
  for (const h of hellos) {
    const reason = lateJoinerReason(h, start);
    if (reason !== undefined) behind.set(h.replicaId, reason);
  }
  return { ...start, behind };
}

/** The HELLO as an older replica would send it: no completeIoSeq, judged by its highest io_seq. */
function withoutHole(hello: StartupHello): StartupHello {
  const { replicaId, highestIoSeq, rebuildingSince } = hello;
  return { replicaId, highestIoSeq, ...(rebuildingSince !== undefined ? { rebuildingSince } : {}) };
}

/**
 * A replica judged against the start's reference: at the start itself, and when it joins later.
 * Once copies with holes were taken as they are (unproven), a hole no longer tells a copy apart:
 * those copies keep theirs (only a rebuild clears it, and they are the rebuild sources), so one of
 * them reconnecting after a blip must not be sent to a rebuild it cannot get. Only the highest
 * io_seq counts then.
 */
export function lateJoinerReason(hello: StartupHello, start: Pick<StartupJudgement, 'highestIoSeq' | 'unproven'>): string | undefined {
  return rebuildReason(start.unproven ? withoutHole(hello) : hello, start.highestIoSeq);
}
