// One logical unit: the opcode-indexed command table (tgt style), task set ordering and task
// management, unit attentions, reservation admission and the mapping of failures to sense data.
// Command flow: task ordering → unit attention → opcode/service action lookup → reserved CDB bits →
// reservation conflict → handler. execute() never rejects.
import { Op, checkReservedBits } from '../../protocol/scsi/cdb.js';
import { Asc, ScsiStatus, SenseKey } from '../../protocol/scsi/constants.js';
import { CheckCondition, invalidCdbField } from '../../protocol/scsi/sense.js';
import type { Logger } from '../../shared/logger.js';
import { BlockDeviceError, type BlockDevice } from '../volume/block-device.js';
import {
  DataOutError, buildCommandTable, type CommandContext, type CommandInfo, type CommandTable, type Identity,
  type Limits, type LogicalUnitServices,
} from './command.js';
import { ModeState, modeCommands } from './mode.js';
import { RangeLock } from './range-lock.js';
import type { ReservationHooksApi, ReservationsApi } from './reservations-api.js';
import { Reservations } from './reservations.js';
import { SanitizeState, sanitizeCommands } from './sanitize.js';
import { sbcCommands } from './sbc.js';
import { spcCommands } from './spc.js';
import { TaskSet, waitUnlessAborted, type AbortMode, type Task } from './task-set.js';
import { TmfResult, type ItNexus, type ScsiRequest, type ScsiResult, type TmfResultValue } from './types.js';
import { UnitAttentions } from './unit-attention.js';

/** The command table every logical unit shares (it holds no per-LU state). */
export const COMMANDS: CommandTable = buildCommandTable([...spcCommands, ...sbcCommands, ...modeCommands, ...sanitizeCommands]);

const PR_STATE_KEY = 'pr';

export interface LogicalUnitOptions {
  readonly device: BlockDevice;
  readonly identity: Identity;
  readonly limits: Limits;
  readonly logger?: Logger;
  /** Pace of SANITIZE I/O (default DEFAULT_SANITIZE_BYTES_PER_SECOND; 0 = unpaced). */
  readonly sanitizeBytesPerSecond?: number;
  /** Substitute reservations (tests); by default the real module, wired to UAs, persistence and aborts. */
  readonly reservations?: (hooks: ReservationHooksApi & { abortTasks(names: readonly string[]): void }, descriptorSense: () => boolean) => ReservationsApi;
}

const ABORTED: ScsiResult = Object.freeze({ status: ScsiStatus.TaskAborted, aborted: true });
const TASK_ABORTED: ScsiResult = Object.freeze({ status: ScsiStatus.TaskAborted });
const CONFLICT: ScsiResult = Object.freeze({ status: ScsiStatus.ReservationConflict });

export class LogicalUnit implements LogicalUnitServices {
  readonly device: BlockDevice;
  readonly identity: Identity;
  readonly limits: Limits;
  readonly logger: Logger | undefined;
  readonly mode: ModeState;
  readonly unitAttentions = new UnitAttentions();
  readonly rangeLock = new RangeLock();
  readonly sanitize: SanitizeState;
  readonly commands: CommandTable = COMMANDS;
  readonly reservations: ReservationsApi;
  readonly #tasks = new TaskSet();
  readonly #unsubscribe: () => void;

  constructor(options: LogicalUnitOptions) {
    this.device = options.device;
    this.identity = options.identity;
    this.limits = options.limits;
    this.logger = options.logger;
    this.mode = new ModeState(options.device);
    this.sanitize = new SanitizeState(options.sanitizeBytesPerSecond);
    const hooks = {
      unitAttention: (name: string, asc: number): void => this.unitAttentions.establish(name, asc),
      persist: (state: Buffer | undefined, required?: boolean): Promise<void> => this.#persist(state, required === true),
      abortTasks: (names: readonly string[]): void => {
        const set = new Set(names);
        void this.#abortWhere((t) => set.has(t.initiatorPortName), () => this.#otherNexusMode());
      },
    };
    const descriptorSense = (): boolean => this.mode.dSense;
    this.reservations = options.reservations
      ? options.reservations(hooks, descriptorSense)
      : new Reservations(hooks, { descriptorSense });
    this.#unsubscribe = options.device.onCapacityChange(() => this.unitAttentions.establishAll(Asc.CapacityDataHasChanged));
  }

