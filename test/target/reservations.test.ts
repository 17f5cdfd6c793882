import t from 'tap';
import { Reservations, PrType, PrOutAction, PrInAction, type ReservationHooks } from '../../src/target/scsi/reservations.js';
import type { ItNexus, ScsiResult } from '../../src/target/scsi/types.js';
import type { ReservationsApi } from '../../src/target/scsi/reservations-api.js';
import { Asc, ScsiStatus, SenseKey } from '../../src/protocol/scsi/constants.js';

const GOOD = ScsiStatus.Good;
const CONFLICT = ScsiStatus.ReservationConflict;
const CHECK = ScsiStatus.CheckCondition;

function transportId(portName: string, format = 1): Buffer {
  const name = Buffer.from(portName, 'utf8');
  const padded = Math.max(20, (name.length + 1 + 3) & ~3);
  const buf = Buffer.alloc(4 + padded);
  buf[0] = (format << 6) | 0x05;
  buf.writeUInt16BE(padded, 2);
  name.copy(buf, 4);
  return buf;
}

function nexus(initiator: string, isid: string, port = 1): ItNexus {
  const initiatorPortName = `${initiator},i,0x${isid}`;
  return { initiatorPortName, initiatorName: initiator, transportId: transportId(initiatorPortName), relativeTargetPort: port };
}

const A = nexus('iqn.2024-01.test:a', '400001370000');
const B = nexus('iqn.2024-01.test:b', '400001370000');
const C = nexus('iqn.2024-01.test:c', '400001370000');

interface Recorder {
  readonly hooks: ReservationHooks;
  readonly uas: Array<[string, number]>;
  readonly persisted: Array<Buffer | undefined>;
  /** The `required` flag (APTPL) of each persist call. */
  readonly required: boolean[];
  readonly aborted: string[][];
  failPersist: boolean;
}

function recorder(): Recorder {
  const r: Recorder = {
    uas: [], persisted: [], required: [], aborted: [], failPersist: false,
    hooks: {
      unitAttention: (port, asc) => { r.uas.push([port, asc]); },
      persist: async (state, required) => {
        if (r.failPersist) throw new Error('disk full');
        r.persisted.push(state);
        r.required.push(required === true);
      },
      abortTasks: ports => { r.aborted.push([...ports]); },
    },
  };
  return r;
}

function setup(descriptor = false) {
  const rec = recorder();
  const res = new Reservations(rec.hooks, { descriptorSense: () => descriptor });
  const api: ReservationsApi = res; // the logical unit's structural view must keep matching
  void api;
  return { rec, res };
}

interface OutParams {
  key?: bigint;
  saKey?: bigint;
  aptpl?: boolean;
  allTgPt?: boolean;
  specIPt?: boolean;
  scope?: number;
  length?: number;
  extra?: Buffer;
}

function outCdb(sa: number, type: number, length: number, scope = 0): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5f;
  cdb[1] = sa;
  cdb[2] = (scope << 4) | type;
  cdb.writeUInt32BE(length, 5);
  return cdb;
}

function outParams(o: OutParams): Buffer {
  const p = Buffer.alloc(24);
  p.writeBigUInt64BE(o.key ?? 0n, 0);
  p.writeBigUInt64BE(o.saKey ?? 0n, 8);
  p[20] = (o.specIPt ? 0x08 : 0) | (o.allTgPt ? 0x04 : 0) | (o.aptpl ? 0x01 : 0);
  return o.extra ? Buffer.concat([p, o.extra]) : p;
}

function prOut(res: Reservations, n: ItNexus, sa: number, type: number, o: OutParams = {}): Promise<ScsiResult> {
  const p = outParams(o);
  return res.persistentReserveOut(n, outCdb(sa, type, o.length ?? p.length, o.scope ?? 0), p);
}

const register = (res: Reservations, n: ItNexus, saKey: bigint, key = 0n, aptpl = false) =>
  prOut(res, n, PrOutAction.Register, 0, { key, saKey, aptpl });
const reserve = (res: Reservations, n: ItNexus, key: bigint, type: number) =>
  prOut(res, n, PrOutAction.Reserve, type, { key });

function prIn(res: Reservations, n: ItNexus, sa: number, alloc = 4096): ScsiResult {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5e;
  cdb[1] = sa;
  cdb.writeUInt16BE(alloc, 7);
  return res.persistentReserveIn(n, cdb);
}

function readKeys(res: Reservations): bigint[] {
  const d = prIn(res, A, PrInAction.ReadKeys).data!;
  const keys: bigint[] = [];
  for (let off = 8; off < 8 + d.readUInt32BE(4); off += 8) keys.push(d.readBigUInt64BE(off));
  return keys;
}

function readReservation(res: Reservations): { key: bigint; type: number } | undefined {
  const d = prIn(res, A, PrInAction.ReadReservation).data!;
  if (d.readUInt32BE(4) === 0) return undefined;
  return { key: d.readBigUInt64BE(8), type: d[21]! & 0x0f };
}

/** Fixed-format sense: key, asc16 and the sense-key-specific bytes. */
function sense(r: ScsiResult): { key: number; asc: number; sks: number[] } {
  const s = r.sense!;
  return { key: s[2]! & 0x0f, asc: (s[12]! << 8) | s[13]!, sks: [s[15]!, s[16]!, s[17]!] };
}

