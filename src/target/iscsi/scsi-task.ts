// One SCSI command on an iSCSI session: collects its data-out (immediate data, the unsolicited burst,
// then solicited bursts requested with R2T as the SCSI layer asks for the data), validates every
// Data-Out against what was solicited, and returns data-in split by the initiator's
// MaxRecvDataSegmentLength and MaxBurstLength with the status in the final Data-In when it can.

import type { DataIn, DataOut, ScsiCommand, ScsiResponse, R2T } from '../../protocol/iscsi/pdu-types.js';
import { RESERVED_TAG, ScsiServiceResponse } from '../../protocol/iscsi/constants.js';
import { ScsiStatus } from '../../protocol/scsi/constants.js';
import { allocIoBuffer } from '../../protocol/io-buffer.js';
import type { ScsiResult } from '../scsi/types.js';
import { IscsiTargetError, IscsiTargetErrorCode } from './errors.js';

/** What a task needs from its session and connection. */
export interface TaskHost {
  readonly maxBurstLength: number;
  readonly firstBurstLength: number;
  readonly initialR2T: boolean;
  readonly immediateData: boolean;
  readonly maxOutstandingR2T: number;
  /** The initiator's declared MaxRecvDataSegmentLength: the most data-in per PDU. */
  readonly maxXmitDataSegmentLength: number;
  allocateTtt(task: ScsiTask): number;
  releaseTtt(ttt: number): void;
  sendR2T(pdu: R2T): void;
  sendDataIn(pdu: DataIn): void;
  sendResponse(pdu: ScsiResponse): void;
}

interface Burst {
  readonly ttt: number;
  readonly r2tSN: number;
  readonly offset: number;
  readonly length: number;
  received: number;
  nextDataSN: number;
}

interface DataWaiter {
  readonly length: number;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (err: Error) => void;
}

export class ScsiTask {
  readonly itt: number;
  readonly cmdSN: number;
  readonly lun: bigint;
  readonly cdb: Buffer;
  readonly attr: number;
  readonly expectedLength: number;
  readonly direction: 'none' | 'read' | 'write' | 'bidi';
  /** Set when the command was handed to the SCSI layer (in CmdSN order). */
  delivered = false;
  /** Set when task management aborted the task; nothing more is sent for it. */
  aborted = false;
  readonly #host: TaskHost;
  #buffer: Buffer | undefined;
  /** Contiguous bytes of data-out received from offset 0. */
  #received = 0;
  /** Bytes the initiator may send without an R2T (immediate data + unsolicited Data-Out). */
  readonly #unsolicitedLimit: number;
  #unsolicitedDone: boolean;
  #unsolicitedDataSN = 0;
  /** The data length the SCSI layer asked for (undefined until it asks). */
  #wanted: number | undefined;
  /** Next offset to solicit with an R2T. */
  #solicitOffset: number;
  #nextR2TSN = 0;
  readonly #bursts = new Map<number, Burst>();
  #waiter: DataWaiter | undefined;
  #dataInSN = 0;
  #unsolicitedWaiters: Array<() => void> = [];

