// The shared gRPC server plumbing over 127.0.0.1: binding an ephemeral port, graceful shutdown,
// the forced fallback when a call hangs, and the explicit-status error both servers map.
import t from 'tap';
import grpc from '@grpc/grpc-js';
import {
  bindGrpcServer,
  explicitGrpcStatus,
  GrpcStatusError,
  shutdownGrpcServer,
} from '../../src/shared/grpc-server.js';
import { ControlError } from '../../src/replica/control-server.js';
import { ManagementError } from '../../src/protocol/management/management-codec.js';

t.setTimeout(30_000);

const identity = (b: Buffer): Buffer => b;
const service: grpc.ServiceDefinition = {
  hang: {
    path: '/test.Hang/Hang',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

t.test('bind on 127.0.0.1 port 0 returns the port; shutdown with no calls completes before the timeout', async (t) => {
  const server = new grpc.Server();
  const port = await bindGrpcServer(server, '127.0.0.1', 0);
  t.ok(Number.isInteger(port) && port > 0, `bound port ${port}`);
  let forced = false;
  const started = Date.now();
  await shutdownGrpcServer(server, 10_000, () => { forced = true; });
  t.notOk(forced, 'not forced');
  t.ok(Date.now() - started < 5_000, 'graceful shutdown did not wait for the timeout');
});

t.test('bind to a port already in use rejects', async (t) => {
  const first = new grpc.Server();
  const port = await bindGrpcServer(first, '127.0.0.1', 0);
  t.teardown(() => first.forceShutdown());
  const second = new grpc.Server();
  t.teardown(() => second.forceShutdown());
  await t.rejects(bindGrpcServer(second, '127.0.0.1', port));
});

t.test('a hanging call is cut by forceShutdown after the timeout', async (t) => {
  const server = new grpc.Server();
  let called!: () => void;
  const handlerCalled = new Promise<void>((resolve) => { called = resolve; });
  // Never answers, so graceful shutdown cannot finish on its own.
  server.addService(service, { hang: () => called() });
  const port = await bindGrpcServer(server, '127.0.0.1', 0);

  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const d = service['hang']!;
  const reply = new Promise<grpc.ServiceError | null>((resolve) => {
    client.makeUnaryRequest(d.path, identity, identity, Buffer.alloc(0), { deadline: Date.now() + 20_000 }, (err) => resolve(err));
  });
  await handlerCalled;

  let forced = 0;
  const timeoutMs = 300;
  const started = Date.now();
  await shutdownGrpcServer(server, timeoutMs, () => { forced++; });
  const elapsed = Date.now() - started;
  t.equal(forced, 1, 'onForced called once');
  t.ok(elapsed >= timeoutMs - 20, `waited for the timeout (${elapsed} ms)`);
  t.ok(elapsed < 5_000, 'resolved promptly after forcing');
  const err = await reply;
  t.ok(err !== null && err.code !== grpc.status.OK, `the hanging call failed (${err?.code})`);
});

t.test('GrpcStatusError and its subclasses carry a status the servers report', async (t) => {
  const cause = new Error('underneath');
  const base = new GrpcStatusError('NOT_FOUND', 'missing', { cause });
  t.equal(base.name, 'GrpcStatusError');
  t.equal(base.message, 'missing');
  t.equal(base.code, 'NOT_FOUND');
  t.equal(base.cause, cause);
  t.equal(explicitGrpcStatus(base), grpc.status.NOT_FOUND);

  const control = new ControlError('FAILED_PRECONDITION', 'shrink');
  t.ok(control instanceof GrpcStatusError);
  t.equal(control.name, 'ControlError');
  t.equal(explicitGrpcStatus(control), grpc.status.FAILED_PRECONDITION);

  const management = new ManagementError('UNAVAILABLE', 'offline');
  t.ok(management instanceof GrpcStatusError);
  t.equal(management.name, 'ManagementError');
  t.equal(management.message, 'offline');
  t.equal(explicitGrpcStatus(management), grpc.status.UNAVAILABLE);

  t.equal(explicitGrpcStatus(new Error('plain')), undefined, 'a plain Error has no explicit status');
  t.equal(explicitGrpcStatus('a string'), undefined);
});