const CDB6 = (op: number, b4 = 0) => Buffer.from([op, 0, 0, 0, b4, 0]);
const CDB10 = (op: number) => { const b = Buffer.alloc(10); b[0] = op; return b; };
const READ10 = CDB10(0x28);
const WRITE10 = CDB10(0x2a);
const INQUIRY = CDB6(0x12);
const TUR = CDB6(0x00);
const READ_CAPACITY10 = CDB10(0x25);
const MODE_SENSE6 = CDB6(0x1a);
const PR_IN = CDB10(0x5e);
const PR_OUT = CDB10(0x5f);
const READ_CAPACITY16 = (() => { const b = Buffer.alloc(16); b[0] = 0x9e; b[1] = 0x10; return b; })();
const SYNC_CACHE10 = CDB10(0x35);
const REPORT_LUNS = (() => { const b = Buffer.alloc(12); b[0] = 0xa0; return b; })();

t.test('PR IN on an empty logical unit: byte-exact layouts', async t => {
  const { res } = setup();
  t.same([...prIn(res, A, PrInAction.ReadKeys).data!], [0, 0, 0, 0, 0, 0, 0, 0]);
  t.same([...prIn(res, A, PrInAction.ReadReservation).data!], [0, 0, 0, 0, 0, 0, 0, 0]);
  t.same([...prIn(res, A, PrInAction.ReportCapabilities).data!], [0, 8, 0x0d, 0xb0, 0xea, 0x01, 0, 0]);
  t.same([...prIn(res, A, PrInAction.ReadFullStatus).data!], [0, 0, 0, 0, 0, 0, 0, 0]);
  const bad = prIn(res, A, 4);
  t.equal(bad.status, CHECK);
  t.same(sense(bad), { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInCdb, sks: [0xc0 | 0x08 | 4, 0, 1] });
  t.equal(res.generation, 0);
});

t.test('REGISTER and READ KEYS', async t => {
  const { res, rec } = setup();
  t.equal((await register(res, A, 0x1111n, 0x5n)).status, CONFLICT, 'unregistered nexus with non-zero key');
  t.equal((await register(res, A, 0n)).status, GOOD, 'unregistered nexus unregistering: no-op');
  t.equal(res.generation, 0);
  t.equal((await register(res, A, 0x1111n)).status, GOOD);
  t.equal(res.generation, 1);
  t.equal((await register(res, B, 0x2222n)).status, GOOD);
  t.equal(res.generation, 2);
  const d = prIn(res, A, PrInAction.ReadKeys).data!;
  t.same([...d], [0, 0, 0, 2, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0x11, 0x11, 0, 0, 0, 0, 0, 0, 0x22, 0x22]);
  t.equal((await register(res, A, 0x3333n, 0x9999n)).status, CONFLICT, 'wrong current key');
  t.equal(res.generation, 2, 'conflict does not bump the generation');
  t.equal((await register(res, A, 0x3333n, 0x1111n)).status, GOOD, 'key change');
  t.same(readKeys(res), [0x3333n, 0x2222n]);
  t.equal(res.generation, 3);
  t.equal((await prOut(res, A, PrOutAction.RegisterAndIgnoreExistingKey, 0, { key: 0xdeadn, saKey: 0x4444n })).status, GOOD);
  t.same(readKeys(res), [0x4444n, 0x2222n]);
  t.equal((await prOut(res, C, PrOutAction.RegisterAndIgnoreExistingKey, 0, { key: 0xdeadn, saKey: 0x5555n })).status, GOOD);
  t.equal((await register(res, B, 0n, 0x2222n)).status, GOOD, 'unregister');
  t.same(readKeys(res), [0x4444n, 0x5555n]);
  t.equal(res.generation, 6);
  t.same(rec.uas, []);
  t.equal(rec.persisted.length, 6, 'every change is persisted, APTPL or not (a target failover keeps registrations)');
  t.same(rec.required, [false, false, false, false, false, false], 'without APTPL a device that cannot persist may keep it in memory');
  const { res: copy } = setup();
  copy.restore(rec.persisted.at(-1)!);
  t.same(readKeys(copy), [0x4444n, 0x5555n], 'the persisted state holds the registrations');
  // Truncation keeps the additional length.
  const cut = prIn(res, A, PrInAction.ReadKeys, 12).data!;
  t.same([...cut], [0, 0, 0, 6, 0, 0, 0, 16, 0, 0, 0, 0]);
  t.equal(prIn(res, A, PrInAction.ReadKeys, 0).data!.length, 0);
});

