// Growing a live volume: every connected replica is resized first (its store extends its metadata
// and, for a file, the file), then the volume's capacity changes and SCSI raises CAPACITY DATA HAS
// CHANGED. A replica in the write quorum that cannot grow fails the whole resize, so the volume
// never advertises blocks a quorum cannot store. Replicas offline now are resized when they return.
import { createReplicaControlClient, type ReplicaControlClient } from '../../protocol/replica/control-codec.js';
import type { Logger } from '../../shared/logger.js';
import { errorMessage } from '../../shared/errors.js';

export interface GrowTarget {
  readonly id: string;
  readonly controlAddress: string;
  /** In the write quorum: its failure fails the resize. */
  readonly inSync: boolean;
}

export interface GrowOptions {
  readonly replicas: readonly GrowTarget[];
  readonly capacityBytes: number;
  readonly logger: Logger;
  readonly clientFor?: (address: string) => ReplicaControlClient;
}

/** Resizes one replica (also used when an offline replica returns after a grow). */
export async function resizeReplica(controlAddress: string, capacityBytes: number,
  clientFor: (address: string) => ReplicaControlClient = createReplicaControlClient): Promise<number> {
  const client = clientFor(controlAddress);
  try {
    const reply = await client.resize({ capacityBytes }, { deadlineMs: 60_000 });
    if (reply.capacityBytes < capacityBytes) throw new Error(`it reports ${reply.capacityBytes} bytes after the resize`);
    return reply.capacityBytes;
  } finally {
    client.close();
  }
}

export async function growReplicas(o: GrowOptions): Promise<void> {
  const results = await Promise.allSettled(o.replicas.map((r) => resizeReplica(r.controlAddress, o.capacityBytes, o.clientFor)));
  const failures: string[] = [];
  results.forEach((r, i) => {
    const replica = o.replicas[i]!;
    if (r.status === 'fulfilled') return;
    const reason = errorMessage(r.reason);
    o.logger.warn({ replica: replica.id, err: r.reason }, 'replica resize failed');
    if (replica.inSync) failures.push(`${replica.id}: ${reason}`);
  });
  if (failures.length > 0) throw new Error(`cannot grow to ${o.capacityBytes} bytes: ${failures.join('; ')}`);
}
