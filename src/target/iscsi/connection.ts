// One TCP connection: framing (PduReader/PduWriter), the login phase, then a full-feature session.
// Sequence numbers are stamped here at send time; protocol errors become a Reject or a dropped
// connection, never an exception that escapes to the process.

import type { Socket } from 'node:net';
import { PduReader } from '../../protocol/iscsi/pdu-reader.js';
import { PduWriter } from '../../protocol/iscsi/pdu-writer.js';
import { IscsiProtocolError, rejectReasonFor } from '../../protocol/iscsi/errors.js';
import { AsyncEvent, RESERVED_TAG } from '../../protocol/iscsi/constants.js';
import type { InitiatorPdu, LoginResponse, PduFrame, TargetPdu } from '../../protocol/iscsi/pdu-types.js';
import type { Logger } from '../../shared/logger.js';
import { LoginHandler, type LoginTransport } from './login.js';
import type { Session } from './session.js';
import type { TargetNode } from './target-node.js';
import { IscsiTargetError, dispositionFor } from './errors.js';

/** RFC 7143: MaxRecvDataSegmentLength is 8192 until the login negotiated otherwise. */
const LOGIN_MAX_DATA_SEGMENT = 8192;
/** After closeAfterFlush, a peer that does not read its last bytes is cut off after this long. */
const CLOSE_GRACE_MS = 5000;

type Phase = 'login' | 'full' | 'closing' | 'closed';

export class Connection implements LoginTransport {
  readonly id: number;
  readonly logger: Logger;
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly #socket: Socket;
  readonly #node: TargetNode;
  readonly #reader: PduReader;
  readonly #writer = new PduWriter();
  readonly #login: LoginHandler;
  readonly #closed: Promise<void>;
  #phase: Phase = 'login';
  #session: Session | undefined;
  #sessionEnded = false;
  #statSN = 0;
  #statSNInitialised = false;
  #corked = false;
  #paused = false;
  #lastRx = Date.now();
  #pingSentAt = 0;
  #pingTtt = 0;
  #timer: NodeJS.Timeout | undefined;
  #loginTimer: NodeJS.Timeout | undefined;

  constructor(socket: Socket, node: TargetNode, id: number, logger: Logger) {
    this.id = id;
    this.#socket = socket;
    this.#node = node;
    this.localAddress = normaliseAddress(socket.localAddress ?? '');
    this.localPort = socket.localPort ?? 0;
    this.remoteAddress = `${normaliseAddress(socket.remoteAddress ?? '')}:${socket.remotePort ?? 0}`;
    this.logger = logger.child({ conn: id, remote: this.remoteAddress });
    this.#login = new LoginHandler(node, this, this.logger);
    this.#reader = new PduReader(
      { side: 'target', maxRecvDataSegmentLength: LOGIN_MAX_DATA_SEGMENT },
      (pdu, frame) => this.#onPdu(pdu as InitiatorPdu, frame),
      err => this.#onProtocolError(err),
    );
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    this.#closed = new Promise(resolve => socket.once('close', () => { this.#onClose(); resolve(); }));
    socket.on('data', chunk => this.#onData(chunk));
    socket.on('error', err => this.logger.debug({ err }, 'socket error'));
    // The initiator's FIN is the I_T nexus loss: end the session now, not when 'close' comes a few
    // event-loop turns later, or a command on another connection could still see what this one held.
    socket.on('end', () => this.#endSession());
    socket.on('drain', () => this.#onDrain());
    this.#loginTimer = setTimeout(() => {
      if (this.#phase === 'login') {
        this.logger.warn('login did not complete in time');
        this.destroy();
      }
    }, node.options.loginTimeoutMs);
    this.#loginTimer.unref();
  }

