// Login/Text data segment codec (RFC 7143 6.1): `key=value\0` repeated, UTF-8.
// Pure functions and a bounded accumulator for text spanning PDUs (C bit).
import { LoginStatus, type LoginStatusValue } from './constants.js';

/** RFC 7143 6.1: key names are at most 63 bytes. */
export const MAX_KEY_BYTES = 63;
/** RFC 7143 6.1: an individual value (list element) is at most 255 bytes unless the key says otherwise. */
export const MAX_VALUE_BYTES = 255;
/** CHAP_C / CHAP_R carry large binary values (hex/base64 text); bound them anyway. */
export const MAX_CHAP_VALUE_BYTES = 8192;

export interface TextError {
  readonly status: LoginStatusValue;
  readonly message: string;
}

export type TextPair = readonly [key: string, value: string];

export interface TextPairs {
  /** Pairs in wire order (those parsed before an error, if any). */
  readonly pairs: readonly TextPair[];
  /** First problem found; the login must fail with `status` (a protocol error is InitiatorError). */
  readonly error?: TextError;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function valueLimit(key: string): number {
  return key.startsWith('CHAP_') ? MAX_CHAP_VALUE_BYTES : MAX_VALUE_BYTES;
}

function fail(pairs: TextPair[], message: string): TextPairs {
  return { pairs, error: { status: LoginStatus.InitiatorError, message } };
}

/**
 * Parse a complete (reassembled) text data segment. Empty entries (stray NULs, padding)
 * are skipped; a final entry without its NUL is accepted. Duplicate keys, malformed
 * entries, over-long keys/values and invalid UTF-8 are protocol errors.
 */
export function parseTextData(data: Buffer): TextPairs {
  const pairs: TextPair[] = [];
  const seen = new Set<string>();
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0, start);
    if (end < 0) end = data.length;
    const entry = data.subarray(start, end);
    start = end + 1;
    if (entry.length === 0) continue;
    const eq = entry.indexOf(0x3d); // '='
    if (eq < 0) return fail(pairs, 'text entry without "="');
    if (eq === 0) return fail(pairs, 'text entry with empty key');
    if (eq > MAX_KEY_BYTES) return fail(pairs, `key longer than ${MAX_KEY_BYTES} bytes`);
    let key: string;
    let value: string;
    try {
      key = utf8.decode(entry.subarray(0, eq));
      value = utf8.decode(entry.subarray(eq + 1));
    } catch {
      return fail(pairs, 'text entry is not valid UTF-8');
    }
    const limit = valueLimit(key);
    const rawValue = entry.subarray(eq + 1);
    // The limit applies per list element; a single value has one element.
    let elemStart = 0;
    for (;;) {
      let comma = rawValue.indexOf(0x2c, elemStart);
      if (comma < 0) comma = rawValue.length;
      if (comma - elemStart > limit) return fail(pairs, `value of ${key} longer than ${limit} bytes`);
      if (comma >= rawValue.length) break;
      elemStart = comma + 1;
    }
    if (seen.has(key)) return fail(pairs, `key ${key} repeated in one request`);
    seen.add(key);
    pairs.push([key, value]);
  }
  return { pairs };
}

/** Encode pairs as `key=value\0`...; sized first so there is exactly one allocation. */
export function encodeTextPairs(pairs: Iterable<readonly [string, string]>): Buffer {
  const list = Array.isArray(pairs) ? (pairs as readonly (readonly [string, string])[]) : [...pairs];
  let size = 0;
  for (const [k, v] of list) size += Buffer.byteLength(k) + Buffer.byteLength(v) + 2;
  const out = Buffer.allocUnsafe(size);
  let off = 0;
  for (const [k, v] of list) {
    off += out.write(k, off, 'utf8');
    out[off++] = 0x3d;
    off += out.write(v, off, 'utf8');
    out[off++] = 0;
  }
  return out;
}

export type AccumulatorResult = 'more' | 'complete' | 'overflow';

/**
 * Reassembles text split over several Login/Text Request PDUs (C=1 on all but the last).
 * Copies incoming data because receive buffers may be reused by the caller.
 * Once 'overflow' is returned the accumulator stays overflowed until take()/reset().
 */
export class TextAccumulator {
  readonly #maxBytes: number;
  #buf: Buffer = Buffer.alloc(0);
  #len = 0;
  #overflow = false;

  constructor(maxBytes: number) {
    if (!Number.isInteger(maxBytes) || maxBytes < 0) throw new RangeError('maxBytes must be a non-negative integer');
    this.#maxBytes = maxBytes;
  }

  /** Bytes currently held. */
  get length(): number {
    return this.#len;
  }

  /** True while a C=1 sequence is in progress (some data held, or overflowed). */
  get pending(): boolean {
    return this.#len > 0 || this.#overflow;
  }

  push(data: Buffer, continueFlag: boolean): AccumulatorResult {
    if (this.#overflow) return 'overflow';
    const need = this.#len + data.length;
    if (need > this.#maxBytes) {
      this.#overflow = true;
      this.#buf = Buffer.alloc(0);
      this.#len = 0;
      return 'overflow';
    }
    if (need > this.#buf.length) {
      // Grow geometrically, capped at the bound.
      const next = Buffer.allocUnsafe(Math.min(this.#maxBytes, Math.max(need, this.#buf.length * 2, 256)));
      this.#buf.copy(next, 0, 0, this.#len);
      this.#buf = next;
    }
    data.copy(this.#buf, this.#len);
    this.#len = need;
    return continueFlag ? 'more' : 'complete';
  }

  /** Return the accumulated text (a fresh buffer) and reset. */
  take(): Buffer {
    const out = Buffer.from(this.#buf.subarray(0, this.#len));
    this.reset();
    return out;
  }

  reset(): void {
    this.#buf = Buffer.alloc(0);
    this.#len = 0;
    this.#overflow = false;
  }
}

/**
 * Split the target's own text into data segments of at most maxSegment bytes; all but the
 * last go out with C=1. Always returns at least one (possibly empty) segment. Segments are
 * views into `data`.
 */
export function splitForResponse(data: Buffer, maxSegment: number): Buffer[] {
  if (!Number.isInteger(maxSegment) || maxSegment < 1) throw new RangeError('maxSegment must be a positive integer');
  if (data.length <= maxSegment) return [data];
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += maxSegment) out.push(data.subarray(off, off + maxSegment));
  return out;
}
