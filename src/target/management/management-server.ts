// The gRPC server of the target's management service. Handlers are plain async functions wired
// by main.ts; this file owns the plumbing and the mapping of failures to gRPC statuses.
import grpc from '@grpc/grpc-js';
import {
  volumeManagementDefinition,
  type ManagementHandlers,
  type MethodName,
} from '../../protocol/management/management-codec.js';
import type { Logger } from '../../shared/logger.js';
import { errorMessage } from '../../shared/errors.js';
import { bindGrpcServer, explicitGrpcStatus, shutdownGrpcServer } from '../../shared/grpc-server.js';

// In-flight management calls are short; do not let a stuck one delay shutdown.
const SHUTDOWN_TIMEOUT_MS = 2_000;

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
            const explicit = explicitGrpcStatus(err);
            if (explicit === undefined) logger.error({ err, method: name }, 'management call failed');
            callback({ code: explicit ?? grpc.status.INTERNAL, details: errorMessage(err) });
          },
        );
      };
    }
    this.#server.addService(volumeManagementDefinition, implementation);
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return { host, port: await bindGrpcServer(this.#server, host, port) };
  }

  close(): Promise<void> {
    return shutdownGrpcServer(this.#server, SHUTDOWN_TIMEOUT_MS);
  }
}
