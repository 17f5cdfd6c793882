#!/usr/bin/env node
// `npm start`: one LUN whose data lives in a replica process (a sparse file in --data-dir), served
// over iSCSI on --portal. Prints `replicas listening <host>:<port>` once the replica port is bound
// (--external-replicas: replicas r1..rK started elsewhere dial it), then `replica <id> pid <pid>` for
// each replica process it starts.
// Prints one line `ready iqn=<IQN> portal=<host>:<port>` on stdout when it accepts connections;
// pino JSON logs go to stderr.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadTargetConfig, type TargetConfig } from './config.js';
import { formatHostPort } from '../shared/cli-values.js';
import { createRootLogger, type Logger } from '../shared/logger.js';
import { StateDir } from './volume/state-dir.js';
import { ReplicaListener } from './volume/replica-listener.js';
import { ReplicaSupervisor } from './volume/replica-supervisor.js';
import { ReplicaVolume } from './volume/replica-volume.js';
import type { ReplicaConnection } from './volume/replica-connection.js';
import { ReplicatedVolume } from './volume/replicated-volume.js';
import { RebuildOrchestrator } from './volume/rebuild-orchestrator.js';
import { establishEpoch, fenceReplica } from './volume/epoch-fence.js';
import { TargetStateKeeper } from './volume/target-state-keeper.js';
import { loadOrCreateIdentity } from './volume/volume-identity.js';
import { ScsiTargetDevice } from './scsi/scsi-target.js';
import { TargetNode } from './iscsi/target-node.js';
import { Portal } from './iscsi/portal.js';
import { DEFAULT_TARGET_CONFIG } from '../protocol/iscsi/negotiation.js';
import { MeteredDevice } from './metrics/metered-device.js';
import { Operations } from './operations.js';
import { ReplicaStatusPoller } from './management/replica-status-poller.js';
import { VolumeView, type OperationalCounters } from './management/volume-view.js';
import { sessionInfo } from './iscsi/session-info.js';
import { ManagementError } from '../protocol/management/management-codec.js';
import { growReplicas, resizeReplica } from './volume/volume-grow.js';
import { errorMessage } from '../shared/errors.js';
import { judgeStartupReplicas, lateJoinerReason, type StartupJudgement } from './volume/startup-judgement.js';
import { onShutdownSignals } from '../shared/shutdown-signals.js';

export interface RunningTarget {
  readonly portal: { host: string; port: number };
  readonly iqn: string;
  stop(): Promise<void>;
}

/** Supervision output: each replica process started, and each finished rebuild. */
export interface TargetEvents {
  readonly onReplicaStart?: (id: string, pid: number) => void;
  readonly onRebuildComplete?: (id: string, bytes: number, seconds: number) => void;
  /** The replica port is bound (before any replica is waited for): port 0 resolved. */
  readonly onReplicaListening?: (host: string, port: number) => void;
}

const FIRST_REPLICA_TIMEOUT_MS = 60_000;
/** With k > 1: once a quorum is connected, how long start waits for the others before serving. */
const STARTUP_GRACE_MS = 10_000;

/**
 * Waits for the replicas present at start: all k, or a write quorum plus a grace period. Replicas
 * this target starts itself get a deadline; external ones (Kubernetes schedules them) are waited
 * for as long as it takes, with the target alive and reporting not-ready meanwhile.
 */
function collectStartupReplicas(k: number, majority: number, startup: Map<string, ReplicaConnection>, wake: { fn: (() => void) | undefined },
  timeoutMs: number, logger: Logger): Promise<ReplicaConnection[]> {
  const begin = Date.now();
  let lastReport = begin;
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
      } else if (now - begin > timeoutMs) {
        clearInterval(timer);
        wake.fn = undefined;
        reject(new Error(`${open.length} of ${k} replicas connected within ${timeoutMs / 1000} s; ${majority} are needed`));
      } else if (now - lastReport >= 30_000) {
        lastReport = now;
        logger.warn({ connected: [...startup.keys()], needed: majority, waitedSeconds: Math.round((now - begin) / 1000) }, 'waiting for replicas');
      }
    };
    const timer = setInterval(check, 100);
    wake.fn = check;
    check();
  });
}

