// The replica's dialer (cStor model: the replica connects to the target's replica port): connect,
// HELLO, wait for the answer, then serve I/O on the same connection through a DataResponder. Any
// close, error or refusal leads to a reconnect with jittered exponential backoff; a refusal waits the
// maximum backoff, since retrying sooner will not change the target's mind.
import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { FrameReader } from '../protocol/replica/frame-reader.js';
import {
  MAX_HELLO_PAYLOAD_LENGTH, Opcode, ReplicaStatus, encodeFrame, encodeHello, statusName, type ReplicaHello,
} from '../protocol/replica/frame.js';
import type { Logger } from '../shared/logger.js';
import { DataResponder, type DataResponderOptions } from './data-responder.js';
import type { ReplicaStoreApi } from './store-api.js';

export interface TargetLinkOptions {
  readonly host: string;
  readonly port: number;
  readonly store: ReplicaStoreApi;
  /** Where the target reaches this replica's control (gRPC) server, announced in HELLO. */
  readonly controlAddress: string;
  readonly logger: Logger;
  /** Connect + HELLO answer must complete within this (default 5000 ms). */
  readonly handshakeTimeoutMs?: number;
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly responder?: Omit<DataResponderOptions, 'logger' | 'initialData' | 'onFatal'>;
  /** Observers (tests, metrics). */
  readonly onConnected?: (responder: DataResponder) => void;
  readonly onDisconnected?: (reason: string) => void;
  readonly onRefused?: (message: string) => void;
}

export type TargetLinkState = 'idle' | 'connecting' | 'connected' | 'backoff' | 'stopped';

export interface TargetLinkCounters {
  readonly attempts: number;
  readonly connects: number;
  readonly refusals: number;
  readonly failures: number;
}

const HELLO_TAG = 0;

export class TargetLink {
  readonly #options: TargetLinkOptions;
  readonly #instance: string;
  readonly #logger: Logger;
  readonly #minBackoff: number;
  readonly #maxBackoff: number;
  readonly #handshakeTimeout: number;
  #state: TargetLinkState = 'idle';
  #socket: Socket | undefined;
  #responder: DataResponder | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Consecutive failed attempts, for the backoff exponent. */
  #failuresInRow = 0;
  #attempts = 0;
  #connects = 0;
  #refusals = 0;
  #failures = 0;
  #stopped: Promise<void> | undefined;

  constructor(options: TargetLinkOptions) {
    this.#options = options;
    // One link per opening of the store (a process serves one store for its whole life).
    this.#instance = randomUUID();
    this.#logger = options.logger.child({ target: `${options.host}:${options.port}` });
    this.#minBackoff = Math.max(1, options.minBackoffMs ?? 100);
    this.#maxBackoff = Math.max(this.#minBackoff, options.maxBackoffMs ?? 5000);
    this.#handshakeTimeout = options.handshakeTimeoutMs ?? 5000;
  }

  get state(): TargetLinkState {
    return this.#state;
  }

  get responder(): DataResponder | undefined {
    return this.#responder;
  }

