// MODE SENSE(6)/(10) and MODE SELECT(6)/(10) (SPC-4 6.11-6.14) over the caching, control and
// informational exceptions pages. The caching page's WCE reports the block device's truth and can only be
// "changed" to what it already is; the control page's D_SENSE, TAS and SWP are changeable. Saved pages are
// not supported.
import { CdbUsage, Op, decodeModeSelect, decodeModeSense, highestBit } from '../../protocol/scsi/cdb.js';
import { Asc, ScsiStatus, SenseKey } from '../../protocol/scsi/constants.js';
import {
  DEFAULT_MODE_VALUES, ModePage, changeableMask, encodeBlockDescriptor, encodeCachingPage, encodeControlPage,
  encodeInformationalExceptionsPage, encodeModeParameters,
} from '../../protocol/scsi/mode-pages.js';
import { CheckCondition, illegalRequest, invalidCdbField, invalidParameterField } from '../../protocol/scsi/sense.js';
import type { BlockDevice } from '../volume/block-device.js';
import { GOOD, dataIn, fetchDataOut, type CommandContext, type CommandInfo } from './command.js';
import type { ScsiResult } from './types.js';

const PAGE_ORDER = [ModePage.Caching, ModePage.Control, ModePage.InformationalExceptions] as const;
const PageControl = { Current: 0, Changeable: 1, Default: 2, Saved: 3 } as const;

/** Per-logical-unit mode parameters (shared by all I_T nexuses). */
export class ModeState {
  readonly #device: BlockDevice;
  dSense: boolean = DEFAULT_MODE_VALUES.dSense;
  tas: boolean = DEFAULT_MODE_VALUES.tas;
  /** Software write protect: medium writes fail with DATA PROTECT / WRITE PROTECTED. */
  swp: boolean = DEFAULT_MODE_VALUES.swp;

  constructor(device: BlockDevice) {
    this.#device = device;
  }

  /** Back to defaults (logical unit reset, power on: we have no saved values). */
  reset(): void {
    this.dSense = DEFAULT_MODE_VALUES.dSense;
    this.tas = DEFAULT_MODE_VALUES.tas;
    this.swp = DEFAULT_MODE_VALUES.swp;
  }