/** Resize the connected replicas, then the volume (SCSI raises CAPACITY DATA HAS CHANGED). */
async function growVolume(volume: ReplicatedVolume | ReplicaVolume, capacityBytes: number, logger: Logger): Promise<number> {
  const replicas = volume instanceof ReplicatedVolume
    ? volume.replicaStates().flatMap((s) => {
      const c = volume.connectionOf(s.replicaId);
      return c === undefined || !c.isOpen ? [] : [{ id: s.replicaId, controlAddress: c.hello.controlAddress, inSync: s.state === 'healthy' }];
    })
    : volume.connection === undefined ? [] : [{ id: volume.connection.hello.replicaId, controlAddress: volume.connection.hello.controlAddress, inSync: true }];
  if (!replicas.some((r) => r.inSync)) throw new Error('no replica in sync to grow');
  await growReplicas({ replicas, capacityBytes, logger: logger.child({ component: 'resize' }) });
  volume.grow(capacityBytes);
  logger.info({ capacityBytes, replicas: replicas.map((r) => r.id) }, 'volume resized');
  return capacityBytes;
}

export async function startTarget(config: TargetConfig, logger: Logger, events: TargetEvents = {}): Promise<RunningTarget> {
  const identity = await loadOrCreateIdentity(config.dataDir, config.volumeUuid);
  const state = new StateDir(join(config.dataDir, 'state'));
  const volumeName = config.volumeName;
  const k = config.replicas;
  const replicaIds = config.replicaIds;
  const writeQuorum = config.writeQuorum;
  const startedAt = Date.now();
  const ops = new Operations(config, logger);
  // Liveness from the first moment: under Kubernetes the replicas may take a while to be scheduled.
  await ops.startHealth();
  const counters: OperationalCounters = {
    replicaConnectionErrors: 0, rebuildsCompleted: 0, rebuildsFailed: 0, rebuildBytes: 0, iscsiRejects: () => 0,
  };
  /** When each replica's current data connection was made. */
  const connectedAt = new Map<string, number>();
  /** Capacity a returning replica was resized to on its way in (it missed a grow). */
  const resizedTo = new Map<string, number>();
  let stoppingTarget = false;
  /** Connections the target closed itself (a duplicate, a refusal, left out of the fence): not errors. */
  const closedByTarget = new WeakSet<ReplicaConnection>();
  const closeOnPurpose = (c: ReplicaConnection): void => {
    closedByTarget.add(c);
    void c.close();
  };
  let volume: ReplicaVolume | ReplicatedVolume | undefined;
  let orchestrator: RebuildOrchestrator | undefined;
  let epoch = 0;
  /** Persistent SCSI state (reservations), kept on the replicas. */
  let targetState: TargetStateKeeper | undefined;
  /** How the copies were judged at start: the reference for replicas that join later. */
  let atStart: StartupJudgement | undefined;
  const startup = new Map<string, ReplicaConnection>();
  const wake: { fn: (() => void) | undefined } = { fn: undefined };
  const volumeLog = logger.child({ component: 'volume' });
  /** Attach a replica, degraded first when the start's judgement says it must be rebuilt. */
  const attachLate = (connection: ReplicaConnection): void => {
    const hello = connection.hello;
    if (volume instanceof ReplicatedVolume) {
      const rebuild = atStart === undefined ? undefined : lateJoinerReason(hello, atStart);
      volume.attach(connection, resizedTo.get(hello.replicaId) ?? hello.capacityBytes);
      resizedTo.delete(hello.replicaId);
      if (rebuild !== undefined) volume.markDegraded(hello.replicaId, rebuild);
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
      if (volume === undefined) return { ok: true };
      // A late replica persists this target's epoch before it joins the write path, and grows to
      // the volume's size if it was away during a resize.
      const volumeBytes = Number(volume.blockCount) * volume.blockSize;
      return fenceReplica(hello.controlAddress, epoch).then(
        async () => {
          if (hello.capacityBytes < volumeBytes) {
            resizedTo.set(hello.replicaId, await resizeReplica(hello.controlAddress, volumeBytes));
          }
          return { ok: true as const, epoch };
        },
        (err: unknown) => ({ ok: false as const, reason: `cannot persist epoch ${epoch}: ${errorMessage(err)}` }))
        .catch((err: unknown) => ({ ok: false as const, reason: `cannot grow to ${volumeBytes} bytes: ${errorMessage(err)}` }));
    },
    onConnection: (connection) => {
      const id = connection.hello.replicaId;
      connectedAt.set(id, Date.now());
      connection.onClose(() => {
        if (!stoppingTarget && !closedByTarget.has(connection)) counters.replicaConnectionErrors++;
      });
      if (volume === undefined) {
        const previous = startup.get(connection.hello.replicaId);
        if (previous !== undefined && previous !== connection) closeOnPurpose(previous);
        startup.set(connection.hello.replicaId, connection);
        wake.fn?.();
        return;
      }
      try {
        attachLate(connection);
        logger.info({ replica: connection.hello.replicaId }, 'replica connected');
      } catch (err) {
        logger.error({ err, replica: connection.hello.replicaId }, 'replica refused');
        closeOnPurpose(connection);
      }
    },
  });
  const replicaAddress = await listener.listen(config.replicaPort.host, config.replicaPort.port);
  const replicaHostPort = formatHostPort(replicaAddress.host, replicaAddress.port);
  // External replicas (a StatefulSet) need the port and the volume uuid to dial in; so do tests with port 0.
  logger.info({ address: replicaHostPort, volumeUuid: identity.uuid, external: config.externalReplicas, replicas: replicaIds },
    'replica port listening');
  events.onReplicaListening?.(replicaAddress.host, replicaAddress.port);
  const supervisor = new ReplicaSupervisor({
    logger: logger.child({ component: 'supervisor' }),
    restartDelayMs: config.restartDelayS * 1000,
    ...(events.onReplicaStart !== undefined ? { onStart: events.onReplicaStart } : {}),
  });
  const stopReplicas = async (): Promise<void> => {
    stoppingTarget = true;
    orchestrator?.stop();
    await supervisor.stop();
    await listener.close();
  };
  try {
    // External mode: r1..rK are started elsewhere and dial in; collectStartupReplicas waits for them.
    for (const [i, id] of config.externalReplicas ? [] : replicaIds.entries()) {
      const device = join(config.dataDir, `replica-${i + 1}.img`);
      supervisor.start({
        id,
        device,
        args: [
          '--device', device, '--volume', volumeName, '--volume-uuid', identity.uuid, '--replica-id', id,
          '--target', replicaHostPort,
          '--format', '--size', String(config.sizeBytes), '--block-size', String(config.blockSize),
          '--log-level', config.logLevel,
        ],
      });
    }
    const collected = await collectStartupReplicas(k, writeQuorum, startup, wake,
      config.externalReplicas ? Number.POSITIVE_INFINITY : FIRST_REPLICA_TIMEOUT_MS, volumeLog);
    // Fencing: every target start takes an epoch above any it or its replicas have seen, and a write
    // quorum persists it before any I/O; replicas that did not are dropped (they redial and are fenced).
    const saved = Number((await state.load('epoch'))?.toString() ?? '0') || 0;
    const fence = await establishEpoch({ connections: collected, writeQuorum, floor: saved, logger: volumeLog });
    epoch = fence.epoch;
    await state.save('epoch', Buffer.from(String(epoch)));
    const present = [...fence.fenced];
    targetState = new TargetStateKeeper({ epoch, writeQuorum, initial: fence.targetState, logger: volumeLog });
    const capacityBytes = Math.min(...present.map((c) => c.hello.capacityBytes));
    const blockSize = present[0]!.hello.blockSize;
    if (BigInt(capacityBytes) !== config.sizeBytes) {
      logger.warn({ replicaBytes: capacityBytes, requestedBytes: config.sizeBytes.toString() },
        'the replicas were formatted with another size; serving their capacity');
    }
    const judgement = judgeStartupReplicas(present.map((c) => c.hello));
    atStart = judgement;
    if (k === 1) {
      volume = new ReplicaVolume({ blockSize, capacityBytes, epoch, targetState, holdMs: config.replicaHoldS * 1000, logger: volumeLog });
      volume.attach(present[0]!);
    } else {
      const replicated = new ReplicatedVolume({
        blockSize, capacityBytes, epoch, replicaIds, targetState, writeQuorum, ioDeadlineMs: config.replicaTimeoutS * 1000,
        holdMs: config.replicaHoldS * 1000, logger: volumeLog,
      });
      volume = replicated;
      if (judgement.unproven) {
        volumeLog.warn({ highestIoSeq: judgement.highestIoSeq, replicas: present.map((c) => ({ id: c.hello.replicaId, completeIoSeq: c.hello.completeIoSeq })) },
          'no replica is provably complete (all stopped with writes in flight): serving the ones with the highest io_seq');
      }
      for (const c of present) attachLate(c);
      orchestrator = new RebuildOrchestrator({
        volume: replicated,
        volumeUuid: identity.uuid,
        rateBytesPerSec: config.rebuildRateMiBs * 2 ** 20,
        adaptive: config.rebuildAdaptive !== false,
        logger: logger.child({ component: 'rebuild' }),
        onFailed: () => { counters.rebuildsFailed++; },
        onComplete: (id, bytes, seconds) => {
          counters.rebuildsCompleted++;
          counters.rebuildBytes += bytes;
          events.onRebuildComplete?.(id, bytes, seconds);
        },
      });
    }
    // Connected while the epoch was being established, or refused it: they redial and are fenced then.
    for (const c of startup.values()) if (!present.includes(c)) closeOnPurpose(c);
    logger.info({ replicas: present.map((c) => c.hello.replicaId), epoch, highestIoSeq: judgement.highestIoSeq }, 'volume assembled');
  } catch (err) {
    await stopReplicas();
    await ops.close();
    throw err;
  }
  const device = volume;
  const scsi = await ScsiTargetDevice.create({
    device: new MeteredDevice(device, ops.ioObserver),
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
  counters.iscsiRejects = () => node.stats.rejectsSent;
  const portal = new Portal(node, logger.child({ component: 'portal' }));
  const address = await portal.listen(config.portal.host, config.portal.port);
  const portalText = formatHostPort(address.host, address.port);
  const poller = new ReplicaStatusPoller({
    addresses: () => {
      const out = new Map<string, string>();
      for (const id of replicaIds) {
        const c = device instanceof ReplicatedVolume ? device.connectionOf(id) : device.connection;
        if (c !== undefined && c.isOpen) out.set(id, c.hello.controlAddress);
      }
      return out;
    },
    logger: logger.child({ component: 'status-poller' }),
  });
  const view = new VolumeView({
    name: volumeName, uuid: identity.uuid, iqn: config.iqn, portal: portalText, startedAt, replicaIds, writeQuorum,
    epoch: () => epoch,
    volume: device,
    orchestrator,
    connectedAt: (id) => connectedAt.get(id),
    poller,
    counters,
    sessions: () => [...node.sessions()].filter((s) => s.sessionType === 'Normal').map(sessionInfo),
    grow: (bytes) => growVolume(device, bytes, logger),
    rebuildRate: {
      get: () => (orchestrator?.rateCapBytesPerSec ?? config.rebuildRateMiBs * 2 ** 20) / 2 ** 20,
      set: async (mib) => {
        if (orchestrator === undefined) throw new ManagementError('FAILED_PRECONDITION', 'a single-replica volume has no rebuilds');
        orchestrator.setRateCap(mib * 2 ** 20);
      },
    },
    eject: async (id, reason) => {
      if (!(device instanceof ReplicatedVolume)) throw new ManagementError('FAILED_PRECONDITION', 'a single-replica volume cannot eject its replica');
      device.markDegraded(id, reason);
      return device.replicaStates().find((r) => r.replicaId === id)?.state ?? 'offline';
    },
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await ops.close();
      poller.close();
      await portal.close();
      await scsi.close();
      await device.close();
      targetState?.close();
      await stopReplicas();
    })();
    return stopping;
  };
  try {
    await ops.attach(view, config.iqn, portalText);
  } catch (err) {
    await stop();
    throw err;
  }
  return { portal: address, iqn: config.iqn, stop };
}

