// Decoded iSCSI PDUs (RFC 7143 section 11). Field names follow the RFC.
// Buffers in decoded PDUs are views into the receive buffer: the consumer copies what it keeps
// beyond the synchronous handling of the PDU.
// Sequence numbers are unsigned 32-bit numbers; LUN is the raw 8-byte field as a bigint.

import type { LoginStageValue } from './constants.js';

/** What every PDU carries after framing. */
export interface PduFrame {
  /** The 48-byte BHS (view). */
  readonly bhs: Buffer;
  /** Raw AHS bytes (view; empty when TotalAHSLength is 0). */
  readonly ahs: Buffer;
  /** Data segment without padding or digest (view; may be empty). */
  readonly data: Buffer;
}

export interface NopOut {
  readonly kind: 'NopOut';
  readonly immediate: boolean;
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  readonly data: Buffer;
}

export interface ScsiCommand {
  readonly kind: 'ScsiCommand';
  readonly immediate: boolean;
  readonly final: boolean;
  readonly read: boolean;
  readonly write: boolean;
  readonly attr: number;
  readonly lun: bigint;
  readonly itt: number;
  readonly expectedDataTransferLength: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  /** Full CDB: the 16 BHS bytes, extended by an Extended-CDB AHS when present (then CDB length = 16 + AHS CDB bytes). */
  readonly cdb: Buffer;
  /** From a Bidirectional Read Data Length AHS, when present. */
  readonly bidiReadLength?: number;
  /** Immediate data. */
  readonly data: Buffer;
}

export interface TaskManagementRequest {
  readonly kind: 'TaskManagementRequest';
  readonly immediate: boolean;
  readonly function: number;
  readonly lun: bigint;
  readonly itt: number;
  readonly referencedTaskTag: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  readonly refCmdSN: number;
  readonly expDataSN: number;
}

export interface LoginRequest {
  readonly kind: 'LoginRequest';
  readonly transit: boolean;
  readonly continue: boolean;
  readonly csg: LoginStageValue | 2;
  readonly nsg: LoginStageValue | 2;
  readonly versionMax: number;
  readonly versionMin: number;
  /** 6-byte ISID as a 48-bit number. */
  readonly isid: bigint;
  readonly tsih: number;
  readonly itt: number;
  readonly cid: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  readonly data: Buffer;
}

export interface TextRequest {
  readonly kind: 'TextRequest';
  readonly immediate: boolean;
  readonly final: boolean;
  readonly continue: boolean;
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  readonly data: Buffer;
}

export interface DataOut {
  readonly kind: 'DataOut';
  readonly final: boolean;
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly expStatSN: number;
  readonly dataSN: number;
  readonly bufferOffset: number;
  readonly data: Buffer;
}

export interface LogoutRequest {
  readonly kind: 'LogoutRequest';
  readonly immediate: boolean;
  readonly reason: number;
  readonly itt: number;
  readonly cid: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
}

export interface SnackRequest {
  readonly kind: 'SnackRequest';
  readonly type: number;
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly expStatSN: number;
  readonly begRun: number;
  readonly runLength: number;
}

export type InitiatorPdu =
  | NopOut | ScsiCommand | TaskManagementRequest | LoginRequest | TextRequest | DataOut | LogoutRequest | SnackRequest;

// ---- target → initiator ----

/** Fields every target PDU carries that the session fills in at send time. */
export interface TargetSequence {
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}

export interface NopIn extends TargetSequence {
  readonly kind: 'NopIn';
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly data: Buffer;
}

export interface ScsiResponse extends TargetSequence {
  readonly kind: 'ScsiResponse';
  readonly bidiOverflow: boolean;
  readonly bidiUnderflow: boolean;
  readonly overflow: boolean;
  readonly underflow: boolean;
  readonly response: number;
  readonly status: number;
  readonly itt: number;
  readonly expDataSN: number;
  readonly bidiReadResidualCount: number;
  readonly residualCount: number;
  /** Sense data (without the 2-byte SenseLength prefix; the encoder adds it). Empty when none. */
  readonly sense: Buffer;
}

export interface TaskManagementResponse extends TargetSequence {
  readonly kind: 'TaskManagementResponse';
  readonly response: number;
  readonly itt: number;
}

export interface LoginResponse extends TargetSequence {
  readonly kind: 'LoginResponse';
  readonly transit: boolean;
  readonly continue: boolean;
  readonly csg: LoginStageValue | 2;
  readonly nsg: LoginStageValue | 2;
  readonly versionMax: number;
  readonly versionActive: number;
  readonly isid: bigint;
  readonly tsih: number;
  readonly itt: number;
  /** class << 8 | detail */
  readonly status: number;
  readonly data: Buffer;
}

export interface TextResponse extends TargetSequence {
  readonly kind: 'TextResponse';
  readonly final: boolean;
  readonly continue: boolean;
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly data: Buffer;
}

export interface DataIn extends TargetSequence {
  readonly kind: 'DataIn';
  readonly final: boolean;
  readonly acknowledge: boolean;
  readonly overflow: boolean;
  readonly underflow: boolean;
  /** S bit: status present (then statSN/status/residual are meaningful). */
  readonly statusPresent: boolean;
  readonly status: number;
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly dataSN: number;
  readonly bufferOffset: number;
  readonly residualCount: number;
  readonly data: Buffer;
}

export interface LogoutResponse extends TargetSequence {
  readonly kind: 'LogoutResponse';
  readonly response: number;
  readonly itt: number;
  readonly time2Wait: number;
  readonly time2Retain: number;
}

export interface R2T extends TargetSequence {
  readonly kind: 'R2T';
  readonly lun: bigint;
  readonly itt: number;
  readonly ttt: number;
  readonly r2tSN: number;
  readonly bufferOffset: number;
  readonly desiredDataTransferLength: number;
}

export interface AsyncMessage extends TargetSequence {
  readonly kind: 'AsyncMessage';
  readonly lun: bigint;
  readonly asyncEvent: number;
  readonly asyncVCode: number;
  readonly parameter1: number;
  readonly parameter2: number;
  readonly parameter3: number;
  /** For SCSI async events: sense data (encoder adds SenseLength); else empty. */
  readonly data: Buffer;
}

export interface Reject extends TargetSequence {
  readonly kind: 'Reject';
  readonly reason: number;
  readonly dataSN: number;
  /** The rejected PDU's header (48 bytes). */
  readonly rejectedHeader: Buffer;
}

export type TargetPdu =
  | NopIn | ScsiResponse | TaskManagementResponse | LoginResponse | TextResponse | DataIn | LogoutResponse | R2T
  | AsyncMessage | Reject;

export type AnyPdu = InitiatorPdu | TargetPdu;
