// RFC 7143 constants as `as const` maps (erasable; no enums).

export const BHS_LENGTH = 48;
export const DIGEST_LENGTH = 4;

/** Opcodes, initiator → target. */
export const InitiatorOpcode = {
  NopOut: 0x00,
  ScsiCommand: 0x01,
  TaskManagementRequest: 0x02,
  LoginRequest: 0x03,
  TextRequest: 0x04,
  DataOut: 0x05,
  LogoutRequest: 0x06,
  SnackRequest: 0x10,
} as const;

/** Opcodes, target → initiator. */
export const TargetOpcode = {
  NopIn: 0x20,
  ScsiResponse: 0x21,
  TaskManagementResponse: 0x22,
  LoginResponse: 0x23,
  TextResponse: 0x24,
  DataIn: 0x25,
  LogoutResponse: 0x26,
  R2T: 0x31,
  AsyncMessage: 0x32,
  Reject: 0x3f,
} as const;

export type InitiatorOpcodeValue = (typeof InitiatorOpcode)[keyof typeof InitiatorOpcode];
export type TargetOpcodeValue = (typeof TargetOpcode)[keyof typeof TargetOpcode];

/** Reject reasons (RFC 7143 11.17.1). */
export const RejectReason = {
  DataDigestError: 0x02,
  SnackReject: 0x03,
  ProtocolError: 0x04,
  CommandNotSupported: 0x05,
  ImmediateCommandReject: 0x06,
  TaskInProgress: 0x07,
  InvalidDataAck: 0x08,
  InvalidPduField: 0x09,
  LongOperationReject: 0x0a,
  DeprecatedNegotiationReset: 0x0b,
  WaitingForLogout: 0x0c,
} as const;
export type RejectReasonValue = (typeof RejectReason)[keyof typeof RejectReason];

/** Login status class/detail as one 16-bit value (class << 8 | detail), RFC 7143 11.13.5. */
export const LoginStatus = {
  Success: 0x0000,
  TargetMovedTemporarily: 0x0101,
  TargetMovedPermanently: 0x0102,
  InitiatorError: 0x0200,
  AuthenticationFailure: 0x0201,
  AuthorizationFailure: 0x0202,
  NotFound: 0x0203,
  TargetRemoved: 0x0204,
  UnsupportedVersion: 0x0205,
  TooManyConnections: 0x0206,
  MissingParameter: 0x0207,
  CantIncludeInSession: 0x0208,
  SessionTypeNotSupported: 0x0209,
  SessionDoesNotExist: 0x020a,
  InvalidDuringLogin: 0x020b,
  TargetError: 0x0300,
  ServiceUnavailable: 0x0301,
  OutOfResources: 0x0302,
} as const;
export type LoginStatusValue = (typeof LoginStatus)[keyof typeof LoginStatus];

/** Login stages (CSG/NSG). */
export const LoginStage = {
  Security: 0,
  Operational: 1,
  FullFeature: 3,
} as const;
export type LoginStageValue = 0 | 1 | 3;

/** Task management functions (RFC 7143 11.5.1). */
export const TmfFunction = {
  AbortTask: 1,
  AbortTaskSet: 2,
  ClearAca: 3,
  ClearTaskSet: 4,
  LogicalUnitReset: 5,
  TargetWarmReset: 6,
  TargetColdReset: 7,
  TaskReassign: 8,
} as const;

/** Task management responses (RFC 7143 11.6.1). */
export const TmfResponse = {
  FunctionComplete: 0,
  TaskDoesNotExist: 1,
  LunDoesNotExist: 2,
  TaskStillAllegiant: 3,
  TaskAllegianceReassignmentNotSupported: 4,
  FunctionNotSupported: 5,
  FunctionAuthorizationFailed: 6,
  FunctionRejected: 255,
} as const;

/** SCSI Response "Response" field. */
export const ScsiServiceResponse = {
  CommandCompleted: 0x00,
  TargetFailure: 0x01,
} as const;

/** Logout reason codes and responses (RFC 7143 11.14.1, 11.15.1). */
export const LogoutReason = {
  CloseSession: 0,
  CloseConnection: 1,
  RemoveConnectionForRecovery: 2,
} as const;
export const LogoutResponseCode = {
  Success: 0,
  CidNotFound: 1,
  RecoveryNotSupported: 2,
  CleanupFailed: 3,
} as const;

/** Async events (RFC 7143 11.9.1). */
export const AsyncEvent = {
  ScsiAsyncEvent: 0,
  LogoutRequest: 1,
  DropConnection: 2,
  DropAllConnections: 3,
  RequestNegotiation: 4,
  ChapChallenge: 5,
  VendorSpecific: 255,
} as const;

/** AHS types. */
export const AhsType = {
  ExtendedCdb: 1,
  BidirectionalReadDataLength: 2,
} as const;

export const RESERVED_TAG = 0xffff_ffff;
