// The SCSI target device behind one iSCSI target: decodes the LUN field, routes commands and task
// management to the logical unit (LUN 0 only for now), and answers for LUNs that don't exist as SPC-4
// requires (INQUIRY with peripheral qualifier 011b, REPORT LUNS, REQUEST SENSE with LOGICAL UNIT NOT
// SUPPORTED sense, everything else CHECK CONDITION).
import { CdbUsage, Op, checkReservedBits, decodeInquiry, decodeLun, decodeRequestSense } from '../../protocol/scsi/cdb.js';
import { Asc, ScsiStatus, SenseKey } from '../../protocol/scsi/constants.js';
import { encodeUnsupportedLunInquiry, naaFromSerial } from '../../protocol/scsi/inquiry.js';
import { CheckCondition, buildSense } from '../../protocol/scsi/sense.js';
import type { Logger } from '../../shared/logger.js';
import type { BlockDevice } from '../volume/block-device.js';
import { dataIn, type Identity, type Limits } from './command.js';
import { LogicalUnit, type LogicalUnitOptions } from './logical-unit.js';
import { reportLunsData } from './spc.js';
import { TmfResult, type ItNexus, type ScsiRequest, type ScsiResult, type ScsiTarget, type TmfResultValue } from './types.js';

export interface ScsiTargetDeviceOptions {
  readonly device: BlockDevice;
  /** Unit serial number (VPD 0x80): stable across restarts, derived by the caller from the volume identity. */
  readonly serial: string;
  /** 16-byte NAA designator; default: NAA 6 from ieeeCompanyId and a hash of the serial. */
  readonly naa?: Buffer;
  /** IEEE company ID (OUI) for the derived NAA 6 designator. */
  readonly ieeeCompanyId?: number;
  readonly vendor?: string;
  readonly product?: string;
  readonly revision?: string;
  /** SPC-4 protocol identifier for port designators in VPD 0x83 (default 5, iSCSI). */
  readonly protocolIdentifier?: number;
  readonly targetPortGroup?: number;
  /** Largest READ/WRITE in bytes (default 32 MiB: the iSCSI layer streams any size). */
  readonly maxTransferBytes?: number;
  /** Override individual block limits. */
  readonly limits?: Partial<Limits>;
  /** Pace of SANITIZE I/O in bytes per second (0 = unpaced). */
  readonly sanitizeBytesPerSecond?: number;
  readonly logger?: Logger;
  /** Substitute reservations (tests). */
  readonly reservations?: LogicalUnitOptions['reservations'];
}

export const DEFAULT_VENDOR = 'OPENEBS ';
export const DEFAULT_PRODUCT = 'CSTOR-TS VOLUME ';
export const DEFAULT_REVISION = '0001';
/** OUI in the derived NAA 6 designator unless configured: the one Linux software targets (LIO) use. */
export const DEFAULT_IEEE_COMPANY_ID = 0x001405;

/** Largest WRITE ATOMIC(16): one buffered write under an exclusive range lock. */
const MAX_ATOMIC_BYTES = 8 << 20;

function defaultLimits(blockSize: number, maxTransferBytes: number): Limits {
  const maxTransferLength = Math.max(1, Math.floor(maxTransferBytes / blockSize));
  return {
    maxTransferLength,
    optimalTransferLengthGranularity: 1,
    optimalTransferLength: 0,
    maxCompareAndWriteLength: 255,
    maxUnmapLbaCount: Math.floor((64 << 20) / blockSize),
    maxUnmapBlockDescriptorCount: 256,
    optimalUnmapGranularity: 1,
    maxWriteSameLength: 0xffffffffn,
    // LBPPBE=0 by default: with 4 KiB physical blocks (exponent 3 for 512-byte LBAs) libiscsi 1.19's
    // GetLBAStatus.UnmapSingle expects a descriptor not containing the requested LBA. Override via limits.
    physicalBlockExponent: 0,
    // TRANSFER LENGTH of WRITE ATOMIC(16) is 16 bits.
    maxAtomicTransferLength: Math.min(0xffff, maxTransferLength, Math.max(1, Math.floor(MAX_ATOMIC_BYTES / blockSize))),
    atomicAlignment: 0,
    atomicTransferLengthGranularity: 0,
  };
}

export class ScsiTargetDevice implements ScsiTarget {
  readonly #lu: LogicalUnit;
  readonly #identity: Identity;
  readonly #logger: Logger | undefined;

  /** Construct and load persisted state (APTPL reservations). */
  static async create(options: ScsiTargetDeviceOptions): Promise<ScsiTargetDevice> {
    const target = new ScsiTargetDevice(options);
    await target.init();
    return target;
  }

