// Types shared by the command handlers (sbc.ts, spc.ts, mode.ts) and the logical unit that dispatches
// to them, plus small helpers for data-in trimming and data-out collection.
import { Asc, ScsiStatus, SenseKey } from '../../protocol/scsi/constants.js';
import { CheckCondition } from '../../protocol/scsi/sense.js';
import type { Logger } from '../../shared/logger.js';
import type { BlockDevice } from '../volume/block-device.js';
import type { ModeState } from './mode.js';
import type { RangeLock } from './range-lock.js';
import type { ReservationsApi } from './reservations-api.js';
import type { SanitizeState } from './sanitize.js';
import type { ScsiRequest, ScsiResult } from './types.js';
import type { UnitAttentions } from './unit-attention.js';

/** Block-limits values we advertise (VPD 0xB0) and enforce. */
export interface Limits {
  /** Blocks per READ/WRITE/VERIFY. */
  readonly maxTransferLength: number;
  readonly optimalTransferLengthGranularity: number;
  readonly optimalTransferLength: number;
  readonly maxCompareAndWriteLength: number;
  readonly maxUnmapLbaCount: number;
  readonly maxUnmapBlockDescriptorCount: number;
  readonly optimalUnmapGranularity: number;
  readonly maxWriteSameLength: bigint;
  /** Logical blocks per physical block exponent (READ CAPACITY(16)). */
  readonly physicalBlockExponent: number;
  /** WRITE ATOMIC(16): most blocks per atomic write (0: not supported), alignment and granularity. */
  readonly maxAtomicTransferLength: number;
  readonly atomicAlignment: number;
  readonly atomicTransferLengthGranularity: number;
}

export interface Identity {
  readonly vendor: string;
  readonly product: string;
  readonly revision: string;
  readonly serial: string;
  /** 16-byte NAA 6 designator. */
  readonly naa: Buffer;
  readonly protocolIdentifier: number;
  readonly targetPortGroup: number;
}

/** What handlers may use of their logical unit. */
export interface LogicalUnitServices {
  readonly device: BlockDevice;
  readonly limits: Limits;
  readonly identity: Identity;
  readonly mode: ModeState;
  readonly unitAttentions: UnitAttentions;
  readonly reservations: ReservationsApi;
  readonly rangeLock: RangeLock;
  readonly sanitize: SanitizeState;
  readonly commands: CommandTable;
  readonly logger: Logger | undefined;
  descriptorSense(): boolean;
}

export interface CommandContext {
  readonly request: ScsiRequest;
  readonly cdb: Buffer;
  readonly signal: AbortSignal;
  readonly lu: LogicalUnitServices;
  /** Data-out bytes the CDB called for (set by fetchDataOut; reported as ScsiResult.dataOutLength). */
  dataOutLength: number | undefined;
}

export type Handler = (ctx: CommandContext) => Promise<ScsiResult> | ScsiResult;

export interface CommandInfo {
  readonly name: string;
  readonly opcode: number;
  readonly serviceAction?: number;
  /** CDB usage data: validation mask and REPORT SUPPORTED OPERATION CODES payload. */
  readonly usage: readonly number[];
  readonly handler: Handler;
  /** Which MEDIUM ERROR a device media failure maps to. */
  readonly io?: 'read' | 'write';
  /** INQUIRY, REPORT LUNS, REQUEST SENSE: not blocked by unit attentions, don't consume them. */
  readonly uaExempt?: boolean;
  /** Changes the medium: refused with DATA PROTECT while software write protect (SWP) is on. */
  readonly writesMedium?: boolean;
  /** Allowed while a sanitize operation is in progress (SBC-4 4.11: INQUIRY, REPORT LUNS, REQUEST SENSE, ...). */
  readonly sanitizeExempt?: boolean;
  /** Nominal / recommended command timeouts in seconds (RCTD). */
  readonly timeouts?: readonly [number, number];
}

/** Opcode-indexed: a command, or a service-action-indexed table for opcodes that have service actions. */
export type CommandSlot = CommandInfo | { readonly serviceActions: ReadonlyMap<number, CommandInfo> };

export interface CommandTable {
  readonly slots: readonly (CommandSlot | undefined)[];
  readonly all: readonly CommandInfo[];
}

export function buildCommandTable(commands: readonly CommandInfo[]): CommandTable {
  const slots: (CommandSlot | undefined)[] = new Array<CommandSlot | undefined>(256).fill(undefined);
  const saMaps = new Map<number, Map<number, CommandInfo>>();
  for (const c of commands) {
    if (c.serviceAction === undefined) {
      slots[c.opcode] = c;
    } else {
      let m = saMaps.get(c.opcode);
      if (!m) {
        m = new Map();
        saMaps.set(c.opcode, m);
        slots[c.opcode] = { serviceActions: m };
      }
      m.set(c.serviceAction, c);
    }
  }
  const all = [...commands].sort((a, b) => a.opcode - b.opcode || (a.serviceAction ?? 0) - (b.serviceAction ?? 0));
  return { slots, all };
}

export const GOOD: ScsiResult = Object.freeze({ status: ScsiStatus.Good });

/** GOOD with data-in truncated to the allocation length. */
export function dataIn(data: Buffer, allocationLength: number): ScsiResult {
  return { status: ScsiStatus.Good, data: data.length > allocationLength ? data.subarray(0, allocationLength) : data };
}

/** The transport failed to deliver data-out (connection gone) rather than the command failing. */
export class DataOutError extends Error {
  constructor(cause: unknown) {
    super('data-out transfer failed', { cause });
    this.name = 'DataOutError';
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Collect data-out after CDB validation. Asks for what the CDB calls for, capped at what the initiator
 * said it would send (iSCSI EDTL): initiators sending less get a shorter buffer (residual overflow),
 * sending more keep the excess (residual underflow). Either way dataOutLength records the CDB amount.
 */
export async function fetchDataOut(ctx: CommandContext, length: number): Promise<Buffer> {
  ctx.dataOutLength = length;
  const { request } = ctx;
  const writable = request.direction === 'write' || request.direction === 'bidi';
  const available = writable ? Math.min(length, request.expectedLength) : 0;
  if (available === 0) return EMPTY;
  try {
    return await request.fetchData(available, ctx.signal);
  } catch (e) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    throw new DataOutError(e);
  }
}

/** Data-out shorter than a whole block, or otherwise not what the command requires. */
export function dataOutSizeError(): CheckCondition {
  return new CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCommandInformationUnit);
}