t.test('RESERVE / READ RESERVATION / RELEASE', async t => {
  const { res, rec } = setup();
  t.equal((await reserve(res, A, 0n, PrType.WriteExclusive)).status, CONFLICT, 'unregistered');
  await register(res, A, 0xaan);
  await register(res, B, 0xbbn);
  t.equal((await reserve(res, A, 0xbbn, PrType.WriteExclusive)).status, CONFLICT, 'wrong key');
  const badType = await reserve(res, A, 0xaan, 2);
  t.same(sense(badType), { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInCdb, sks: [0xc8 | 3, 0, 2] });
  const badScope = await prOut(res, A, PrOutAction.Reserve, PrType.WriteExclusive, { key: 0xaan, scope: 1 });
  t.same(sense(badScope), { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInCdb, sks: [0xc8 | 7, 0, 2] });

  t.equal((await reserve(res, A, 0xaan, PrType.WriteExclusive)).status, GOOD);
  t.equal(res.generation, 2, 'RESERVE does not bump the generation');
  const d = prIn(res, B, PrInAction.ReadReservation).data!;
  t.same([...d], [0, 0, 0, 2, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0, 0, 0, 0, 0, PrType.WriteExclusive, 0, 0]);
  t.same(res.reservation, { type: PrType.WriteExclusive, holder: A.initiatorPortName, key: 0xaan });
  t.equal((await reserve(res, A, 0xaan, PrType.WriteExclusive)).status, GOOD, 'holder re-reserves same type');
  t.equal((await reserve(res, A, 0xaan, PrType.ExclusiveAccess)).status, CONFLICT, 'holder, other type');
  t.equal((await reserve(res, B, 0xbbn, PrType.WriteExclusive)).status, CONFLICT, 'other nexus');

  t.equal((await prOut(res, B, PrOutAction.Release, PrType.WriteExclusive, { key: 0xbbn })).status, GOOD,
    'non-holder release is a no-op');
  t.ok(readReservation(res));
  t.equal((await prOut(res, A, PrOutAction.Release, PrType.WriteExclusive, { key: 0xbbn })).status, CONFLICT);
  const wrong = await prOut(res, A, PrOutAction.Release, PrType.ExclusiveAccess, { key: 0xaan });
  t.same(sense(wrong), { key: SenseKey.IllegalRequest, asc: Asc.InvalidReleaseOfPersistentReservation, sks: [0, 0, 0] });
  t.equal((await prOut(res, A, PrOutAction.Release, PrType.WriteExclusive, { key: 0xaan })).status, GOOD);
  t.equal(readReservation(res), undefined);
  t.equal((await prOut(res, A, PrOutAction.Release, PrType.WriteExclusive, { key: 0xaan })).status, GOOD,
    'release without reservation');
  t.equal(res.generation, 2);
  t.same(rec.uas, [], 'releasing WE/EA sends no unit attention');
});

t.test('release of shared reservations notifies the other registrants', async t => {
  for (const type of [PrType.WriteExclusiveRegistrantsOnly, PrType.ExclusiveAccessRegistrantsOnly,
    PrType.WriteExclusiveAllRegistrants, PrType.ExclusiveAccessAllRegistrants]) {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await register(res, C, 3n);
    t.equal((await reserve(res, A, 1n, type)).status, GOOD);
    const holder = type >= 7 ? B : A; // any registrant holds an all-registrants reservation
    const key = type >= 7 ? 2n : 1n;
    t.equal((await prOut(res, holder, PrOutAction.Release, type, { key })).status, GOOD, `release type ${type}`);
    const others = [A, B, C].filter(n => n !== holder).map(n => [n.initiatorPortName, Asc.ReservationsReleased]);
    t.same(rec.uas, others, `type ${type}: RESERVATIONS RELEASED to the others`);
  }
});

t.test('all-registrants reservation: READ RESERVATION key 0, every registrant is a holder', async t => {
  const { res } = setup();
  await register(res, A, 1n);
  await register(res, B, 2n);
  await reserve(res, A, 1n, PrType.ExclusiveAccessAllRegistrants);
  t.same(readReservation(res), { key: 0n, type: PrType.ExclusiveAccessAllRegistrants });
  t.equal((await reserve(res, B, 2n, PrType.ExclusiveAccessAllRegistrants)).status, GOOD, 'B holds it too');
  // The reservation survives its creator unregistering, and ends with the last registrant.
  await register(res, A, 0n, 1n);
  t.ok(readReservation(res));
  await register(res, B, 0n, 2n);
  t.equal(readReservation(res), undefined);
});

t.test('unregistering the holder releases the reservation', async t => {
  {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await reserve(res, A, 1n, PrType.WriteExclusiveRegistrantsOnly);
    await register(res, A, 0n, 1n);
    t.equal(readReservation(res), undefined);
    t.same(rec.uas, [[B.initiatorPortName, Asc.ReservationsReleased]], 'registrants-only → RELEASED');
  }
  {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await reserve(res, A, 1n, PrType.ExclusiveAccess);
    await prOut(res, A, PrOutAction.RegisterAndIgnoreExistingKey, 0, { saKey: 0n });
    t.equal(readReservation(res), undefined);
    t.same(rec.uas, [], 'EA → no unit attention');
  }
  {
    const { res } = setup();
    await register(res, A, 1n);
    await reserve(res, A, 1n, PrType.ExclusiveAccess);
    await register(res, A, 7n, 1n);
    t.same(readReservation(res), { key: 7n, type: PrType.ExclusiveAccess }, 'key change keeps the reservation');
  }
});

t.test('READ FULL STATUS layout', async t => {
  const { res } = setup();
  await prOut(res, A, PrOutAction.Register, 0, { saKey: 0x0102030405060708n, allTgPt: true });
  await register(res, B, 0x22n);
  await reserve(res, B, 0x22n, PrType.WriteExclusiveRegistrantsOnly);
  const d = prIn(res, C, PrInAction.ReadFullStatus).data!;
  const tidA = A.transportId;
  const tidB = B.transportId;
  t.equal(d.readUInt32BE(0), 2, 'generation');
  t.equal(d.readUInt32BE(4), 24 + tidA.length + 24 + tidB.length);
  const a = d.subarray(8, 8 + 24 + tidA.length);
  const expectA = Buffer.alloc(24 + tidA.length);
  expectA.writeBigUInt64BE(0x0102030405060708n, 0);
  expectA[12] = 0x02; // ALL_TG_PT, not holder
  expectA.writeUInt16BE(1, 18);
  expectA.writeUInt32BE(tidA.length, 20);
  tidA.copy(expectA, 24);
  t.same([...a], [...expectA]);
  const b = d.subarray(8 + a.length);
  t.equal(b.readBigUInt64BE(0), 0x22n);
  t.equal(b[12], 0x01, 'R_HOLDER');
  t.equal(b[13], PrType.WriteExclusiveRegistrantsOnly);
  t.equal(b.readUInt32BE(20), tidB.length);
  t.same(b.subarray(24), tidB);
  t.equal(prIn(res, C, PrInAction.ReadFullStatus, 10).data!.length, 10);
});

