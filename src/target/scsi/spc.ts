// SPC-4 primary command handlers: TEST UNIT READY, INQUIRY, REPORT LUNS, REQUEST SENSE, START STOP
// UNIT, PREVENT ALLOW MEDIUM REMOVAL, REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS, and
// the reservation commands (delegated to the Reservations module).
import {
  CdbUsage, Op, ServiceAction, decodeInquiry, decodeReportLuns, decodeReportSupportedOpcodes,
  decodeReportSupportedTmf, decodeRequestSense, decodeStartStopUnit, encodeLun, persistentReserveOutLength,
  persistentReserveUsage,
} from '../../protocol/scsi/cdb.js';
import { Asc, SenseKey } from '../../protocol/scsi/constants.js';
import {
  VpdPage, encodeBlockDeviceCharacteristics, encodeBlockLimits, encodeDeviceIdentification,
  encodeLogicalBlockProvisioning, encodeStandardInquiry, encodeSupportedVpdPages, encodeUnitSerialNumber,
} from '../../protocol/scsi/inquiry.js';
import { buildSense, invalidCdbField } from '../../protocol/scsi/sense.js';
import { GOOD, dataIn, fetchDataOut, type CommandContext, type CommandInfo, type CommandTable } from './command.js';
import type { ScsiResult } from './types.js';

function testUnitReady(): ScsiResult {
  return GOOD;
}

function inquiry(ctx: CommandContext): ScsiResult {
  const c = decodeInquiry(ctx.cdb);
  const { identity, limits } = ctx.lu;
  if (!c.evpd) return dataIn(encodeStandardInquiry(identity), c.allocationLength);
  let page: Buffer;
  switch (c.pageCode) {
    case VpdPage.SupportedPages: page = encodeSupportedVpdPages(); break;
    case VpdPage.UnitSerialNumber: page = encodeUnitSerialNumber(identity.serial); break;
    case VpdPage.DeviceIdentification:
      page = encodeDeviceIdentification({
        naa: identity.naa,
        vendor: identity.vendor,
        serial: identity.serial,
        relativeTargetPort: ctx.request.nexus.relativeTargetPort,
        targetPortGroup: identity.targetPortGroup,
        protocolIdentifier: identity.protocolIdentifier,
      });
      break;
    case VpdPage.BlockLimits: page = encodeBlockLimits(limits); break;
    case VpdPage.BlockDeviceCharacteristics: page = encodeBlockDeviceCharacteristics(); break;
    case VpdPage.LogicalBlockProvisioning: page = encodeLogicalBlockProvisioning(); break;
    default: throw invalidCdbField(2, 7);
  }
  return dataIn(page, c.allocationLength);
}

/** REPORT LUNS data: LUN list length, reserved, then 8 bytes per LUN. */
export function reportLunsData(cdb: Buffer, luns: readonly number[]): ScsiResult {
  const c = decodeReportLuns(cdb);
  // SELECT REPORT 01h: well-known LUNs only — we have none.
  const list = c.selectReport === 1 ? [] : luns;
  const b = Buffer.alloc(8 + 8 * list.length);
  b.writeUInt32BE(8 * list.length, 0);
  list.forEach((lun, i) => encodeLun(lun).copy(b, 8 + 8 * i));
  return dataIn(b, c.allocationLength);
}

function reportLuns(ctx: CommandContext): ScsiResult {
  return reportLunsData(ctx.cdb, [0]);
}

function requestSense(ctx: CommandContext): ScsiResult {
  const c = decodeRequestSense(ctx.cdb);
  // A pending unit attention is reported (and cleared) through REQUEST SENSE (SPC-4 5.8.7).
  const ua = ctx.lu.unitAttentions.take(ctx.request.nexus.initiatorPortName);
  let sense: Buffer;
  if (ua !== undefined) sense = buildSense(SenseKey.UnitAttention, ua, { descriptor: c.desc });
  // SBC-4 4.11.2: while sanitizing, REQUEST SENSE reports the operation in progress.
  else if (ctx.lu.sanitize.inProgress) sense = buildSense(SenseKey.NotReady, Asc.LogicalUnitNotReadySanitizeInProgress, { descriptor: c.desc });
  else sense = buildSense(SenseKey.NoSense, Asc.NoAdditionalSense, { descriptor: c.desc });
  return dataIn(sense, c.allocationLength);
}

