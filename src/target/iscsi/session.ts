// A full-feature-phase iSCSI session (ERL 0, one connection): the CmdSN window and in-order delivery,
// SCSI tasks, task management, NOP, text (SendTargets) and logout.

import type {
  InitiatorPdu, LogoutRequest, NopOut, ScsiCommand, TaskManagementRequest, TextRequest, TargetPdu, DataOut,
} from '../../protocol/iscsi/pdu-types.js';
import {
  LogoutReason, LogoutResponseCode, RESERVED_TAG, TmfFunction, TmfResponse,
} from '../../protocol/iscsi/constants.js';
import { serialGt, serialGte, serialLt, serialLte } from '../../protocol/iscsi/serial.js';
import { ScsiStatus, SenseKey, Asc } from '../../protocol/scsi/constants.js';
import { buildSense } from '../../protocol/scsi/sense.js';
import type { NegotiatedParams } from '../../protocol/iscsi/negotiation.js';
import type { ItNexus, ScsiResult, TmfResultValue } from '../scsi/types.js';
import type { Logger } from '../../shared/logger.js';
import { ScsiTask, type TaskHost } from './scsi-task.js';
import { IscsiTargetError, IscsiTargetErrorCode } from './errors.js';
import type { TargetNode } from './target-node.js';
import { TextExchange } from './text-exchange.js';

/** What the session needs from its connection. */
export interface SessionTransport {
  /** Send a PDU; `status` PDUs take (and advance) StatSN. */
  send(pdu: TargetPdu, status: boolean): void;
  /** Close after what was queued has been written. */
  closeAfterFlush(): void;
  readonly localAddress: string;
  readonly localPort: number;
  readonly cid: number;
  /** The initiator's host:port (for operators' session lists). */
  readonly remoteAddress?: string;
}

export interface SessionOptions {
  readonly node: TargetNode;
  readonly isid: bigint;
  readonly tsih: number;
  readonly initiatorName: string;
  readonly sessionType: 'Normal' | 'Discovery';
  readonly params: NegotiatedParams;
  /** CmdSN the initiator will use for its first full-feature command. */
  readonly expCmdSN: number;
  readonly transport: SessionTransport;
  readonly logger: Logger;
}

const TASK_ABORTED_ERROR = new Error('task aborted');

export class Session {
  readonly node: TargetNode;
  readonly isid: bigint;
  readonly tsih: number;
  readonly initiatorName: string;
  readonly sessionType: 'Normal' | 'Discovery';
  readonly nexus: ItNexus;
  readonly logger: Logger;
  params: NegotiatedParams;
  readonly #transport: SessionTransport;
  #expCmdSN: number;
  #maxCmdSN: number;
  readonly #tasks = new Map<number, ScsiTask>();
  /** Non-immediate commands received ahead of ExpCmdSN, waiting for the gap to fill. */
  readonly #pending = new Map<number, InitiatorPdu | null>();
  readonly #ttts = new Map<number, ScsiTask>();
  #nextTtt = 1;
  #inflight = 0;
  #closed = false;
  readonly #settled = new Set<Promise<void>>();
  readonly #text: TextExchange;
  readonly #taskHost: TaskHost;
  /** ITTs of tasks aborted recently: their trailing Data-Out PDUs are dropped silently. */
  readonly #abortedItts = new Set<number>();

  constructor(options: SessionOptions) {
    this.node = options.node;
    this.isid = options.isid;
    this.tsih = options.tsih;
    this.initiatorName = options.initiatorName;
    this.sessionType = options.sessionType;
    this.params = options.params;
    this.logger = options.logger;
    this.#transport = options.transport;
    this.#expCmdSN = options.expCmdSN >>> 0;
    this.#maxCmdSN = (this.#expCmdSN + this.node.options.queueDepth - 1) >>> 0;
    this.nexus = makeNexus(options.initiatorName, options.isid, 1);
    this.#text = new TextExchange(this);
    const session = this;
    this.#taskHost = {
      get maxBurstLength() { return session.params.maxBurstLength; },
      get firstBurstLength() { return session.params.firstBurstLength; },
      get initialR2T() { return session.params.initialR2T; },
      get immediateData() { return session.params.immediateData; },
      get maxOutstandingR2T() { return session.params.maxOutstandingR2T; },
      get maxXmitDataSegmentLength() { return session.params.maxXmitDataSegmentLength; },
      allocateTtt: task => session.#allocateTtt(task),
      releaseTtt: ttt => { session.#ttts.delete(ttt); },
      sendR2T: pdu => session.#transport.send(pdu, false),
      sendDataIn: pdu => session.#transport.send(pdu, pdu.statusPresent),
      sendResponse: pdu => session.#transport.send(pdu, true),
    };
    if (this.sessionType === 'Normal') this.node.options.scsi.addNexus(this.nexus);
  }

