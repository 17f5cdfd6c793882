// Reservations of one logical unit: SPC-4 persistent reservations (PERSISTENT RESERVE IN/OUT, 5.13,
// 6.15, 6.16) and SPC-2 RESERVE/RELEASE. Transport-agnostic: an I_T nexus is identified by its
// initiator port name (this target has one target port group, so initiator port ↔ I_T nexus).
// The logical unit asks isConflict() before executing any command and routes the reservation
// commands here; unit attentions and persistence go out through hooks.
//
// Every change of the persistent reservation state is persisted, APTPL or not. SPC-4 lets
// registrations without APTPL be lost on a power loss of the logical unit, but here the state
// outlives the target process (it is kept on the replicas): a target restart or a takeover by
// another target instance is a failover of the device server, not a power loss, and dropping the
// registrations there would unfence nodes a cluster fenced (fence_scsi, Windows failover clustering).
// APTPL only decides whether a device that cannot persist must refuse the change.

import type { ItNexus, ScsiResult } from './types.js';
import { Asc, ScsiStatus, SenseKey } from '../../protocol/scsi/constants.js';
import { buildSense, type FieldPointer } from '../../protocol/scsi/sense.js';

export interface ReservationHooks {
  /** Queue a unit attention (asc<<8|ascq, e.g. Asc.ReservationsPreempted) for one I_T nexus. */
  unitAttention(initiatorPortName: string, ascq16: number): void;
  /**
   * Persist the whole state; called before the PR OUT completes, which fails if this rejects.
   * `required` (APTPL) = the initiator asked for persistence: a device that cannot persist rejects.
   */
  persist(state: Buffer | undefined, required?: boolean): Promise<void>;
  /**
   * PREEMPT AND ABORT: abort every task of these I_T nexuses (their registrations were just
   * removed). Called after the state change is final, before the PR OUT completes.
   */
  abortTasks?(initiatorPortNames: readonly string[]): void;
}

export interface ReservationsOptions {
  /** Control mode page D_SENSE: descriptor-format sense. */
  readonly descriptorSense: () => boolean;
}

/** Persistent reservation types (SPC-4 table 169). */
export const PrType = {
  WriteExclusive: 1,
  ExclusiveAccess: 3,
  WriteExclusiveRegistrantsOnly: 5,
  ExclusiveAccessRegistrantsOnly: 6,
  WriteExclusiveAllRegistrants: 7,
  ExclusiveAccessAllRegistrants: 8,
} as const;

export const PrInAction = { ReadKeys: 0, ReadReservation: 1, ReportCapabilities: 2, ReadFullStatus: 3 } as const;

export const PrOutAction = {
  Register: 0,
  Reserve: 1,
  Release: 2,
  Clear: 3,
  Preempt: 4,
  PreemptAndAbort: 5,
  RegisterAndIgnoreExistingKey: 6,
  RegisterAndMove: 7,
  ReplaceLostReservation: 8,
} as const;

const Op = {
  TestUnitReady: 0x00,
  RequestSense: 0x03,
  Reserve6: 0x16,
  Release6: 0x17,
  Inquiry: 0x12,
  StartStopUnit: 0x1b,
  PreventAllow: 0x1e,
  Reserve10: 0x56,
  Release10: 0x57,
  PrIn: 0x5e,
  PrOut: 0x5f,
  Variable: 0x7f,
  ServiceActionIn16: 0x9e,
  ReportLuns: 0xa0,
  MaintenanceIn: 0xa3,
  ServiceActionIn12: 0xab,
} as const;

// ---- Command classification (SPC-4 table 61 "SPC commands allowed in the presence of various
// reservations" + SBC-3 table 13). One byte per opcode: low bits = access class under a persistent
// reservation held by someone else; flag bits for SPC-2 reservations.

/** Conflicts for non-holders under every persistent reservation type (writes and state changes). */
const W = 0;
/** Never conflicts with a persistent reservation. */
const A = 1;
/** Read-like: allowed under Write Exclusive types, conflicts under Exclusive Access types. */
const R = 2;
/** Depends on CDB fields: resolved by BY_FIELD below. */
const F = 3;
const CLASS_MASK = 0x3;
/** Allowed from any nexus while another nexus holds an SPC-2 RESERVE. */
const SPC2_ALLOWED = 0x10;
/** PERSISTENT RESERVE IN/OUT: conflicts with every nexus while an SPC-2 RESERVE exists (SPC-3 5.6.3). */
const SPC2_PR = 0x20;