function startStopUnit(ctx: CommandContext): ScsiResult {
  const c = decodeStartStopUnit(ctx.cdb);
  // Power conditions other than START_VALID (0) and the modifier are not supported.
  if (c.powerCondition !== 0) throw invalidCdbField(4, 7);
  if (c.powerConditionModifier !== 0) throw invalidCdbField(3, 3);
  // RMB=0: nothing to load or eject (SBC-3 5.25: LOEJ on a non-removable medium is an invalid field).
  if (c.loej) throw invalidCdbField(4, 1);
  return GOOD;
}

function preventAllowMediumRemoval(ctx: CommandContext): ScsiResult {
  // PREVENT 00b/01b accepted (nothing is removable); 10b/11b are obsolete MMC values.
  if ((ctx.cdb[4]! & 0x03) > 1) throw invalidCdbField(4, 1);
  return GOOD;
}

function commandDescriptor(c: CommandInfo, rctd: boolean): Buffer {
  const b = Buffer.alloc(rctd ? 20 : 8);
  b[0] = c.opcode;
  b.writeUInt16BE(c.serviceAction ?? 0, 2);
  b[5] = (rctd ? 0x02 : 0) | (c.serviceAction !== undefined ? 0x01 : 0); // CTDP, SERVACTV
  b.writeUInt16BE(c.usage.length, 6);
  if (rctd) timeoutsDescriptor(c).copy(b, 8);
  return b;
}

function timeoutsDescriptor(c: CommandInfo): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0x0a, 0);
  const [nominal, recommended] = c.timeouts ?? [0, 0];
  b.writeUInt32BE(nominal, 4);
  b.writeUInt32BE(recommended, 8);
  return b;
}

function oneCommand(c: CommandInfo | undefined, rctd: boolean): Buffer {
  if (!c) {
    const b = Buffer.alloc(4);
    b[1] = 0x01; // SUPPORT: not supported
    return b;
  }
  const b = Buffer.alloc(4 + c.usage.length + (rctd ? 12 : 0));
  b[1] = (rctd ? 0x80 : 0) | 0x03; // CTDP, SUPPORT: supported as in the standard
  b.writeUInt16BE(c.usage.length, 2);
  Buffer.from(c.usage).copy(b, 4);
  if (rctd) timeoutsDescriptor(c).copy(b, 4 + c.usage.length);
  return b;
}

function reportSupportedOperationCodes(ctx: CommandContext): ScsiResult {
  const c = decodeReportSupportedOpcodes(ctx.cdb);
  const table: CommandTable = ctx.lu.commands;
  let data: Buffer;
  if (c.reportingOptions === 0) {
    const descriptors = table.all.map((cmd) => commandDescriptor(cmd, c.rctd));
    const header = Buffer.alloc(4);
    header.writeUInt32BE(descriptors.reduce((n, d) => n + d.length, 0), 0);
    data = Buffer.concat([header, ...descriptors]);
  } else {
    const slot = table.slots[c.requestedOpcode];
    const hasSa = slot !== undefined && 'serviceActions' in slot;
    let cmd: CommandInfo | undefined;
    if (c.reportingOptions === 1) {
      // Opcode only: an opcode with service actions must be asked with one (SPC-4 6.35.2).
      if (hasSa) throw invalidCdbField(2, 2);
      cmd = slot;
    } else if (c.reportingOptions === 2) {
      if (slot !== undefined && !hasSa) throw invalidCdbField(2, 2);
      cmd = hasSa ? slot.serviceActions.get(c.requestedServiceAction) : undefined;
    } else {
      cmd = hasSa ? slot.serviceActions.get(c.requestedServiceAction)
        : c.requestedServiceAction === 0 ? slot : undefined;
    }
    data = oneCommand(cmd, c.rctd);
  }
  return dataIn(data, c.allocationLength);
}