t.test('CLEAR', async t => {
  const { res, rec } = setup();
  t.equal((await prOut(res, A, PrOutAction.Clear, 0, { key: 0n })).status, CONFLICT, 'unregistered');
  await register(res, A, 1n);
  await register(res, B, 2n);
  await register(res, C, 3n);
  await reserve(res, B, 2n, PrType.ExclusiveAccess);
  t.equal((await prOut(res, A, PrOutAction.Clear, 0, { key: 2n })).status, CONFLICT, 'wrong key');
  t.equal((await prOut(res, A, PrOutAction.Clear, 0, { key: 1n })).status, GOOD);
  t.equal(res.generation, 4);
  t.same(readKeys(res), []);
  t.equal(readReservation(res), undefined);
  t.same(rec.uas, [[B.initiatorPortName, Asc.ReservationsPreempted], [C.initiatorPortName, Asc.ReservationsPreempted]]);
});

t.test('PREEMPT', async t => {
  t.test('registrations only, no reservation', async t => {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await register(res, C, 2n);
    const zero = await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 1n, saKey: 0n });
    t.same(sense(zero), { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInParameterList, sks: [0x80, 0, 8] });
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 1n, saKey: 9n })).status, CONFLICT,
      'no registrant with that key');
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 5n, saKey: 2n })).status, CONFLICT,
      'wrong own key');
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 1n, saKey: 2n })).status, GOOD);
    t.same(readKeys(res), [1n]);
    t.equal(readReservation(res), undefined, 'no reservation created');
    t.equal(res.generation, 4);
    t.same(rec.uas, [[B.initiatorPortName, Asc.RegistrationsPreempted], [C.initiatorPortName, Asc.RegistrationsPreempted]]);
  });
  t.test('preempting the holder takes over the reservation', async t => {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await register(res, C, 3n);
    await reserve(res, B, 2n, PrType.WriteExclusive);
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.ExclusiveAccess, { key: 1n, saKey: 2n })).status, GOOD);
    t.same(readReservation(res), { key: 1n, type: PrType.ExclusiveAccess });
    t.same(readKeys(res), [1n, 3n]);
    t.same(rec.uas, [[B.initiatorPortName, Asc.RegistrationsPreempted], [C.initiatorPortName, Asc.ReservationsReleased]],
      'type changed → RELEASED to remaining registrants');
    t.equal(res.generation, 4);
  });
  t.test('preempting a non-holder keeps the reservation', async t => {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await register(res, C, 3n);
    await reserve(res, B, 2n, PrType.WriteExclusive);
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.ExclusiveAccess, { key: 1n, saKey: 3n })).status, GOOD);
    t.same(readReservation(res), { key: 2n, type: PrType.WriteExclusive });
    t.same(rec.uas, [[C.initiatorPortName, Asc.RegistrationsPreempted]]);
    const zero = await prOut(res, A, PrOutAction.Preempt, PrType.ExclusiveAccess, { key: 1n, saKey: 0n });
    t.equal(sense(zero).asc, Asc.InvalidFieldInParameterList, 'zero key without all-registrants reservation');
  });
  t.test('holder preempting itself changes the type', async t => {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await reserve(res, A, 1n, PrType.WriteExclusive);
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.ExclusiveAccessRegistrantsOnly, { key: 1n, saKey: 1n })).status, GOOD);
    t.same(readReservation(res), { key: 1n, type: PrType.ExclusiveAccessRegistrantsOnly });
    t.same(readKeys(res), [1n, 2n]);
    t.same(rec.uas, [[B.initiatorPortName, Asc.ReservationsReleased]]);
  });
  t.test('all-registrants with key 0 removes everyone else', async t => {
    const { res, rec } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await register(res, C, 3n);
    await reserve(res, B, 2n, PrType.WriteExclusiveAllRegistrants);
    t.equal((await prOut(res, A, PrOutAction.PreemptAndAbort, PrType.WriteExclusive, { key: 1n, saKey: 0n })).status, GOOD);
    t.same(readKeys(res), [1n]);
    t.same(readReservation(res), { key: 1n, type: PrType.WriteExclusive });
    t.same(rec.uas, [[B.initiatorPortName, Asc.RegistrationsPreempted], [C.initiatorPortName, Asc.RegistrationsPreempted]]);
    t.same(rec.aborted, [[B.initiatorPortName, C.initiatorPortName]], 'PREEMPT AND ABORT names the preempted nexuses');
  });
  t.test('all-registrants with a key removes only those registrations', async t => {
    const { res } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    await reserve(res, B, 2n, PrType.ExclusiveAccessAllRegistrants);
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 1n, saKey: 2n })).status, GOOD);
    t.same(readKeys(res), [1n]);
    t.same(readReservation(res), { key: 0n, type: PrType.ExclusiveAccessAllRegistrants });
  });
  t.test('PREEMPT from an unregistered nexus conflicts; plain PREEMPT aborts nothing', async t => {
    const { res, rec } = setup();
    await register(res, B, 2n);
    t.equal((await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 0n, saKey: 2n })).status, CONFLICT);
    await register(res, A, 1n);
    await prOut(res, A, PrOutAction.Preempt, PrType.WriteExclusive, { key: 1n, saKey: 2n });
    t.same(rec.aborted, []);
  });
});