  get cid(): number { return this.#login.cid; }
  get session(): Session | undefined { return this.#session; }
  get closed(): Promise<void> { return this.#closed; }

  #onData(chunk: Buffer): void {
    if (this.#phase === 'closed' || this.#phase === 'closing') return;
    this.#lastRx = Date.now();
    this.#pingSentAt = 0;
    this.#reader.push(chunk);
  }

  #onPdu(pdu: InitiatorPdu, frame: PduFrame): void {
    if (this.#phase === 'login') {
      if (pdu.kind !== 'LoginRequest') {
        this.logger.warn({ kind: pdu.kind }, 'non-login PDU during login');
        this.destroy();
        return;
      }
      if (!this.#statSNInitialised) {
        // Start StatSN where the initiator expects it.
        this.#statSN = pdu.expStatSN >>> 0;
        this.#statSNInitialised = true;
      }
      void this.#login.onLoginRequest(pdu);
      return;
    }
    if (this.#phase !== 'full' || !this.#session) return;
    try {
      this.#session.handlePdu(pdu);
    } catch (err) {
      if (err instanceof IscsiTargetError) {
        const d = dispositionFor(err.code);
        this.logger.warn({ code: err.code, kind: pdu.kind, itt: 'itt' in pdu ? pdu.itt : undefined }, err.message);
        this.#sendReject(d.reason, frame.bhs);
        if (d.drop) this.closeAfterFlush();
        return;
      }
      this.logger.error({ err, kind: pdu.kind }, 'PDU handling failed');
      this.destroy();
    }
  }

  #onProtocolError(err: IscsiProtocolError): void {
    this.logger.warn({ code: err.code }, err.message);
    const reason = rejectReasonFor(err.code);
    if (err.fatal || reason === undefined || this.#phase !== 'full' || !err.header) {
      this.destroy();
      return;
    }
    this.#sendReject(reason, err.header);
  }

  #sendReject(reason: number, header: Buffer): void {
    this.#node.stats.rejectsSent++;
    this.send({
      kind: 'Reject', reason, dataSN: 0, rejectedHeader: Buffer.from(header.subarray(0, 48)),
      statSN: 0, expCmdSN: 0, maxCmdSN: 0,
    }, true);
  }

  /** Send a full-feature PDU; `status` PDUs take the next StatSN. */
  send(pdu: TargetPdu, status: boolean): void {
    if (this.#phase === 'closed') return;
    const seq = pdu as TargetPdu & { statSN: number; expCmdSN: number; maxCmdSN: number };
    seq.statSN = this.#statSN;
    if (status) this.#statSN = (this.#statSN + 1) >>> 0;
    const session = this.#session;
    if (session) {
      seq.expCmdSN = session.expCmdSN;
      seq.maxCmdSN = session.maxCmdSN;
    }
    this.#write(this.#writer.encode(pdu));
  }

  sendLogin(pdu: LoginResponse): void {
    this.send(pdu, true);
  }

  #write(buffers: Buffer[]): void {
    const socket = this.#socket;
    if (socket.destroyed || !socket.writable) return;
    if (!this.#corked) {
      // Batch every PDU produced in this tick into one writev.
      this.#corked = true;
      socket.cork();
      process.nextTick(() => { this.#corked = false; socket.uncork(); });
    }
    let ok = true;
    for (const b of buffers) ok = socket.write(b);
    if (!ok && !this.#paused && this.#phase === 'full') {
      // The initiator is not reading: stop reading its commands until our output drains.
      this.#paused = true;
      socket.pause();
    }
  }

  #onDrain(): void {
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  enterFullFeature(session: Session): void {
    this.#session = session;
    this.#phase = 'full';
    if (this.#loginTimer) clearTimeout(this.#loginTimer);
    const p = session.params;
    // The final Login Response is already encoded: digests apply from the next PDU on.
    this.#writer.setDigests(p.headerDigest === 'CRC32C', p.dataDigest === 'CRC32C');
    this.#reader.setDigests(p.headerDigest === 'CRC32C', p.dataDigest === 'CRC32C');
    this.#reader.setMaxRecvDataSegmentLength(p.maxRecvDataSegmentLength);
    this.#startPings();
  }

  #startPings(): void {
    const { nopInIntervalMs, nopInTimeoutMs } = this.#node.options;
    if (nopInIntervalMs <= 0) return;
    const tick = Math.max(100, Math.min(nopInIntervalMs, nopInTimeoutMs) / 2);
    this.#timer = setInterval(() => this.#checkAlive(nopInIntervalMs, nopInTimeoutMs), tick);
    this.#timer.unref();
  }

  #checkAlive(interval: number, timeout: number): void {
    if (this.#phase !== 'full') return;
    const now = Date.now();
    if (this.#pingSentAt !== 0) {
      if (now - this.#pingSentAt >= timeout) {
        this.logger.warn({ timeoutMs: timeout }, 'initiator did not answer NOP-In: dropping the connection');
        this.destroy();
      }
      return;
    }
    if (now - this.#lastRx >= interval) {
      this.#pingTtt = this.#pingTtt >= 0x7fff_ffff ? 1 : this.#pingTtt + 1;
      this.#pingSentAt = now;
      this.send({ kind: 'NopIn', lun: 0n, itt: RESERVED_TAG, ttt: this.#pingTtt, data: EMPTY, statSN: 0, expCmdSN: 0, maxCmdSN: 0 }, false);
    }
  }

  /** Ask the initiator to log out within `seconds` (Async Message, used on shutdown). */
  requestLogout(seconds: number): void {
    if (this.#phase !== 'full') return;
    this.send({
      kind: 'AsyncMessage', lun: 0n, asyncEvent: AsyncEvent.LogoutRequest, asyncVCode: 0,
      parameter1: 0, parameter2: 0, parameter3: seconds, data: EMPTY, statSN: 0, expCmdSN: 0, maxCmdSN: 0,
    }, true);
  }

  closeAfterFlush(): void {
    if (this.#phase === 'closed' || this.#phase === 'closing') return;
    this.#phase = 'closing';
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  destroy(): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closing';
    this.#socket.destroy();
  }

  #onClose(): void {
    this.#phase = 'closed';
    if (this.#timer) clearInterval(this.#timer);
    if (this.#loginTimer) clearTimeout(this.#loginTimer);
    this.#endSession();
    this.logger.debug('connection closed');
  }

  #endSession(): void {
    if (this.#phase !== 'closed') this.#phase = 'closing';
    const session = this.#session;
    // Both 'end' and 'close' get here; the session ends once.
    if (!session || this.#sessionEnded) return;
    this.#sessionEnded = true;
    this.logger.debug({ tsih: session.tsih }, 'session ends');
    // Its synchronous part ends the nexus before this returns.
    session.close().catch(err => this.logger.error({ err }, 'session close failed'));
  }
}

const EMPTY = Buffer.alloc(0);

function normaliseAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.substring(7) : address;
}
