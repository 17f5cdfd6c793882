#!/usr/bin/env node
// `cstor-replica`: one replica of a volume. Opens (or with --format initialises) the store, starts
// the gRPC control service, then dials the target's replica port and serves I/O on it. Prints
// `ready replica=<id> pid=<pid> control=<host:port>` on stdout once serving; pino JSON on stderr.
//
// Direction: the replica dials the target (the cStor model). A replica knows where its target is
// (a Kubernetes Service), while the target would otherwise have to discover every replica; and a
// replica restarted elsewhere simply reconnects.

import { existsSync } from 'node:fs';
import { parseReplicaConfig, type ReplicaConfig } from './config.js';
import { createRootLogger, type Logger } from '../shared/logger.js';
import { formatStore, ReplicaStore } from './store.js';
import { StoreError, StoreErrorCode } from './store-api.js';
import { ControlError, startControlServer, type ControlServer } from './control-server.js';
import { TargetLink } from './target-link.js';
import { RebuildSink } from './rebuild-sink.js';
import { estimateRebuild } from './rebuild-estimate.js';
import { errorMessage } from '../shared/errors.js';
import { onShutdownSignals } from '../shared/shutdown-signals.js';

export interface RunningReplica {
  readonly store: ReplicaStore;
  readonly control: ControlServer;
  readonly link: TargetLink;
  /** The last or current rebuild started through StartRebuild. */
  readonly rebuild: RebuildSink | undefined;
  stop(): Promise<void>;
}

/** Open the replica's store, formatting it first when asked and the device holds no replica. */
export async function openStore(config: ReplicaConfig, logger: Logger): Promise<ReplicaStore> {
  const identity = {
    volumeName: config.volumeName,
    replicaId: config.replicaId,
    ...(config.volumeUuid !== undefined ? { volumeUuid: config.volumeUuid } : {}),
    logger,
  };
  const format = config.format;
  if (format !== undefined && format.force) {
    // --force: format unconditionally unless it already is exactly this replica.
    const existing = await ReplicaStore.open(config.device, identity).catch(() => undefined);
    if (existing !== undefined) return existing;
  }
  if (format !== undefined && !existsSync(config.device)) {
    await formatStore(config.device, { ...format, volumeName: config.volumeName, volumeUuid: config.volumeUuid!, replicaId: config.replicaId });
    logger.info({ device: config.device, capacityBytes: format.capacityBytes }, 'formatted a new replica file');
    return ReplicaStore.open(config.device, identity);
  }
  try {
    return await ReplicaStore.open(config.device, identity);
  } catch (err) {
    if (format === undefined || !(err instanceof StoreError) || (err.code !== StoreErrorCode.Unformatted && !format.force)) throw err;
    await formatStore(config.device, { ...format, volumeName: config.volumeName, volumeUuid: config.volumeUuid!, replicaId: config.replicaId });
    logger.info({ device: config.device, capacityBytes: format.capacityBytes }, 'formatted the device');
    return ReplicaStore.open(config.device, identity);
  }
}

