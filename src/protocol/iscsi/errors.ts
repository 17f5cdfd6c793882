// Protocol errors raised while framing or decoding PDUs, and how the connection reacts to each.
import { RejectReason, type RejectReasonValue } from './constants.js';

export const IscsiErrorCode = {
  HeaderDigest: 'ISCSI_ERR_HEADER_DIGEST',
  DataDigest: 'ISCSI_ERR_DATA_DIGEST',
  DataSegmentTooLong: 'ISCSI_ERR_DATA_SEGMENT_TOO_LONG',
  UnknownOpcode: 'ISCSI_ERR_UNKNOWN_OPCODE',
  InvalidField: 'ISCSI_ERR_INVALID_FIELD',
  UnexpectedData: 'ISCSI_ERR_UNEXPECTED_DATA',
  AhsInvalid: 'ISCSI_ERR_AHS_INVALID',
  AhsTooLong: 'ISCSI_ERR_AHS_TOO_LONG',
} as const;
export type IscsiErrorCodeValue = (typeof IscsiErrorCode)[keyof typeof IscsiErrorCode];

// Only a header digest error loses framing: DataSegmentLength itself can no longer be trusted
// (RFC 7143 7.8: the connection must be dropped). Every other error leaves the byte stream in sync.
const FATAL: ReadonlySet<IscsiErrorCodeValue> = new Set([IscsiErrorCode.HeaderDigest]);

const REJECT_REASON: { readonly [K in IscsiErrorCodeValue]: RejectReasonValue | undefined } = {
  ISCSI_ERR_HEADER_DIGEST: undefined,
  ISCSI_ERR_DATA_DIGEST: RejectReason.DataDigestError,
  ISCSI_ERR_DATA_SEGMENT_TOO_LONG: RejectReason.ProtocolError,
  ISCSI_ERR_UNKNOWN_OPCODE: RejectReason.CommandNotSupported,
  ISCSI_ERR_INVALID_FIELD: RejectReason.InvalidPduField,
  ISCSI_ERR_UNEXPECTED_DATA: RejectReason.ProtocolError,
  ISCSI_ERR_AHS_INVALID: RejectReason.InvalidPduField,
  ISCSI_ERR_AHS_TOO_LONG: RejectReason.ProtocolError,
};

/** The Reject reason to send for an error; undefined means no Reject: drop the connection. */
export function rejectReasonFor(code: IscsiErrorCodeValue): RejectReasonValue | undefined {
  return REJECT_REASON[code];
}

export function isFatalCode(code: IscsiErrorCodeValue): boolean {
  return FATAL.has(code);
}

export interface IscsiProtocolErrorOptions {
  /** The offending PDU's BHS; copied, since the reader's buffers are reused. */
  readonly header?: Buffer;
  /** Overrides the code's default fatality. */
  readonly fatal?: boolean;
}

export class IscsiProtocolError extends Error {
  readonly code: IscsiErrorCodeValue;
  /** Framing is lost: the connection must be dropped, no Reject is possible. */
  readonly fatal: boolean;
  /** A copy of the 48-byte BHS of the offending PDU (the Reject data segment), when known. */
  readonly header: Buffer | undefined;

  constructor(code: IscsiErrorCodeValue, message: string, options?: IscsiProtocolErrorOptions) {
    super(message);
    this.name = 'IscsiProtocolError';
    this.code = code;
    this.fatal = options?.fatal ?? FATAL.has(code);
    const h = options?.header;
    this.header = h === undefined ? undefined : Buffer.from(h.subarray(0, 48));
  }
}