t.test('REGISTER AND MOVE', async t => {
  const { res, rec } = setup();
  function moveParams(key: bigint, saKey: bigint, dest: string, { unreg = false, aptpl = false, port = 1, format = 1 } = {}): Buffer {
    const tid = transportId(dest, format);
    const p = Buffer.alloc(24 + tid.length);
    p.writeBigUInt64BE(key, 0);
    p.writeBigUInt64BE(saKey, 8);
    p[17] = (unreg ? 0x02 : 0) | (aptpl ? 0x01 : 0);
    p.writeUInt16BE(port, 18);
    p.writeUInt32BE(tid.length, 20);
    tid.copy(p, 24);
    return p;
  }
  const move = (n: ItNexus, p: Buffer) =>
    res.persistentReserveOut(n, outCdb(PrOutAction.RegisterAndMove, PrType.WriteExclusive, p.length), p);

  await register(res, A, 1n);
  t.equal((await move(A, moveParams(1n, 5n, B.initiatorPortName))).status, CONFLICT, 'no reservation');
  await reserve(res, A, 1n, PrType.WriteExclusive);
  t.equal((await move(B, moveParams(0n, 5n, C.initiatorPortName))).status, CONFLICT, 'unregistered issuer');
  t.equal((await move(A, moveParams(2n, 5n, B.initiatorPortName))).status, CONFLICT, 'wrong key');
  t.same(sense(await move(A, moveParams(1n, 0n, B.initiatorPortName))),
    { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInParameterList, sks: [0x80, 0, 8] });
  t.same(sense(await move(A, moveParams(1n, 5n, A.initiatorPortName))),
    { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInParameterList, sks: [0x80, 0, 24] }, 'move to itself');
  const bad = moveParams(1n, 5n, B.initiatorPortName);
  bad[24] = 0x41; // not iSCSI
  t.same(sense(await move(A, bad)).sks, [0x80, 0, 24]);
  const short = moveParams(1n, 5n, B.initiatorPortName);
  t.same(sense(await res.persistentReserveOut(A, outCdb(PrOutAction.RegisterAndMove, 0, 30), short.subarray(0, 30))).asc,
    Asc.ParameterListLengthError);
  t.equal(res.generation, 1);

  // B has never sent a command: it is registered from the TransportID alone.
  t.equal((await move(A, moveParams(1n, 5n, B.initiatorPortName.toUpperCase(), { port: 2 }))).status, GOOD);
  t.same(readKeys(res), [1n, 5n]);
  t.same(readReservation(res), { key: 5n, type: PrType.WriteExclusive });
  t.equal(res.generation, 2);
  t.notOk(res.isConflict(B, WRITE10), 'B now holds the reservation (port names compare case-insensitively)');
  t.ok(res.isConflict(A, WRITE10));
  const full = prIn(res, A, PrInAction.ReadFullStatus).data!;
  const second = full.subarray(8 + 24 + A.transportId.length);
  t.equal(second.readUInt16BE(18), 2, 'relative target port from the parameter list');
  t.equal(second[12], 0x01);

  // Move back with UNREG: B loses its registration.
  t.equal((await move(B, moveParams(5n, 7n, A.initiatorPortName, { unreg: true }))).status, GOOD);
  t.same(readKeys(res), [7n]);
  t.same(readReservation(res), { key: 7n, type: PrType.WriteExclusive });

  // All-registrants reservations cannot be moved.
  await register(res, B, 8n);
  await prOut(res, A, PrOutAction.Preempt, PrType.ExclusiveAccessAllRegistrants, { key: 7n, saKey: 7n });
  t.equal((await move(A, moveParams(7n, 9n, B.initiatorPortName))).status, CONFLICT);
  t.same(rec.uas.filter(([, asc]) => asc !== Asc.ReservationsReleased), []);
});

t.test('SPEC_I_PT registers the listed initiator ports', async t => {
  const { res } = setup();
  const spec = (n: ItNexus, saKey: bigint, tids: Buffer[], key = 0n) => {
    const list = Buffer.concat(tids);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(list.length, 0);
    return prOut(res, n, PrOutAction.Register, 0, { key, saKey, specIPt: true, extra: Buffer.concat([len, list]) });
  };
  // Format 0 needs a known port of that device: C has been seen.
  res.isConflict(C, TUR);
  const r = await spec(A, 0x77n, [transportId(B.initiatorPortName), transportId(C.initiatorName, 0), transportId(A.initiatorPortName)]);
  t.equal(r.status, GOOD);
  t.same(readKeys(res), [0x77n, 0x77n, 0x77n]);
  t.equal(res.generation, 1);
  t.notOk(res.isConflict(B, PR_OUT));

  const again = await spec(A, 0x78n, [transportId(B.initiatorPortName)], 0x77n);
  t.same(sense(again).sks, [0x80 | 0x08 | 3, 0, 20], 'SPEC_I_PT from a registered nexus');
  const { res: res2 } = setup();
  const spec2 = (tids: Buffer[]) => {
    const list = Buffer.concat(tids);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(list.length, 0);
    return prOut(res2, A, PrOutAction.Register, 0, { saKey: 1n, specIPt: true, extra: Buffer.concat([len, list]) });
  };
  t.same(sense(await spec2([transportId('iqn.2024-01.test:unknown', 0)])).sks, [0x80, 0, 28], 'unknown device');
  const bad = transportId(B.initiatorPortName);
  bad[0] = 0x01; // format 0, FCP
  t.same(sense(await spec2([transportId(C.initiatorPortName), bad])).sks, [0x80, 0, 28 + transportId(C.initiatorPortName).length]);
  t.same(readKeys(res2), [], 'all or nothing');
  const p = outParams({ saKey: 1n, specIPt: true });
  const plle = await res2.persistentReserveOut(A, outCdb(PrOutAction.Register, 0, 24), p);
  t.equal(sense(plle).asc, Asc.ParameterListLengthError, 'SPEC_I_PT without TransportID length');
  const p2 = outParams({ saKey: 1n, specIPt: true });
  t.same(sense(await res2.persistentReserveOut(A, outCdb(PrOutAction.RegisterAndIgnoreExistingKey, 0, 24), p2)).sks,
    [0x88 | 3, 0, 20], 'SPEC_I_PT with RIEK');
  t.same(sense(await res2.persistentReserveOut(A, outCdb(PrOutAction.Reserve, 1, 24), p2)).asc,
    Asc.InvalidFieldInParameterList, 'SPEC_I_PT with RESERVE');
});

