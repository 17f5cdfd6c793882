// Resumable iSCSI PDU parser over a TCP byte stream (RFC 7143 section 11: BHS, AHS, header digest,
// data segment + padding, data digest). Chunks are kept as received; a field that lies in one chunk
// is handed out as a view, only a field straddling chunks is copied. One chunk may hold many PDUs
// or a fraction of one.
import { ByteQueue } from '../byte-queue.js';
import { BHS_LENGTH, DIGEST_LENGTH } from './constants.js';
import { crc32c } from './digest.js';
import { IscsiErrorCode, IscsiProtocolError } from './errors.js';
import {
  EMPTY_BUFFER, MAX_AHS_LENGTH, bhsAhsLength, bhsDataSegmentLength, decodePdu, padLength, type PduSide,
} from './pdu-codec.js';
import type { InitiatorPdu, PduFrame, TargetPdu } from './pdu-types.js';

export interface PduReaderOptions {
  side: PduSide;
  maxRecvDataSegmentLength: number;
  headerDigest?: boolean;
  dataDigest?: boolean;
  /** Largest accepted AHS in bytes (default and maximum: 1020, what TotalAHSLength can express). */
  maxAhsLength?: number;
}

/**
 * Called once per PDU, in stream order. `pdu` Buffers and `frame` are views into the receive buffers,
 * valid only during the callback: copy what must outlive it.
 */
export type PduHandler = (pdu: InitiatorPdu | TargetPdu, frame: PduFrame) => void;
export type PduErrorHandler = (err: IscsiProtocolError) => void;

// Parser states.
const S_BHS = 0;
const S_HEADER_REST = 1; // AHS + header digest
const S_DATA = 2; // data + padding + data digest
const S_SKIP = 3; // discarding a rejected data segment
const S_DEAD = 4; // after a fatal error
type State = typeof S_BHS | typeof S_HEADER_REST | typeof S_DATA | typeof S_SKIP | typeof S_DEAD;

export class PduReader {
  readonly #side: PduSide;
  readonly #onPdu: PduHandler;
  readonly #onError: PduErrorHandler;
  #maxData: number;
  #maxAhs: number;
  // Configured digests, latched into #hd/#dd at each PDU boundary.
  #wantHd: boolean;
  #wantDd: boolean;
  #hd = false;
  #dd = false;

  readonly #input = new ByteQueue();

  #state: State = S_BHS;
  /** Bytes the current state waits for. */
  #need = BHS_LENGTH;
  #bhs: Buffer = EMPTY_BUFFER;
  #ahs: Buffer = EMPTY_BUFFER;
  #dataLength = 0;
  #skip = 0;

  constructor(options: PduReaderOptions, onPdu: PduHandler, onError: PduErrorHandler) {
    this.#side = options.side;
    this.#maxData = options.maxRecvDataSegmentLength;
    this.#maxAhs = Math.min(options.maxAhsLength ?? MAX_AHS_LENGTH, MAX_AHS_LENGTH);
    this.#wantHd = options.headerDigest ?? false;
    this.#wantDd = options.dataDigest ?? false;
    this.#onPdu = onPdu;
    this.#onError = onError;
  }

  /** Takes effect at the next PDU boundary (e.g. called from onPdu for the last Login Request). */
  setDigests(header: boolean, data: boolean): void {
    this.#wantHd = header;
    this.#wantDd = data;
  }

  setMaxRecvDataSegmentLength(n: number): void {
    this.#maxData = n;
  }

  /** Bytes received and not yet consumed. */
  get bufferedBytes(): number {
    return this.#input.length;
  }

  /** True once a fatal error was reported; further input is ignored. */
  get failed(): boolean {
    return this.#state === S_DEAD;
  }

