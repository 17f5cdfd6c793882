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
