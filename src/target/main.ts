#!/usr/bin/env node
// `npm start`: one LUN whose data lives in a replica process (a sparse file in --data-dir), served
// over iSCSI on --portal. Prints `replica <id> pid <pid>` for each replica process it starts.
// Prints one line `ready iqn=<IQN> portal=<host>:<port>` on stdout when it accepts connections;
// pino JSON logs go to stderr.

import { join } from 'node:path';
import { parseTargetConfig, type TargetConfig } from './config.js';
import { createRootLogger, type Logger } from '../shared/logger.js';
import { StateDir } from './volume/state-dir.js';
import { ReplicaListener } from './volume/replica-listener.js';
import { ReplicaSupervisor } from './volume/replica-supervisor.js';
import { ReplicaVolume } from './volume/replica-volume.js';
import type { ReplicaConnection } from './volume/replica-connection.js';
import { ReplicatedVolume } from './volume/replicated-volume.js';
import { RebuildOrchestrator } from './volume/rebuild-orchestrator.js';
import { loadOrCreateIdentity } from './volume/volume-identity.js';
import { ScsiTargetDevice } from './scsi/scsi-target.js';
import { TargetNode } from './iscsi/target-node.js';
import { Portal } from './iscsi/portal.js';
import { DEFAULT_TARGET_CONFIG } from '../protocol/iscsi/negotiation.js';

export interface RunningTarget {
  readonly portal: { host: string; port: number };
  readonly iqn: string;
  stop(): Promise<void>;
}

/** Supervision output: each replica process started, and each finished rebuild. */
export interface TargetEvents {
  readonly onReplicaStart?: (id: string, pid: number) => void;
  readonly onRebuildComplete?: (id: string, bytes: number, seconds: number) => void;
}

const FIRST_REPLICA_TIMEOUT_MS = 60_000;
/** With k > 1: once a quorum is connected, how long start waits for the others before serving. */
const STARTUP_GRACE_MS = 10_000;

/** The volume name replicas record: the part of the IQN after the last ':' (cStor: the PV name). */
function volumeNameOf(iqn: string): string {
  const name = iqn.slice(iqn.lastIndexOf(':') + 1);
  return name.length > 0 && Buffer.byteLength(name) <= 255 ? name : 'volume';
}

/** Waits for the replicas present at start: all k, or a majority plus a grace period. */
function collectStartupReplicas(k: number, startup: Map<string, ReplicaConnection>, wake: { fn: (() => void) | undefined }): Promise<ReplicaConnection[]> {
  const majority = Math.floor(k / 2) + 1;
  const begin = Date.now();
  return new Promise((resolve, reject) => {
    let quorumAt: number | undefined;
    const check = (): void => {
      const open = [...startup.values()].filter((c) => c.isOpen);
      const now = Date.now();
      if (open.length >= majority) quorumAt ??= now;
      if (open.length === k || (quorumAt !== undefined && now - quorumAt >= STARTUP_GRACE_MS)) {
        clearInterval(timer);
        wake.fn = undefined;
        resolve(open);
      } else if (now - begin > FIRST_REPLICA_TIMEOUT_MS) {
        clearInterval(timer);
        wake.fn = undefined;
        reject(new Error(`${open.length} of ${k} replicas connected within ${FIRST_REPLICA_TIMEOUT_MS / 1000} s; ${majority} are needed`));
      }
    };
    const timer = setInterval(check, 100);
    wake.fn = check;
    check();
  });
}

