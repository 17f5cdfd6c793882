// The target's replica-management port (cStor: 6060): replicas dial in, send HELLO, and once the
// caller's accept() agrees the same connection carries I/O as a ReplicaConnection. Handshakes are
// bounded in time, size and number.
import { createServer, type Server, type Socket } from 'node:net';
import { FrameReader } from '../../protocol/replica/frame-reader.js';
import {
  MAX_HELLO_PAYLOAD_LENGTH, Opcode, FrameFlag, ReplicaStatus, decodeHello, encodeErrorMessage, encodeFrame,
  type ReplicaHello, type ReplicaStatusValue,
} from '../../protocol/replica/frame.js';
import type { Logger } from '../../shared/logger.js';
import { ReplicaConnection, type ReplicaConnectionOptions } from './replica-connection.js';

export type HelloVerdict =
  | { readonly ok: true; /** The volume's current epoch, echoed to the replica. */ readonly epoch?: number }
  | { readonly ok: false; readonly reason: string };

export interface ReplicaListenerOptions {
  readonly logger: Logger;
  /** Decide whether this replica may serve (e.g. known volume UUID, matching geometry). */
  readonly accept: (hello: ReplicaHello, remoteAddress: string) => HelloVerdict | Promise<HelloVerdict>;
  /** Receives every accepted connection; the caller owns (and closes) it. */
  readonly onConnection: (connection: ReplicaConnection) => void;
  /** HELLO must arrive and be answered within this (default 5000 ms). */
  readonly handshakeTimeoutMs?: number;
  /** Connections still in handshake at once (default 64); more are dropped. */
  readonly maxPendingHandshakes?: number;
  readonly connection?: Omit<ReplicaConnectionOptions, 'logger' | 'initialData'>;
}

export class ReplicaListener {
  readonly #options: ReplicaListenerOptions;
  readonly #logger: Logger;
  readonly #server: Server;
  readonly #handshakes = new Set<Socket>();
  readonly #timeoutMs: number;
  readonly #maxPending: number;
  #nextId = 1;

  constructor(options: ReplicaListenerOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#timeoutMs = options.handshakeTimeoutMs ?? 5000;
    this.#maxPending = options.maxPendingHandshakes ?? 64;
    this.#server = createServer(socket => this.#onSocket(socket));
    this.#server.on('error', err => this.#logger.error({ err }, 'replica listener error'));
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen({ host, port, backlog: 128 }, () => {
        this.#server.off('error', onError);
        const addr = this.#server.address();
        if (addr && typeof addr === 'object') resolve({ host: addr.address, port: addr.port });
        else reject(new Error('replica listener has no address'));
      });
    });
  }

  /** Stop accepting and drop connections still in handshake; accepted connections belong to the caller. */
  close(): Promise<void> {
    const stopped = new Promise<void>(resolve => this.#server.close(() => resolve()));
    for (const s of this.#handshakes) s.destroy();
    this.#handshakes.clear();
    return stopped;
  }

  #onSocket(socket: Socket): void {
    const remote = `${socket.remoteAddress ?? ''}:${socket.remotePort ?? 0}`;
    const logger = this.#logger.child({ replicaConn: this.#nextId++, remote });
    if (this.#handshakes.size >= this.#maxPending) {
      logger.warn('too many replica handshakes in progress: dropping');
      socket.destroy();
      return;
    }
    this.#handshakes.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    let done = false;
    const finish = (): void => {
      done = true;
      clearTimeout(timer);
      this.#handshakes.delete(socket);
      socket.off('data', onData);
    };
    const timer = setTimeout(() => {
      logger.warn({ timeoutMs: this.#timeoutMs }, 'replica did not complete HELLO in time');
      finish();
      socket.destroy();
    }, this.#timeoutMs);
    timer.unref();

    const refuse = (status: ReplicaStatusValue, tag: number, reason: string): void => {
      finish();
      logger.warn({ reason }, 'replica refused');
      if (socket.destroyed || !socket.writable) return;
      const [header, payload] = encodeFrame({ opcode: Opcode.Hello, flags: FrameFlag.Response, status, tag }, encodeErrorMessage(reason));
      socket.cork();
      socket.write(header!);
      socket.write(payload!);
      socket.uncork();
      // Let the answer go out, then close; a peer that does not read is cut off.
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    };

    const reader = new FrameReader({ maxPayloadLength: MAX_HELLO_PAYLOAD_LENGTH }, frame => {
      if (done) return;
      const h = frame.header;
      // Nothing else may arrive before the answer: stop reading so a chatty peer cannot make us buffer.
      reader.pause();
      socket.pause();
      if (h.opcode !== Opcode.Hello || (h.flags & FrameFlag.Response) !== 0) {
        refuse(ReplicaStatus.Invalid, h.tag, `expected HELLO, got opcode ${h.opcode}`);
        return;
      }
      if (!frame.payloadCrcOk) {
        refuse(ReplicaStatus.BadPayloadCrc, h.tag, 'HELLO payload CRC32C mismatch');
        return;
      }
      let hello: ReplicaHello;
      try {
        hello = decodeHello(frame.payload);
      } catch (err) {
        refuse(ReplicaStatus.Invalid, h.tag, (err as Error).message);
        return;
      }
      void this.#decide(hello, remote).then(verdict => {
        if (done || socket.destroyed) return;
        if (!verdict.ok) {
          refuse(ReplicaStatus.Refused, h.tag, verdict.reason);
          return;
        }
        finish();
        const rest = reader.detach();
        const [header] = encodeFrame({ opcode: Opcode.Hello, flags: FrameFlag.Response, status: ReplicaStatus.Ok, tag: h.tag, epoch: verdict.epoch ?? 0 });
        socket.write(header!);
        logger.info({ replicaId: hello.replicaId, volume: hello.volumeName, highestIoSeq: hello.highestIoSeq, epoch: hello.epoch }, 'replica connected');
        const conn = new ReplicaConnection(socket, hello, {
          ...this.#options.connection,
          logger: logger.child({ replica: hello.replicaId }),
          initialData: rest,
        });
        try {
          this.#options.onConnection(conn);
        } catch (err) {
          logger.error({ err }, 'onConnection threw: dropping the replica');
          void conn.close();
          return;
        }
        socket.resume();
      });
    }, err => {
      logger.warn({ code: err.code }, `broken HELLO frame: ${err.message}`);
      finish();
      socket.destroy();
    });
    const onData = (chunk: Buffer): void => {
      try {
        reader.push(chunk);
      } catch (err) {
        logger.warn({ err }, 'HELLO parse failed');
        finish();
        socket.destroy();
      }
    };
    socket.on('data', onData);
    socket.on('error', err => logger.debug({ err }, 'replica socket error'));
    socket.once('close', () => { if (!done) finish(); });
  }

  async #decide(hello: ReplicaHello, remote: string): Promise<HelloVerdict> {
    try {
      return await this.#options.accept(hello, remote);
    } catch (err) {
      this.#logger.error({ err }, 'accept() threw: refusing the replica');
      return { ok: false, reason: 'target error while checking the replica' };
    }
  }
}