const OPCODES: Uint8Array = (() => {
  const t = new Uint8Array(256); // default W: unknown commands may modify the medium
  const set = (v: number, ...ops: number[]) => { for (const op of ops) t[op] = v; };
  set(A, 0x00 /* TEST UNIT READY (ALLOW COMMANDS 011b) */, 0x25 /* READ CAPACITY(10) */,
    0x4d /* LOG SENSE */, 0x86 /* ACCESS CONTROL IN */, 0x87 /* ACCESS CONTROL OUT */);
  set(A | SPC2_ALLOWED, Op.Inquiry, Op.RequestSense, Op.ReportLuns);
  // RESERVE/RELEASE are governed by the SPC-2 rules (isConflict step 2), never by the PR table.
  set(A | SPC2_ALLOWED, Op.Release6, Op.Release10);
  set(A, Op.Reserve6, Op.Reserve10);
  set(A | SPC2_PR, Op.PrIn, Op.PrOut);
  set(R, 0x08, 0x28, 0xa8, 0x88 /* READ 6/10/12/16 */, 0x2f, 0xaf, 0x8f /* VERIFY 10/12/16 */,
    0x34, 0x90 /* PRE-FETCH 10/16 */, 0x52 /* XDREAD */, 0x1a, 0x5a /* MODE SENSE 6/10 */,
    0x3c, 0x9b /* READ BUFFER 10/16 */, 0x1c /* RECEIVE DIAGNOSTIC RESULTS */,
    0x37, 0xb7 /* READ DEFECT DATA 10/12 */, 0x8c /* READ ATTRIBUTE */, 0x84 /* THIRD-PARTY COPY IN */);
  set(F, Op.StartStopUnit, Op.PreventAllow, Op.Variable, Op.ServiceActionIn16, Op.MaintenanceIn,
    Op.ServiceActionIn12);
  return t;
})();

/** Service-action sub-tables of the F opcodes; unlisted service actions are W. */
const SERVICE_ACTIONS: ReadonlyMap<number, ReadonlyMap<number, number>> = new Map([
  [Op.ServiceActionIn16, new Map([[0x10, A] /* READ CAPACITY(16) */, [0x12, R] /* GET LBA STATUS */,
    [0x13, A] /* REPORT REFERRALS */])],
  [Op.MaintenanceIn, new Map([[0x05, A] /* REPORT IDENTIFYING INFORMATION */, [0x0a, A] /* RTPG */,
    [0x0b, A] /* REPORT ALIASES */, [0x0c, R] /* REPORT SUPPORTED OPCODES */, [0x0d, R] /* REPORT SUPPORTED TMF */,
    [0x0e, A] /* REPORT PRIORITY */, [0x0f, A] /* REPORT TIMESTAMP */, [0x10, A] /* MANAGEMENT PROTOCOL IN */])],
  [Op.ServiceActionIn12, new Map([[0x01, A] /* READ MEDIA SERIAL NUMBER */])],
  [Op.Variable, new Map([[0x0009, R] /* READ(32) */, [0x000a, R] /* VERIFY(32) */])],
]);

function accessClass(cdb: Buffer): number {
  const op = cdb[0] ?? 0;
  const c = (OPCODES[op] ?? W) & CLASS_MASK;
  if (c !== F) return c;
  switch (op) {
    case Op.StartStopUnit: // only START=1 with POWER CONDITION=0 is harmless
      return ((cdb[4] ?? 0) & 0xf1) === 0x01 ? A : W;
    case Op.PreventAllow: // PREVENT=0 only
      return ((cdb[4] ?? 0) & 0x03) === 0 ? A : W;
    case Op.Variable:
      return SERVICE_ACTIONS.get(op)?.get(cdb.length >= 10 ? cdb.readUInt16BE(8) : -1) ?? W;
    default:
      return SERVICE_ACTIONS.get(op)?.get((cdb[1] ?? 0) & 0x1f) ?? W;
  }
}

// ---- State

interface Registration {
  /** Nexus name as the transport spells it (unit attentions use it). */
  readonly portName: string;
  readonly initiatorName: string;
  readonly transportId: Buffer;
  key: bigint;
  relativeTargetPort: number;
  allTgPt: boolean;
}

interface Reservation {
  readonly type: number;
  /** Normalized port name of the holder; undefined for all-registrants types (every registrant holds it). */
  readonly holder: string | undefined;
}

interface Snapshot {
  readonly regs: Map<string, Registration>;
  readonly reservation: Reservation | undefined;
  readonly generation: number;
  readonly aptpl: boolean;
}

/** Effects of one PR OUT, applied only once the state change is final (persisted if APTPL). */
interface Effects {
  changed: boolean;
  readonly attentions: Array<readonly [string, number]>;
  readonly aborted: string[];
}

const STATE_VERSION = 1;
const ISCSI_PROTOCOL = 0x5;
const ISID_SEPARATOR = ',i,0x';