export async function startReplica(config: ReplicaConfig, logger: Logger): Promise<RunningReplica> {
  const started = Date.now();
  const store = await openStore(config, logger.child({ component: 'store' }));
  let link: TargetLink | undefined;
  let control: ControlServer;
  let sink: RebuildSink | undefined;
  const rebuildLog = logger.child({ component: 'rebuild' });
  const checkVolume = (volumeUuid: string): void => {
    if (volumeUuid !== store.info.volumeUuid) {
      throw new ControlError('FAILED_PRECONDITION', `this replica belongs to volume ${store.info.volumeUuid}, not ${volumeUuid}`);
    }
  };
  try {
    control = await startControlServer({
      host: config.control.host,
      port: config.control.port,
      logger,
      handlers: {
        status: async () => {
          const s = store.stats();
          const responder = link?.responder?.counters();
          const info = store.info;
          const rebuild = sink?.status();
          const rebuilding = rebuild?.state === 'running' || rebuild?.state === 'backoff';
          return {
            volumeName: info.volumeName,
            volumeUuid: info.volumeUuid,
            replicaId: info.replicaId,
            state: rebuilding ? 'rebuilding' : 'ready',
            epoch: info.epoch,
            checkpointedIoSeq: info.checkpointedIoSeq,
            highestIoSeq: info.highestIoSeq,
            capacityBytes: info.capacityBytes,
            blockSize: info.blockSize,
            chunkSize: info.chunkSize,
            uptimeSeconds: (Date.now() - started) / 1000,
            pid: process.pid,
            counters: {
              ...s,
              // Refused as malformed or not allowed on this connection (media and I/O errors are not bad frames).
              badFrames: responder === undefined ? 0 : responder.framingErrors + responder.responses.BadPayloadCrc
                + responder.responses.UnknownOpcode + responder.responses.Misaligned + responder.responses.OutOfRange
                + responder.responses.StaleEpoch + responder.responses.Invalid,
            },
            dataConnected: link?.state === 'connected',
            ...(rebuild === undefined ? {} : { rebuild }),
          };
        },
        setEpoch: async (epoch, exclusive) => {
          await store.setEpoch(epoch, { exclusive });
          return store.info.epoch;
        },
        getTargetState: () => store.targetState(),
        putTargetState: (state) => store.putTargetState(state),
        resize: async (capacityBytes) => {
          if (capacityBytes < store.info.capacityBytes) {
            throw new ControlError('FAILED_PRECONDITION', `shrinking from ${store.info.capacityBytes} to ${capacityBytes} bytes is refused`);
          }
          await store.resize(capacityBytes);
          return store.info.capacityBytes;
        },
        rebuild: (sinceIoSeq, fromOffset, maxRunBytes, volumeUuid) => {
          checkVolume(volumeUuid);
          return store.scan(sinceIoSeq, { fromOffset, maxRunBytes });
        },
        rebuildEstimate: async (sinceIoSeq, volumeUuid) => {
          checkVolume(volumeUuid);
          const { capacityBytes, chunkSize } = store.info;
          return estimateRebuild({ chunkState: (offset) => store.chunkState(offset), capacityBytes, chunkSize, sinceIoSeq });
        },
        startRebuild: async ({ sourceAddress, sinceIoSeq, rateBytesPerSec, volumeUuid }) => {
          checkVolume(volumeUuid);
          if (sourceAddress === '') throw new ControlError('INVALID_ARGUMENT', 'source_address is required');
          if (sourceAddress === control.address) throw new ControlError('INVALID_ARGUMENT', 'a replica cannot rebuild from itself');
          const state = sink?.progress().state;
          if (state === 'running' || state === 'backoff') {
            throw new ControlError('FAILED_PRECONDITION', `a rebuild from ${sink!.source} is already running`);
          }
          // Persisted first: a restart before the end still reports this replica as out of sync.
          await store.beginRebuild(sinceIoSeq);
          const since = store.info.rebuildingSince ?? sinceIoSeq;
          const current = new RebuildSink({ store, source: sourceAddress, sinceIoSeq: since, rateBytesPerSec, logger: rebuildLog });
          sink = current;
          void current.start().then(async (p) => {
            if (p.state === 'done') {
              await store.endRebuild().catch((err: unknown) => rebuildLog.error({ err }, 'could not record the finished rebuild'));
              rebuildLog.info({ source: sourceAddress, since, bytes: p.bytesDone, seconds: p.elapsedSeconds, attempts: p.attempts },
                `rebuild complete: ${p.bytesDone} bytes in ${p.elapsedSeconds.toFixed(1)} s`);
            } else {
              rebuildLog.error({ source: sourceAddress, since, bytes: p.bytesDone, attempts: p.attempts, reason: p.lastError }, 'rebuild failed');
            }
          });
          return true;
        },
        setRebuildRate: async (rateBytesPerSec) => {
          const state = sink?.progress().state;
          if (state !== 'running' && state !== 'backoff') return false;
          sink!.setRate(rateBytesPerSec);
          return true;
        },
      },
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  link = new TargetLink({
    host: config.target.host,
    port: config.target.port,
    store,
    controlAddress: config.advertise ?? control.address,
    logger: logger.child({ component: 'target-link' }),
  });
  link.start();
  let stopping: Promise<void> | undefined;
  const running: RunningReplica = {
    store,
    control,
    link,
    get rebuild() {
      return sink;
    },
    stop: () => {
      stopping ??= (async () => {
        await sink?.stop();
        await link.stop();
        await control.close();
        await store.close();
      })();
      return stopping;
    },
  };
  return running;
}

async function main(): Promise<void> {
  const parsed = parseReplicaConfig(process.argv.slice(2), process.env);
  if (!parsed.ok) {
    if (parsed.help) {
      process.stdout.write(`${parsed.error}\n`);
      process.exit(0);
    }
    process.stderr.write(`cstor-replica: ${parsed.error}\n`);
    process.exit(64);
  }
  const config = parsed.config;
  const logger = createRootLogger({ level: config.logLevel, destination: 2 }).child({ replica: config.replicaId });
  // Crash-only: an unexpected exception may have left in-memory state inconsistent with the device.
  // Exit and let the supervisor restart; the journal makes the restart consistent.
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception; exiting');
    process.exit(70);
  });
  process.on('unhandledRejection', (err) => {
    logger.fatal({ err }, 'unhandled rejection; exiting');
    process.exit(70);
  });
  let replica: RunningReplica;
  try {
    replica = await startReplica(config, logger);
  } catch (err) {
    const message = errorMessage(err);
    process.stderr.write(`cstor-replica: cannot start: ${message}\n`);
    logger.fatal({ err }, 'start failed');
    process.exit(1);
  }
  process.stdout.write(`ready replica=${config.replicaId} pid=${process.pid} control=${replica.control.address} device=${config.device}\n`);
  logger.info({ device: config.device, control: replica.control.address, target: `${config.target.host}:${config.target.port}`,
    ...replica.store.info, recovery: replica.store.recovery }, 'replica ready');
  const shutdown = (signal: string): void => {
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => { logger.error('shutdown timed out'); process.exit(1); }, 15_000);
    force.unref();
    replica.stop().then(() => process.exit(0), (err: unknown) => { logger.error({ err }, 'shutdown failed'); process.exit(1); });
  };
  onShutdownSignals(shutdown, (signal) => logger.info({ signal }, 'already shutting down'));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  void main();
}
