// RFC 1982 serial number arithmetic on 32-bit sequence numbers (CmdSN, StatSN, DataSN).
const HALF = 0x8000_0000;

/** a < b in serial arithmetic; undefined relation (distance exactly 2^31) counts as not less. */
export function serialLt(a: number, b: number): boolean {
  a >>>= 0; b >>>= 0;
  return a !== b && ((a < b && b - a < HALF) || (a > b && a - b > HALF));
}
export function serialGt(a: number, b: number): boolean { return serialLt(b, a); }
export function serialLte(a: number, b: number): boolean { return (a >>> 0) === (b >>> 0) || serialLt(a, b); }
export function serialGte(a: number, b: number): boolean { return (a >>> 0) === (b >>> 0) || serialGt(a, b); }
export function serialAdd(a: number, n: number): number { return (a + n) >>> 0; }
