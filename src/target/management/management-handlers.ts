// The management service's behaviour over the running volume: status with CStorVolume-like fields,
// grow, rebuild rate, eject, sessions. It sees the volume through the small ManagedVolume view that
// main.ts assembles, so it depends on neither the iSCSI nor the replica classes.
import {
  ManagementError,
  type ManagementHandlers,
  type RebuildProgress,
  type ReplicaMode,
  type ReplicaStatus,
  type Session,
  type VolumePhase,
} from '../../protocol/management/management-codec.js';
import type { ReplicaState, VolumeState } from '../volume/replicated-volume.js';

export interface ManagedReplica {
  readonly id: string;
  readonly mode: ReplicaState;
  readonly reason: string | undefined;
  readonly checkpointedIoSeq: number;
  readonly inflightReads: number;
  readonly inflightWrites: number;
  readonly inflightSyncs: number;
  /** ms since epoch of its current connection; undefined when offline. */
  readonly connectedAt: number | undefined;
  readonly address: string | undefined;
  readonly rebuild: RebuildProgress | undefined;
}

export interface ManagedVolume {
  readonly name: string;
  readonly uuid: string;
  readonly iqn: string;
  readonly portal: string;
  readonly startedAt: number;
  readonly replicationFactor: number;
  readonly consistencyFactor: number;
  epoch(): number;
  phase(): VolumeState;
  capacityBytes(): number;
  blockSize(): number;
  replicas(): readonly ManagedReplica[];
  /** Grows every in-sync replica, then the volume (SCSI raises CAPACITY DATA HAS CHANGED). */
  grow(capacityBytes: number): Promise<number>;
  rebuildRateMiBs(): number;
  setRebuildRateMiBs(mib: number): Promise<void>;
  /** Takes the replica out of the quorum; resolves with its mode afterwards. */
  eject(id: string, reason: string): Promise<ManagedReplica['mode']>;
  sessions(): readonly Session[];
}

const PHASE: Record<VolumeState, VolumePhase> = { healthy: 'Healthy', degraded: 'Degraded', offline: 'Offline' };
const MODE: Record<ReplicaState, ReplicaMode> = { healthy: 'Healthy', degraded: 'Degraded', rebuilding: 'Rebuilding', offline: 'Offline' };

export function managementHandlers(volume: ManagedVolume): ManagementHandlers {
  return {
    status: async () => {
      const now = Date.now();
      const replicas: ReplicaStatus[] = volume.replicas().map((r) => ({
        id: r.id,
        mode: MODE[r.mode],
        reason: r.reason ?? '',
        checkpointedIoSeq: r.checkpointedIoSeq,
        inflightReads: r.inflightReads,
        inflightWrites: r.inflightWrites,
        inflightSyncs: r.inflightSyncs,
        uptimeSeconds: r.connectedAt === undefined ? 0 : (now - r.connectedAt) / 1000,
        quorum: r.mode === 'healthy',
        address: r.address ?? '',
        ...(r.rebuild !== undefined ? { rebuild: r.rebuild } : {}),
      }));
      return {
        name: volume.name,
        uuid: volume.uuid,
        iqn: volume.iqn,
        phase: PHASE[volume.phase()],
        capacityBytes: volume.capacityBytes(),
        blockSize: volume.blockSize(),
        replicationFactor: volume.replicationFactor,
        consistencyFactor: volume.consistencyFactor,
        epoch: volume.epoch(),
        uptimeSeconds: (now - volume.startedAt) / 1000,
        portal: volume.portal,
        rebuildRateMibPerSec: volume.rebuildRateMiBs(),
        replicas,
      };
    },
    resize: async ({ capacityBytes }) => {
      const current = volume.capacityBytes();
      if (capacityBytes < current) {
        throw new ManagementError('FAILED_PRECONDITION', `shrinking is not supported: the volume has ${current} bytes, ${capacityBytes} were asked`);
      }
      if (capacityBytes % volume.blockSize() !== 0) {
        throw new ManagementError('INVALID_ARGUMENT', `${capacityBytes} bytes is not a multiple of the ${volume.blockSize()}-byte block size`);
      }
      if (capacityBytes === current) return { capacityBytes };
      if (volume.phase() === 'offline') throw new ManagementError('UNAVAILABLE', 'the volume is offline: fewer replicas in sync than the write quorum');
      return { capacityBytes: await volume.grow(capacityBytes) };
    },
    setRebuildRate: async ({ mibPerSec }) => {
      if (!Number.isFinite(mibPerSec) || mibPerSec < 0) throw new ManagementError('INVALID_ARGUMENT', `rate ${mibPerSec} MiB/s: expected 0 (unlimited) or more`);
      await volume.setRebuildRateMiBs(mibPerSec);
      return { mibPerSec: volume.rebuildRateMiBs() };
    },
    ejectReplica: async ({ id, reason }) => {
      const replica = volume.replicas().find((r) => r.id === id);
      if (replica === undefined) throw new ManagementError('NOT_FOUND', `no replica '${id}' (replicas: ${volume.replicas().map((r) => r.id).join(', ')})`);
      if (replica.mode === 'healthy' && volume.replicas().filter((r) => r.mode === 'healthy').length <= volume.consistencyFactor) {
        throw new ManagementError('FAILED_PRECONDITION',
          `ejecting ${id} would leave fewer in-sync replicas than the write quorum (${volume.consistencyFactor}): the volume would go offline`);
      }
      return { mode: MODE[await volume.eject(id, reason || 'ejected by an operator')] };
    },
    listSessions: async () => ({ sessions: [...volume.sessions()] }),
  };
}
