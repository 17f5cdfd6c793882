// Polls each connected replica's control Status every few seconds (checkpointed io_seq, counters,
// rebuild progress) for the management status and the metrics. One small RPC per replica per
// period; a replica that does not answer keeps its last sample.
import { createReplicaControlClient, type ReplicaControlClient, type StatusReply } from '../../protocol/replica/control-codec.js';
import type { Logger } from '../../shared/logger.js';

export interface ReplicaSampleEntry {
  readonly status: StatusReply;
}

export interface ReplicaStatusPollerOptions {
  /** Control addresses of the replicas connected now, by replica id. */
  readonly addresses: () => ReadonlyMap<string, string>;
  readonly periodMs?: number;
  readonly logger: Logger;
  readonly clientFor?: (address: string) => ReplicaControlClient;
}

export class ReplicaStatusPoller {
  readonly #o: ReplicaStatusPollerOptions;
  readonly #clients = new Map<string, ReplicaControlClient>();
  readonly #samples = new Map<string, ReplicaSampleEntry>();
  readonly #timer: NodeJS.Timeout;
  #polling = false;

  constructor(options: ReplicaStatusPollerOptions) {
    this.#o = options;
    this.#timer = setInterval(() => void this.poll(), options.periodMs ?? 5_000);
    this.#timer.unref();
    void this.poll();
  }

  /** The last Status each replica gave (undefined before its first answer). */
  sample(replicaId: string): ReplicaSampleEntry | undefined {
    return this.#samples.get(replicaId);
  }

  /** Sum of a counter over the replicas' last samples (e.g. checksum mismatches). */
  total(counter: keyof StatusReply['counters']): number {
    let n = 0;
    for (const s of this.#samples.values()) n += s.status.counters[counter];
    return n;
  }

  /** Refresh every connected replica now (the timer calls this every period). */
  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      const addresses = this.#o.addresses();
      for (const [address, client] of this.#clients) {
        if (![...addresses.values()].includes(address)) {
          client.close();
          this.#clients.delete(address);
        }
      }
      await Promise.all([...addresses].map(async ([id, address]) => {
        let client = this.#clients.get(address);
        if (client === undefined) {
          client = (this.#o.clientFor ?? createReplicaControlClient)(address);
          this.#clients.set(address, client);
        }
        try {
          this.#samples.set(id, { status: await client.status({ deadlineMs: 2_000 }) });
        } catch (err) {
          this.#o.logger.debug({ err, replica: id }, 'replica status poll failed');
        }
      }));
    } finally {
      this.#polling = false;
    }
  }

  close(): void {
    clearInterval(this.#timer);
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}