t.test('PR OUT CDB and parameter list validation', async t => {
  const { res } = setup();
  await register(res, A, 1n);
  for (const sa of [PrOutAction.ReplaceLostReservation, 9, 0x1f]) {
    const r = await prOut(res, A, sa, 1, { key: 1n });
    t.same(sense(r), { key: SenseKey.IllegalRequest, asc: Asc.InvalidFieldInCdb, sks: [0xc8 | 4, 0, 1] }, `SA ${sa}`);
  }
  for (const len of [0, 23, 25, 32]) {
    const p = Buffer.alloc(len);
    const r = await res.persistentReserveOut(A, outCdb(PrOutAction.Register, 0, len), p);
    t.same(sense(r), { key: SenseKey.IllegalRequest, asc: Asc.ParameterListLengthError, sks: [0, 0, 0] }, `length ${len}`);
  }
  const short = await res.persistentReserveOut(A, outCdb(PrOutAction.Register, 0, 24), Buffer.alloc(10));
  t.equal(sense(short).asc, Asc.ParameterListLengthError, 'fewer bytes than the CDB says');
  // Scope/type are ignored for REGISTER.
  t.equal((await prOut(res, A, PrOutAction.Register, 0xf, { key: 1n, saKey: 2n, scope: 3 })).status, GOOD);
  t.equal(res.generation, 2);
});

t.test('descriptor-format sense', async t => {
  const { res } = setup(true);
  const r = prIn(res, A, 7);
  const s = r.sense!;
  t.equal(s[0], 0x72);
  t.equal(s[1], SenseKey.IllegalRequest);
  t.equal((s[2]! << 8) | s[3]!, Asc.InvalidFieldInCdb);
  t.same([...s.subarray(8, 16)], [0x02, 0x06, 0, 0, 0xcc, 0, 1, 0]);
});

t.test('APTPL: persist, restore, clear, rollback', async t => {
  const { res, rec } = setup();
  await register(res, A, 1n);
  t.same(rec.required, [false], 'persisted, not required without APTPL');
  await register(res, B, 2n, 0n, true);
  t.equal(rec.persisted.length, 2);
  t.equal(rec.required.at(-1), true, 'required with APTPL');
  t.equal(prIn(res, A, PrInAction.ReportCapabilities).data![3], 0xb1, 'PTPL_A');
  await reserve(res, B, 2n, PrType.ExclusiveAccessRegistrantsOnly);
  t.equal(rec.persisted.length, 3, 'RESERVE is persisted');
  await prOut(res, A, PrOutAction.Register, 0, { key: 1n, saKey: 3n, aptpl: true, allTgPt: true });
  const state = rec.persisted.at(-1)!;
  t.ok(state);
  t.equal(state[0], 1, 'version byte');

  const { res: copy } = setup();
  copy.restore(state);
  t.equal(copy.generation, res.generation);
  t.same(prIn(copy, C, PrInAction.ReadFullStatus).data, prIn(res, C, PrInAction.ReadFullStatus).data);
  t.same(prIn(copy, C, PrInAction.ReportCapabilities).data, prIn(res, C, PrInAction.ReportCapabilities).data);
  t.same(copy.reservation, res.reservation);
  t.ok(copy.isConflict(C, READ10));
  t.notOk(copy.isConflict(A, WRITE10));

  // A failed save rolls the change back and reports a hardware error.
  rec.failPersist = true;
  const failed = await register(res, C, 9n);
  t.equal(failed.status, CHECK);
  t.same(sense(failed).key, SenseKey.HardwareError);
  t.same(readKeys(res), [3n, 2n]);
  t.equal(res.generation, copy.generation);
  rec.failPersist = false;

  // Clearing APTPL: the state is still saved (a failover keeps it), no longer required.
  await register(res, A, 4n, 3n, false);
  t.equal(rec.required.at(-1), false);
  const count = rec.persisted.length;
  await register(res, C, 5n);
  t.equal(rec.persisted.length, count + 1);
  const cleared = new Reservations(recorder().hooks, { descriptorSense: () => false });
  cleared.restore(rec.persisted.at(-1)!);
  t.same(readKeys(cleared), [4n, 2n, 5n]);
  t.equal(prIn(cleared, A, PrInAction.ReportCapabilities).data![3], 0xb0, 'APTPL off after restore');

  const copyBefore = prIn(copy, C, PrInAction.ReadFullStatus).data;
  t.throws(() => copy.restore(Buffer.from([9])), /invalid persistent reservation state/);
  t.throws(() => copy.restore(Buffer.concat([state, Buffer.from([0])])), /trailing/);
  t.throws(() => copy.restore(state.subarray(0, state.length - 3)), /truncated/);
  const badVersion = Buffer.from(state);
  badVersion[0] = 2;
  t.throws(() => copy.restore(badVersion), /version/);
  const noHolder = Buffer.from(state);
  noHolder.writeUInt16BE(7, 7); // holder index past the registrations
  t.throws(() => copy.restore(noHolder), /holder/);
  t.same(prIn(copy, C, PrInAction.ReadFullStatus).data, copyBefore, 'failed restores change nothing');
});

