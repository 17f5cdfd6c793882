// Per-I_T-nexus unit attention queues (SAM-5 5.14, SPC-4 5.8). UA_INTLCK_CTRL=00b: a reported unit
// attention is cleared. Queues are keyed by initiator port name; a nexus gets POWER ON, RESET, OR BUS
// DEVICE RESET OCCURRED when it first registers.
import { Asc } from '../../protocol/scsi/constants.js';

/** Bound per nexus: older conditions beyond this are dropped (SPC-4 allows reporting fewer). */
const MAX_PENDING = 16;

export class UnitAttentions {
  readonly #queues = new Map<string, number[]>();

  /** A new I_T nexus: queue the power-on/reset condition unless it is already known. */
  register(initiatorPortName: string): void {
    if (!this.#queues.has(initiatorPortName)) this.#queues.set(initiatorPortName, [Asc.PowerOnResetOrBusDeviceResetOccurred]);
  }

  unregister(initiatorPortName: string): void {
    this.#queues.delete(initiatorPortName);
  }

  /** Make sure a queue exists without queuing anything (commands from a nexus the transport never registered). */
  ensure(initiatorPortName: string): void {
    if (!this.#queues.has(initiatorPortName)) this.#queues.set(initiatorPortName, []);
  }

  /** Establish a unit attention for one nexus (deduplicated). Unknown nexuses are ignored. */
  establish(initiatorPortName: string, asc: number): void {
    const q = this.#queues.get(initiatorPortName);
    if (!q || q.includes(asc)) return;
    // A reset supersedes everything queued before it (SAM-5 5.14: higher-precedence condition).
    if ((asc >> 8) === 0x29) q.length = 0;
    if (q.length >= MAX_PENDING) q.shift();
    q.push(asc);
  }

  /** Establish for every registered nexus, optionally except one (the one that caused it). */
  establishAll(asc: number, except?: string): void {
    for (const name of this.#queues.keys()) if (name !== except) this.establish(name, asc);
  }

  /** Report (and clear) the oldest pending unit attention. */
  take(initiatorPortName: string): number | undefined {
    return this.#queues.get(initiatorPortName)?.shift();
  }

  pending(initiatorPortName: string): readonly number[] {
    return this.#queues.get(initiatorPortName) ?? [];
  }

  nexusNames(): IterableIterator<string> {
    return this.#queues.keys();
  }
}