async function main(): Promise<void> {
  const parsed = loadTargetConfig(process.argv.slice(2), process.env, (path) => readFileSync(path, 'utf8'));
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
      onReplicaListening: (host, port) => process.stdout.write(`replicas listening ${formatHostPort(host, port)}\n`),
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'EADDRINUSE' ? ` (--portal ${config.portal.host}:${config.portal.port} is already in use)`
      : e.code === 'EACCES' ? ' (permission denied)' : '';
    process.stderr.write(`cstor-target: cannot start: ${e.message}${hint}\n`);
    logger.fatal({ err }, 'start failed');
    process.exit(1);
  }
  const portal = formatHostPort(target.portal.host, target.portal.port);
  process.stdout.write(`ready iqn=${target.iqn} portal=${portal}\n`);
  logger.info({ iqn: target.iqn, portal, sizeBytes: config.sizeBytes.toString(),
    blockSize: config.blockSize, dataDir: config.dataDir }, 'target ready');

  const shutdown = (signal: string): void => {
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => { logger.error('shutdown timed out'); process.exit(1); }, 15_000);
    force.unref();
    target.stop().then(() => process.exit(0), err => { logger.error({ err }, 'shutdown failed'); process.exit(1); });
  };
  onShutdownSignals(shutdown, (signal) => logger.info({ signal }, 'already shutting down'));
  // A bug in one connection's handling must not take the volume down silently: log it and keep serving.
  process.on('uncaughtException', err => logger.fatal({ err }, 'uncaught exception'));
  process.on('unhandledRejection', err => logger.error({ err }, 'unhandled rejection'));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  void main();
}