const isValidType = (t: number) => t === 1 || t === 3 || (t >= 5 && t <= 8);
const isAllRegistrants = (t: number) => t === PrType.WriteExclusiveAllRegistrants || t === PrType.ExclusiveAccessAllRegistrants;
const isRegistrantsOnly = (t: number) =>
  t === PrType.WriteExclusiveRegistrantsOnly || t === PrType.ExclusiveAccessRegistrantsOnly;
const isExclusiveAccess = (t: number) =>
  t === PrType.ExclusiveAccess || t === PrType.ExclusiveAccessRegistrantsOnly || t === PrType.ExclusiveAccessAllRegistrants;

/** iSCSI names are case-insensitive (RFC 3722 stringprep lowercases them), and so is the ISID hex. */
const norm = (portName: string) => portName.toLowerCase();

const GOOD: ScsiResult = { status: ScsiStatus.Good };
const CONFLICT: ScsiResult = { status: ScsiStatus.ReservationConflict };

/** A parsed iSCSI TransportID (SPC-4 7.6.4.6). */
interface TransportId {
  /** 0: initiator device (name only), 1: initiator port (name,i,0xISID). */
  readonly format: number;
  readonly name: string;
  readonly initiatorName: string;
  readonly length: number;
}

class FieldError extends Error {
  readonly byte: number;
  constructor(byte: number) {
    super(`invalid field at byte ${byte}`);
    this.byte = byte;
  }
}

function parseTransportId(buf: Buffer, off: number): TransportId {
  if (off + 4 > buf.length) throw new FieldError(off);
  const b0 = buf[off] ?? 0;
  const format = b0 >> 6;
  if ((b0 & 0x0f) !== ISCSI_PROTOCOL || format > 1) throw new FieldError(off);
  const length = 4 + buf.readUInt16BE(off + 2);
  if (length > buf.length - off || length < 8 || (length & 3) !== 0) throw new FieldError(off + 2);
  const field = buf.subarray(off + 4, off + length);
  const nul = field.indexOf(0);
  if (nul <= 0) throw new FieldError(off + 4);
  const name = field.subarray(0, nul).toString('utf8');
  const sep = norm(name).indexOf(ISID_SEPARATOR);
  if (format === 1 ? sep <= 0 : sep >= 0) throw new FieldError(off + 4);
  return { format, name, initiatorName: format === 1 ? name.substring(0, sep) : name, length };
}

/** Format-1 iSCSI TransportID for a port we only know by name (SPEC_I_PT / REGISTER AND MOVE targets). */
function buildTransportId(portName: string): Buffer {
  const name = Buffer.from(portName, 'utf8');
  const padded = Math.max(20, (name.length + 1 + 3) & ~3); // NUL-terminated, multiple of 4, at least 20
  const buf = Buffer.alloc(4 + padded);
  buf[0] = 0x40 | ISCSI_PROTOCOL;
  buf.writeUInt16BE(padded, 2);
  name.copy(buf, 4);
  return buf;
}

export class Reservations {
  readonly #hooks: ReservationHooks;
  readonly #descriptorSense: () => boolean;
  /** Registrations by normalized port name, in registration order (READ KEYS reports that order). */
  #regs = new Map<string, Registration>();
  #reservation: Reservation | undefined;
  #generation = 0;
  #aptpl = false;
  /** SPC-2 RESERVE holder (normalized port name). */
  #spc2Holder: string | undefined;
  /** Nexuses seen recently, to resolve format-0 TransportIDs (initiator device → its ports). */
  readonly #known = new Map<string, ItNexus>();
  /** PR OUTs run one at a time, including their persist(), so a failed persist can roll back. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(hooks: ReservationHooks, options: ReservationsOptions) {
    this.#hooks = hooks;
    this.#descriptorSense = options.descriptorSense;
  }

  /** PRgeneration (SPC-4 6.15.2). */
  get generation(): number {
    return this.#generation;
  }

  /** Current persistent reservation for diagnostics; holder is absent for all-registrants types. */
  get reservation(): { readonly type: number; readonly holder?: string; readonly key: bigint } | undefined {
    const r = this.#reservation;
    if (!r) return undefined;
    if (r.holder === undefined) return { type: r.type, key: 0n };
    const reg = this.#regs.get(r.holder);
    return { type: r.type, holder: reg?.portName ?? r.holder, key: reg?.key ?? 0n };
  }

  /** Initiator port holding an SPC-2 RESERVE, for diagnostics. */
  get spc2Holder(): string | undefined {
    return this.#spc2Holder;
  }

  // ---- Command admission

