// What operators and Kubernetes talk to, besides iSCSI: the metrics/health HTTP port (up from the
// first moment, so liveness holds while the target waits for its replicas), and once the volume is
// assembled, the gRPC management service and the endpoints file tools use to find it.
import { rm, writeFile, rename, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.js';
import type { TargetConfig } from './config.js';
import { createVolumeMetrics, type VolumeMetricsSource } from './metrics/volume-metrics.js';
import type { IoObserver } from './metrics/metered-device.js';
import { MetricsServer } from './metrics/metrics-server.js';
import { ManagementServer } from './management/management-server.js';
import { managementHandlers } from './management/management-handlers.js';
import type { VolumeView } from './management/volume-view.js';
import { ENDPOINTS_FILE, formatEndpoints } from '../protocol/management/endpoints.js';
import { formatHostPort } from '../shared/cli-values.js';

const hostPort = (a: { host: string; port: number }): string => formatHostPort(a.host, a.port);


/** Before the volume exists: offline, no replicas, nothing counted. */
const UNASSEMBLED: Omit<VolumeMetricsSource, 'volumeName'> = {
  sizeBytes: () => 0,
  blockSize: () => 0,
  phase: () => 'offline',
  replicas: () => [],
  rebuildsRunning: () => [],
  counters: () => ({ rebuildsCompleted: 0, rebuildsFailed: 0, rebuildBytes: 0, replicaConnectionErrors: 0, readRepairs: 0, checksumMismatches: 0, iscsiRejects: 0 }),
};

export class Operations {
  readonly #config: TargetConfig;
  readonly #logger: Logger;
  #source: VolumeMetricsSource;
  readonly #metrics;
  #metricsServer: MetricsServer | undefined;
  #metricsAddress: string | undefined;
  #management: ManagementServer | undefined;
  #endpointsFile: string | undefined;

  constructor(config: TargetConfig, logger: Logger) {
    this.#config = config;
    this.#logger = logger;
    this.#source = { volumeName: config.volumeName, ...UNASSEMBLED };
    // Every source call goes through #source, so assembling the volume later swaps what is read.
    const s = (): VolumeMetricsSource => this.#source;
    this.#metrics = createVolumeMetrics({
      volumeName: config.volumeName,
      sizeBytes: () => s().sizeBytes(),
      blockSize: () => s().blockSize(),
      phase: () => s().phase(),
      replicas: () => s().replicas(),
      rebuildsRunning: () => s().rebuildsRunning(),
      counters: () => s().counters(),
    });
  }

  /** Counts each I/O into the metrics (MeteredDevice's observer). */
  get ioObserver(): IoObserver {
    return this.#metrics.observer;
  }

  /** Starts /metrics, /healthz, /readyz (not ready until a volume is attached and not Offline). */
  async startHealth(): Promise<void> {
    const port = this.#config.metricsPort;
    if (port === undefined) return;
    const server = new MetricsServer({
      registry: this.#metrics.registry,
      notReadyReason: () => {
        if (this.#source.sizeBytes() === 0) return 'the volume is not assembled yet (waiting for replicas)';
        return this.#source.phase() === 'offline' ? 'the volume is offline: fewer replicas in sync than the write quorum' : undefined;
      },
      logger: this.#logger.child({ component: 'metrics' }),
    });
    let bound;
    try {
      bound = await server.listen(port.host, port.port);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // The message names the flag; no errno code, so main does not blame --portal.
      throw new Error(`--metrics-port ${hostPort(port)}: ${e.code === 'EADDRINUSE' ? 'already in use' : e.message} (use another port or 'off')`);
    }
    this.#metricsServer = server;
    this.#metricsAddress = hostPort(bound);
    this.#logger.info({ address: this.#metricsAddress }, 'metrics and health listening');
  }

  /** The volume is assembled and serving: metrics read it, management starts, tools can find us. */
  async attach(view: VolumeView, iqn: string, portal: string): Promise<void> {
    this.#source = view.metricsSource();
    const management = new ManagementServer(managementHandlers(view.managed()), this.#logger.child({ component: 'management' }));
    const port = this.#config.managementPort;
    let bound;
    try {
      bound = await management.listen(port.host, port.port);
    } catch (err) {
      throw new Error(`--management-port ${hostPort(port)}: ${(err as Error).message}`);
    }
    this.#management = management;
    const dir = join(this.#config.dataDir, 'state');
    await mkdir(dir, { recursive: true });
    const file = join(dir, ENDPOINTS_FILE);
    // Written whole then renamed: a tool never reads half a file.
    await writeFile(`${file}.tmp`, formatEndpoints({
      pid: process.pid, iqn, management: hostPort(bound), portal,
      ...(this.#metricsAddress !== undefined ? { metrics: this.#metricsAddress } : {}),
    }));
    await rename(`${file}.tmp`, file);
    this.#endpointsFile = file;
    this.#logger.info({ management: hostPort(bound) }, 'management listening');
  }

  async close(): Promise<void> {
    if (this.#endpointsFile !== undefined) await rm(this.#endpointsFile, { force: true });
    await this.#management?.close();
    await this.#metricsServer?.close();
  }
}