  counters(): TargetLinkCounters {
    return { attempts: this.#attempts, connects: this.#connects, refusals: this.#refusals, failures: this.#failures };
  }

  start(): void {
    if (this.#state !== 'idle') return;
    this.#dial();
  }

  /** Stop reconnecting and close the connection; resolves once the socket is closed. */
  stop(): Promise<void> {
    if (this.#stopped) return this.#stopped;
    this.#state = 'stopped';
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    this.#stopped = socket === undefined || socket.destroyed
      ? Promise.resolve()
      : new Promise(resolve => { socket.once('close', () => resolve()); socket.destroy(); });
    return this.#stopped;
  }

  #hello(): ReplicaHello {
    // The store's identity and positions as they are now (rebuildingSince only while unfinished).
    const store = this.#options.store;
    return { ...store.info, completeIoSeq: store.completeIoSeq, controlAddress: this.#options.controlAddress, pid: process.pid, instance: this.#instance };
  }


  #dial(): void {
    if (this.#state === 'stopped') return;
    this.#state = 'connecting';
    this.#attempts++;
    const socket = connect({ host: this.#options.host, port: this.#options.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    let outcome: 'pending' | 'connected' | 'refused' | 'failed' = 'pending';
    let reason = 'connection closed';

    const timer = setTimeout(() => {
      reason = `handshake did not complete in ${this.#handshakeTimeout} ms`;
      socket.destroy();
    }, this.#handshakeTimeout);
    timer.unref();

    const reader = new FrameReader({ maxPayloadLength: MAX_HELLO_PAYLOAD_LENGTH }, frame => {
      const h = frame.header;
      if (h.opcode !== Opcode.Hello || h.tag !== HELLO_TAG || !frame.payloadCrcOk) {
        reason = `unexpected handshake answer (opcode ${h.opcode}, tag ${h.tag})`;
        socket.destroy();
        return;
      }
      const message = frame.payload.toString('utf8');
      if (h.status !== ReplicaStatus.Ok) {
        outcome = 'refused';
        reason = `target refused HELLO (${statusName(h.status) ?? h.status}): ${message}`;
        this.#refusals++;
        this.#logger.warn({ status: statusName(h.status) ?? h.status, targetMessage: message }, 'target refused the replica: retrying later');
        this.#notify(() => this.#options.onRefused?.(message));
        socket.destroy();
        return;
      }
      // The target may pipeline I/O right behind its answer: hand those bytes to the responder.
      reader.pause();
      outcome = 'connected';
      clearTimeout(timer);
      socket.off('data', onData);
      this.#attach(socket, h.epoch, reader.detach());
    }, err => {
      reason = `handshake framing error: ${err.message}`;
      socket.destroy();
    });
    const onData = (chunk: Buffer): void => {
      try {
        reader.push(chunk);
      } catch (err) {
        reason = `handshake failed: ${String(err)}`;
        socket.destroy();
      }
    };

    socket.once('connect', () => {
      try {
        const [header, payload] = encodeFrame({ opcode: Opcode.Hello, tag: HELLO_TAG, epoch: this.#options.store.info.epoch }, encodeHello(this.#hello()));
        socket.cork();
        socket.write(header!);
        socket.write(payload!);
        socket.uncork();
      } catch (err) {
        reason = `cannot send HELLO: ${String(err)}`;
        socket.destroy();
      }
    });
    socket.on('data', onData);
    socket.on('error', err => {
      reason = (err as NodeJS.ErrnoException).code ?? err.message;
    });
    socket.once('close', () => {
      clearTimeout(timer);
      if (this.#socket === socket) this.#socket = undefined;
      const wasConnected = outcome === 'connected';
      this.#responder = undefined;
      if (wasConnected) {
        this.#logger.info({ reason }, 'disconnected from target');
        this.#notify(() => this.#options.onDisconnected?.(reason));
      } else {
        this.#failures++;
        if (outcome !== 'refused') {
          // The first failure in a row is worth a line; a target that stays down is not worth one per retry.
          if (this.#failuresInRow === 0) this.#logger.warn({ reason }, 'cannot reach target: retrying');
          else this.#logger.debug({ reason, attempt: this.#failuresInRow + 1 }, 'cannot reach target');
        }
        this.#failuresInRow++;
        if (outcome === 'pending') this.#notify(() => this.#options.onDisconnected?.(reason));
      }
      if (this.#state === 'stopped') return;
      this.#schedule(outcome === 'refused' ? this.#maxBackoff : this.#backoff());
    });
  }

  #attach(socket: Socket, targetEpoch: number, initialData: Buffer[]): void {
    if (this.#state === 'stopped') {
      socket.destroy();
      return;
    }
    this.#state = 'connected';
    this.#failuresInRow = 0;
    this.#connects++;
    this.#logger.info({ targetEpoch, epoch: this.#options.store.info.epoch }, 'connected to target');
    const responder = new DataResponder(socket, this.#options.store, {
      ...this.#options.responder,
      logger: this.#logger,
      initialData,
      onFatal: err => this.#logger.warn({ code: err.code }, 'target sent a broken frame'),
    });
    this.#responder = responder;
    this.#notify(() => this.#options.onConnected?.(responder));
  }

  /** Exponential from min, capped at max, with ±25% jitter so replicas do not reconnect in lockstep. */
  #backoff(): number {
    const exp = Math.min(this.#maxBackoff, this.#minBackoff * 2 ** Math.min(this.#failuresInRow - 1, 30));
    const base = Math.max(this.#minBackoff, exp);
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  #schedule(delayMs: number): void {
    this.#state = 'backoff';
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#dial();
    }, delayMs);
  }

  #notify(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#logger.error({ err }, 'target link observer threw');
    }
  }
}