  isConflict(nexus: ItNexus, cdb: Buffer): boolean {
    this.#remember(nexus);
    const me = norm(nexus.initiatorPortName);
    const entry = OPCODES[cdb[0] ?? 0] ?? W;
    if (this.#spc2Holder !== undefined) {
      if (entry & SPC2_PR) return true;
      return this.#spc2Holder !== me && (entry & SPC2_ALLOWED) === 0;
    }
    const op = cdb[0];
    if (op === Op.Reserve6 || op === Op.Reserve10 || op === Op.Release6 || op === Op.Release10) {
      // CRH=0: with any registration present every RESERVE/RELEASE conflicts (SPC-3 5.6.3).
      return this.#regs.size > 0;
    }
    const r = this.#reservation;
    if (!r || this.#isHolder(me)) return false;
    // Registrants-only: every registrant gets the holder's access.
    if (isRegistrantsOnly(r.type) && this.#regs.has(me)) return false;
    const c = accessClass(cdb);
    if (c === A) return false;
    if (c === R) return isExclusiveAccess(r.type);
    return true;
  }

  // ---- SPC-2 RESERVE / RELEASE

  reserve(nexus: ItNexus, cdb: Buffer): ScsiResult {
    this.#remember(nexus);
    // RESERVE(10) third-party reservations are not supported (RESERVE(6) has only obsolete bits).
    if (cdb[0] === Op.Reserve10 && ((cdb[1] ?? 0) & 0x10)) return this.#invalidCdb(1, 4);
    const me = norm(nexus.initiatorPortName);
    if (this.#regs.size > 0) return CONFLICT;
    if (this.#spc2Holder !== undefined && this.#spc2Holder !== me) return CONFLICT;
    this.#spc2Holder = me;
    return GOOD;
  }

  release(nexus: ItNexus, cdb: Buffer): ScsiResult {
    this.#remember(nexus);
    if (cdb[0] === Op.Release10 && ((cdb[1] ?? 0) & 0x10)) return this.#invalidCdb(1, 4);
    if (this.#regs.size > 0) return CONFLICT;
    // Release by a non-holder is a no-op with GOOD (SPC-2 7.17).
    if (this.#spc2Holder === norm(nexus.initiatorPortName)) this.#spc2Holder = undefined;
    return GOOD;
  }

  onLogicalUnitReset(): void {
    this.#spc2Holder = undefined;
  }

  onNexusLoss(nexus: ItNexus): void {
    const me = norm(nexus.initiatorPortName);
    if (this.#spc2Holder === me) this.#spc2Holder = undefined;
    this.#known.delete(me);
  }

  // ---- PERSISTENT RESERVE IN

  persistentReserveIn(nexus: ItNexus, cdb: Buffer): ScsiResult {
    this.#remember(nexus);
    const alloc = cdb.length >= 9 ? cdb.readUInt16BE(7) : 0;
    let data: Buffer;
    switch ((cdb[1] ?? 0) & 0x1f) {
      case PrInAction.ReadKeys: data = this.#readKeys(); break;
      case PrInAction.ReadReservation: data = this.#readReservation(); break;
      case PrInAction.ReportCapabilities: data = this.#reportCapabilities(); break;
      case PrInAction.ReadFullStatus: data = this.#readFullStatus(); break;
      default: return this.#invalidCdb(1, 4);
    }
    // Length fields keep the full size; only the transfer is trimmed (SPC-4 4.2.5.6).
    return { status: ScsiStatus.Good, data: data.subarray(0, Math.min(alloc, data.length)) };
  }

  #readKeys(): Buffer {
    const buf = Buffer.alloc(8 + 8 * this.#regs.size);
    buf.writeUInt32BE(this.#generation, 0);
    buf.writeUInt32BE(8 * this.#regs.size, 4);
    let off = 8;
    for (const reg of this.#regs.values()) {
      buf.writeBigUInt64BE(reg.key, off);
      off += 8;
    }
    return buf;
  }

  #readReservation(): Buffer {
    const r = this.#reservation;
    const buf = Buffer.alloc(r ? 24 : 8);
    buf.writeUInt32BE(this.#generation, 0);
    if (!r) return buf;
    buf.writeUInt32BE(16, 4);
    // All-registrants reservations report key 0 (SPC-4 6.15.3.3).
    const key = r.holder === undefined ? 0n : (this.#regs.get(r.holder)?.key ?? 0n);
    buf.writeBigUInt64BE(key, 8);
    buf[21] = r.type; // scope LU_SCOPE (0) in the high nibble
    return buf;
  }

  #reportCapabilities(): Buffer {
    const buf = Buffer.alloc(8);
    buf.writeUInt16BE(8, 0);
    // CRH=0, SIP_C=1, ATP_C=1, PTPL_C=1
    buf[2] = 0x08 | 0x04 | 0x01;
    // TMV=1, ALLOW COMMANDS=011b (TUR allowed under WE/EA; MODE SENSE & co allowed under WE), PTPL_A
    buf[3] = 0x80 | (0x3 << 4) | (this.#aptpl ? 0x01 : 0);
    // Type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX | EX_AC_AR
    buf[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
    buf[5] = 0x01;
    return buf;
  }

  #readFullStatus(): Buffer {
    const parts: Buffer[] = [];
    const r = this.#reservation;
    for (const [id, reg] of this.#regs) {
      const d = Buffer.alloc(24 + reg.transportId.length);
      d.writeBigUInt64BE(reg.key, 0);
      const holder = r !== undefined && (r.holder === undefined || r.holder === id);
      d[12] = (reg.allTgPt ? 0x02 : 0) | (holder ? 0x01 : 0);
      if (holder && r) d[13] = r.type;
      d.writeUInt16BE(reg.relativeTargetPort & 0xffff, 18);
      d.writeUInt32BE(reg.transportId.length, 20);
      reg.transportId.copy(d, 24);
      parts.push(d);
    }
    const header = Buffer.alloc(8);
    header.writeUInt32BE(this.#generation, 0);
    header.writeUInt32BE(parts.reduce((n, p) => n + p.length, 0), 4);
    return Buffer.concat([header, ...parts]);
  }

  // ---- PERSISTENT RESERVE OUT

  persistentReserveOut(nexus: ItNexus, cdb: Buffer, parameters: Buffer): Promise<ScsiResult> {
    this.#remember(nexus);
    const run = this.#tail.then(() => this.#out(nexus, cdb, parameters));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #out(nexus: ItNexus, cdb: Buffer, parameters: Buffer): Promise<ScsiResult> {
    const before = this.#snapshot();
    const fx: Effects = { changed: false, attentions: [], aborted: [] };
    let result: ScsiResult;
    try {
      result = this.#apply(nexus, cdb, parameters, fx);
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      this.#restoreSnapshot(before);
      return this.#invalidParameter(err.byte);
    }
    if (result.status !== ScsiStatus.Good || !fx.changed) return result;
    try {
      await this.#hooks.persist(this.#serialize(), this.#aptpl);
    } catch {
      // The change must not outlive a failed save: it would be lost (and fenced nodes unfenced) on failover.
      this.#restoreSnapshot(before);
      return this.#check(SenseKey.HardwareError, Asc.InternalTargetFailure);
    }
    for (const [port, asc] of fx.attentions) this.#hooks.unitAttention(port, asc);
    if (fx.aborted.length > 0) this.#hooks.abortTasks?.(fx.aborted);
    return result;
  }

  #apply(nexus: ItNexus, cdb: Buffer, params: Buffer, fx: Effects): ScsiResult {
    const sa = (cdb[1] ?? 0) & 0x1f;
    if (sa > PrOutAction.RegisterAndMove) return this.#invalidCdb(1, 4); // incl. REPLACE LOST RESERVATION
    const scope = (cdb[2] ?? 0) >> 4;
    const type = (cdb[2] ?? 0) & 0x0f;
    if (sa === PrOutAction.Reserve || sa === PrOutAction.Release || sa === PrOutAction.Preempt ||
      sa === PrOutAction.PreemptAndAbort) {
      if (scope !== 0) return this.#invalidCdb(2, 7);
      if (!isValidType(type)) return this.#invalidCdb(2, 3);
    }
    const length = cdb.length >= 9 ? cdb.readUInt32BE(5) : 0;
    if (params.length < length) return this.#check(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
    const p = params.subarray(0, length);
    if (sa === PrOutAction.RegisterAndMove) return this.#registerAndMove(nexus, p, fx);

    if (p.length < 24) return this.#check(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
    const flags = p[20] ?? 0;
    const specIPt = (flags & 0x08) !== 0;
    if (specIPt && sa === PrOutAction.Register) {
      if (p.length < 28 || p.length !== 28 + p.readUInt32BE(24)) {
        return this.#check(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
      }
    } else {
      if (p.length !== 24) return this.#check(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
      if (specIPt) return this.#invalidParameter(20, 3);
    }
    const key = p.readBigUInt64BE(0);
    const saKey = p.readBigUInt64BE(8);
    const aptpl = (flags & 0x01) !== 0;
    const allTgPt = (flags & 0x04) !== 0;
    const me = norm(nexus.initiatorPortName);
    const reg = this.#regs.get(me);

    if (sa === PrOutAction.Register || sa === PrOutAction.RegisterAndIgnoreExistingKey) {
      const ignoreKey = sa === PrOutAction.RegisterAndIgnoreExistingKey;
      if (!reg) {
        if (!ignoreKey && key !== 0n) return CONFLICT;
        if (saKey === 0n) return GOOD; // unregistered nexus "unregistering": nothing changes
        const extra = specIPt ? this.#specifiedPorts(nexus, p) : [];
        for (const n of [nexus, ...extra]) this.#addRegistration(n, saKey, allTgPt, nexus.relativeTargetPort);
      } else {
        if (!ignoreKey && key !== reg.key) return CONFLICT;
        if (specIPt) return this.#invalidParameter(20, 3); // SPEC_I_PT only from unregistered nexuses
        if (saKey === 0n) {
          this.#unregister(me, fx, me);
        } else {
          reg.key = saKey;
          reg.allTgPt = allTgPt;
        }
      }
      this.#aptpl = aptpl;
      this.#bumpGeneration(fx);
      return GOOD;
    }

    // Every other service action needs a registered nexus quoting its own key.
    if (!reg || key !== reg.key) return CONFLICT;
    const r = this.#reservation;
    switch (sa) {
      case PrOutAction.Reserve: {
        if (r) {
          // A holder re-reserving with the same type is a no-op; anything else conflicts.
          return this.#isHolder(me) && r.type === type ? GOOD : CONFLICT;
        }
        this.#reservation = { type, holder: isAllRegistrants(type) ? undefined : me };
        fx.changed = true;
        return GOOD;
      }
      case PrOutAction.Release: {
        if (!r || !this.#isHolder(me)) return GOOD;
        if (r.type !== type) return this.#check(SenseKey.IllegalRequest, Asc.InvalidReleaseOfPersistentReservation);
        this.#releaseReservation(me, fx);
        return GOOD;
      }
      case PrOutAction.Clear: {
        for (const [id, other] of this.#regs) {
          if (id !== me) fx.attentions.push([other.portName, Asc.ReservationsPreempted]);
        }
        this.#regs.clear();
        this.#reservation = undefined;
        this.#bumpGeneration(fx);
        return GOOD;
      }
      default:
        return this.#preempt(me, type, saKey, sa === PrOutAction.PreemptAndAbort, fx);
    }
  }

  /** PREEMPT / PREEMPT AND ABORT (SPC-4 5.13.11.4). */
  #preempt(me: string, type: number, saKey: bigint, abort: boolean, fx: Effects): ScsiResult {
    const r = this.#reservation;
    const removeMatching = (match: (reg: Registration) => boolean): number => {
      let n = 0;
      for (const [id, reg] of this.#regs) {
        if (id === me || !match(reg)) continue;
        this.#regs.delete(id);
        fx.attentions.push([reg.portName, Asc.RegistrationsPreempted]);
        if (abort) fx.aborted.push(reg.portName);
        n++;
      }
      return n;
    };
    const anyWithKey = () => [...this.#regs.values()].some(reg => reg.key === saKey);

    if (r && isAllRegistrants(r.type) && saKey === 0n) {
      // Everyone else loses its registration; the preempter gets a fresh reservation.
      removeMatching(() => true);
      this.#reservation = { type, holder: isAllRegistrants(type) ? undefined : me };
      this.#bumpGeneration(fx);
      return GOOD;
    }
    const holderKey = r?.holder !== undefined ? this.#regs.get(r.holder)?.key : undefined;
    if (r && holderKey !== undefined && saKey === holderKey) {
      // Preempting the reservation holder: take over the reservation.
      removeMatching(reg => reg.key === saKey);
      this.#reservation = { type, holder: isAllRegistrants(type) ? undefined : me };
      if (type !== r.type) {
        for (const [id, reg] of this.#regs) {
          if (id !== me) fx.attentions.push([reg.portName, Asc.ReservationsReleased]);
        }
      }
      this.#bumpGeneration(fx);
      return GOOD;
    }
    // Preempting registrations only; the reservation (if any) is untouched.
    if (saKey === 0n) return this.#invalidParameter(8);
    if (!anyWithKey()) return CONFLICT;
    removeMatching(reg => reg.key === saKey);
    this.#bumpGeneration(fx);
    return GOOD;
  }

  /** REGISTER AND MOVE (SPC-4 5.13.8). */
  #registerAndMove(nexus: ItNexus, p: Buffer, fx: Effects): ScsiResult {
    if (p.length < 24 || p.length < 24 + p.readUInt32BE(20)) {
      return this.#check(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
    }
    const tidEnd = 24 + p.readUInt32BE(20);
    const me = norm(nexus.initiatorPortName);
    const reg = this.#regs.get(me);
    if (!reg || p.readBigUInt64BE(0) !== reg.key) return CONFLICT;
    const r = this.#reservation;
    // Only the single holder of a reservation can move it.
    if (!r || r.holder !== me) return CONFLICT;
    const saKey = p.readBigUInt64BE(8);
    if (saKey === 0n) return this.#invalidParameter(8);
    const unreg = ((p[17] ?? 0) & 0x02) !== 0;
    const aptpl = ((p[17] ?? 0) & 0x01) !== 0;
    const relativeTargetPort = p.readUInt16BE(18);
    if (relativeTargetPort === 0) return this.#invalidParameter(18);
    const tid = parseTransportId(p.subarray(0, tidEnd), 24);
    const dest = this.#resolvePorts(tid, 24);
    if (dest.length !== 1) throw new FieldError(24);
    const target = dest[0]!;
    const destId = norm(target.initiatorPortName);
    if (destId === me) return this.#invalidParameter(24);
    const existing = this.#regs.get(destId);
    if (existing) {
      existing.key = saKey;
      existing.relativeTargetPort = relativeTargetPort;
    } else {
      this.#addRegistration(target, saKey, false, relativeTargetPort);
    }
    this.#reservation = { type: r.type, holder: destId };
    if (unreg) this.#regs.delete(me);
    this.#aptpl = aptpl;
    this.#bumpGeneration(fx);
    return GOOD;
  }

  /** SPEC_I_PT TransportIDs → the additional I_T nexuses to register (all-or-nothing validation). */
  #specifiedPorts(nexus: ItNexus, p: Buffer): ItNexus[] {
    const me = norm(nexus.initiatorPortName);
    const out = new Map<string, ItNexus>();
    for (let off = 28; off < p.length;) {
      const tid = parseTransportId(p, off);
      for (const port of this.#resolvePorts(tid, off)) {
        const id = norm(port.initiatorPortName);
        if (id === me) continue;
        if (this.#regs.has(id)) throw new FieldError(off); // already registered (SPC-4 6.16.3)
        out.set(id, port);
      }
      off += tid.length;
    }
    return [...out.values()];
  }

  /** Initiator ports a TransportID designates: itself for format 1, the known ports of the device for format 0. */
  #resolvePorts(tid: TransportId, off: number): ItNexus[] {
    if (tid.format === 1) {
      const known = this.#known.get(norm(tid.name));
      return [known ?? {
        initiatorPortName: tid.name,
        initiatorName: tid.initiatorName,
        transportId: buildTransportId(tid.name),
        relativeTargetPort: 0,
      }];
    }
    const ports = [...this.#known.values()].filter(n => norm(n.initiatorName) === norm(tid.name));
    if (ports.length === 0) throw new FieldError(off); // no port of that device is known to us
    return ports;
  }

  #addRegistration(n: ItNexus, key: bigint, allTgPt: boolean, relativeTargetPort: number): void {
    this.#regs.set(norm(n.initiatorPortName), {
      portName: n.initiatorPortName,
      initiatorName: n.initiatorName,
      transportId: Buffer.from(n.transportId),
      key,
      relativeTargetPort,
      allTgPt,
    });
  }

  /** Remove a registration; a holder unregistering releases its reservation (SPC-4 5.13.11.2.3). */
  #unregister(id: string, fx: Effects, issuer: string): void {
    const r = this.#reservation;
    this.#regs.delete(id);
    if (!r) return;
    if (r.holder === undefined) {
      if (this.#regs.size === 0) this.#reservation = undefined; // last all-registrants holder left
      return;
    }
    if (r.holder !== id) return;
    this.#reservation = undefined;
    if (isRegistrantsOnly(r.type)) {
      for (const [other, reg] of this.#regs) {
        if (other !== issuer) fx.attentions.push([reg.portName, Asc.ReservationsReleased]);
      }
    }
  }

  #releaseReservation(me: string, fx: Effects): void {
    const r = this.#reservation;
    this.#reservation = undefined;
    fx.changed = true;
    // Releasing a shared (registrants-only / all-registrants) reservation affects every registrant.
    if (r && r.type !== PrType.WriteExclusive && r.type !== PrType.ExclusiveAccess) {
      for (const [id, reg] of this.#regs) {
        if (id !== me) fx.attentions.push([reg.portName, Asc.ReservationsReleased]);
      }
    }
  }

  #bumpGeneration(fx: Effects): void {
    this.#generation = (this.#generation + 1) >>> 0;
    fx.changed = true;
  }

  #isHolder(id: string): boolean {
    const r = this.#reservation;
    if (!r) return false;
    return r.holder === undefined ? this.#regs.has(id) : r.holder === id;
  }

  #remember(nexus: ItNexus): void {
    const id = norm(nexus.initiatorPortName);
    if (this.#known.get(id) !== nexus) this.#known.set(id, nexus);
  }

  #snapshot(): Snapshot {
    const regs = new Map<string, Registration>();
    for (const [id, reg] of this.#regs) regs.set(id, { ...reg });
    return { regs, reservation: this.#reservation, generation: this.#generation, aptpl: this.#aptpl };
  }

  #restoreSnapshot(s: Snapshot): void {
    this.#regs = s.regs;
    this.#reservation = s.reservation;
    this.#generation = s.generation;
    this.#aptpl = s.aptpl;
  }

  // ---- Persisted state

  /**
   * Layout (big-endian): version u8, flags u8 (bit0 APTPL, bit1 reservation), generation u32,
   * reservation type u8, holder index u16 (0xffff: none / all registrants), count u16, then per
   * registration: key u64, relative target port u16, flags u8 (bit0 ALL_TG_PT), port name,
   * initiator name, TransportID (each u16 length + bytes).
   */
  #serialize(): Buffer {
    const r = this.#reservation;
    const ids = [...this.#regs.keys()];
    const holderIndex = r?.holder !== undefined ? ids.indexOf(r.holder) : -1;
    const head = Buffer.alloc(11);
    head[0] = STATE_VERSION;
    head[1] = (this.#aptpl ? 0x01 : 0) | (r ? 0x02 : 0);
    head.writeUInt32BE(this.#generation, 2);
    head[6] = r?.type ?? 0;
    head.writeUInt16BE(holderIndex < 0 ? 0xffff : holderIndex, 7);
    head.writeUInt16BE(ids.length, 9);
    const parts: Buffer[] = [head];
    const field = (b: Buffer) => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(b.length, 0);
      parts.push(len, b);
    };
    for (const reg of this.#regs.values()) {
      const fixed = Buffer.alloc(11);
      fixed.writeBigUInt64BE(reg.key, 0);
      fixed.writeUInt16BE(reg.relativeTargetPort & 0xffff, 8);
      fixed[10] = reg.allTgPt ? 1 : 0;
      parts.push(fixed);
      field(Buffer.from(reg.portName, 'utf8'));
      field(Buffer.from(reg.initiatorName, 'utf8'));
      field(reg.transportId);
    }
    return Buffer.concat(parts);
  }

  restore(state: Buffer): void {
    const fail = (why: string): never => {
      throw new Error(`invalid persistent reservation state: ${why}`);
    };
    if (state.length < 11) fail('truncated header');
    if (state[0] !== STATE_VERSION) fail(`unsupported version ${state[0]}`);
    const flags = state[1] ?? 0;
    const generation = state.readUInt32BE(2);
    const type = state[6] ?? 0;
    const holderIndex = state.readUInt16BE(7);
    const count = state.readUInt16BE(9);
    let off = 11;
    const take = (n: number): Buffer => {
      if (off + n > state.length) fail('truncated registration');
      const b = state.subarray(off, off + n);
      off += n;
      return b;
    };
    const field = () => take(take(2).readUInt16BE(0));
    const regs = new Map<string, Registration>();
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const fixed = take(11);
      const portName = field().toString('utf8');
      const initiatorName = field().toString('utf8');
      const transportId = Buffer.from(field());
      if (portName === '') fail('empty port name');
      const id = norm(portName);
      if (regs.has(id)) fail(`duplicate registration ${portName}`);
      regs.set(id, {
        portName, initiatorName, transportId,
        key: fixed.readBigUInt64BE(0),
        relativeTargetPort: fixed.readUInt16BE(8),
        allTgPt: ((fixed[10] ?? 0) & 1) !== 0,
      });
      ids.push(id);
    }
    if (off !== state.length) fail('trailing bytes');
    let reservation: Reservation | undefined;
    if (flags & 0x02) {
      if (!isValidType(type)) fail(`invalid reservation type ${type}`);
      if (isAllRegistrants(type)) {
        if (regs.size === 0) fail('all-registrants reservation without registrants');
        reservation = { type, holder: undefined };
      } else {
        const holder = ids[holderIndex];
        if (holder === undefined) fail('reservation holder is not registered');
        reservation = { type, holder };
      }
    }
    this.#regs = regs;
    this.#reservation = reservation;
    this.#generation = generation;
    this.#aptpl = (flags & 0x01) !== 0;
  }

  // ---- Sense helpers

  #check(key: number, asc: number, field?: FieldPointer): ScsiResult {
    const descriptor = this.#descriptorSense();
    return {
      status: ScsiStatus.CheckCondition,
      sense: buildSense(key, asc, field ? { descriptor, field } : { descriptor }),
    };
  }

  #invalidCdb(byte: number, bit?: number): ScsiResult {
    return this.#check(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb,
      bit === undefined ? { inCdb: true, byte } : { inCdb: true, byte, bit });
  }

  #invalidParameter(byte: number, bit?: number): ScsiResult {
    return this.#check(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList,
      bit === undefined ? { inCdb: false, byte } : { inCdb: false, byte, bit });
  }
}