  constructor(options: ScsiTargetDeviceOptions) {
    const { device } = options;
    this.#identity = {
      vendor: options.vendor ?? DEFAULT_VENDOR,
      product: options.product ?? DEFAULT_PRODUCT,
      revision: options.revision ?? DEFAULT_REVISION,
      serial: options.serial,
      naa: options.naa ?? naaFromSerial(options.serial, options.ieeeCompanyId ?? DEFAULT_IEEE_COMPANY_ID),
      protocolIdentifier: options.protocolIdentifier ?? 5,
      targetPortGroup: options.targetPortGroup ?? 1,
    };
    if (this.#identity.naa.length !== 16) throw new RangeError('naa must be 16 bytes');
    const limits = { ...defaultLimits(device.blockSize, options.maxTransferBytes ?? 32 << 20), ...options.limits };
    this.#logger = options.logger;
    const luOptions: { -readonly [K in keyof LogicalUnitOptions]: LogicalUnitOptions[K] } = {
      device, identity: this.#identity, limits,
    };
    if (options.logger) luOptions.logger = options.logger;
    if (options.sanitizeBytesPerSecond !== undefined) luOptions.sanitizeBytesPerSecond = options.sanitizeBytesPerSecond;
    if (options.reservations) luOptions.reservations = options.reservations;
    this.#lu = new LogicalUnit(luOptions);
  }

  init(): Promise<void> {
    return this.#lu.init();
  }

  /** The logical unit (diagnostics and tests). */
  get logicalUnit(): LogicalUnit {
    return this.#lu;
  }

  async execute(request: ScsiRequest): Promise<ScsiResult> {
    if (decodeLun(request.lun) === 0) return this.#lu.execute(request);
    try {
      return this.#unknownLun(request);
    } catch (e) {
      if (e instanceof CheckCondition) return { status: ScsiStatus.CheckCondition, sense: e.toSense(false) };
      this.#logger?.error({ err: e }, 'unknown-LUN command failed');
      return { status: ScsiStatus.CheckCondition, sense: buildSense(SenseKey.HardwareError, Asc.InternalTargetFailure) };
    }
  }

  #unknownLun(request: ScsiRequest): ScsiResult {
    const cdb = request.cdb;
    switch (cdb[0]) {
      case Op.Inquiry: {
        checkReservedBits(cdb, CdbUsage.inquiry);
        const c = decodeInquiry(cdb);
        if (c.evpd) throw new CheckCondition(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported);
        return dataIn(encodeUnsupportedLunInquiry(this.#identity), c.allocationLength);
      }
      case Op.ReportLuns:
        checkReservedBits(cdb, CdbUsage.reportLuns);
        return reportLunsData(cdb, [0]);
      case Op.RequestSense: {
        checkReservedBits(cdb, CdbUsage.requestSense);
        const c = decodeRequestSense(cdb);
        return dataIn(buildSense(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported, { descriptor: c.desc }), c.allocationLength);
      }
      default:
        throw new CheckCondition(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported);
    }
  }

  addNexus(nexus: ItNexus): void {
    this.#lu.addNexus(nexus);
  }

  removeNexus(nexus: ItNexus): void {
    this.#lu.removeNexus(nexus);
  }

  async abortTask(nexus: ItNexus, lun: bigint, tag: number): Promise<TmfResultValue> {
    if (decodeLun(lun) !== 0) return TmfResult.LunDoesNotExist;
    return this.#lu.abortTask(nexus, tag);
  }

  async abortTaskSet(nexus: ItNexus, lun: bigint): Promise<TmfResultValue> {
    if (decodeLun(lun) !== 0) return TmfResult.LunDoesNotExist;
    return this.#lu.abortTaskSet(nexus);
  }

  async clearTaskSet(nexus: ItNexus, lun: bigint): Promise<TmfResultValue> {
    if (decodeLun(lun) !== 0) return TmfResult.LunDoesNotExist;
    return this.#lu.clearTaskSet(nexus);
  }

  async logicalUnitReset(nexus: ItNexus, lun: bigint): Promise<TmfResultValue> {
    if (decodeLun(lun) !== 0) return TmfResult.LunDoesNotExist;
    return this.#lu.reset(nexus);
  }

  /** Warm reset: every LU reset (UA 29/00); cold reset reads as a power-on (UA 29/01). */
  async targetReset(nexus: ItNexus, cold: boolean): Promise<TmfResultValue> {
    return this.#lu.reset(nexus, cold ? Asc.PowerOnOccurred : Asc.PowerOnResetOrBusDeviceResetOccurred);
  }

  async close(): Promise<void> {
    await this.#lu.close();
  }
}
