// Serialises PDUs into the buffers to hand to the socket, in order (cork, write each, uncork).
// The data segment is never copied: it is the caller's Buffer, written between header and tail.
import { DIGEST_LENGTH } from './constants.js';
import { crc32c } from './digest.js';
import { encodeHeaderInto, headerLength, padLength, pduDataSegment } from './pdu-codec.js';
import type { AnyPdu } from './pdu-types.js';

export interface PduWriterOptions {
  headerDigest?: boolean;
  dataDigest?: boolean;
}

// Shared, never written: padding views for 1..3 bytes when there is no data digest.
const ZEROS = Buffer.alloc(4);
const PADDING: readonly Buffer[] = [ZEROS.subarray(0, 0), ZEROS.subarray(0, 1), ZEROS.subarray(0, 2), ZEROS.subarray(0, 3)];

export class PduWriter {
  #hd: boolean;
  #dd: boolean;

  constructor(opts: PduWriterOptions = {}) {
    this.#hd = opts.headerDigest ?? false;
    this.#dd = opts.dataDigest ?? false;
  }

  /** Applies to PDUs encoded from now on (e.g. after the final Login Response has been encoded). */
  setDigests(header: boolean, data: boolean): void {
    this.#hd = header;
    this.#dd = data;
  }

  /**
   * [header (BHS + AHS + header digest, one allocation)], then, when there is a data segment,
   * [the data segment as given], then [padding + data digest] when non-empty.
   * The returned buffers must be written before the caller's data Buffer is modified.
   */
  encode(pdu: AnyPdu): Buffer[] {
    const data = pduDataSegment(pdu);
    const hLen = headerLength(pdu);
    const header = Buffer.allocUnsafe(this.#hd ? hLen + DIGEST_LENGTH : hLen);
    encodeHeaderInto(pdu, data.length, header, 0);
    if (this.#hd) header.writeUInt32LE(crc32c(header.subarray(0, hLen)), hLen);
    const n = data.length;
    if (n === 0) return [header];
    const pad = padLength(n);
    if (!this.#dd) return pad === 0 ? [header, data] : [header, data, PADDING[pad]!];
    // The data digest covers data + padding (RFC 7143 11.2.1): pad bytes are zero.
    let crc = crc32c(data);
    if (pad !== 0) crc = crc32c(PADDING[pad]!, crc);
    const tail = Buffer.allocUnsafe(pad + DIGEST_LENGTH);
    tail.fill(0, 0, pad);
    tail.writeUInt32LE(crc, pad);
    return [header, data, tail];
  }
}