t.test('concurrent PR OUTs run and persist in order', async t => {
  const { res, rec } = setup();
  await register(res, A, 1n, 0n, true);
  const [r1, r2] = await Promise.all([register(res, B, 2n, 0n, true), register(res, C, 3n, 0n, true)]);
  t.equal(r1.status, GOOD);
  t.equal(r2.status, GOOD);
  t.equal(rec.persisted.length, 3);
  const last = new Reservations(recorder().hooks, { descriptorSense: () => false });
  last.restore(rec.persisted.at(-1)!);
  t.same(readKeys(last), [1n, 2n, 3n], 'the last save holds every registration');
});

interface Expect { readonly [name: string]: boolean }
const COMMANDS: ReadonlyArray<readonly [string, Buffer]> = [
  ['READ10', READ10], ['WRITE10', WRITE10], ['INQUIRY', INQUIRY], ['TUR', TUR], ['READCAP10', READ_CAPACITY10],
  ['READCAP16', READ_CAPACITY16], ['MODESENSE', MODE_SENSE6], ['PRIN', PR_IN], ['PROUT', PR_OUT],
  ['SYNC', SYNC_CACHE10], ['REPORTLUNS', REPORT_LUNS],
];

t.test('isConflict table per reservation type', async t => {
  // conflict expected for [registered non-holder, unregistered] per command
  const readsOk = { READ10: false, MODESENSE: false };
  const readsBlocked = { READ10: true, MODESENSE: true };
  const always = { INQUIRY: false, TUR: false, READCAP10: false, READCAP16: false, PRIN: false, PROUT: false, REPORTLUNS: false };
  const rows: ReadonlyArray<readonly [number, Expect, Expect]> = [
    [PrType.WriteExclusive, { ...always, ...readsOk, WRITE10: true, SYNC: true }, { ...always, ...readsOk, WRITE10: true, SYNC: true }],
    [PrType.ExclusiveAccess, { ...always, ...readsBlocked, WRITE10: true, SYNC: true }, { ...always, ...readsBlocked, WRITE10: true, SYNC: true }],
    [PrType.WriteExclusiveRegistrantsOnly, { ...always, ...readsOk, WRITE10: false, SYNC: false }, { ...always, ...readsOk, WRITE10: true, SYNC: true }],
    [PrType.ExclusiveAccessRegistrantsOnly, { ...always, ...readsOk, WRITE10: false, SYNC: false }, { ...always, ...readsBlocked, WRITE10: true, SYNC: true }],
    [PrType.WriteExclusiveAllRegistrants, { ...always, ...readsOk, WRITE10: false, SYNC: false }, { ...always, ...readsOk, WRITE10: true, SYNC: true }],
    [PrType.ExclusiveAccessAllRegistrants, { ...always, ...readsOk, WRITE10: false, SYNC: false }, { ...always, ...readsBlocked, WRITE10: true, SYNC: true }],
  ];
  for (const [type, registered, unregistered] of rows) {
    const { res } = setup();
    await register(res, A, 1n);
    await register(res, B, 2n);
    for (const [name, cdb] of COMMANDS) t.notOk(res.isConflict(A, cdb), `no reservation: ${name}`);
    await reserve(res, A, 1n, type);
    for (const [name, cdb] of COMMANDS) {
      t.notOk(res.isConflict(A, cdb), `type ${type} holder: ${name}`);
      t.equal(res.isConflict(B, cdb), registered[name], `type ${type} registered: ${name}`);
      t.equal(res.isConflict(C, cdb), unregistered[name], `type ${type} unregistered: ${name}`);
    }
  }
});

t.test('isConflict: CDB-dependent rows', async t => {
  const { res } = setup();
  await register(res, A, 1n);
  await reserve(res, A, 1n, PrType.WriteExclusive);
  const cdb16 = (op: number, sa: number) => { const b = Buffer.alloc(16); b[0] = op; b[1] = sa; return b; };
  t.notOk(res.isConflict(B, cdb16(0x9e, 0x12)), 'GET LBA STATUS is a read');
  t.ok(res.isConflict(B, cdb16(0x9e, 0x1f)), 'unknown SERVICE ACTION IN');
  t.notOk(res.isConflict(B, cdb16(0xa3, 0x0a)), 'REPORT TARGET PORT GROUPS');
  t.ok(res.isConflict(B, cdb16(0xa4, 0x0a)), 'MAINTENANCE OUT');
  t.notOk(res.isConflict(B, CDB6(0x1b, 0x01)), 'START STOP UNIT start');
  t.ok(res.isConflict(B, CDB6(0x1b, 0x00)), 'START STOP UNIT stop');
  t.notOk(res.isConflict(B, CDB6(0x1e, 0x00)), 'ALLOW MEDIUM REMOVAL');
  t.ok(res.isConflict(B, CDB6(0x1e, 0x01)), 'PREVENT MEDIUM REMOVAL');
  const read32 = Buffer.alloc(32); read32[0] = 0x7f; read32.writeUInt16BE(0x0009, 8);
  const write32 = Buffer.alloc(32); write32[0] = 0x7f; write32.writeUInt16BE(0x000b, 8);
  t.notOk(res.isConflict(B, read32));
  t.ok(res.isConflict(B, write32));
  t.ok(res.isConflict(B, CDB10(0xee)), 'unknown opcodes are treated as writes');
  t.ok(res.isConflict(B, CDB10(0x41)), 'WRITE SAME');
  t.ok(res.isConflict(B, CDB10(0x42)), 'UNMAP');
});