export async function startTarget(config: TargetConfig, logger: Logger, events: TargetEvents = {}): Promise<RunningTarget> {
  const identity = await loadOrCreateIdentity(config.dataDir);
  const state = new StateDir(join(config.dataDir, 'state'));
  const volumeName = volumeNameOf(config.iqn);
  const k = config.replicas;
  const replicaIds = Array.from({ length: k }, (_, i) => `r${i + 1}`);
  let volume: ReplicaVolume | ReplicatedVolume | undefined;
  let orchestrator: RebuildOrchestrator | undefined;
  let epoch = 0;
  /** Highest io_seq any replica reported at start: one below it is behind and must be rebuilt. */
  let highestAtStart = 0;
  const startup = new Map<string, ReplicaConnection>();
  const wake: { fn: (() => void) | undefined } = { fn: undefined };
  const volumeLog = logger.child({ component: 'volume' });
  const attachLate = (connection: ReplicaConnection): void => {
    const hello = connection.hello;
    if (volume instanceof ReplicatedVolume) {
      volume.attach(connection);
      if (hello.rebuildingSince !== undefined || hello.highestIoSeq < highestAtStart) {
        volume.markDegraded(hello.replicaId, hello.rebuildingSince !== undefined ? 'its rebuild was interrupted' : 'behind the other replicas');
      }
    } else {
      volume?.attach(connection);
    }
  };
  const listener = new ReplicaListener({
    logger: logger.child({ component: 'replicas' }),
    accept: (hello) => {
      if (hello.volumeUuid !== identity.uuid) {
        return { ok: false, reason: `replica ${hello.replicaId} belongs to volume ${hello.volumeUuid}, this target serves ${identity.uuid}` };
      }
      if (!replicaIds.includes(hello.replicaId)) return { ok: false, reason: `unknown replica id '${hello.replicaId}'` };
      if (volume !== undefined && hello.epoch > epoch) {
        return { ok: false, reason: `replica has seen epoch ${hello.epoch}, newer than this target's ${epoch}: another target took over` };
      }
      return volume !== undefined ? { ok: true, epoch } : { ok: true };
    },
    onConnection: (connection) => {
      if (volume === undefined) {
        const previous = startup.get(connection.hello.replicaId);
        if (previous !== undefined && previous !== connection) void previous.close();
        startup.set(connection.hello.replicaId, connection);
        wake.fn?.();
        return;
      }
      try {
        attachLate(connection);
        logger.info({ replica: connection.hello.replicaId }, 'replica connected');
      } catch (err) {
        logger.error({ err, replica: connection.hello.replicaId }, 'replica refused');
        void connection.close();
      }
    },
  });
  const replicaAddress = await listener.listen(config.replicaPort.host, config.replicaPort.port);
  const supervisor = new ReplicaSupervisor({
    logger: logger.child({ component: 'supervisor' }),
    restartDelayMs: config.restartDelayS * 1000,
    ...(events.onReplicaStart !== undefined ? { onStart: events.onReplicaStart } : {}),
  });
  const stopReplicas = async (): Promise<void> => {
    orchestrator?.stop();
    await supervisor.stop();
    await listener.close();
  };
  try {
    for (const [i, id] of replicaIds.entries()) {
      const device = join(config.dataDir, `replica-${i + 1}.img`);
      supervisor.start({
        id,
        device,
        args: [
          '--device', device, '--volume', volumeName, '--volume-uuid', identity.uuid, '--replica-id', id,
          '--target', `${replicaAddress.host.includes(':') ? `[${replicaAddress.host}]` : replicaAddress.host}:${replicaAddress.port}`,
          '--format', '--size', String(config.sizeBytes), '--block-size', String(config.blockSize),
          '--log-level', config.logLevel,
        ],
      });
    }
    const present = await collectStartupReplicas(k, startup, wake);
    // Fencing: every target start takes an epoch above any it or its replicas have seen.
    const saved = Number((await state.load('epoch'))?.toString() ?? '0') || 0;
    epoch = Math.max(saved, ...present.map((c) => c.hello.epoch)) + 1;
    await state.save('epoch', Buffer.from(String(epoch)));
    const capacityBytes = Math.min(...present.map((c) => c.hello.capacityBytes));
    const blockSize = present[0]!.hello.blockSize;
    if (BigInt(capacityBytes) !== config.sizeBytes) {
      logger.warn({ replicaBytes: capacityBytes, requestedBytes: config.sizeBytes.toString() },
        'the replicas were formatted with another size; serving their capacity');
    }
    highestAtStart = Math.max(...present.map((c) => c.hello.highestIoSeq));
    if (k === 1) {
      volume = new ReplicaVolume({ blockSize, capacityBytes, epoch, state, holdMs: config.replicaHoldS * 1000, logger: volumeLog });
      volume.attach(present[0]!);
    } else {
      const replicated = new ReplicatedVolume({
        blockSize, capacityBytes, epoch, replicaIds, state, holdMs: config.replicaHoldS * 1000, logger: volumeLog,
      });
      volume = replicated;
      for (const c of present) attachLate(c);
      orchestrator = new RebuildOrchestrator({
        volume: replicated,
        volumeUuid: identity.uuid,
        rateBytesPerSec: config.rebuildRateMiBs * 2 ** 20,
        logger: logger.child({ component: 'rebuild' }),
        ...(events.onRebuildComplete !== undefined ? { onComplete: events.onRebuildComplete } : {}),
      });
    }
    logger.info({ replicas: present.map((c) => c.hello.replicaId), epoch, highestIoSeq: highestAtStart }, 'volume assembled');
  } catch (err) {
    await stopReplicas();
    throw err;
  }
  const device = volume;
  const scsi = await ScsiTargetDevice.create({
    device,
    serial: identity.uuid.replace(/-/g, ''),
    logger: logger.child({ component: 'scsi' }),
  });
  const node = new TargetNode({
    iqn: config.iqn,
    scsi,
    ...(config.chap ? { chap: config.chap } : {}),
    ...(config.mutualChap ? { mutualChap: config.mutualChap } : {}),
    allowInitiators: config.allowInitiators,
    negotiation: DEFAULT_TARGET_CONFIG,
    portalGroupTag: 1,
    queueDepth: 128,
    maxSessions: 64,
    nopInIntervalMs: config.nopInIntervalS * 1000,
    nopInTimeoutMs: config.nopInTimeoutS * 1000,
    loginTimeoutMs: 30_000,
    logger,
  });
  const portal = new Portal(node, logger.child({ component: 'portal' }));
  const address = await portal.listen(config.portal.host, config.portal.port);
  let stopping: Promise<void> | undefined;
  return {
    portal: address,
    iqn: config.iqn,
    stop: () => {
      stopping ??= (async () => {
        await portal.close();
        await scsi.close();
        await device.close();
        await stopReplicas();
      })();
      return stopping;
    },
  };
}