function reportSupportedTmf(ctx: CommandContext): ScsiResult {
  const c = decodeReportSupportedTmf(ctx.cdb);
  const b = Buffer.alloc(c.repd ? 16 : 4);
  // ATS, ATSS, CTSS, LURS, TRS (the transport maps target warm/cold reset to targetReset).
  b[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;
  if (c.repd) b[3] = 0x0c;
  return dataIn(b, c.allocationLength);
}

function persistentReserveIn(ctx: CommandContext): ScsiResult {
  return ctx.lu.reservations.persistentReserveIn(ctx.request.nexus, ctx.cdb);
}

async function persistentReserveOut(ctx: CommandContext): Promise<ScsiResult> {
  const parameters = await fetchDataOut(ctx, persistentReserveOutLength(ctx.cdb));
  return ctx.lu.reservations.persistentReserveOut(ctx.request.nexus, ctx.cdb, parameters);
}

function reserve(ctx: CommandContext): ScsiResult {
  return ctx.lu.reservations.reserve(ctx.request.nexus, ctx.cdb);
}

function release(ctx: CommandContext): ScsiResult {
  return ctx.lu.reservations.release(ctx.request.nexus, ctx.cdb);
}

const QUICK = [1, 5] as const;

const PR_IN_ACTIONS = [0, 1, 2, 3] as const;
const PR_OUT_ACTIONS = [0, 1, 2, 3, 4, 5, 6, 7] as const;

export const spcCommands: readonly CommandInfo[] = [
  { name: 'TEST UNIT READY', opcode: Op.TestUnitReady, usage: CdbUsage.testUnitReady, handler: testUnitReady, timeouts: QUICK },
  { name: 'REQUEST SENSE', opcode: Op.RequestSense, usage: CdbUsage.requestSense, handler: requestSense, uaExempt: true, timeouts: QUICK },
  { name: 'INQUIRY', opcode: Op.Inquiry, usage: CdbUsage.inquiry, handler: inquiry, uaExempt: true, timeouts: QUICK },
  { name: 'REPORT LUNS', opcode: Op.ReportLuns, usage: CdbUsage.reportLuns, handler: reportLuns, uaExempt: true, timeouts: QUICK },
  { name: 'START STOP UNIT', opcode: Op.StartStopUnit, usage: CdbUsage.startStopUnit, handler: startStopUnit, timeouts: QUICK },
  { name: 'PREVENT ALLOW MEDIUM REMOVAL', opcode: Op.PreventAllowMediumRemoval, usage: CdbUsage.preventAllow, handler: preventAllowMediumRemoval, timeouts: QUICK },
  { name: 'REPORT SUPPORTED OPERATION CODES', opcode: Op.MaintenanceIn, serviceAction: ServiceAction.ReportSupportedOperationCodes, usage: CdbUsage.reportSupportedOperationCodes, handler: reportSupportedOperationCodes, timeouts: QUICK },
  { name: 'REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS', opcode: Op.MaintenanceIn, serviceAction: ServiceAction.ReportSupportedTaskManagementFunctions, usage: CdbUsage.reportSupportedTmf, handler: reportSupportedTmf, timeouts: QUICK },
  { name: 'RESERVE(6)', opcode: Op.Reserve6, usage: CdbUsage.reserve6, handler: reserve, timeouts: QUICK },
  { name: 'RELEASE(6)', opcode: Op.Release6, usage: CdbUsage.release6, handler: release, timeouts: QUICK },
  { name: 'RESERVE(10)', opcode: Op.Reserve10, usage: CdbUsage.reserve10, handler: reserve, timeouts: QUICK },
  { name: 'RELEASE(10)', opcode: Op.Release10, usage: CdbUsage.release10, handler: release, timeouts: QUICK },
  ...PR_IN_ACTIONS.map((sa): CommandInfo => ({
    name: `PERSISTENT RESERVE IN/${sa}`, opcode: Op.PersistentReserveIn, serviceAction: sa,
    usage: persistentReserveUsage(Op.PersistentReserveIn, sa), handler: persistentReserveIn, timeouts: QUICK,
  })),
  ...PR_OUT_ACTIONS.map((sa): CommandInfo => ({
    name: `PERSISTENT RESERVE OUT/${sa}`, opcode: Op.PersistentReserveOut, serviceAction: sa,
    usage: persistentReserveUsage(Op.PersistentReserveOut, sa), handler: persistentReserveOut, timeouts: QUICK,
  })),
];

