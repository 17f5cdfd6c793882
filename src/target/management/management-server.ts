// The gRPC server of the target's management service. Handlers are plain async functions wired
// by main.ts; this file owns the plumbing and the mapping of failures to gRPC statuses.
import grpc from '@grpc/grpc-js';
import {
  ManagementError,
  volumeManagementDefinition,
  type ManagementHandlers,
  type MethodName,
} from '../../protocol/management/management-codec.js';
import type { Logger } from '../../shared/logger.js';
import { formatHostPort } from '../../shared/cli-values.js';
import { errorMessage } from '../../shared/errors.js';

export class ManagementServer {
  readonly #server = new grpc.Server();

  constructor(handlers: ManagementHandlers, logger: Logger) {
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const name of Object.keys(volumeManagementDefinition) as MethodName[]) {
      const handler = handlers[name] as (request: object) => Promise<object>;
      implementation[name] = (call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) => {
        handler(call.request).then(
          (reply) => callback(null, reply),
          (err: unknown) => {
            const known = err instanceof ManagementError;
            if (!known) logger.error({ err, method: name }, 'management call failed');
            callback({
              code: known ? grpc.status[err.code] : grpc.status.INTERNAL,
              details: errorMessage(err),
            });
          },
        );
      };
    }
    this.#server.addService(volumeManagementDefinition, implementation);
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const address = formatHostPort(host, port);
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, bound) => {
        if (err) reject(err);
        else resolve({ host, port: bound });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      // In-flight management calls are short; do not let a stuck one delay shutdown.
      const force = setTimeout(() => this.#server.forceShutdown(), 2_000);
      this.#server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }
}