  /** Load persisted state (persistent reservations: registrations and reservation). */
  async init(): Promise<void> {
    const state = await this.device.loadState?.(PR_STATE_KEY);
    if (state && state.length > 0) this.reservations.restore(state);
  }

  async #persist(state: Buffer | undefined, required: boolean): Promise<void> {
    if (!this.device.saveState) {
      // Without APTPL a device that keeps no state (memory) holds reservations in memory only.
      if (state && required) throw new Error('block device cannot persist state (APTPL)');
      return;
    }
    // An empty value stands for "nothing persisted" (BlockDevice has no delete).
    await this.device.saveState(PR_STATE_KEY, state ?? Buffer.alloc(0));
  }

  descriptorSense(): boolean {
    return this.mode.dSense;
  }

  addNexus(nexus: ItNexus): void {
    this.unitAttentions.register(nexus.initiatorPortName);
  }

  removeNexus(nexus: ItNexus): void {
    this.unitAttentions.unregister(nexus.initiatorPortName);
    this.reservations.onNexusLoss(nexus);
    // I_T nexus loss aborts its tasks; nobody is left to answer.
    void this.#abortWhere((t) => t.initiatorPortName === nexus.initiatorPortName, () => 'silent');
  }

  async execute(request: ScsiRequest): Promise<ScsiResult> {
    const task = this.#tasks.begin(request.nexus.initiatorPortName, request.tag, request.attr);
    const ctx: CommandContext = { request, cdb: request.cdb, signal: task.signal, lu: this, dataOutLength: undefined };
    let result: ScsiResult;
    let info: CommandInfo | undefined;
    try {
      if (task.ready) await waitUnlessAborted(task.ready, task.signal);
      info = this.#lookup(request.cdb);
      result = await this.#run(ctx, info);
    } catch (e) {
      result = this.#failure(e, ctx, info);
    } finally {
      this.#tasks.end(task);
    }
    if (task.abortMode !== undefined) return task.abortMode === 'status' ? TASK_ABORTED : ABORTED;
    if (ctx.dataOutLength !== undefined && result.dataOutLength === undefined) {
      result = { ...result, dataOutLength: ctx.dataOutLength };
    }
    return result;
  }

  #lookup(cdb: Buffer): CommandInfo | undefined {
    const slot = this.commands.slots[cdb[0]!];
    if (slot === undefined || !('serviceActions' in slot)) return slot;
    return slot.serviceActions.get(cdb[1]! & 0x1f);
  }

  #run(ctx: CommandContext, info: CommandInfo | undefined): Promise<ScsiResult> | ScsiResult {
    const { nexus } = ctx.request;
    const cdb = ctx.cdb;
    this.unitAttentions.ensure(nexus.initiatorPortName);
    if (!info?.uaExempt) {
      const ua = this.unitAttentions.take(nexus.initiatorPortName);
      if (ua !== undefined) return this.#check(new CheckCondition(SenseKey.UnitAttention, ua));
    }
    if (!info) {
      if (this.commands.slots[cdb[0]!] === undefined) {
        throw new CheckCondition(SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode);
      }
      throw invalidCdbField(1, 4); // unsupported service action
    }
    if (cdb.length < info.usage.length) throw invalidCdbField(0, 7);
    checkReservedBits(cdb, info.usage);
    if (this.reservations.isConflict(nexus, cdb)) return CONFLICT;
    if (this.sanitize.inProgress && !info.uaExempt) {
      throw new CheckCondition(SenseKey.NotReady, Asc.LogicalUnitNotReadySanitizeInProgress);
    }
    if (info.writesMedium && this.mode.swp) throw new CheckCondition(SenseKey.DataProtect, Asc.WriteProtected);
    // Sanitize failure mode: the medium is in an unknown state until a sanitize succeeds or the mode is exited.
    if (this.sanitize.failed && info.io !== undefined && info.opcode !== Op.Sanitize) {
      throw new CheckCondition(SenseKey.MediumError, Asc.SanitizeCommandFailed);
    }
    return info.handler(ctx);
  }

  #check(c: CheckCondition): ScsiResult {
    return { status: ScsiStatus.CheckCondition, sense: c.toSense(this.mode.dSense) };
  }

  #failure(e: unknown, ctx: CommandContext, info: CommandInfo | undefined): ScsiResult {
    if (ctx.signal.aborted) return ABORTED; // replaced by the abort mode in execute()
    if (e instanceof CheckCondition) return this.#check(e);
    if (e instanceof BlockDeviceError) return this.#check(deviceErrorCondition(e, info?.io));
    if (e instanceof DataOutError) {
      this.logger?.debug({ err: e.cause, tag: ctx.request.tag }, 'data-out transfer failed');
      return this.#check(new CheckCondition(SenseKey.AbortedCommand, Asc.DataPhaseError));
    }
    this.logger?.error({ err: e, opcode: ctx.cdb[0], tag: ctx.request.tag }, 'command failed unexpectedly');
    return this.#check(new CheckCondition(SenseKey.HardwareError, Asc.InternalTargetFailure));
  }

  // ---- task management

  /** Tasks of other nexuses aborted by this one's action: TASK ABORTED status if TAS=1, else nothing. */
  #otherNexusMode(): AbortMode {
    return this.mode.tas ? 'status' : 'silent';
  }

  #abortWhere(match: (t: Task) => boolean, mode: (t: Task) => AbortMode): Promise<readonly Task[]> {
    return this.#tasks.abort(match, mode);
  }

  async abortTask(nexus: ItNexus, tag: number): Promise<TmfResultValue> {
    const task = this.#tasks.find(nexus.initiatorPortName, tag);
    if (!task) return TmfResult.TaskDoesNotExist;
    await this.#abortWhere((t) => t === task, () => 'silent');
    return TmfResult.Complete;
  }

  async abortTaskSet(nexus: ItNexus): Promise<TmfResultValue> {
    await this.#abortWhere((t) => t.initiatorPortName === nexus.initiatorPortName, () => 'silent');
    return TmfResult.Complete;
  }

  /** Abort every task: the issuer's silently, others' per TAS. Returns the other nexuses that lost tasks. */
  async #abortAll(issuer: string | undefined): Promise<Set<string>> {
    const victims = await this.#abortWhere(() => true, (t) => (t.initiatorPortName === issuer ? 'silent' : this.#otherNexusMode()));
    const others = new Set<string>();
    for (const t of victims) if (t.initiatorPortName !== issuer) others.add(t.initiatorPortName);
    return others;
  }

  async clearTaskSet(nexus: ItNexus): Promise<TmfResultValue> {
    const tas = this.mode.tas;
    const others = await this.#abortAll(nexus.initiatorPortName);
    // TAS=0: the other nexuses learn about it through a unit attention (SPC-4 7.5.8).
    if (!tas) for (const name of others) this.unitAttentions.establish(name, Asc.CommandsClearedByAnotherInitiator);
    return TmfResult.Complete;
  }

  /** LOGICAL UNIT RESET (and the per-LU part of a target reset). */
  async reset(issuer: ItNexus | undefined, asc: number = Asc.BusDeviceResetFunctionOccurred): Promise<TmfResultValue> {
    await this.#abortAll(issuer?.initiatorPortName);
    this.reservations.onLogicalUnitReset();
    this.mode.reset();
    this.unitAttentions.establishAll(asc);
    return TmfResult.Complete;
  }

  async close(): Promise<void> {
    this.#unsubscribe();
    await this.#abortAll(undefined);
  }
}

function deviceErrorCondition(e: BlockDeviceError, io: 'read' | 'write' | undefined): CheckCondition {
  switch (e.code) {
    case 'EMEDIUM': {
      const asc = io === 'write' ? Asc.WriteError : Asc.UnrecoveredReadError;
      return new CheckCondition(SenseKey.MediumError, asc, e.lba === undefined ? {} : { information: e.lba });
    }
    case 'ENOSPC':
      return new CheckCondition(SenseKey.DataProtect, Asc.NoSpaceLeft);
    case 'EOFFLINE':
      return new CheckCondition(SenseKey.NotReady, Asc.LogicalUnitNotReadyManualIntervention);
    case 'ERANGE':
      return new CheckCondition(SenseKey.IllegalRequest, Asc.LbaOutOfRange);
    default:
      return new CheckCondition(SenseKey.HardwareError, Asc.InternalTargetFailure);
  }
}

