// Sense data builders (SPC-4 4.5): fixed format (0x70) by default, descriptor format (0x72) when the
// control mode page's D_SENSE bit is set. Sense-key-specific field pointers point at invalid CDB or
// parameter-list bytes so initiators can tell which field was wrong.

export interface FieldPointer {
  /** true: the byte is in the CDB (C/D=1); false: in the parameter list. */
  readonly inCdb: boolean;
  readonly byte: number;
  /** Bit 0..7 within the byte, when known. */
  readonly bit?: number;
}

export interface SenseOptions {
  /** Descriptor format (D_SENSE=1). */
  readonly descriptor?: boolean;
  /** INFORMATION field (e.g. first bad LBA, or miscompare offset); sets VALID. */
  readonly information?: bigint;
  /** Sense-key-specific field pointer (ILLEGAL REQUEST). */
  readonly field?: FieldPointer;
  /** Current (false, default) or deferred error. */
  readonly deferred?: boolean;
}

/** Build sense data for a sense key and a 16-bit ASC/ASCQ. */
export function buildSense(key: number, ascq16: number, options: SenseOptions = {}): Buffer {
  const asc = (ascq16 >> 8) & 0xff;
  const ascq = ascq16 & 0xff;
  const sks = options.field ? fieldPointerBytes(options.field) : undefined;
  if (options.descriptor) {
    const infoLen = options.information === undefined ? 0 : 12;
    const sksLen = sks ? 8 : 0;
    const buf = Buffer.alloc(8 + infoLen + sksLen);
    buf[0] = options.deferred ? 0x73 : 0x72;
    buf[1] = key & 0x0f;
    buf[2] = asc;
    buf[3] = ascq;
    buf[7] = infoLen + sksLen;
    let off = 8;
    if (options.information !== undefined) {
      buf[off] = 0x00; // information descriptor
      buf[off + 1] = 0x0a;
      buf[off + 2] = 0x80; // VALID
      buf.writeBigUInt64BE(BigInt.asUintN(64, options.information), off + 4);
      off += 12;
    }
    if (sks) {
      buf[off] = 0x02; // sense key specific descriptor
      buf[off + 1] = 0x06;
      sks.copy(buf, off + 4);
    }
    return buf;
  }
  const buf = Buffer.alloc(18);
  // Fixed format has a 32-bit INFORMATION field: VALID only when the value fits (SPC-4 4.5.3).
  const info = options.information !== undefined && options.information >= 0n && options.information <= 0xffffffffn
    ? options.information : undefined;
  buf[0] = (options.deferred ? 0x71 : 0x70) | (info !== undefined ? 0x80 : 0);
  buf[2] = key & 0x0f;
  if (info !== undefined) buf.writeUInt32BE(Number(info), 3);
  buf[7] = 10; // additional sense length
  buf[12] = asc;
  buf[13] = ascq;
  if (sks) sks.copy(buf, 15);
  return buf;
}

function fieldPointerBytes(field: FieldPointer): Buffer {
  const b = Buffer.alloc(3);
  b[0] = 0x80 | (field.inCdb ? 0x40 : 0) | (field.bit !== undefined ? 0x08 | (field.bit & 0x7) : 0);
  b.writeUInt16BE(field.byte & 0xffff, 1);
  return b;
}

export interface DecodedSense {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  readonly information?: bigint;
}

/** Decode fixed or descriptor sense (tests and logs). */
export function decodeSense(sense: Buffer): DecodedSense | undefined {
  if (sense.length < 4) return undefined;
  const code = sense[0]! & 0x7f;
  if (code === 0x72 || code === 0x73) {
    const d: { key: number; asc: number; ascq: number; information?: bigint } = {
      key: sense[1]! & 0x0f, asc: sense[2]!, ascq: sense[3]!,
    };
    const len = Math.min(sense.length, 8 + (sense[7] ?? 0));
    for (let off = 8; off + 2 <= len; off += 2 + sense[off + 1]!) {
      if (sense[off] === 0 && off + 12 <= len) d.information = sense.readBigUInt64BE(off + 4);
    }
    return d;
  }
  if ((code === 0x70 || code === 0x71) && sense.length >= 14) {
    const d: { key: number; asc: number; ascq: number; information?: bigint } = {
      key: sense[2]! & 0x0f, asc: sense[12]!, ascq: sense[13]!,
    };
    if (sense[0]! & 0x80) d.information = BigInt(sense.readUInt32BE(3));
    return d;
  }
  return undefined;
}

/** A command failure that becomes CHECK CONDITION with this sense (thrown by CDB decoders and handlers). */
export class CheckCondition extends Error {
  readonly key: number;
  readonly asc: number;
  readonly information: bigint | undefined;
  readonly field: FieldPointer | undefined;
  constructor(key: number, asc: number, options: { information?: bigint; field?: FieldPointer } = {}) {
    super(`check condition ${key.toString(16)}/${asc.toString(16).padStart(4, '0')}`);
    this.name = 'CheckCondition';
    this.key = key;
    this.asc = asc;
    this.information = options.information;
    this.field = options.field;
  }

  /** Sense bytes for this condition in the format the control mode page selects. */
  toSense(descriptor: boolean): Buffer {
    const options: { descriptor: boolean; information?: bigint; field?: FieldPointer } = { descriptor };
    if (this.information !== undefined) options.information = this.information;
    if (this.field !== undefined) options.field = this.field;
    return buildSense(this.key, this.asc, options);
  }
}

/** ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and `bit`, the field's most significant bit). */
export function invalidCdbField(byte: number, bit?: number): CheckCondition {
  return new CheckCondition(0x5, 0x2400, { field: bit === undefined ? { inCdb: true, byte } : { inCdb: true, byte, bit } });
}

/** ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at a parameter-list byte. */
export function invalidParameterField(byte: number, bit?: number): CheckCondition {
  return new CheckCondition(0x5, 0x2600, { field: bit === undefined ? { inCdb: false, byte } : { inCdb: false, byte, bit } });
}

/** ILLEGAL REQUEST with an ASC and no field pointer (LBA OUT OF RANGE, PARAMETER LIST LENGTH ERROR, ...). */
export function illegalRequest(asc: number): CheckCondition {
  return new CheckCondition(0x5, asc);
}
