// Errors of the iSCSI session layer (above PDU framing), with ONE mapping to the Reject reason the
// initiator sees and whether the connection survives. Framing errors live in src/protocol/iscsi/errors.ts.

import { RejectReason, type RejectReasonValue } from '../../protocol/iscsi/constants.js';

export const IscsiTargetErrorCode = {
  UnexpectedData: 'ISCSI_TGT_UNEXPECTED_DATA',
  DataBeyondExpected: 'ISCSI_TGT_DATA_BEYOND_EXPECTED',
  UnsolicitedDataNotAllowed: 'ISCSI_TGT_UNSOLICITED_DATA',
  DataSnMismatch: 'ISCSI_TGT_DATASN_MISMATCH',
  BadBufferOffset: 'ISCSI_TGT_BAD_BUFFER_OFFSET',
  UnknownTtt: 'ISCSI_TGT_UNKNOWN_TTT',
  UnknownItt: 'ISCSI_TGT_UNKNOWN_ITT',
  DuplicateItt: 'ISCSI_TGT_DUPLICATE_ITT',
  NotAllowedInPhase: 'ISCSI_TGT_NOT_ALLOWED_IN_PHASE',
  NotAllowedInDiscovery: 'ISCSI_TGT_NOT_ALLOWED_IN_DISCOVERY',
  SnackNotSupported: 'ISCSI_TGT_SNACK_NOT_SUPPORTED',
  TextTooLong: 'ISCSI_TGT_TEXT_TOO_LONG',
  BadText: 'ISCSI_TGT_BAD_TEXT',
  TooManyTasks: 'ISCSI_TGT_TOO_MANY_TASKS',
} as const;
export type IscsiTargetErrorCodeValue = (typeof IscsiTargetErrorCode)[keyof typeof IscsiTargetErrorCode];

export class IscsiTargetError extends Error {
  readonly code: IscsiTargetErrorCodeValue;
  constructor(code: IscsiTargetErrorCodeValue, message: string) {
    super(message);
    this.name = 'IscsiTargetError';
    this.code = code;
  }
}

interface Disposition {
  readonly reason: RejectReasonValue;
  /**
   * Drop the connection after the Reject. Errors confined to one task (its Data-Out stream) keep the
   * connection: the task ends and the initiator fails it on the Reject.
   */
  readonly drop: boolean;
}

const dispositions: Record<IscsiTargetErrorCodeValue, Disposition> = {
  ISCSI_TGT_UNEXPECTED_DATA: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_DATA_BEYOND_EXPECTED: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_UNSOLICITED_DATA: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_DATASN_MISMATCH: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_BAD_BUFFER_OFFSET: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_UNKNOWN_TTT: { reason: RejectReason.InvalidPduField, drop: false },
  ISCSI_TGT_UNKNOWN_ITT: { reason: RejectReason.InvalidPduField, drop: false },
  ISCSI_TGT_DUPLICATE_ITT: { reason: RejectReason.TaskInProgress, drop: false },
  ISCSI_TGT_NOT_ALLOWED_IN_PHASE: { reason: RejectReason.ProtocolError, drop: true },
  ISCSI_TGT_NOT_ALLOWED_IN_DISCOVERY: { reason: RejectReason.ProtocolError, drop: true },
  ISCSI_TGT_SNACK_NOT_SUPPORTED: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_TEXT_TOO_LONG: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_BAD_TEXT: { reason: RejectReason.ProtocolError, drop: false },
  ISCSI_TGT_TOO_MANY_TASKS: { reason: RejectReason.ImmediateCommandReject, drop: false },
};

export function dispositionFor(code: IscsiTargetErrorCodeValue): Disposition {
  return dispositions[code];
}
