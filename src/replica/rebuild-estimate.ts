// Size of a rebuild before it starts (progress and ETA on the sink): counts the chunks a scan since
// an io_seq would stream, from the in-memory chunk table only (no data is read).
import { setImmediate as yieldToLoop } from 'node:timers/promises';

export interface RebuildEstimate {
  readonly bytes: number;
  readonly chunks: number;
}

export interface RebuildEstimateOptions {
  /** The table entry of the chunk holding `offset` (ReplicaStore.chunkState: cheap, no I/O). */
  readonly chunkState: (offset: number) => { readonly ioSeq: number };
  readonly capacityBytes: number;
  readonly chunkSize: number;
  readonly sinceIoSeq: number;
  /** Chunks examined between yields to the event loop, so a huge volume does not stall I/O (default 65536). */
  readonly batchChunks?: number;
  readonly signal?: AbortSignal;
}

/**
 * Chunks with io_seq > sinceIoSeq. An upper bound of what scan() streams: it also skips chunks
 * flagged for repair, and writes landing meanwhile can add a few more; good enough for an ETA.
 */
export async function estimateRebuild(options: RebuildEstimateOptions): Promise<RebuildEstimate> {
  const { chunkState, chunkSize, sinceIoSeq } = options;
  const total = Math.floor(options.capacityBytes / chunkSize);
  const batch = Math.max(1, options.batchChunks ?? 65_536);
  let chunks = 0;
  for (let c = 0; c < total; c++) {
    if (c > 0 && c % batch === 0) {
      await yieldToLoop();
      options.signal?.throwIfAborted();
    }
    if (chunkState(c * chunkSize).ioSeq > sinceIoSeq) chunks++;
  }
  return { bytes: chunks * chunkSize, chunks };
}
