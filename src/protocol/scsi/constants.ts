// SAM/SPC status codes, sense keys and the additional sense codes this target uses.

export const ScsiStatus = {
  Good: 0x00,
  CheckCondition: 0x02,
  ConditionMet: 0x04,
  Busy: 0x08,
  ReservationConflict: 0x18,
  TaskSetFull: 0x28,
  AcaActive: 0x30,
  TaskAborted: 0x40,
} as const;

export const SenseKey = {
  NoSense: 0x0,
  RecoveredError: 0x1,
  NotReady: 0x2,
  MediumError: 0x3,
  HardwareError: 0x4,
  IllegalRequest: 0x5,
  UnitAttention: 0x6,
  DataProtect: 0x7,
  BlankCheck: 0x8,
  CopyAborted: 0xa,
  AbortedCommand: 0xb,
  VolumeOverflow: 0xd,
  Miscompare: 0xe,
} as const;

/** Additional sense code + qualifier pairs as one 16-bit value (asc << 8 | ascq). */
export const Asc = {
  NoAdditionalSense: 0x0000,
  LogicalUnitNotReadyCauseNotReportable: 0x0400,
  LogicalUnitNotReadyInitializingRequired: 0x0402,
  LogicalUnitNotReadyManualIntervention: 0x0403,
  LogicalUnitCommunicationFailure: 0x0800,
  WriteError: 0x0c00,
  UnrecoveredReadError: 0x1100,
  MiscompareDuringVerify: 0x1d00,
  ParameterListLengthError: 0x1a00,
  InvalidCommandOperationCode: 0x2000,
  LbaOutOfRange: 0x2100,
  InvalidFieldInCdb: 0x2400,
  LogicalUnitNotSupported: 0x2500,
  InvalidFieldInParameterList: 0x2600,
  InvalidReleaseOfPersistentReservation: 0x2604,
  WriteProtected: 0x2700,
  PowerOnResetOrBusDeviceResetOccurred: 0x2900,
  PowerOnOccurred: 0x2901,
  ScsiBusResetOccurred: 0x2902,
  BusDeviceResetFunctionOccurred: 0x2903,
  ITNexusLossOccurred: 0x2907,
  ParametersChanged: 0x2a00,
  ModeParametersChanged: 0x2a01,
  ReservationsPreempted: 0x2a03,
  ReservationsReleased: 0x2a04,
  RegistrationsPreempted: 0x2a05,
  CapacityDataHasChanged: 0x2a09,
  CommandsClearedByAnotherInitiator: 0x2f00,
  CommandsClearedByPowerLossNotification: 0x2f01,
  SavingParametersNotSupported: 0x3900,
  MediumNotPresent: 0x3a00,
  ReportedLunsDataHasChanged: 0x3f0e,
  InternalTargetFailure: 0x4400,
  InvalidMessageError: 0x4900,
  OverlappedCommandsAttempted: 0x4e00,
  InsufficientRegistrationResources: 0x5504,
  NoSpaceLeft: 0x2707, // SPACE ALLOCATION FAILED WRITE PROTECT
  InvalidFieldInCommandInformationUnit: 0x0e03,
} as const;

export type SenseKeyValue = (typeof SenseKey)[keyof typeof SenseKey];
