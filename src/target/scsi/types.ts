// The contract between a SCSI transport (iSCSI here) and SCSI command execution.
// SCSI execution knows nothing of iSCSI: an I_T nexus is an opaque identity plus a TransportID for reservations.

/** An I_T nexus (initiator port ↔ target port). */
export interface ItNexus {
  /** Unique, stable name of the initiator port, e.g. "iqn.x,i,0x<isid>" for iSCSI. */
  readonly initiatorPortName: string;
  /** Initiator device name (iSCSI InitiatorName), used by reservations' ALL_TG_PT and logs. */
  readonly initiatorName: string;
  /** SPC-4 TransportID of the initiator port (iSCSI format 01b), for PERSISTENT RESERVE IN READ FULL STATUS. */
  readonly transportId: Buffer;
  /** Relative target port identifier (1-based). */
  readonly relativeTargetPort: number;
}

export interface ScsiRequest {
  readonly nexus: ItNexus;
  /** 8-byte LUN field as sent; the SCSI target decodes it. */
  readonly lun: bigint;
  readonly cdb: Buffer;
  /** Transport-level task tag, unique per nexus while active (ITT for iSCSI). */
  readonly tag: number;
  /** SAM task attribute: 0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA. */
  readonly attr: number;
  /** Expected data transfer length from the initiator (bytes). */
  readonly expectedLength: number;
  /** Direction the initiator declared. */
  readonly direction: 'none' | 'read' | 'write' | 'bidi';
  /**
   * Data-out: the SCSI layer asks for it (after validating the CDB) and the transport collects it
   * (immediate/unsolicited data, R2Ts). Resolves with exactly `length` bytes (≤ expectedLength).
   * Rejects when `signal` aborts (the SCSI layer aborted the task) or the connection ends.
   */
  readonly fetchData: (length: number, signal: AbortSignal) => Promise<Buffer>;
}

export interface ScsiResult {
  /** SAM status byte (GOOD, CHECK CONDITION, ...). */
  readonly status: number;
  /** Data-in (length may differ from expectedLength: the transport computes residuals). */
  readonly data?: Buffer;
  /** Sense bytes when status is CHECK CONDITION. */
  readonly sense?: Buffer;
  /** Bytes of data-out the command consumed when it wanted less than expected (residual for writes). */
  readonly dataOutLength?: number;
  /** The task was aborted by task management: the transport sends no response for it. */
  readonly aborted?: boolean;
}

export const TmfResult = {
  Complete: 'complete',
  TaskDoesNotExist: 'task-does-not-exist',
  LunDoesNotExist: 'lun-does-not-exist',
  NotSupported: 'not-supported',
  Rejected: 'rejected',
} as const;
export type TmfResultValue = (typeof TmfResult)[keyof typeof TmfResult];

/** A SCSI target device: one or more LUNs behind one target port group. */
export interface ScsiTarget {
  /** Execute one command (any LUN; unknown LUNs answer per SPC-4). Never rejects: failures are CHECK CONDITION. */
  execute(request: ScsiRequest): Promise<ScsiResult>;
  /** Register/unregister an I_T nexus (login/logout) so unit attentions and reservations can track it. */
  addNexus(nexus: ItNexus): void;
  removeNexus(nexus: ItNexus): void;
  /**
   * Task management. Each resolves once every affected task has finished (their execute() promises
   * resolved with `aborted`), so the transport can answer the TMF after them.
   */
  abortTask(nexus: ItNexus, lun: bigint, tag: number): Promise<TmfResultValue>;
  abortTaskSet(nexus: ItNexus, lun: bigint): Promise<TmfResultValue>;
  clearTaskSet(nexus: ItNexus, lun: bigint): Promise<TmfResultValue>;
  logicalUnitReset(nexus: ItNexus, lun: bigint): Promise<TmfResultValue>;
  targetReset(nexus: ItNexus, cold: boolean): Promise<TmfResultValue>;
  close(): Promise<void>;
}
