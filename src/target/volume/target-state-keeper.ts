// The target's persistent state (persistent reservations) kept on the replicas, not on the target's
// disk, so another target instance taking over finds it. One blob (key → bytes) with a generation:
// a save writes the whole blob, one generation up, to every replica that receives writes and
// succeeds once a write quorum of healthy ones stored it durably. At start the newest blob of a
// quorum is loaded (epoch-fence.ts); a replica that becomes healthy again gets it re-pushed, so a
// rebuilt or reformatted replica carries it too.

import {
  createReplicaControlClient, type ReplicaControlClient, type TargetStateMessage,
} from '../../protocol/replica/control-codec.js';
import type { Logger } from '../../shared/logger.js';
import type { ControlClientFactory } from './epoch-fence.js';
import { errorMessage } from '../../shared/errors.js';

export interface StateReplica {
  readonly id: string;
  readonly controlAddress: string;
  /** Counts toward the quorum (healthy); others (rebuilding) receive the blob without counting. */
  readonly counts: boolean;
}

export interface TargetStateKeeperOptions {
  /** The target's epoch: replicas refuse a blob written under an older one. */
  readonly epoch: number;
  readonly writeQuorum: number;
  /** The newest blob a quorum held at start. */
  readonly initial: TargetStateMessage;
  /** Per put (default 10 s). */
  readonly deadlineMs?: number;
  readonly logger: Logger;
  readonly connect?: ControlClientFactory;
}

export class TargetStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetStateError';
  }
}

export class TargetStateKeeper {
  readonly #epoch: number;
  readonly #writeQuorum: number;
  readonly #deadlineMs: number;
  readonly #logger: Logger;
  readonly #connect: ControlClientFactory;
  /** One control client per replica id, for the address it has now. */
  readonly #clients = new Map<string, { readonly address: string; readonly client: ReplicaControlClient }>();
  #entries: ReadonlyMap<string, Buffer>;
  /** Generation of #entries. */
  #generation: number;
  /** Highest generation ever sent: a failed save's number is never reused for other contents. */
  #sent: number;
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(options: TargetStateKeeperOptions) {
    this.#epoch = options.epoch;
    this.#writeQuorum = options.writeQuorum;
    this.#deadlineMs = options.deadlineMs ?? 10_000;
    this.#logger = options.logger;
    this.#connect = options.connect ?? ((address: string) => createReplicaControlClient(address));
    this.#entries = new Map(options.initial.entries);
    this.#generation = options.initial.generation;
    this.#sent = options.initial.generation;
  }

  get generation(): number {
    return this.#generation;
  }

  load(key: string): Buffer | undefined {
    const v = this.#entries.get(key);
    return v === undefined ? undefined : Buffer.from(v);
  }

  /** Store `key` = `value` on `replicas`; rejects unless a write quorum of counting ones stored it. */
  save(key: string, value: Buffer, replicas: readonly StateReplica[]): Promise<void> {
    return this.#serialised(async () => {
      const entries = new Map(this.#entries);
      entries.set(key, Buffer.from(value));
      const generation = ++this.#sent;
      const blob: TargetStateMessage = { generation, epoch: this.#epoch, entries };
      const counting = replicas.filter((r) => r.counts).length;
      if (counting < this.#writeQuorum) {
        throw new TargetStateError(`${counting} healthy replicas; saving target state needs ${this.#writeQuorum}`);
      }
      await this.#putQuorum(blob, replicas);
      this.#entries = entries;
      this.#generation = generation;
    });
  }

  /**
   * Best effort: give a replica that (re)joined the current blob. Not queued behind saves (a
   * PERSISTENT RESERVE OUT must not wait for k pushes): the replica refuses a generation older than
   * the one it holds, so a push overtaken by a newer save is refused there, never stored over it.
   */
  async push(replica: { readonly id: string; readonly controlAddress: string }): Promise<void> {
    if (this.#generation === 0) return;
    const blob: TargetStateMessage = { generation: this.#generation, epoch: this.#epoch, entries: this.#entries };
    try {
      await this.#client(replica).putTargetState(blob, { deadlineMs: this.#deadlineMs });
      this.#logger.debug({ replica: replica.id, generation: blob.generation }, 'target state pushed to a replica');
    } catch (err) {
      this.#logger.warn({ replica: replica.id, err }, 'cannot push the target state to a replica');
    }
  }

  close(): void {
    this.#closed = true;
    for (const c of this.#clients.values()) c.client.close();
    this.#clients.clear();
  }

  /** Resolves at W acknowledgements from counting replicas; rejects once that can no longer happen. */
  #putQuorum(blob: TargetStateMessage, replicas: readonly StateReplica[]): Promise<void> {
    return new Promise((resolve, reject) => {
      let acks = 0;
      let pending = replicas.filter((r) => r.counts).length;
      const failures: string[] = [];
      let done = false;
      for (const r of replicas) {
        this.#client(r).putTargetState(blob, { deadlineMs: this.#deadlineMs }).then(
          () => {
            if (!r.counts) return;
            acks++;
            pending--;
            if (!done && acks >= this.#writeQuorum) {
              done = true;
              resolve();
            }
          },
          (err: unknown) => {
            const reason = errorMessage(err);
            this.#logger.warn({ replica: r.id, generation: blob.generation, reason }, 'a replica did not store the target state');
            if (!r.counts) return;
            pending--;
            failures.push(`${r.id}: ${reason}`);
            if (!done && acks + pending < this.#writeQuorum) {
              done = true;
              reject(new TargetStateError(`target state stored by ${acks} healthy replicas, ${this.#writeQuorum} needed (${failures.join('; ')})`));
            }
          },
        );
      }
    });
  }

  /** A replica that came back at another address (a rescheduled pod) gets a new client; the old one is closed. */
  #client(replica: { readonly id: string; readonly controlAddress: string }): ReplicaControlClient {
    if (this.#closed) throw new TargetStateError('the target state keeper is closed');
    const known = this.#clients.get(replica.id);
    if (known !== undefined && known.address === replica.controlAddress) return known.client;
    known?.client.close();
    const client = this.#connect(replica.controlAddress);
    this.#clients.set(replica.id, { address: replica.controlAddress, client });
    return client;
  }


  #serialised<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#chain.then(fn, fn);
    this.#chain = p.catch(() => undefined);
    return p;
  }
}
