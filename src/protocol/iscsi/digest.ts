// CRC32C (Castagnoli) for iSCSI header and data digests (RFC 7143 section 13.1).
// fast-crc32c is CommonJS without type declarations, so it is loaded through createRequire.
// It picks the sse4_crc32 native addon (SSE4.2 crc32 instruction) when it loads, else a JS table.
import { createRequire } from 'node:module';

interface Crc32cImpl {
  calculate(buf: Buffer, initial?: number): number;
}
interface Sse4Crc32 extends Crc32cImpl {
  readonly hardware_support?: boolean;
  readonly sse42_crc?: (buf: Buffer, initial?: number) => number;
}

const require = createRequire(import.meta.url);
const impl = require('fast-crc32c') as Crc32cImpl;
// Bound once: the hot path calls a plain function, no property lookup.
const calculate: (buf: Buffer, initial?: number) => number = impl.calculate;

/**
 * CRC32C of `buf`, continuing from `initial` (a previous crc32c result) when given, so
 * crc32c(b, crc32c(a)) === crc32c(concat(a, b)). On the wire the digest is the value as uint32 little-endian.
 */
export function crc32c(buf: Buffer, initial?: number): number {
  return initial === undefined ? calculate(buf) : calculate(buf, initial);
}

let hardware: boolean | undefined;

/** True when the CRC32C in use is the SSE4.2 hardware implementation. */
export function hardwareCrc32c(): boolean {
  if (hardware === undefined) {
    try {
      const sse = require('sse4_crc32') as Sse4Crc32;
      hardware = sse.hardware_support === true && calculate === sse.calculate;
    } catch {
      hardware = false;
    }
  }
  return hardware;
}

// ---- Combining checksums (zlib's crc32_combine, for the CRC32C polynomial) ----------------------
// crc32c(A ‖ B) from crc32c(A), crc32c(B) and B's length, without touching the bytes again: a store
// that has verified every chunk of a read knows the checksum of the whole run for the cost of a few
// bit operations per chunk. The operator "append n zero bytes" is a 32×32 matrix over GF(2), kept per n.

/** Reflected CRC32C (Castagnoli) polynomial. */
const POLY = 0x82f63b78;

function gf2Times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  for (let i = 0; vec !== 0; i++, vec >>>= 1) if ((vec & 1) !== 0) sum ^= mat[i]!;
  return sum >>> 0;
}

function gf2Square(mat: Uint32Array): Uint32Array {
  const out: Uint32Array = new Uint32Array(32);
  for (let n = 0; n < 32; n++) out[n] = gf2Times(mat, mat[n]!);
  return out;
}

/** The matrix that advances a CRC over `length` zero bytes (length ≥ 1). */
function zerosOperator(length: number): Uint32Array {
  // One zero bit, then squared: 2, 4, 8 bits = one byte, then 2^k bytes.
  let op: Uint32Array = new Uint32Array(32);
  op[0] = POLY;
  for (let n = 1; n < 32; n++) op[n] = 1 << (n - 1);
  for (let i = 0; i < 3; i++) op = gf2Square(op);
  // result = product of the byte operators for the set bits of length.
  let result: Uint32Array | undefined;
  for (let n = length; n > 0; n = Math.floor(n / 2)) {
    if (n % 2 === 1) {
      if (result === undefined) result = op.slice();
      else {
        const r: Uint32Array = new Uint32Array(32);
        for (let i = 0; i < 32; i++) r[i] = gf2Times(op, result[i]!);
        result = r;
      }
    }
    if (n > 1) op = gf2Square(op);
  }
  return result!;
}

const operators = new Map<number, Uint32Array>();

/** crc32c(concat(a, b)) given crcA = crc32c(a), crcB = crc32c(b) and lengthB = b.length. */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  let op = operators.get(lengthB);
  if (op === undefined) {
    op = zerosOperator(lengthB);
    // Bounded: callers use a handful of lengths (chunk sizes).
    if (operators.size < 64) operators.set(lengthB, op);
  }
  return (gf2Times(op, crcA >>> 0) ^ crcB) >>> 0;
}
