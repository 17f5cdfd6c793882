// The surface of reservations.ts (persistent reservations + SPC-2 RESERVE/RELEASE) the logical unit
// uses, as a structural type so tests can substitute it.
import type { ItNexus, ScsiResult } from './types.js';

export interface ReservationsApi {
  restore(state: Buffer): void;
  isConflict(nexus: ItNexus, cdb: Buffer): boolean;
  persistentReserveIn(nexus: ItNexus, cdb: Buffer): ScsiResult;
  persistentReserveOut(nexus: ItNexus, cdb: Buffer, parameters: Buffer): Promise<ScsiResult>;
  reserve(nexus: ItNexus, cdb: Buffer): ScsiResult;
  release(nexus: ItNexus, cdb: Buffer): ScsiResult;
  onLogicalUnitReset(): void;
  onNexusLoss(nexus: ItNexus): void;
}

export interface ReservationHooksApi {
  unitAttention(initiatorPortName: string, ascq16: number): void;
  persist(state: Buffer | undefined, required?: boolean): Promise<void>;
}