  page(code: number, pageControl: number): Buffer {
    if (pageControl === PageControl.Changeable) return changeableMask(code);
    const current = pageControl === PageControl.Current;
    switch (code) {
      case ModePage.Caching:
        return encodeCachingPage(this.#device.writeCache);
      case ModePage.Control:
        return encodeControlPage(current ? { dSense: this.dSense, tas: this.tas, swp: this.swp } : DEFAULT_MODE_VALUES);
      default:
        return encodeInformationalExceptionsPage();
    }
  }
}

function isKnownPage(code: number): code is (typeof PAGE_ORDER)[number] {
  return (PAGE_ORDER as readonly number[]).includes(code);
}

function modeSense(ctx: CommandContext): ScsiResult {
  const c = decodeModeSense(ctx.cdb);
  if (c.pageControl === PageControl.Saved) {
    throw new CheckCondition(SenseKey.IllegalRequest, Asc.SavingParametersNotSupported, { field: { inCdb: true, byte: 2, bit: 7 } });
  }
  // No page has subpages: subpage 00h, or FFh ("all subpages") which then means just the page.
  if (c.subpageCode !== 0x00 && c.subpageCode !== 0xff) throw invalidCdbField(3, 7);
  let codes: readonly number[];
  if (c.pageCode === ModePage.AllPages) codes = PAGE_ORDER;
  else if (isKnownPage(c.pageCode)) codes = [c.pageCode];
  else throw invalidCdbField(2, 5);
  const { device, mode } = ctx.lu;
  const pages = codes.map((code) => mode.page(code, c.pageControl));
  const descriptor = c.dbd ? undefined : encodeBlockDescriptor({
    // Changeable values: nothing in the block descriptor can be changed.
    blockCount: c.pageControl === PageControl.Changeable ? 0n : device.blockCount,
    blockSize: c.pageControl === PageControl.Changeable ? 0 : device.blockSize,
    long: c.llbaa,
  });
  // WP in the device-specific parameter reflects SWP (SBC-3 6.4.1).
  return dataIn(encodeModeParameters(c.ten, mode.swp, descriptor, pages), c.allocationLength);
}

async function modeSelect(ctx: CommandContext): Promise<ScsiResult> {
  const c = decodeModeSelect(ctx.cdb);
  if (c.parameterListLength === 0) return GOOD;
  // Only the page format is supported; saving is not.
  if (!c.pf) throw invalidCdbField(1, 4);
  if (c.sp) throw invalidCdbField(1, 0);
  const headerLength = c.ten ? 8 : 4;
  if (c.parameterListLength < headerLength) throw illegalRequest(Asc.ParameterListLengthError);
  const p = await fetchDataOut(ctx, c.parameterListLength);
  if (p.length < c.parameterListLength) throw illegalRequest(Asc.ParameterListLengthError);
  const { device, mode, unitAttentions } = ctx.lu;

  const mediumTypeByte = c.ten ? 2 : 1;
  if (p[mediumTypeByte] !== 0) throw invalidParameterField(mediumTypeByte, 7);
  const bdLength = c.ten ? p.readUInt16BE(6) : p[3]!;
  const longLba = c.ten && (p[4]! & 0x01) !== 0;
  if (headerLength + bdLength > p.length) throw illegalRequest(Asc.ParameterListLengthError);
  if (bdLength !== 0) {
    const expected = longLba ? 16 : 8;
    if (bdLength !== expected) throw invalidParameterField(c.ten ? 6 : 3, 7);
    const bd = p.subarray(headerLength, headerLength + bdLength);
    const blockCount = longLba ? bd.readBigUInt64BE(0) : BigInt(bd.readUInt32BE(0));
    const blockSize = longLba ? bd.readUInt32BE(12) : bd.readUIntBE(5, 3);
    const countByte = headerLength;
    const sizeByte = headerLength + (longLba ? 12 : 5);
    // The capacity and block size are the volume's: accept them restated (or a zero count), nothing else.
    const shortMax = 0xffffffffn;
    const current = longLba || device.blockCount <= shortMax ? device.blockCount : shortMax;
    if (blockCount !== 0n && blockCount !== current) throw invalidParameterField(countByte, 7);
    if (blockSize !== device.blockSize) throw invalidParameterField(sizeByte, 7);
  }

  const changes: { dSense?: boolean; tas?: boolean; swp?: boolean } = {};
  for (let off = headerLength + bdLength; off < p.length;) {
    if (off + 2 > p.length) throw illegalRequest(Asc.ParameterListLengthError);
    const b0 = p[off]!;
    if (b0 & 0x80) throw invalidParameterField(off, 7); // PS is reserved in MODE SELECT
    if (b0 & 0x40) throw invalidParameterField(off, 6); // no subpages
    const code = b0 & 0x3f;
    if (!isKnownPage(code)) throw invalidParameterField(off, 5);
    const current = mode.page(code, PageControl.Current);
    if (p[off + 1] !== current[1]) throw invalidParameterField(off + 1, 7);
    if (off + current.length > p.length) throw illegalRequest(Asc.ParameterListLengthError);
    const incoming = p.subarray(off, off + current.length);
    const mask = changeableMask(code);
    for (let i = 2; i < current.length; i++) {
      const diff = (incoming[i]! ^ current[i]!) & ~mask[i]!;
      if (diff !== 0) throw invalidParameterField(off + i, highestBit(diff));
    }
    if (code === ModePage.Control) {
      changes.dSense = (incoming[2]! & 0x04) !== 0;
      changes.tas = (incoming[5]! & 0x40) !== 0;
      changes.swp = (incoming[4]! & 0x08) !== 0;
    }
    off += current.length;
  }

  // Apply only after the whole list validated (all or nothing).
  let changed = false;
  if (changes.dSense !== undefined && changes.dSense !== mode.dSense) {
    mode.dSense = changes.dSense;
    changed = true;
  }
  if (changes.tas !== undefined && changes.tas !== mode.tas) {
    mode.tas = changes.tas;
    changed = true;
  }
  if (changes.swp !== undefined && changes.swp !== mode.swp) {
    mode.swp = changes.swp;
    changed = true;
  }
  if (changed) unitAttentions.establishAll(Asc.ModeParametersChanged, ctx.request.nexus.initiatorPortName);
  return { status: ScsiStatus.Good };
}

const TIMEOUTS = [1, 5] as const;

export const modeCommands: readonly CommandInfo[] = [
  { name: 'MODE SENSE(6)', opcode: Op.ModeSense6, usage: CdbUsage.modeSense6, handler: modeSense, timeouts: TIMEOUTS },
  { name: 'MODE SENSE(10)', opcode: Op.ModeSense10, usage: CdbUsage.modeSense10, handler: modeSense, timeouts: TIMEOUTS },
  { name: 'MODE SELECT(6)', opcode: Op.ModeSelect6, usage: CdbUsage.modeSelect6, handler: modeSelect, timeouts: TIMEOUTS },
  { name: 'MODE SELECT(10)', opcode: Op.ModeSelect10, usage: CdbUsage.modeSelect10, handler: modeSelect, timeouts: TIMEOUTS },
];