  constructor(host: TaskHost, command: ScsiCommand) {
    this.#host = host;
    this.itt = command.itt;
    this.cmdSN = command.cmdSN;
    this.lun = command.lun;
    // The PDU's CDB is a view into the receive buffer: keep a copy.
    this.cdb = Buffer.from(command.cdb);
    this.attr = command.attr;
    this.expectedLength = command.expectedDataTransferLength;
    this.direction = command.read && command.write ? 'bidi' : command.write ? 'write' : command.read ? 'read' : 'none';

    const immediate = command.data.length;
    if (immediate > 0 && !command.write) {
      throw new IscsiTargetError(IscsiTargetErrorCode.UnexpectedData, 'immediate data on a command without the W bit');
    }
    if (immediate > 0 && !host.immediateData) {
      throw new IscsiTargetError(IscsiTargetErrorCode.UnexpectedData, 'immediate data when ImmediateData=No');
    }
    if (immediate > this.expectedLength) {
      throw new IscsiTargetError(IscsiTargetErrorCode.DataBeyondExpected, 'immediate data beyond the expected transfer length');
    }
    if (command.write) {
      const burstLimit = Math.min(host.firstBurstLength, this.expectedLength);
      if (immediate > burstLimit) {
        throw new IscsiTargetError(IscsiTargetErrorCode.DataBeyondExpected, 'immediate data beyond FirstBurstLength');
      }
      // With InitialR2T=No the initiator may follow with unsolicited Data-Out up to FirstBurstLength,
      // unless the F bit on the command says it sends none.
      this.#unsolicitedLimit = host.initialR2T || command.final ? immediate : burstLimit;
      this.#unsolicitedDone = this.#unsolicitedLimit === immediate;
      if (!command.final && host.initialR2T) {
        throw new IscsiTargetError(IscsiTargetErrorCode.UnexpectedData, 'F bit clear on a command while InitialR2T=Yes');
      }
      if (this.#unsolicitedLimit > 0) {
        this.#buffer = allocIoBuffer(this.#unsolicitedLimit);
        command.data.copy(this.#buffer, 0);
        this.#received = immediate;
      }
    } else {
      this.#unsolicitedLimit = 0;
      this.#unsolicitedDone = true;
    }
    this.#solicitOffset = this.#unsolicitedLimit;
  }

  get isWrite(): boolean { return this.direction === 'write' || this.direction === 'bidi'; }

  /** The SCSI layer asks for `length` bytes of data-out. */
  fetchData(length: number, signal: AbortSignal): Promise<Buffer> {
    if (!this.isWrite || length > this.expectedLength) {
      return Promise.reject(new IscsiTargetError(IscsiTargetErrorCode.DataBeyondExpected,
        `command wants ${length} bytes of data-out, the initiator expects to send ${this.isWrite ? this.expectedLength : 0}`));
    }
    if (this.#waiter || this.#wanted !== undefined) {
      return Promise.reject(new Error('fetchData called twice for one task'));
    }
    if (signal.aborted) return Promise.reject(new Error('aborted'));
    this.#wanted = length;
    if (length === 0) return Promise.resolve(EMPTY);
    if (length > (this.#buffer?.length ?? 0)) {
      const full = allocIoBuffer(length);
      if (this.#buffer) this.#buffer.copy(full, 0, 0, this.#received);
      this.#buffer = full;
    }
    return new Promise<Buffer>((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiter = undefined;
        this.#dropBursts();
        reject(new Error('aborted'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiter = {
        length,
        resolve: data => { signal.removeEventListener('abort', onAbort); resolve(data); },
        reject: err => { signal.removeEventListener('abort', onAbort); reject(err); },
      };
      this.#solicit();
      this.#checkComplete();
    });
  }

  /** A Data-Out PDU for this task. Throws IscsiTargetError for PDUs that break the sequence rules. */
  onDataOut(pdu: DataOut): void {
    const len = pdu.data.length;
    if (pdu.ttt === RESERVED_TAG) {
      if (this.#unsolicitedDone) {
        throw new IscsiTargetError(IscsiTargetErrorCode.UnsolicitedDataNotAllowed, 'unsolicited Data-Out beyond the first burst');
      }
      if (pdu.dataSN !== this.#unsolicitedDataSN) {
        throw new IscsiTargetError(IscsiTargetErrorCode.DataSnMismatch, `DataSN ${pdu.dataSN}, expected ${this.#unsolicitedDataSN}`);
      }
      if (pdu.bufferOffset !== this.#received || pdu.bufferOffset + len > this.#unsolicitedLimit) {
        throw new IscsiTargetError(IscsiTargetErrorCode.BadBufferOffset,
          `unsolicited Data-Out at ${pdu.bufferOffset}+${len}, expected offset ${this.#received} below ${this.#unsolicitedLimit}`);
      }
      this.#unsolicitedDataSN++;
      this.#store(pdu.bufferOffset, pdu.data);
      if (pdu.final || this.#received === this.#unsolicitedLimit) {
        if (!pdu.final || this.#received !== this.#unsolicitedLimit) {
          throw new IscsiTargetError(IscsiTargetErrorCode.BadBufferOffset, 'unsolicited burst ended early or without the F bit');
        }
        this.#unsolicitedDone = true;
        for (const w of this.#unsolicitedWaiters.splice(0)) w();
      }
      this.#checkComplete();
      return;
    }
    const burst = this.#bursts.get(pdu.ttt);
    if (!burst) throw new IscsiTargetError(IscsiTargetErrorCode.UnknownTtt, `Data-Out with unknown TTT 0x${pdu.ttt.toString(16)}`);
    if (pdu.dataSN !== burst.nextDataSN) {
      throw new IscsiTargetError(IscsiTargetErrorCode.DataSnMismatch, `DataSN ${pdu.dataSN}, expected ${burst.nextDataSN}`);
    }
    const expectedOffset = burst.offset + burst.received;
    if (pdu.bufferOffset !== expectedOffset || burst.received + len > burst.length) {
      throw new IscsiTargetError(IscsiTargetErrorCode.BadBufferOffset,
        `Data-Out at ${pdu.bufferOffset}+${len} outside the R2T ${burst.offset}+${burst.length} (next ${expectedOffset})`);
    }
    if (pdu.bufferOffset !== this.#received) {
      // DataPDUInOrder and DataSequenceInOrder are Yes: every byte before this one has arrived, so
      // the buffer handed to the SCSI layer never holds a hole of uninitialised memory.
      throw new IscsiTargetError(IscsiTargetErrorCode.BadBufferOffset,
        `Data-Out at ${pdu.bufferOffset} while bytes from ${this.#received} have not arrived (sequences must be in order)`);
    }
    if (pdu.final !== (burst.received + len === burst.length)) {
      throw new IscsiTargetError(IscsiTargetErrorCode.BadBufferOffset, 'F bit does not end the solicited burst');
    }
    burst.nextDataSN++;
    burst.received += len;
    this.#store(pdu.bufferOffset, pdu.data);
    if (burst.received === burst.length) {
      this.#bursts.delete(burst.ttt);
      this.#host.releaseTtt(burst.ttt);
      this.#solicit();
    }
    this.#checkComplete();
  }

  #store(offset: number, data: Buffer): void {
    const buffer = this.#buffer!;
    // Bytes past what the SCSI layer asked for are accepted and dropped.
    const room = buffer.length - offset;
    if (room > 0) data.copy(buffer, offset, 0, Math.min(room, data.length));
    // Callers check offset === #received, so "received" is always a contiguous prefix.
    this.#received = offset + data.length;
  }

  #solicit(): void {
    const wanted = this.#wanted;
    if (wanted === undefined || !this.#waiter) return;
    const host = this.#host;
    while (this.#solicitOffset < wanted && this.#bursts.size < host.maxOutstandingR2T) {
      const offset = this.#solicitOffset;
      const length = Math.min(host.maxBurstLength, wanted - offset);
      const ttt = host.allocateTtt(this);
      const burst: Burst = { ttt, r2tSN: this.#nextR2TSN++, offset, length, received: 0, nextDataSN: 0 };
      this.#bursts.set(ttt, burst);
      this.#solicitOffset += length;
      host.sendR2T({
        kind: 'R2T', lun: this.lun, itt: this.itt, ttt, r2tSN: burst.r2tSN, bufferOffset: offset,
        desiredDataTransferLength: length, statSN: 0, expCmdSN: 0, maxCmdSN: 0,
      });
    }
  }

  #checkComplete(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    const solicitedDone = this.#bursts.size === 0 && this.#solicitOffset >= waiter.length;
    if (this.#received >= waiter.length && (solicitedDone || waiter.length <= this.#unsolicitedLimit)) {
      this.#waiter = undefined;
      waiter.resolve(this.#buffer!.subarray(0, waiter.length));
    }
  }

  #dropBursts(): void {
    for (const ttt of this.#bursts.keys()) this.#host.releaseTtt(ttt);
    this.#bursts.clear();
  }

  /** Whether the initiator has sent the whole unsolicited burst (then no need to wait for it). */
  get unsolicitedDone(): boolean { return this.#unsolicitedDone; }

  /** Resolves when the initiator has sent the whole unsolicited burst (a response must not precede it). */
  unsolicitedComplete(): Promise<void> {
    if (this.#unsolicitedDone) return Promise.resolve();
    return new Promise(resolve => this.#unsolicitedWaiters.push(resolve));
  }

  /** The connection ended or the task was aborted outside the SCSI layer. */
  cancel(reason: Error): void {
    this.#dropBursts();
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(reason);
    for (const w of this.#unsolicitedWaiters.splice(0)) w();
  }

  /** Send data-in and the status for a finished command. */
  complete(result: ScsiResult): void {
    const host = this.#host;
    const expected = this.expectedLength;
    let data = result.data;
    let overflow = false;
    let underflow = false;
    let residual = 0;
    if (this.direction === 'read' || this.direction === 'none' || (this.direction === 'bidi' && data)) {
      const produced = data?.length ?? 0;
      if (produced > expected) {
        overflow = true;
        residual = produced - expected;
        data = data!.subarray(0, expected);
      } else if (produced < expected) {
        underflow = true;
        residual = expected - produced;
      }
    } else {
      const consumed = result.dataOutLength ?? this.#wanted ?? 0;
      if (consumed > expected) {
        overflow = true;
        residual = consumed - expected;
      } else if (consumed < expected) {
        underflow = true;
        residual = expected - consumed;
      }
      data = undefined;
    }
    const sense = result.sense;
    const collapse = result.status === ScsiStatus.Good && (sense === undefined || sense.length === 0);
    if (data && data.length > 0 && this.direction !== 'write') {
      const segment = host.maxXmitDataSegmentLength;
      const burstLength = host.maxBurstLength;
      let offset = 0;
      while (offset < data.length) {
        const burstEnd = Math.min(data.length, offset - (offset % burstLength) + burstLength);
        const end = Math.min(burstEnd, offset + segment);
        const last = end === data.length;
        const withStatus = last && collapse;
        host.sendDataIn({
          kind: 'DataIn',
          final: end === burstEnd,
          acknowledge: false,
          overflow: withStatus && overflow,
          underflow: withStatus && underflow,
          statusPresent: withStatus,
          status: withStatus ? result.status : 0,
          lun: this.lun,
          itt: this.itt,
          ttt: RESERVED_TAG,
          dataSN: this.#dataInSN++,
          bufferOffset: offset,
          residualCount: withStatus ? residual : 0,
          data: data.subarray(offset, end),
          statSN: 0, expCmdSN: 0, maxCmdSN: 0,
        });
        offset = end;
      }
      if (collapse) return;
    }
    host.sendResponse({
      kind: 'ScsiResponse',
      bidiOverflow: false,
      bidiUnderflow: false,
      overflow,
      underflow,
      response: ScsiServiceResponse.CommandCompleted,
      status: result.status,
      itt: this.itt,
      expDataSN: this.#dataInSN + this.#nextR2TSN,
      bidiReadResidualCount: 0,
      residualCount: residual,
      sense: sense ?? EMPTY,
      statSN: 0, expCmdSN: 0, maxCmdSN: 0,
    });
  }
}

const EMPTY = Buffer.alloc(0);
