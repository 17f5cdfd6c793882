// Text Request/Response exchanges in full-feature phase: SendTargets and the few keys that may be
// renegotiated there. Requests may span PDUs (C bit) and long answers are returned in pieces that
// the initiator pulls with empty requests carrying our Target Transfer Tag.

import type { TextRequest } from '../../protocol/iscsi/pdu-types.js';
import { RESERVED_TAG } from '../../protocol/iscsi/constants.js';
import { TextAccumulator, encodeTextPairs, parseTextData, splitForResponse } from '../../protocol/iscsi/text.js';
import { negotiateFullFeature } from '../../protocol/iscsi/negotiation.js';
import { IscsiTargetError, IscsiTargetErrorCode } from './errors.js';
import type { Session } from './session.js';

/** Largest text request we accumulate across C-bit PDUs. */
const MAX_TEXT_REQUEST = 64 * 1024;

export class TextExchange {
  readonly #session: Session;
  #itt = RESERVED_TAG;
  #accumulator: TextAccumulator | undefined;
  /** Remaining pieces of a long response, pulled by the initiator. */
  #pieces: Buffer[] = [];
  #ttt = RESERVED_TAG;
  #nextTtt = 0x7000_0000;

  constructor(session: Session) {
    this.#session = session;
  }

  onRequest(pdu: TextRequest): void {
    const session = this.#session;
    if (pdu.itt !== this.#itt) {
      // A new exchange replaces any unfinished one (RFC 7143 11.10.5).
      this.#itt = pdu.itt;
      this.#accumulator = undefined;
      this.#pieces = [];
      this.#ttt = RESERVED_TAG;
    } else if (this.#pieces.length > 0 && pdu.ttt === this.#ttt && pdu.data.length === 0) {
      this.#sendPiece(pdu);
      return;
    }
    if (pdu.ttt !== RESERVED_TAG && pdu.ttt !== this.#ttt) {
      throw new IscsiTargetError(IscsiTargetErrorCode.BadText, `Text Request with unknown TTT 0x${pdu.ttt.toString(16)}`);
    }
    this.#accumulator ??= new TextAccumulator(MAX_TEXT_REQUEST);
    const state = this.#accumulator.push(pdu.data, pdu.continue);
    if (state === 'overflow') {
      this.#accumulator = undefined;
      throw new IscsiTargetError(IscsiTargetErrorCode.TextTooLong, 'text request too long');
    }
    if (state === 'more') {
      this.#ttt = this.#allocateTtt();
      this.#send(pdu, EMPTY, false, false, this.#ttt);
      return;
    }
    const text = this.#accumulator.take();
    this.#accumulator = undefined;
    const parsed = parseTextData(text);
    if (parsed.error) throw new IscsiTargetError(IscsiTargetErrorCode.BadText, parsed.error.message);
    const answer: Array<readonly [string, string]> = [];
    const rest: Array<readonly [string, string]> = [];
    for (const pair of parsed.pairs) {
      if (pair[0] === 'SendTargets') {
        answer.push(...session.node.sendTargetsPairs(pair[1], session.transport.localAddress, session.transport.localPort));
      } else {
        rest.push(pair);
      }
    }
    if (rest.length > 0) {
      const result = negotiateFullFeature(rest, session.params);
      answer.push(...result.response);
      session.params = result.params;
    }
    const pieces = splitForResponse(encodeTextPairs(answer), session.params.maxXmitDataSegmentLength);
    this.#pieces = pieces.length > 0 ? pieces : [EMPTY];
    this.#sendPiece(pdu);
  }

  #sendPiece(pdu: TextRequest): void {
    const piece = this.#pieces.shift()!;
    const more = this.#pieces.length > 0;
    if (more) {
      this.#ttt = this.#allocateTtt();
    } else {
      this.#ttt = RESERVED_TAG;
      this.#itt = RESERVED_TAG;
    }
    this.#send(pdu, piece, !more, more, this.#ttt);
  }

  #send(pdu: TextRequest, data: Buffer, final: boolean, cont: boolean, ttt: number): void {
    this.#session.transport.send({
      kind: 'TextResponse', final, continue: cont, lun: pdu.lun, itt: pdu.itt, ttt, data,
      statSN: 0, expCmdSN: 0, maxCmdSN: 0,
    }, true);
  }

  #allocateTtt(): number {
    this.#nextTtt = this.#nextTtt >= 0x7fff_fff0 ? 0x7000_0000 : this.#nextTtt + 1;
    return this.#nextTtt;
  }
}

const EMPTY = Buffer.alloc(0);
