// The TCP portal: accepts connections for one target node and shuts down gracefully.

import { createServer, type Server } from 'node:net';
import type { Logger } from '../../shared/logger.js';
import { Connection } from './connection.js';
import type { TargetNode } from './target-node.js';

export class Portal {
  readonly #node: TargetNode;
  readonly #logger: Logger;
  readonly #server: Server;
  readonly #connections = new Set<Connection>();
  #nextId = 1;
  readonly #maxConnections: number;

  constructor(node: TargetNode, logger: Logger, options: { maxConnections?: number } = {}) {
    this.#node = node;
    this.#logger = logger;
    this.#maxConnections = options.maxConnections ?? 256;
    this.#server = createServer(socket => {
      if (this.#connections.size >= this.#maxConnections) {
        this.#logger.warn({ remote: socket.remoteAddress }, 'too many connections: refusing');
        socket.destroy();
        return;
      }
      const conn = new Connection(socket, node, this.#nextId++, logger);
      this.#connections.add(conn);
      void conn.closed.then(() => this.#connections.delete(conn));
    });
    this.#server.on('error', err => this.#logger.error({ err }, 'portal error'));
  }

  get connectionCount(): number { return this.#connections.size; }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen({ host, port, backlog: 128 }, () => {
        this.#server.off('error', onError);
        const addr = this.#server.address();
        if (addr && typeof addr === 'object') resolve({ host: addr.address, port: addr.port });
        else reject(new Error('portal has no address'));
      });
    });
  }

  /**
   * Stop accepting, ask logged-in initiators to log out (Async Message), give running commands
   * `graceMs` to finish, then close what is left.
   */
  async close(graceMs = 3000): Promise<void> {
    const stopped = new Promise<void>(resolve => this.#server.close(() => resolve()));
    for (const conn of this.#connections) conn.requestLogout(Math.max(1, Math.ceil(graceMs / 1000)));
    const deadline = Date.now() + graceMs;
    while (this.#connections.size > 0 && Date.now() < deadline) {
      const busy = [...this.#connections].some(c => (c.session?.taskCount ?? 0) > 0 || c.session === undefined);
      if (!busy) break;
      await new Promise(r => setTimeout(r, 50));
    }
    for (const conn of this.#connections) conn.closeAfterFlush();
    await Promise.race([
      Promise.allSettled([...this.#connections].map(c => c.closed)),
      new Promise(r => setTimeout(r, 2000).unref()),
    ]);
    for (const conn of this.#connections) conn.destroy();
    await stopped;
    void this.#node;
  }
}
