#!/usr/bin/env node
// `npm start`: one LUN backed by a sparse file in --data-dir, served over iSCSI on --portal.
// Prints one line `ready iqn=<IQN> portal=<host>:<port>` on stdout when it accepts connections;
// pino JSON logs go to stderr.

import { join } from 'node:path';
import { parseTargetConfig, type TargetConfig } from './config.js';
import { createRootLogger, type Logger } from '../shared/logger.js';
import { FileBlockDevice } from './volume/file-device.js';
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

export async function startTarget(config: TargetConfig, logger: Logger): Promise<RunningTarget> {
  const identity = await loadOrCreateIdentity(config.dataDir);
  const device = await FileBlockDevice.open(join(config.dataDir, 'lun0.img'), {
    size: config.sizeBytes,
    blockSize: config.blockSize,
  });
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
    target = await startTarget(config, logger);
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
