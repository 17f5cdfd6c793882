// The iSCSI target node: its name, access rules, authentication settings and the registry of live
// sessions (ISID + initiator name → session, TSIH allocation). Shared by every connection of a portal.

import type { Logger } from '../../shared/logger.js';
import { formatHostPort } from '../../shared/cli-values.js';
import type { ScsiTarget } from '../scsi/types.js';
import { validateTargetConfig, type TargetNegotiationConfig } from '../../protocol/iscsi/negotiation.js';
import type { Session } from './session.js';

export interface ChapCredentials {
  readonly user: string;
  readonly secret: string;
}

export interface TargetNodeOptions {
  readonly iqn: string;
  readonly alias?: string;
  readonly scsi: ScsiTarget;
  /** One-way CHAP required of initiators (normal sessions) when set. */
  readonly chap?: ChapCredentials;
  /** Target credentials for mutual CHAP. */
  readonly mutualChap?: ChapCredentials;
  /** Initiator names allowed to log in to a normal session; empty = everyone. */
  readonly allowInitiators: readonly string[];
  readonly negotiation: TargetNegotiationConfig;
  /** Target portal group tag. */
  readonly portalGroupTag: number;
  /** CmdSN window per session (commands the initiator may have outstanding). */
  readonly queueDepth: number;
  readonly maxSessions: number;
  /** Idle time before a NOP-In ping, and how long to wait for its answer (ms). */
  readonly nopInIntervalMs: number;
  readonly nopInTimeoutMs: number;
  /** A login that has not reached full-feature phase within this time is dropped (ms). */
  readonly loginTimeoutMs: number;
  readonly logger: Logger;
}

export class TargetNode {
  readonly options: TargetNodeOptions;
  readonly #sessions = new Map<string, Session>();
  readonly #byTsih = new Map<number, Session>();
  #nextTsih = 1;
  /** Totals across connections, for the metrics. */
  readonly stats = { rejectsSent: 0 };

  constructor(options: TargetNodeOptions) {
    const problem = validateTargetConfig(options.negotiation);
    if (problem !== undefined) throw new RangeError(`invalid iSCSI parameters: ${problem}`);
    this.options = options;
  }

  get iqn(): string { return this.options.iqn; }
  get sessionCount(): number { return this.#sessions.size; }
  sessions(): IterableIterator<Session> { return this.#sessions.values(); }

  isAllowed(initiatorName: string): boolean {
    const allow = this.options.allowInitiators;
    return allow.length === 0 || allow.some(name => name.toLowerCase() === initiatorName.toLowerCase());
  }

  static sessionKey(initiatorName: string, isid: bigint): string {
    return `${initiatorName.toLowerCase()}|${isid.toString(16)}`;
  }

  findSession(initiatorName: string, isid: bigint): Session | undefined {
    return this.#sessions.get(TargetNode.sessionKey(initiatorName, isid));
  }

  findByTsih(tsih: number): Session | undefined { return this.#byTsih.get(tsih); }

  allocateTsih(): number {
    // TSIH 0 is reserved for "new session"; skip values still in use after wrap-around.
    for (;;) {
      const tsih = this.#nextTsih;
      this.#nextTsih = this.#nextTsih >= 0xffff ? 1 : this.#nextTsih + 1;
      if (!this.#byTsih.has(tsih)) return tsih;
    }
  }

  register(session: Session): void {
    this.#sessions.set(TargetNode.sessionKey(session.initiatorName, session.isid), session);
    this.#byTsih.set(session.tsih, session);
  }

  unregister(session: Session): void {
    const key = TargetNode.sessionKey(session.initiatorName, session.isid);
    if (this.#sessions.get(key) === session) this.#sessions.delete(key);
    if (this.#byTsih.get(session.tsih) === session) this.#byTsih.delete(session.tsih);
  }

  /** SendTargets answer: this node's name and the portal the initiator reached us on. */
  sendTargetsPairs(request: string, localAddress: string, localPort: number): Array<[string, string]> {
    if (request !== 'All' && request !== '' && request !== this.iqn) return [];
    return [
      ['TargetName', this.iqn],
      ['TargetAddress', `${formatHostPort(localAddress, localPort)},${this.options.portalGroupTag}`],
    ];
  }
}
