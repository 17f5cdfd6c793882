// Fencing at target start: each start takes an epoch above any it or its replicas have seen, and a
// write quorum of replicas persists it (SetEpoch: fdatasynced in the superblock before the reply)
// before the volume serves I/O. Replicas refuse data-path requests and target-state writes stamped
// with an older epoch, and any two write quorums share a replica, so once this returns a target
// that was replaced can no longer complete a write. Replicas that join later persist the epoch
// before they are accepted (fenceReplica, from the replica listener's accept).
// The target state blob is read here too, from the same quorum, after the fence: a write the old
// target completed reached a quorum, which overlaps this one, and none can complete afterwards.

import {
  createReplicaControlClient, type ReplicaControlClient, type TargetStateMessage,
} from '../../protocol/replica/control-codec.js';
import type { Logger } from '../../shared/logger.js';
import type { ReplicaConnection } from './replica-connection.js';
import { errorMessage } from '../../shared/errors.js';

/** Control clients by address; tests may substitute. */
export type ControlClientFactory = (address: string) => ReplicaControlClient;

export interface EstablishEpochOptions {
  /** The replicas present at start (connected, HELLO accepted). */
  readonly connections: readonly ReplicaConnection[];
  /** How many must persist the epoch (⌊k/2⌋+1, or 1 for k = 1). */
  readonly writeQuorum: number;
  /** The epoch is above this too (e.g. the last one this target took). */
  readonly floor?: number;
  /** Per control call (default 10 s). */
  readonly deadlineMs?: number;
  readonly logger: Logger;
  readonly connect?: ControlClientFactory;
}

export interface FenceResult {
  readonly epoch: number;
  /** Replicas that persisted the epoch, in the order given. */
  readonly fenced: readonly ReplicaConnection[];
  /** Replicas that did not: they must not serve I/O under this epoch. */
  readonly refused: readonly { readonly connection: ReplicaConnection; readonly reason: string }[];
  /** The newest target state blob among the fenced replicas (generation 0: none). */
  readonly targetState: TargetStateMessage;
}

export class FenceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FenceError';
  }
}

/** Take the next epoch, have a write quorum persist it, and read the target state from that quorum. */
export async function establishEpoch(options: EstablishEpochOptions): Promise<FenceResult> {
  const { connections, writeQuorum, logger } = options;
  const connect = options.connect ?? ((address: string) => createReplicaControlClient(address));
  const deadlineMs = options.deadlineMs ?? 10_000;
  const clients = connections.map((c) => connect(c.hello.controlAddress));
  try {
    // HELLO epochs can be old (a connection made before another target raised it): ask again.
    const current = await Promise.allSettled(clients.map((client) => client.status({ deadlineMs })));
    const seen = current.map((r, i) => (r.status === 'fulfilled' ? r.value.epoch : connections[i]!.hello.epoch));
    const epoch = Math.max(options.floor ?? 0, ...connections.map((c) => c.hello.epoch), ...seen) + 1;
    const fencing = await Promise.allSettled(clients.map(async (client) => {
      // Exclusive: of two targets starting at once with the same epoch, at most one gets a quorum.
      const reply = await client.setEpoch({ epoch, exclusive: true }, { deadlineMs });
      // A newer epoch already there means another target started after us: we must not serve.
      if (reply.epoch !== epoch) throw new Error(`the replica persisted epoch ${reply.epoch}, not ${epoch}`);
    }));
    const fenced: ReplicaConnection[] = [];
    const fencedClients: ReplicaControlClient[] = [];
    const refused: { connection: ReplicaConnection; reason: string }[] = [];
    fencing.forEach((r, i) => {
      const connection = connections[i]!;
      if (r.status === 'fulfilled') {
        fenced.push(connection);
        fencedClients.push(clients[i]!);
      } else {
        const reason = `SetEpoch ${epoch} failed: ${errorMessage(r.reason)}`;
        refused.push({ connection, reason });
        logger.warn({ replica: connection.hello.replicaId, epoch, reason }, 'replica did not persist the new epoch; it is left out');
      }
    });
    if (fenced.length < writeQuorum) {
      throw new FenceError(`only ${fenced.length} of ${connections.length} replicas persisted epoch ${epoch}; ${writeQuorum} are needed`);
    }
    const reads = await Promise.allSettled(fencedClients.map((client) => client.getTargetState({ deadlineMs })));
    let targetState: TargetStateMessage = { generation: 0, epoch: 0, entries: new Map() };
    let answered = 0;
    reads.forEach((r, i) => {
      if (r.status === 'rejected') {
        logger.warn({ replica: fenced[i]!.hello.replicaId, err: r.reason }, 'cannot read the target state from a replica');
        return;
      }
      answered++;
      if (r.value.generation > targetState.generation) targetState = r.value;
    });
    // Fewer than a quorum could miss the newest blob; starting with an older one would undo a change.
    if (answered < writeQuorum) {
      throw new FenceError(`the target state was read from ${answered} replicas; ${writeQuorum} are needed`);
    }
    logger.info({ epoch, fenced: fenced.map((c) => c.hello.replicaId), targetStateGeneration: targetState.generation },
      'epoch persisted by a write quorum');
    return { epoch, fenced, refused, targetState };
  } finally {
    for (const c of clients) c.close();
  }
}

/** Have one late replica persist `epoch` before it joins the write path. */
export async function fenceReplica(controlAddress: string, epoch: number, options: { readonly deadlineMs?: number; readonly connect?: ControlClientFactory } = {}): Promise<void> {
  const client = (options.connect ?? ((address: string) => createReplicaControlClient(address)))(controlAddress);
  try {
    const reply = await client.setEpoch({ epoch }, { deadlineMs: options.deadlineMs ?? 4000 });
    if (reply.epoch !== epoch) throw new FenceError(`the replica persisted epoch ${reply.epoch}, not ${epoch}`);
  } finally {
    client.close();
  }
}
