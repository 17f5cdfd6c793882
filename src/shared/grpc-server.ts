// gRPC server plumbing shared by the replica's control server and the target's management server:
// binding, bounded graceful shutdown, and the error a handler throws to choose its gRPC status.
import grpc from '@grpc/grpc-js';
import { formatHostPort } from './cli-values.js';

/** A gRPC status by name; OK is excluded because a failure cannot report success. */
export type GrpcStatusName = Exclude<keyof typeof grpc.status, 'OK'>;

/**
 * A handler failure with an explicit gRPC status; the server reports `code` with the message as
 * details. `Code` is a parameter only so that ManagementError keeps accepting any status name.
 */
export class GrpcStatusError<Code extends keyof typeof grpc.status = GrpcStatusName> extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GrpcStatusError';
    this.code = code;
  }
}

/** The status a handler chose by throwing a GrpcStatusError (or subclass); undefined for anything else. */
export function explicitGrpcStatus(err: unknown): grpc.status | undefined {
  // instanceof on a generic class narrows code to any, hence the cast back to a status name.
  return err instanceof GrpcStatusError ? grpc.status[err.code as keyof typeof grpc.status] : undefined;
}

/** Binds `server` without TLS to host:port (0 = ephemeral) and resolves with the port bound. */
export function bindGrpcServer(server: grpc.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(formatHostPort(host, port), grpc.ServerCredentials.createInsecure(), (err, bound) => {
      if (err) reject(err);
      else resolve(bound);
    });
  });
}

/**
 * Graceful shutdown that cannot hang: lets in-flight calls finish, but after `timeoutMs` cuts them
 * with forceShutdown (calling `onForced` first, e.g. to log it) and resolves.
 */
export function shutdownGrpcServer(server: grpc.Server, timeoutMs: number, onForced?: () => void): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      onForced?.();
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
