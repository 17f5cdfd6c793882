// Hostile-initiator fuzzing over raw TCP on 127.0.0.1: the target must neither exit nor stop
// serving new sessions, whatever arrives. Bounded in count and time; the seed is printed
// (FUZZ_SEED=N replays a run; SOAK=1 runs 20x more iterations).
import t, { type Test } from 'tap';
import {
  RawConnection, login, loginRequest, scsiCommand, logoutRequest, nopOut, assemble, loginAndInquiry, prng,
  encodeTextKeys, OP, type SessionState,
} from '../fixtures/raw-pdu.js';
import { runCommand, requireTool } from '../fixtures/exec.js';
import { startPeer, type Peer } from '../fixtures/peer.js';

const SOAK = process.env['SOAK'] === '1';
const SCALE = SOAK ? 20 : 1;
const SEED = process.env['FUZZ_SEED'] !== undefined ? Number(process.env['FUZZ_SEED']) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
// Per phase: stop early when the time is up even if the count is not reached.
const PHASE_BUDGET_MS = (SOAK ? 600 : 20) * 1000;
const READ_WAIT_MS = 50;

t.setTimeout((SOAK ? 90 : 10) * 60_000);
t.comment(`fuzz seed=${SEED} (replay with FUZZ_SEED=${SEED})`);

const rnd = prng(SEED);

/** Runs `body` up to `count` times or until the phase budget is spent. */
async function phase(t: Test, name: string, count: number, body: (i: number) => Promise<void>): Promise<void> {
  const started = Date.now();
  let i = 0;
  for (; i < count && Date.now() - started < PHASE_BUDGET_MS; i++) await body(i);
  t.comment(`${name}: ${i} iterations in ${Date.now() - started} ms`);
}

/** Connects, sends, lets the target react for a moment, then closes. Errors from the peer are expected. */
async function sendAndDrop(peer: Peer, payload: Buffer, options: { halfClose?: boolean; waitMs?: number } = {}): Promise<void> {
  let conn: RawConnection;
  try {
    conn = await RawConnection.connect(peer.host, peer.port, 5000);
  } catch {
    // A target that refuses connections fails the liveness check at the end; keep going here.
    return;
  }
  try {
    await conn.send(payload);
    if (options.halfClose === true) conn.socket.end();
    await conn.waitClosed(options.waitMs ?? READ_WAIT_MS);
  } finally {
    conn.destroy();
  }
}

/** Alive is not enough: the listening socket must still accept connections. */
async function assertServing(t: Test, peer: Peer): Promise<void> {
  peer.assertAlive(t);
  try {
    const conn = await RawConnection.connect(peer.host, peer.port, 5000);
    conn.destroy();
    t.pass('still accepting connections');
  } catch (err) {
    t.fail(`no longer accepting connections: ${String(err)}`, { log: peer.logTail(40) });
  }
}

function validLoginPdu(iqn: string): Buffer {
  return loginRequest({
    csg: 0, nsg: 1, transit: true, itt: rnd.int(0xffffffff), cmdSN: 1,
    keys: { InitiatorName: 'iqn.2025-01.org.cstor-ts.test:fuzz', TargetName: iqn, SessionType: 'Normal', AuthMethod: 'None' },
  });
}

function mutate(buf: Buffer, maxFlips: number): Buffer {
  const out = Buffer.from(buf);
  const flips = 1 + rnd.int(maxFlips);
  for (let i = 0; i < flips; i++) {
    const at = rnd.int(out.length);
    switch (rnd.int(3)) {
      case 0: out[at] = rnd.int(256); break;
      case 1: out[at] = (out[at] ?? 0) ^ (1 << rnd.int(8)); break;
      default: out[at] = rnd.pick([0x00, 0xff, 0x7f, 0x80]);
    }
  }
  return out;
}

const OPCODES = [0x00, 0x03, 0x08, 0x0a, 0x12, 0x1a, 0x1b, 0x25, 0x28, 0x2a, 0x2f, 0x35, 0x41, 0x42, 0x48, 0x4d, 0x55, 0x5a,
  0x5e, 0x5f, 0x88, 0x89, 0x8a, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3, 0x83, 0x84, 0x16, 0x17];

function randomCdb(): Buffer {
  const cdb = Buffer.alloc(16);
  if (rnd.int(4) === 0) return rnd.bytes(16); // anything at all
  cdb[0] = rnd.pick(OPCODES);
  for (let i = 1; i < 16; i++) cdb[i] = rnd.int(3) === 0 ? rnd.int(256) : 0;
  return cdb;
}