async function main(): Promise<void> {
  const parsed = parseTargetConfig(process.argv.slice(2), process.env);
  if (!parsed.ok) {
    if (parsed.help) {
      process.stdout.write(`${parsed.error}\n`);
      process.exit(0);
    }
    process.stderr.write(`cstor-target: ${parsed.error}\n`);
    process.exit(64);
  }
  const config = parsed.config;
  const logger = createRootLogger({ level: config.logLevel, destination: 2 });
  let target: RunningTarget;
  try {
    target = await startTarget(config, logger, {
      onReplicaStart: (id, pid) => process.stdout.write(`replica ${id} pid ${pid}\n`),
      onRebuildComplete: (id, bytes, seconds) => process.stdout.write(`rebuild complete ${id} bytes=${bytes} seconds=${seconds.toFixed(1)}\n`),
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'EADDRINUSE' ? ` (--portal ${config.portal.host}:${config.portal.port} is already in use)`
      : e.code === 'EACCES' ? ' (permission denied)' : '';
    process.stderr.write(`cstor-target: cannot start: ${e.message}${hint}\n`);
    logger.fatal({ err }, 'start failed');
    process.exit(1);
  }
  const host = target.portal.host.includes(':') ? `[${target.portal.host}]` : target.portal.host;
  process.stdout.write(`ready iqn=${target.iqn} portal=${host}:${target.portal.port}\n`);
  logger.info({ iqn: target.iqn, portal: `${host}:${target.portal.port}`, sizeBytes: config.sizeBytes.toString(),
    blockSize: config.blockSize, dataDir: config.dataDir }, 'target ready');

  const shutdown = (signal: string): void => {
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => { logger.error('shutdown timed out'); process.exit(1); }, 15_000);
    force.unref();
    target.stop().then(() => process.exit(0), err => { logger.error({ err }, 'shutdown failed'); process.exit(1); });
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  // A bug in one connection's handling must not take the volume down silently: log it and keep serving.
  process.on('uncaughtException', err => logger.fatal({ err }, 'uncaught exception'));
  process.on('unhandledRejection', err => logger.error({ err }, 'unhandled rejection'));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  void main();
}