t.test('SPC-2 RESERVE / RELEASE', async t => {
  const { res } = setup();
  const R6 = CDB6(0x16);
  const L6 = CDB6(0x17);
  const R10 = CDB10(0x56);
  const L10 = CDB10(0x57);
  t.equal(res.reserve(A, R6).status, GOOD);
  t.equal(res.reserve(A, R6).status, GOOD, 're-reserve by the holder');
  t.equal(res.spc2Holder, A.initiatorPortName.toLowerCase());
  t.ok(res.isConflict(B, R6));
  t.equal(res.reserve(B, R10).status, CONFLICT);
  t.notOk(res.isConflict(B, L6));
  t.equal(res.release(B, L6).status, GOOD, 'release by another nexus is a no-op');
  t.equal(res.reserve(B, R6).status, CONFLICT, 'still reserved by A');
  for (const [name, cdb] of COMMANDS) {
    t.notOk(res.isConflict(A, cdb) && name !== 'PRIN' && name !== 'PROUT', `holder: ${name}`);
  }
  const allowed = new Set(['INQUIRY', 'REPORTLUNS']);
  for (const [name, cdb] of COMMANDS) {
    t.equal(res.isConflict(B, cdb), !allowed.has(name), `other nexus: ${name}`);
  }
  t.ok(res.isConflict(B, CDB6(0x03)) === false, 'REQUEST SENSE allowed');
  t.ok(res.isConflict(A, PR_IN), 'PR IN conflicts with an SPC-2 reservation even from its holder');
  t.ok(res.isConflict(B, PR_OUT));
  const third = CDB10(0x56); third[1] = 0x10;
  t.same(sense(res.reserve(A, third)).sks, [0xc8 | 4, 0, 1], 'third-party RESERVE(10)');
  t.equal(res.release(A, L10).status, GOOD);
  t.equal(res.spc2Holder, undefined);
  t.notOk(res.isConflict(B, WRITE10));

  t.equal(res.reserve(B, R10).status, GOOD);
  res.onLogicalUnitReset();
  t.notOk(res.isConflict(A, WRITE10), 'LU reset releases it');
  t.equal(res.reserve(B, R10).status, GOOD);
  res.onNexusLoss(A);
  t.ok(res.isConflict(A, WRITE10), 'loss of another nexus keeps it');
  res.onNexusLoss(B);
  t.notOk(res.isConflict(A, WRITE10), 'loss of the holder releases it');
});

t.test('SPC-2 RESERVE/RELEASE conflict with persistent registrations (CRH=0)', async t => {
  const { res } = setup();
  await register(res, A, 1n);
  t.ok(res.isConflict(A, CDB6(0x16)));
  t.ok(res.isConflict(B, CDB10(0x57)));
  t.equal(res.reserve(A, CDB6(0x16)).status, CONFLICT);
  t.equal(res.release(B, CDB6(0x17)).status, CONFLICT);
  await reserve(res, A, 1n, PrType.WriteExclusive);
  res.onLogicalUnitReset();
  res.onNexusLoss(A);
  t.same(readReservation(res), { key: 1n, type: PrType.WriteExclusive }, 'PR state survives resets and nexus loss');
  t.same(readKeys(res), [1n]);
});

t.test('libiscsi-style access matrix', async t => {
  // [type, registered B can read, write, unregistered B can read, write]
  const rows = [
    [PrType.ExclusiveAccess, 0, 0, 0, 0], [PrType.WriteExclusive, 1, 0, 1, 0],
    [PrType.ExclusiveAccessRegistrantsOnly, 1, 1, 0, 0], [PrType.WriteExclusiveRegistrantsOnly, 1, 1, 1, 0],
    [PrType.ExclusiveAccessAllRegistrants, 1, 1, 0, 0], [PrType.WriteExclusiveAllRegistrants, 1, 1, 1, 0],
  ] as const;
  for (const [type, rr, rw, ur, uw] of rows) {
    const { res } = setup();
    await prOut(res, A, PrOutAction.RegisterAndIgnoreExistingKey, 0, { saKey: 1n });
    await prOut(res, B, PrOutAction.RegisterAndIgnoreExistingKey, 0, { saKey: 2n });
    t.equal((await reserve(res, A, 1n, type)).status, GOOD);
    t.same(readReservation(res), { key: type >= 7 ? 0n : 1n, type });
    t.same([!res.isConflict(B, READ10), !res.isConflict(B, WRITE10)], [!!rr, !!rw], `type ${type} registered`);
    await register(res, B, 0n, 2n);
    t.same([!res.isConflict(B, READ10), !res.isConflict(B, WRITE10)], [!!ur, !!uw], `type ${type} unregistered`);
    t.equal((await prOut(res, A, PrOutAction.Release, type, { key: 1n })).status, GOOD);
    t.equal((await register(res, A, 0n, 1n)).status, GOOD);
    t.same(readKeys(res), []);
  }
});
