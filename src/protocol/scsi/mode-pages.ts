// Pure encoders for the mode pages a direct-access block device reports (SPC-4 7.5, SBC-3 6.4) and the
// mode parameter header/block descriptors of MODE SENSE(6)/(10).

export const ModePage = {
  Caching: 0x08,
  Control: 0x0a,
  InformationalExceptions: 0x1c,
  AllPages: 0x3f,
} as const;

/** The changeable state behind the pages (the truth for WCE is the block device). */
export interface ModeValues {
  readonly wce: boolean;
  readonly dSense: boolean;
  readonly tas: boolean;
  /** Software write protect (control page): the logical unit refuses medium writes. */
  readonly swp: boolean;
}

export const DEFAULT_MODE_VALUES = { dSense: false, tas: false, swp: false } as const;

/** Caching mode page (SBC-3 6.4.5), 20 bytes. */
export function encodeCachingPage(wce: boolean): Buffer {
  const b = Buffer.alloc(20);
  b[0] = ModePage.Caching;
  b[1] = 0x12;
  b[2] = wce ? 0x04 : 0x00; // WCE; RCD=0 (read cache enabled)
  return b;
}

/** Control mode page (SPC-4 7.5.8), 12 bytes. */
export function encodeControlPage(v: { readonly dSense: boolean; readonly tas: boolean; readonly swp: boolean }): Buffer {
  const b = Buffer.alloc(12);
  b[0] = ModePage.Control;
  b[1] = 0x0a;
  b[2] = v.dSense ? 0x04 : 0x00; // TST=000b, D_SENSE
  b[3] = 0x10; // QUEUE ALGORITHM MODIFIER=1 (unrestricted reordering), QERR=00b
  b[4] = v.swp ? 0x08 : 0x00; // SWP, UA_INTLCK_CTRL=00b
  b[5] = v.tas ? 0x40 : 0x00; // TAS
  return b;
}

/** Informational exceptions control mode page (SPC-4 7.5.12), 12 bytes: exceptions disabled. */
export function encodeInformationalExceptionsPage(): Buffer {
  const b = Buffer.alloc(12);
  b[0] = ModePage.InformationalExceptions;
  b[1] = 0x0a;
  b[2] = 0x08; // DEXCPT=1
  b[3] = 0x00; // MRIE=0
  return b;
}

/** Changeable-values masks: a 1 bit may be changed by MODE SELECT. */
export function changeableMask(pageCode: number): Buffer {
  switch (pageCode) {
    case ModePage.Caching:
      return maskOf(encodeCachingPage(false));
    case ModePage.Control: {
      const b = maskOf(encodeControlPage(DEFAULT_MODE_VALUES));
      b[2] = 0x04; // D_SENSE
      b[4] = 0x08; // SWP
      b[5] = 0x40; // TAS
      return b;
    }
    default:
      return maskOf(encodeInformationalExceptionsPage());
  }
}

/** A page's header with every parameter bit zeroed (the changeable-values page skeleton). */
function maskOf(page: Buffer): Buffer {
  const b = Buffer.alloc(page.length);
  b[0] = page[0]!;
  b[1] = page[1]!;
  return b;
}

export interface BlockDescriptorInput {
  readonly blockCount: bigint;
  readonly blockSize: number;
  readonly long: boolean;
}

/** Short (8-byte) or long LBA (16-byte) mode parameter block descriptor (SBC-3 6.4.2). */
export function encodeBlockDescriptor(d: BlockDescriptorInput): Buffer {
  if (d.long) {
    const b = Buffer.alloc(16);
    b.writeBigUInt64BE(d.blockCount, 0);
    b.writeUInt32BE(d.blockSize, 12);
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeUInt32BE(d.blockCount > 0xffffffffn ? 0xffffffff : Number(d.blockCount), 0);
  b.writeUIntBE(d.blockSize, 5, 3);
  return b;
}

/**
 * Mode parameter header + block descriptor + pages. DEVICE-SPECIFIC PARAMETER for SBC: WP (bit 7)
 * and DPOFUA (bit 4, we honour DPO/FUA).
 */
export function encodeModeParameters(ten: boolean, writeProtect: boolean, blockDescriptor: Buffer | undefined,
  pages: readonly Buffer[]): Buffer {
  const bdLen = blockDescriptor?.length ?? 0;
  const headerLen = ten ? 8 : 4;
  const pagesLen = pages.reduce((n, p) => n + p.length, 0);
  const b = Buffer.alloc(headerLen + bdLen + pagesLen);
  const deviceSpecific = (writeProtect ? 0x80 : 0) | 0x10;
  if (ten) {
    b.writeUInt16BE(b.length - 2, 0);
    b[3] = deviceSpecific;
    b[4] = bdLen === 16 ? 0x01 : 0x00; // LONGLBA
    b.writeUInt16BE(bdLen, 6);
  } else {
    b[0] = Math.min(b.length - 1, 0xff);
    b[2] = deviceSpecific;
    b[3] = bdLen;
  }
  let off = headerLen;
  if (blockDescriptor) off += blockDescriptor.copy(b, off);
  for (const p of pages) off += p.copy(b, off);
  return b;
}