function randomScsiPdu(s: SessionState): Buffer {
  const write = rnd.int(3) === 0;
  const read = !write && rnd.int(2) === 0;
  const edtl = rnd.pick([0, 512, 4096, 65536, rnd.int(1 << 20), 0xffffffff]);
  const data = rnd.int(4) === 0 ? rnd.bytes(rnd.int(8192)) : Buffer.alloc(0);
  const pdu = scsiCommand({
    cdb: randomCdb(), itt: s.itt++, cmdSN: rnd.int(8) === 0 ? rnd.int(0xffffffff) : s.cmdSN,
    expStatSN: s.expStatSN, expectedDataTransferLength: edtl, read, write, lun: rnd.int(8) === 0 ? rnd.int(300) : 0,
    immediate: rnd.int(4) === 0, data,
  });
  s.cmdSN = (s.cmdSN + 1) >>> 0;
  if (rnd.int(3) === 0) return mutate(pdu.subarray(0, 48), 4); // header-only mutation; data dropped on purpose
  return pdu;
}

/** Reads and discards whatever the target sends for a moment; tracks StatSN so sessions stay plausible. */
async function drain(conn: RawConnection, s: SessionState, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const pdu = await conn.read(deadline - Date.now());
    if (pdu === 'closed' || pdu === 'timeout') return;
    if (pdu.opcode === OP.SCSI_RSP || pdu.opcode === OP.LOGOUT_RSP || (pdu.opcode === OP.DATA_IN && ((pdu.bhs[1] ?? 0) & 1) !== 0)) {
      s.expStatSN = (pdu.bhs.readUInt32BE(24) + 1) >>> 0;
    }
  }
}