  get expCmdSN(): number { return this.#expCmdSN; }
  get maxCmdSN(): number {
    // The window shrinks while tasks are in flight and never moves backwards (initiators ignore that).
    const room = Math.max(0, this.node.options.queueDepth - this.#inflight);
    const candidate = (this.#expCmdSN + room - 1) >>> 0;
    if (serialGt(candidate, this.#maxCmdSN)) this.#maxCmdSN = candidate;
    return this.#maxCmdSN;
  }
  get taskCount(): number { return this.#tasks.size; }
  get transport(): SessionTransport { return this.#transport; }

  #allocateTtt(task: ScsiTask): number {
    let ttt = this.#nextTtt;
    while (ttt === RESERVED_TAG || this.#ttts.has(ttt)) ttt = (ttt + 1) >>> 0;
    this.#nextTtt = (ttt + 1) >>> 0;
    this.#ttts.set(ttt, task);
    return ttt;
  }

  /** Dispatch one full-feature PDU. Throws IscsiTargetError for protocol violations. */
  handlePdu(pdu: InitiatorPdu): void {
    if (this.#closed) return;
    switch (pdu.kind) {
      case 'DataOut':
        this.#onDataOut(pdu);
        return;
      case 'SnackRequest':
        throw new IscsiTargetError(IscsiTargetErrorCode.SnackNotSupported, 'SNACK at ErrorRecoveryLevel 0');
      case 'LoginRequest':
        throw new IscsiTargetError(IscsiTargetErrorCode.NotAllowedInPhase, 'Login Request in full-feature phase');
      case 'NopOut':
        if (pdu.itt === RESERVED_TAG) return; // an answer to our NOP-In ping; the connection saw it
        break;
      case 'ScsiCommand':
        if (this.sessionType === 'Discovery') {
          throw new IscsiTargetError(IscsiTargetErrorCode.NotAllowedInDiscovery, 'SCSI command in a discovery session');
        }
        break;
      case 'TaskManagementRequest':
        if (this.sessionType === 'Discovery') {
          throw new IscsiTargetError(IscsiTargetErrorCode.NotAllowedInDiscovery, 'task management in a discovery session');
        }
        break;
      default:
        break;
    }
    this.#receiveCommand(pdu as ScsiCommand | NopOut | TaskManagementRequest | TextRequest | LogoutRequest);
  }

  #receiveCommand(pdu: ScsiCommand | NopOut | TaskManagementRequest | TextRequest | LogoutRequest): void {
    const cmdSN = pdu.cmdSN >>> 0;
    if (!pdu.immediate && !this.#inWindow(cmdSN)) {
      // RFC 7143 4.2.2.1: outside [ExpCmdSN, MaxCmdSN] the target silently ignores the command.
      this.logger.debug({ kind: pdu.kind, cmdSN, expCmdSN: this.#expCmdSN, maxCmdSN: this.#maxCmdSN }, 'PDU outside the CmdSN window ignored');
      return;
    }
    let task: ScsiTask | undefined;
    if (pdu.kind === 'ScsiCommand') {
      try {
        // Immediate commands bypass the CmdSN window; bound them too.
        if (pdu.immediate && this.#tasks.size >= 2 * this.node.options.queueDepth) {
          throw new IscsiTargetError(IscsiTargetErrorCode.TooManyTasks, 'too many immediate commands outstanding');
        }
        if (this.#tasks.has(pdu.itt)) {
          throw new IscsiTargetError(IscsiTargetErrorCode.DuplicateItt, `ITT 0x${pdu.itt.toString(16)} is already in use`);
        }
        task = new ScsiTask(this.#taskHost, pdu);
      } catch (err) {
        // The rejected command still uses its CmdSN, and its trailing Data-Out PDUs are dropped.
        this.#rememberAborted(pdu.itt);
        if (!pdu.immediate) this.#sequence(cmdSN, null);
        throw err;
      }
      this.#tasks.set(task.itt, task);
      this.#abortedItts.delete(task.itt);
      this.#inflight++;
    }
    if (pdu.immediate) {
      this.#deliver(pdu, task);
      return;
    }
    this.#sequence(cmdSN, pdu);
  }

  /** Deliver in CmdSN order; `null` stands for a command that was rejected but used its CmdSN. */
  #sequence(cmdSN: number, pdu: InitiatorPdu | null): void {
    if (cmdSN !== this.#expCmdSN) {
      if (!this.#pending.has(cmdSN)) this.#pending.set(cmdSN, pdu);
      return;
    }
    this.#expCmdSN = (this.#expCmdSN + 1) >>> 0;
    if (pdu) this.#deliver(pdu, pdu.kind === 'ScsiCommand' ? this.#tasks.get(pdu.itt) : undefined);
    // Deliver whatever was waiting for this gap.
    while (this.#pending.has(this.#expCmdSN)) {
      const next = this.#pending.get(this.#expCmdSN);
      this.#pending.delete(this.#expCmdSN);
      this.#expCmdSN = (this.#expCmdSN + 1) >>> 0;
      if (next) this.#deliver(next, next.kind === 'ScsiCommand' ? this.#tasks.get(next.itt) : undefined);
    }
  }

  #inWindow(cmdSN: number): boolean {
    return serialGte(cmdSN, this.#expCmdSN) && serialLte(cmdSN, this.maxCmdSN);
  }

  #deliver(pdu: InitiatorPdu, task: ScsiTask | undefined): void {
    switch (pdu.kind) {
      case 'ScsiCommand':
        if (task && !task.aborted) this.#track(this.#execute(task));
        return;
      case 'NopOut':
        this.#transport.send({
          kind: 'NopIn', lun: pdu.lun, itt: pdu.itt, ttt: RESERVED_TAG, data: Buffer.from(pdu.data),
          statSN: 0, expCmdSN: 0, maxCmdSN: 0,
        }, true);
        return;
      case 'TaskManagementRequest':
        this.#track(this.#taskManagement(pdu));
        return;
      case 'TextRequest':
        this.#text.onRequest(pdu);
        return;
      case 'LogoutRequest':
        this.#track(this.#logout(pdu));
        return;
      default:
        return;
    }
  }

  #track(p: Promise<void>): void {
    // One reaction per command (catch + finally would chain two more promises on every I/O).
    const settled: Promise<void> = p.then(() => { this.#settled.delete(settled); }, (err: unknown) => {
      this.#settled.delete(settled);
      this.logger.error({ err }, 'session task failed');
    });
    this.#settled.add(settled);
  }

  async #execute(task: ScsiTask): Promise<void> {
    task.delivered = true;
    let result: ScsiResult;
    try {
      result = await this.node.options.scsi.execute({
        nexus: this.nexus,
        lun: task.lun,
        cdb: task.cdb,
        tag: task.itt,
        attr: task.attr,
        expectedLength: task.expectedLength,
        direction: task.direction,
        fetchData: (length, signal) => task.fetchData(length, signal),
      });
    } catch (err) {
      this.logger.error({ err, itt: task.itt }, 'SCSI execution failed');
      result = { status: ScsiStatus.CheckCondition, sense: buildSense(SenseKey.HardwareError, Asc.InternalTargetFailure) };
    }
    // A response must not overtake the initiator's unsolicited data for this task.
    if (!task.unsolicitedDone) await task.unsolicitedComplete();
    this.#finish(task);
    if (!this.#closed && !task.aborted && !result.aborted) task.complete(result);
  }

  #finish(task: ScsiTask): void {
    if (this.#tasks.get(task.itt) === task) {
      this.#tasks.delete(task.itt);
      this.#inflight--;
    }
  }

  #onDataOut(pdu: DataOut): void {
    const task = pdu.ttt === RESERVED_TAG ? this.#tasks.get(pdu.itt) : this.#ttts.get(pdu.ttt);
    if (!task || task.itt !== pdu.itt) {
      if (this.#abortedItts.has(pdu.itt)) return;
      if (pdu.ttt !== RESERVED_TAG) {
        throw new IscsiTargetError(IscsiTargetErrorCode.UnknownTtt, `Data-Out with unknown TTT 0x${pdu.ttt.toString(16)}`);
      }
      throw new IscsiTargetError(IscsiTargetErrorCode.UnknownItt, `Data-Out for unknown ITT 0x${pdu.itt.toString(16)}`);
    }
    if (task.aborted) return;
    try {
      task.onDataOut(pdu);
    } catch (err) {
      // The task's data stream is broken: it ends without a response (the initiator fails it on
      // the Reject), and the write never reaches the SCSI layer.
      this.#markAborted(task);
      if (!task.delivered) this.#finish(task);
      throw err;
    }
  }

  /** Abort tasks of this session that the SCSI layer has not seen yet (waiting on CmdSN order). */
  #abortLocal(match: (task: ScsiTask) => boolean): void {
    for (const task of [...this.#tasks.values()]) {
      if (!match(task)) continue;
      this.#markAborted(task);
      if (!task.delivered) this.#finish(task);
    }
  }

  #markAborted(task: ScsiTask): void {
    task.aborted = true;
    task.cancel(TASK_ABORTED_ERROR);
    this.#rememberAborted(task.itt);
  }

  #rememberAborted(itt: number): void {
    this.#abortedItts.add(itt);
    if (this.#abortedItts.size > 1024) {
      const first = this.#abortedItts.values().next();
      if (!first.done) this.#abortedItts.delete(first.value);
    }
  }

  async #taskManagement(pdu: TaskManagementRequest): Promise<void> {
    const scsi = this.node.options.scsi;
    const fn = pdu.function;
    let response: number = TmfResponse.FunctionComplete;
    let dropAfter = false;
    const mapResult = (r: TmfResultValue): number => {
      switch (r) {
        case 'complete': return TmfResponse.FunctionComplete;
        case 'task-does-not-exist': return TmfResponse.TaskDoesNotExist;
        case 'lun-does-not-exist': return TmfResponse.LunDoesNotExist;
        case 'not-supported': return TmfResponse.FunctionNotSupported;
        default: return TmfResponse.FunctionRejected;
      }
    };
    switch (fn) {
      case TmfFunction.AbortTask: {
        const task = this.#tasks.get(pdu.referencedTaskTag);
        if (!task || task.lun !== pdu.lun) {
          // Not received yet but inside the window: it counts as aborted (RFC 7143 11.5.1).
          const ref = pdu.refCmdSN >>> 0;
          response = serialGte(ref, this.#expCmdSN) && serialLt(ref, (this.maxCmdSN + 1) >>> 0) && !task
            ? TmfResponse.FunctionComplete
            : TmfResponse.TaskDoesNotExist;
          if (response === TmfResponse.FunctionComplete) this.#discardPending(ref, pdu.referencedTaskTag);
          break;
        }
        if (!task.delivered) {
          this.#markAborted(task);
          this.#finish(task);
          break;
        }
        const r = await scsi.abortTask(this.nexus, task.lun, task.itt);
        if (r === 'complete') this.#markAborted(task);
        response = mapResult(r);
        break;
      }
      case TmfFunction.AbortTaskSet:
      case TmfFunction.ClearTaskSet: {
        this.#abortLocal(t => t.lun === pdu.lun && !t.delivered);
        const r = fn === TmfFunction.AbortTaskSet
          ? await scsi.abortTaskSet(this.nexus, pdu.lun)
          : await scsi.clearTaskSet(this.nexus, pdu.lun);
        this.#abortLocal(t => t.lun === pdu.lun);
        response = mapResult(r);
        break;
      }
      case TmfFunction.LogicalUnitReset: {
        this.#abortLocal(t => t.lun === pdu.lun && !t.delivered);
        const r = await scsi.logicalUnitReset(this.nexus, pdu.lun);
        this.#abortLocal(t => t.lun === pdu.lun);
        response = mapResult(r);
        break;
      }
      case TmfFunction.TargetWarmReset:
      case TmfFunction.TargetColdReset: {
        this.#abortLocal(t => !t.delivered);
        const cold = fn === TmfFunction.TargetColdReset;
        const r = await scsi.targetReset(this.nexus, cold);
        this.#abortLocal(() => true);
        response = mapResult(r);
        // A cold reset ends every connection of the target once answered; a warm one ends the others'.
        for (const other of this.node.sessions()) if (other !== this) other.transport.closeAfterFlush();
        dropAfter = cold;
        break;
      }
      case TmfFunction.TaskReassign:
        response = TmfResponse.TaskAllegianceReassignmentNotSupported;
        break;
      case TmfFunction.ClearAca:
        response = TmfResponse.FunctionNotSupported;
        break;
      default:
        response = TmfResponse.FunctionRejected;
        break;
    }
    if (this.#closed) return;
    this.#transport.send({ kind: 'TaskManagementResponse', response, itt: pdu.itt, statSN: 0, expCmdSN: 0, maxCmdSN: 0 }, true);
    if (dropAfter) this.#transport.closeAfterFlush();
  }

  #discardPending(cmdSN: number, itt: number): void {
    const pending = this.#pending.get(cmdSN);
    if (pending && pending.kind === 'ScsiCommand' && pending.itt === itt) {
      const task = this.#tasks.get(itt);
      if (task) { this.#markAborted(task); this.#finish(task); }
    }
  }

  async #logout(pdu: LogoutRequest): Promise<void> {
    let response: number = LogoutResponseCode.Success;
    if (pdu.reason === LogoutReason.RemoveConnectionForRecovery) {
      response = LogoutResponseCode.RecoveryNotSupported;
    } else if (pdu.reason === LogoutReason.CloseConnection && pdu.cid !== this.#transport.cid) {
      response = LogoutResponseCode.CidNotFound;
    } else if (pdu.reason !== LogoutReason.CloseSession && pdu.reason !== LogoutReason.CloseConnection) {
      response = LogoutResponseCode.CleanupFailed;
    }
    if (response === LogoutResponseCode.Success) {
      // Commands still running finish first; their responses precede the Logout Response.
      const running = [...this.#settled];
      await Promise.race([Promise.allSettled(running), delay(10_000)]);
    }
    if (this.#closed) return;
    this.#transport.send({
      kind: 'LogoutResponse', response, itt: pdu.itt,
      time2Wait: response === LogoutResponseCode.Success ? 0 : this.params.defaultTime2Wait,
      time2Retain: 0,
      statSN: 0, expCmdSN: 0, maxCmdSN: 0,
    }, true);
    if (response === LogoutResponseCode.Success) this.#transport.closeAfterFlush();
  }

  /** The connection is gone (or the session is being reinstated): end every task. Resolves when they settled. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const task of this.#tasks.values()) this.#markAborted(task);
    // I_T nexus loss right away (not after the tasks drain): it aborts the nexus's SCSI tasks and
    // releases what the nexus held (an SPC-2 reservation) before any later command is seen.
    if (this.sessionType === 'Normal') this.node.options.scsi.removeNexus(this.nexus);
    this.node.unregister(this);
    await Promise.race([Promise.allSettled([...this.#settled]), delay(30_000)]);
    this.#tasks.clear();
    this.#pending.clear();
    this.#ttts.clear();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms).unref());
}

/** iSCSI initiator port name and TransportID (SPC-4 7.6.4.6, format 01b: name + ",i,0x" + ISID). */
export function makeNexus(initiatorName: string, isid: bigint, relativeTargetPort: number): ItNexus {
  const port = `${initiatorName},i,0x${isid.toString(16).padStart(12, '0')}`;
  const nameBytes = Buffer.byteLength(port) + 1;
  const padded = Math.ceil(nameBytes / 4) * 4;
  const transportId = Buffer.alloc(4 + padded);
  transportId[0] = 0x40 | 0x05; // format 01b, protocol identifier 5 (iSCSI)
  transportId.writeUInt16BE(padded, 2);
  transportId.write(port, 4, 'utf8');
  return { initiatorPortName: port, initiatorName, transportId, relativeTargetPort };
}