  /** Parse every complete PDU in the input so far, calling onPdu/onError synchronously in order. */
  push(chunk: Buffer): void {
    if (this.#state === S_DEAD || chunk.length === 0) return;
    if (this.#state === S_SKIP) {
      // Discard straight from the new chunk, never buffering skipped bytes.
      const n = Math.min(this.#skip, chunk.length);
      this.#skip -= n;
      if (this.#skip > 0) return;
      this.#enterBhs();
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    this.#input.push(chunk);
    this.#run();
  }

  #run(): void {
    while (this.#input.length >= this.#need) {
      switch (this.#state) {
        case S_BHS:
          this.#readBhs();
          break;
        case S_HEADER_REST:
          this.#readHeaderRest();
          break;
        case S_DATA:
          this.#readData();
          break;
        case S_SKIP: {
          const n = Math.min(this.#skip, this.#input.length);
          this.#input.skip(n);
          this.#skip -= n;
          if (this.#skip === 0) this.#enterBhs();
          else return;
          break;
        }
        default:
          return;
      }
    }
  }

  #enterBhs(): void {
    this.#state = S_BHS;
    this.#need = BHS_LENGTH;
    this.#bhs = EMPTY_BUFFER;
    this.#ahs = EMPTY_BUFFER;
  }

  #readBhs(): void {
    this.#hd = this.#wantHd;
    this.#dd = this.#wantDd;
    const bhs = this.#input.consume(BHS_LENGTH);
    this.#bhs = bhs;
    this.#dataLength = bhsDataSegmentLength(bhs);
    const rest = bhsAhsLength(bhs) + (this.#hd ? DIGEST_LENGTH : 0);
    if (rest === 0) {
      this.#headerDone();
    } else {
      this.#state = S_HEADER_REST;
      this.#need = rest;
    }
  }

  #readHeaderRest(): void {
    const ahsLen = bhsAhsLength(this.#bhs);
    if (!this.#hd) {
      this.#ahs = this.#input.consume(ahsLen);
    } else {
      const region = this.#input.consume(ahsLen + DIGEST_LENGTH);
      const ahs = region.subarray(0, ahsLen);
      this.#ahs = ahs;
      let crc = crc32c(this.#bhs);
      if (ahsLen !== 0) crc = crc32c(ahs, crc);
      const received = region.readUInt32LE(ahsLen);
      if (received !== crc) {
        this.#fatal(new IscsiProtocolError(
          IscsiErrorCode.HeaderDigest,
          `header digest mismatch: received 0x${received.toString(16)}, computed 0x${crc.toString(16)}`,
          { header: this.#bhs },
        ));
        return;
      }
    }
    this.#headerDone();
  }

  /** Header complete and trusted: check limits before buffering any data. */
  #headerDone(): void {
    const dataLength = this.#dataLength;
    const tail = dataLength === 0 ? 0 : padLength(dataLength) + (this.#dd ? DIGEST_LENGTH : 0);
    if (dataLength > this.#maxData) {
      this.#reject(IscsiErrorCode.DataSegmentTooLong,
        `DataSegmentLength ${dataLength} exceeds MaxRecvDataSegmentLength ${this.#maxData}`, dataLength + tail);
      return;
    }
    if (this.#ahs.length > this.#maxAhs) {
      this.#reject(IscsiErrorCode.AhsTooLong,
        `TotalAHSLength ${this.#ahs.length} bytes exceeds ${this.#maxAhs}`, dataLength + tail);
      return;
    }
    if (dataLength === 0) {
      this.#emit(EMPTY_BUFFER);
      return;
    }
    this.#state = S_DATA;
    this.#need = dataLength + tail;
  }

  #readData(): void {
    const dataLength = this.#dataLength;
    const padded = dataLength + padLength(dataLength);
    const region = this.#input.consume(this.#need);
    const data = region.subarray(0, dataLength);
    if (this.#dd) {
      const crc = crc32c(padded === dataLength ? data : region.subarray(0, padded));
      const received = region.readUInt32LE(padded);
      if (received !== crc) {
        const err = new IscsiProtocolError(
          IscsiErrorCode.DataDigest,
          `data digest mismatch: received 0x${received.toString(16)}, computed 0x${crc.toString(16)}`,
          { header: this.#bhs },
        );
        this.#enterBhs();
        this.#onError(err);
        return;
      }
    }
    this.#emit(data);
  }

  #emit(data: Buffer): void {
    const frame: PduFrame = { bhs: this.#bhs, ahs: this.#ahs, data };
    // State moves on before any callback so a throwing or re-entrant consumer leaves the parser consistent.
    this.#enterBhs();
    let pdu: InitiatorPdu | TargetPdu;
    try {
      pdu = decodePdu(frame, this.#side);
    } catch (err) {
      if (err instanceof IscsiProtocolError) {
        this.#onError(err);
        return;
      }
      throw err;
    }
    this.#onPdu(pdu, frame);
  }

  /** Non-fatal error for a well-framed PDU whose remaining `skip` bytes are discarded unbuffered. */
  #reject(code: typeof IscsiErrorCode.DataSegmentTooLong | typeof IscsiErrorCode.AhsTooLong, message: string,
    skip: number): void {
    const err = new IscsiProtocolError(code, message, { header: this.#bhs });
    if (skip === 0) {
      this.#enterBhs();
    } else {
      this.#state = S_SKIP;
      this.#need = 1;
      this.#skip = skip;
    }
    this.#onError(err);
  }

  #fatal(err: IscsiProtocolError): void {
    this.#state = S_DEAD;
    this.#need = Infinity;
    this.#input.clear();
    this.#bhs = EMPTY_BUFFER;
    this.#ahs = EMPTY_BUFFER;
    this.#onError(err);
  }
}