t.test('fuzz the target over raw TCP', async t => {
  const peer = await startPeer(t, { sizeBytes: 64 << 20 });
  t.comment(`peer ${peer.kind} pid ${peer.pid} at ${peer.portal}`);

  // Baseline: the raw client itself works before we start.
  const before = await loginAndInquiry(peer.host, peer.port, peer.iqn);
  t.ok(before.vendor.length > 0, `raw login + INQUIRY works before fuzzing (vendor '${before.vendor}')`);

  await t.test('random bytes', async t => {
    await phase(t, 'random bytes', 150 * SCALE, async () => {
      await sendAndDrop(peer, rnd.bytes(1 + rnd.int(rnd.int(2) === 0 ? 64 : 4096)), { halfClose: rnd.int(2) === 0 });
    });
    await assertServing(t, peer);
  });

  await t.test('mutated login requests', async t => {
    await phase(t, 'mutated login', 300 * SCALE, async () => {
      await sendAndDrop(peer, mutate(validLoginPdu(peer.iqn), 8));
    });
    await assertServing(t, peer);
  });

  await t.test('truncated PDUs then close', async t => {
    await phase(t, 'truncated', 100 * SCALE, async () => {
      const pdu = validLoginPdu(peer.iqn);
      await sendAndDrop(peer, pdu.subarray(0, rnd.int(pdu.length)), { halfClose: true });
    });
    await assertServing(t, peer);
  });

  await t.test('wrong PDUs before login', async t => {
    const pdus = [
      scsiCommand({ cdb: Buffer.from([0x12, 0, 0, 0, 96, 0]), itt: 1, cmdSN: 1, expStatSN: 0, expectedDataTransferLength: 96, read: true }),
      logoutRequest({ itt: 2, cmdSN: 1, expStatSN: 0 }),
      nopOut({ itt: 3, cmdSN: 1, expStatSN: 0 }),
      (() => { const b = Buffer.alloc(48); b[0] = 0x40 | OP.TEXT; b[1] = 0x80; return assemble(b, encodeTextKeys({ SendTargets: 'All' })); })(),
      (() => { const b = Buffer.alloc(48); b[0] = OP.DATA_OUT; b[1] = 0x80; return assemble(b, Buffer.alloc(512)); })(),
      (() => { const b = Buffer.alloc(48); b[0] = 0x40 | OP.TASK_MGMT; b[1] = 0x80 | 5; return assemble(b); })(),
      (() => { const b = Buffer.alloc(48); b[0] = OP.SNACK; b[1] = 0x80; return assemble(b); })(),
      (() => { const b = Buffer.alloc(48); b[0] = 0x1c; return assemble(b); })(), // reserved opcode
      // A login request with AHS bytes and a version the target cannot support.
      (() => { const p = validLoginPdu(peer.iqn); p[2] = 0xff; p[3] = 0xf0; return p; })(),
      (() => { const p = validLoginPdu(peer.iqn); p[4] = 0xff; return p; })(),
    ];
    for (const pdu of pdus) await sendAndDrop(peer, pdu, { waitMs: 200 });
    await assertServing(t, peer);
  });

  await t.test('oversized DataSegmentLength', async t => {
    // Login phase limit is 8192 (RFC 7143 §13.12); claim 16 MiB and send some of it.
    const header = Buffer.from(validLoginPdu(peer.iqn).subarray(0, 48));
    await sendAndDrop(peer, Buffer.concat([assemble(header, Buffer.alloc(0), 0xffffff).subarray(0, 48), rnd.bytes(65536)]), { waitMs: 500 });
    // Claim it and send nothing more: the target should not keep a buffer of that size for us.
    await sendAndDrop(peer, assemble(Buffer.from(header), Buffer.alloc(0), 0xffffff).subarray(0, 48), { waitMs: 200 });
    // After login: a SCSI write whose data segment is far larger than MaxRecvDataSegmentLength.
    const conn = await RawConnection.connect(peer.host, peer.port);
    try {
      const s = await login(conn, { targetName: peer.iqn, operational: { ImmediateData: 'Yes', InitialR2T: 'No' } });
      const bhs = Buffer.from(scsiCommand({
        cdb: Buffer.from([0x2a, 0, 0, 0, 0, 0, 0, 0x08, 0, 0]), itt: s.itt++, cmdSN: s.cmdSN, expStatSN: s.expStatSN,
        expectedDataTransferLength: 1 << 20, write: true,
      }).subarray(0, 48));
      await conn.send(Buffer.concat([assemble(bhs, Buffer.alloc(0), 0xfffff0).subarray(0, 48), Buffer.alloc(1 << 20)]));
      await drain(conn, s, 500);
    } finally {
      conn.destroy();
    }
    await assertServing(t, peer);
  });

  await t.test('valid login, then mutated SCSI commands', async t => {
    let conn: RawConnection | undefined;
    let s: SessionState | undefined;
    let sessions = 0;
    let loginFailures = 0;
    let stopped = false;
    // The last PDUs sent, hex, for the failure message (replaying needs only the seed, but
    // seeing the bytes often tells the story at once).
    const recent: Buffer[] = [];
    try {
      await phase(t, 'mutated SCSI', 400 * SCALE, async () => {
        if (stopped) return;
        if (conn === undefined || conn.closed || s === undefined) {
          conn?.destroy();
          try {
            conn = await RawConnection.connect(peer.host, peer.port);
          } catch (err) {
            stopped = true;
            t.fail(`reconnect failed after ${sessions} sessions: ${String(err)}`, {
              lastPdus: recent.map(b => b.toString('hex')), log: peer.logTail(40),
            });
            return;
          }
          try {
            s = await login(conn, { targetName: peer.iqn, operational: { ImmediateData: rnd.int(2) === 0 ? 'Yes' : 'No' } });
            sessions++;
          } catch {
            loginFailures++;
            conn.destroy();
            conn = undefined;
            return;
          }
        }
        const pdu = randomScsiPdu(s);
        recent.push(pdu.subarray(0, 64));
        if (recent.length > 5) recent.shift();
        await conn.send(pdu);
        if (rnd.int(10) === 0) await conn.send(nopOut({ itt: s.itt++, cmdSN: s.cmdSN, expStatSN: s.expStatSN }));
        await drain(conn, s, rnd.int(5) === 0 ? 100 : 5);
        if (rnd.int(40) === 0) conn.destroy(); // drop with commands outstanding
      });
    } finally {
      (conn as RawConnection | undefined)?.destroy();
    }
    t.comment(`${sessions} sessions, ${loginFailures} login failures`);
    t.ok(sessions > 0, 'at least one session got to full feature phase');
    t.ok(loginFailures <= sessions, 'logins mostly succeed while fuzzing (the target keeps accepting sessions)');
    await assertServing(t, peer);
  });

  await t.test('still serving afterwards', async t => {
    peer.assertAlive(t, 'target process is alive after fuzzing');
    const after = await loginAndInquiry(peer.host, peer.port, peer.iqn);
    t.same(after, before, 'raw login + INQUIRY gives the same answer as before');
    const inq = await runCommand(requireTool('iscsi-inq'), [peer.url()], { timeoutMs: 30_000, t });
    t.equal(inq.code, 0, 'iscsi-inq works', { stdout: inq.stdout, stderr: inq.stderr });
  });
});
