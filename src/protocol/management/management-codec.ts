// Messages, service definition and typed client of the target's management service
// (volume-management.proto). Unlike the replica control codec (exact uint64 edge for io_seq and
// offsets on the data path), these are operator messages: uint64 fields are read as JS numbers
// (capacities and io_seq values stay far below 2^53) and every message is checked by protobufjs.
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { GrpcStatusError } from '../../shared/grpc-server.js';

export type VolumePhase = 'Healthy' | 'Degraded' | 'Offline';
export type ReplicaMode = 'Healthy' | 'Degraded' | 'Rebuilding' | 'Offline';

export interface RebuildProgress {
  readonly state: string;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly rateBytesPerSec: number;
  readonly etaSeconds: number;
  readonly source: string;
}

export interface ReplicaStatus {
  readonly id: string;
  readonly mode: ReplicaMode;
  readonly reason: string;
  readonly checkpointedIoSeq: number;
  readonly inflightReads: number;
  readonly inflightWrites: number;
  readonly inflightSyncs: number;
  readonly uptimeSeconds: number;
  readonly quorum: boolean;
  readonly address: string;
  readonly rebuild?: RebuildProgress | undefined;
}

export interface VolumeStatus {
  readonly name: string;
  readonly uuid: string;
  readonly iqn: string;
  readonly phase: VolumePhase;
  readonly capacityBytes: number;
  readonly blockSize: number;
  readonly replicationFactor: number;
  readonly consistencyFactor: number;
  readonly epoch: number;
  readonly uptimeSeconds: number;
  readonly portal: string;
  readonly rebuildRateMibPerSec: number;
  readonly replicas: readonly ReplicaStatus[];
}

export interface SessionConnection {
  readonly address: string;
  readonly cid: number;
  readonly headerDigest: boolean;
  readonly dataDigest: boolean;
}

export interface Session {
  readonly initiatorName: string;
  readonly isid: string;
  readonly tsih: number;
  readonly connections: readonly SessionConnection[];
  readonly parameters: Readonly<Record<string, string>>;
}

type Empty = Readonly<Record<string, never>>;

/** Request and reply type of each method (keys are the lowerCamel method names). */
export interface ManagementMethods {
  status: [Empty, VolumeStatus];
  resize: [{ readonly capacityBytes: number }, { readonly capacityBytes: number }];
  setRebuildRate: [{ readonly mibPerSec: number }, { readonly mibPerSec: number }];
  ejectReplica: [{ readonly id: string; readonly reason: string }, { readonly mode: string }];
  listSessions: [Empty, { readonly sessions: readonly Session[] }];
}
export type MethodName = keyof ManagementMethods;

const PROTO_PATH = fileURLToPath(new URL('./volume-management.proto', import.meta.url));
const PACKAGE = 'cstor.target.v1';
const root = protobuf.loadSync(PROTO_PATH);
root.resolveAll();
const service = root.lookupService(`${PACKAGE}.VolumeManagement`);

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, defaults: true, arrays: true, objects: true };

function serializer(type: protobuf.Type): (value: object) => Buffer {
  return (value) => {
    const problem = type.verify(value);
    if (problem !== null) throw new RangeError(`${type.name}: ${problem}`);
    return Buffer.from(type.encode(type.fromObject(value)).finish());
  };
}

function deserializer(type: protobuf.Type): (bytes: Buffer) => object {
  // Unset scalars read as their defaults; an unset message field (a replica's rebuild), which
  // protobufjs gives as null, becomes absent, as the optional TypeScript field says.
  return (bytes) => withoutNulls(type.toObject(type.decode(bytes), TO_OBJECT)) as object;
}

function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== null) out[k] = withoutNulls(v);
  return out;
}

const lowerFirst = (s: string): string => s.charAt(0).toLowerCase() + s.slice(1);

/** The grpc-js service definition, built from the .proto (all methods are unary). */
export const volumeManagementDefinition: grpc.ServiceDefinition = Object.fromEntries(
  Object.values(service.methods).map((m) => {
    const req = root.lookupType(m.resolvedRequestType?.fullName ?? `${PACKAGE}.${m.requestType}`);
    const rep = root.lookupType(m.resolvedResponseType?.fullName ?? `${PACKAGE}.${m.responseType}`);
    const definition: grpc.MethodDefinition<object, object> = {
      path: `/${PACKAGE}.VolumeManagement/${m.name}`,
      originalName: lowerFirst(m.name),
      requestStream: false,
      responseStream: false,
      requestSerialize: serializer(req),
      requestDeserialize: deserializer(req),
      responseSerialize: serializer(rep),
      responseDeserialize: deserializer(rep),
    };
    return [lowerFirst(m.name), definition];
  }),
);

export type ManagementHandlers = {
  readonly [K in MethodName]: (request: ManagementMethods[K][0]) => Promise<ManagementMethods[K][1]>;
};

/** A handler's refusal with the gRPC status to report (e.g. FAILED_PRECONDITION for a shrink). */
export class ManagementError extends GrpcStatusError<keyof typeof grpc.status> {
  constructor(code: keyof typeof grpc.status, message: string) {
    super(code, message);
    this.name = 'ManagementError';
  }
}

export type ManagementClient = {
  readonly [K in MethodName]: (request: ManagementMethods[K][0], options?: { deadlineMs?: number }) => Promise<ManagementMethods[K][1]>;
} & { readonly address: string; close(): void };

export function createManagementClient(address: string, defaultDeadlineMs = 10_000): ManagementClient {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = (name: MethodName) => (request: object, options?: { deadlineMs?: number }): Promise<object> =>
    new Promise((resolve, reject) => {
      const d = volumeManagementDefinition[name]!;
      const deadline = Date.now() + (options?.deadlineMs ?? defaultDeadlineMs);
      client.makeUnaryRequest(d.path, d.requestSerialize, d.responseDeserialize, request, { deadline }, (err, reply) => {
        if (err) reject(err);
        else resolve(reply as object);
      });
    });
  const methods = Object.fromEntries(Object.keys(volumeManagementDefinition).map((name) => [name, call(name as MethodName)]));
  return { ...(methods as unknown as Omit<ManagementClient, 'address' | 'close'>), address, close: () => client.close() };
}
