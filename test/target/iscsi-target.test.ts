// The iSCSI session layer end to end over loopback TCP: login (CHAP, ACL, errors), discovery,
// immediate/unsolicited/solicited data, Data-In splitting, residuals, CmdSN window, NOP, Reject,
// task management, reinstatement and logout.

import t, { type Test } from 'tap';
import { TestInitiator, type LoginOptions } from '../fixtures/initiator.js';
import { startInProcessTarget, TEST_IQN } from '../fixtures/iscsi-target.js';
import { LoginStatus, RejectReason, RESERVED_TAG, TmfResponse, TmfFunction } from '../../src/protocol/iscsi/constants.js';
import { parseTextData, encodeTextPairs } from '../../src/protocol/iscsi/text.js';
import { chapResponse, parseChapBinary } from '../../src/protocol/iscsi/chap.js';
import type { Reject, ScsiResponse, TextResponse } from '../../src/protocol/iscsi/pdu-types.js';

function read10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10); c[0] = 0x28; c.writeUInt32BE(lba, 2); c.writeUInt16BE(blocks, 7); return c;
}
function write10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10); c[0] = 0x2a; c.writeUInt32BE(lba, 2); c.writeUInt16BE(blocks, 7); return c;
}
const TUR = Buffer.alloc(6);
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff; return b;
}

async function loggedIn(t: Test, port: number, opts: LoginOptions = {}): Promise<TestInitiator> {
  const ini = await TestInitiator.connect(port);
  t.teardown(() => ini.close());
  const r = await ini.login(opts);
  t.equal(r.status, 0, 'login succeeds');
  // Clear the power-on unit attention.
  await ini.command(TUR);
  return ini;
}

t.test('login, discovery and access control', async t => {
  const target = await startInProcessTarget(t, { allowInitiators: ['iqn.2025-01.test:allowed'] });

  await t.test('discovery SendTargets=All names the portal reached', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const r = await ini.login({ sessionType: 'Discovery', initiatorName: 'iqn.2025-01.test:anyone' });
    t.equal(r.status, 0);
    ini.send({ kind: 'TextRequest', immediate: true, final: true, continue: false, lun: 0n, itt: ini.nextItt(), ttt: RESERVED_TAG,
      cmdSN: ini.cmdSN, expStatSN: ini.expStatSN, data: encodeTextPairs([['SendTargets', 'All']]) });
    const resp = await ini.next() as TextResponse;
    t.equal(resp.kind, 'TextResponse');
    t.same(parseTextData(resp.data).pairs, [['TargetName', TEST_IQN], ['TargetAddress', `127.0.0.1:${target.port},1`]]);
    // SCSI commands are not allowed in a discovery session: Reject and the connection ends.
    ini.send({ kind: 'ScsiCommand', immediate: false, final: true, read: false, write: false, attr: 1, lun: 0n, itt: ini.nextItt(),
      expectedDataTransferLength: 0, cmdSN: ini.cmdSN, expStatSN: ini.expStatSN, cdb: TUR, data: Buffer.alloc(0) });
    const rej = await ini.next() as Reject;
    t.equal(rej.kind, 'Reject');
    t.equal(rej.reason, RejectReason.ProtocolError);
    t.ok(await ini.waitClosed(), 'connection closed');
  });

  await t.test('unknown target name → target not found', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const r = await ini.login({ targetName: 'iqn.2025-01.test:other', initiatorName: 'iqn.2025-01.test:allowed' });
    t.equal(r.status, LoginStatus.NotFound);
    t.ok(await ini.waitClosed());
  });

  await t.test('initiator not in the ACL → authorization failure', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const r = await ini.login({ initiatorName: 'iqn.2025-01.test:stranger' });
    t.equal(r.status, LoginStatus.AuthorizationFailure);
  });

  await t.test('missing InitiatorName → missing parameter', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const r = await ini.loginStep(0, 1, true, [['TargetName', TEST_IQN], ['AuthMethod', 'None']]);
    t.equal(r.pdu.status, LoginStatus.MissingParameter);
  });

  await t.test('unsupported SessionType', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const r = await ini.loginStep(0, 1, true, [['InitiatorName', 'iqn.2025-01.test:allowed'], ['SessionType', 'Bogus']]);
    t.equal(r.pdu.status, LoginStatus.SessionTypeNotSupported);
  });

  await t.test('allowed initiator logs in and gets a TSIH', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const r = await ini.login({ initiatorName: 'iqn.2025-01.test:allowed' });
    t.equal(r.status, 0);
    t.not(r.tsih, 0);
    t.equal(ini.negotiated.get('TargetPortalGroupTag'), '1');
    t.ok(ini.negotiated.has('MaxRecvDataSegmentLength'), 'target declared MaxRecvDataSegmentLength');
  });
});

t.test('CHAP one-way and mutual', async t => {
  const chap = { user: 'alice', secret: 'secret-123456' };
  const mutualChap = { user: 'target', secret: 'target-secret-99' };
  const target = await startInProcessTarget(t, { chap, mutualChap });

  await t.test('right secret', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    t.equal((await ini.login({ chap })).status, 0);
  });
  await t.test('wrong secret → authentication failure', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    t.equal((await ini.login({ chap: { user: 'alice', secret: 'wrong-secret-1' } })).status, LoginStatus.AuthenticationFailure);
  });
  await t.test('no CHAP offered → authentication failure', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    t.equal((await ini.login()).status, LoginStatus.AuthenticationFailure);
  });
  await t.test('skipping the security stage → authentication failure', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    t.equal((await ini.login({ skipSecurity: true })).status, LoginStatus.AuthenticationFailure);
  });
  await t.test('mutual: the target proves the mutual secret', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    const challenge = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const r = await ini.login({ chap, mutual: { id: 7, challenge } });
    t.equal(r.status, 0);
    t.equal(ini.negotiated.get('CHAP_N'), 'target');
    const got = parseChapBinary(ini.negotiated.get('CHAP_R') ?? '');
    t.same(got, chapResponse(7, Buffer.from(mutualChap.secret), challenge));
  });
  await t.test('discovery works without CHAP', async t => {
    const ini = await TestInitiator.connect(target.port);
    t.teardown(() => ini.close());
    t.equal((await ini.login({ sessionType: 'Discovery' })).status, 0);
  });
});

t.test('data transfer', async t => {
  const target = await startInProcessTarget(t, { negotiation: { maxOutstandingR2T: 2, maxBurstLength: 65536, firstBurstLength: 16384 } });

  await t.test('immediate + unsolicited + R2T write, read back split by MaxRecvDataSegmentLength', async t => {
    const ini = await loggedIn(t, target.port, {
      keys: [['InitialR2T', 'No'], ['ImmediateData', 'Yes'], ['MaxRecvDataSegmentLength', '8192'],
        ['FirstBurstLength', '16384'], ['MaxBurstLength', '65536'], ['MaxOutstandingR2T', '2']],
    });
    ini.maxRecvDataSegmentLength = 4096; // what we send per Data-Out (target declared more)
    const data = pattern(256 * 1024, 1);
    const w = await ini.command(write10(100, 512), { write: data, immediate: 8192, firstBurst: 16384, unsolicited: true });
    t.equal(w.status, 0);
    t.equal(w.r2ts, Math.ceil((256 * 1024 - 16384) / 65536), 'R2Ts of MaxBurstLength each');
    t.equal(w.residual, 0);
    const r = await ini.command(read10(100, 512), { read: data.length });
    t.equal(r.status, 0);
    t.ok(r.data.equals(data), 'data reads back');
    t.equal(r.dataIns, 256 * 1024 / 8192, 'Data-In PDUs sized by our MaxRecvDataSegmentLength');
    t.notOk(r.underflow || r.overflow);
  });

  await t.test('residuals', async t => {
    const ini = await loggedIn(t, target.port);
    const under = await ini.command(read10(0, 1), { read: 1024 });
    t.ok(under.underflow);
    t.equal(under.residual, 512);
    t.equal(under.data.length, 512);
    const over = await ini.command(read10(0, 4), { read: 512 });
    t.ok(over.overflow);
    t.equal(over.residual, 1536);
    t.equal(over.data.length, 512);
  });

  await t.test('a bad DataSN is rejected and the session carries on', async t => {
    const ini = await loggedIn(t, target.port, {
      keys: [['InitialR2T', 'Yes'], ['ImmediateData', 'No'], ['MaxRecvDataSegmentLength', '8192']],
    });
    const itt = ini.nextItt();
    ini.send({ kind: 'ScsiCommand', immediate: false, final: true, read: false, write: true, attr: 1, lun: 0n, itt,
      expectedDataTransferLength: 1024, cmdSN: ini.cmdSN++, expStatSN: ini.expStatSN, cdb: write10(0, 2), data: Buffer.alloc(0) });
    const r2t = await ini.next();
    t.equal(r2t?.kind, 'R2T');
    if (r2t?.kind !== 'R2T') return;
    const rejectsBefore = target.node.stats.rejectsSent;
    ini.send({ kind: 'DataOut', final: true, lun: 0n, itt, ttt: r2t.ttt, expStatSN: ini.expStatSN, dataSN: 5, bufferOffset: 0, data: Buffer.alloc(1024, 1) });
    const rej = await ini.next() as Reject;
    t.equal(rej.kind, 'Reject');
    t.equal(rej.reason, RejectReason.ProtocolError);
    t.equal(rej.rejectedHeader.readUInt32BE(16), itt, 'the rejected header is the Data-Out');
    t.equal(target.node.stats.rejectsSent, rejectsBefore + 1, 'the Reject is counted (openebs_iscsi_rejects_total)');
    const ok = await ini.command(read10(0, 2), { read: 1024 });
    t.equal(ok.status, 0);
    t.notOk(ok.data.equals(Buffer.alloc(1024, 1)), 'the broken write was not applied');
  });

  await t.test('solicited sequences out of order are refused and nothing is written', async t => {
    const ini = await loggedIn(t, target.port, {
      keys: [['InitialR2T', 'Yes'], ['ImmediateData', 'No'], ['MaxRecvDataSegmentLength', '65536'],
        ['MaxBurstLength', '65536'], ['MaxOutstandingR2T', '2']],
    });
    const before = await ini.command(read10(4000, 256), { read: 128 * 1024 });
    const itt = ini.nextItt();
    ini.send({ kind: 'ScsiCommand', immediate: false, final: true, read: false, write: true, attr: 1, lun: 0n, itt,
      expectedDataTransferLength: 128 * 1024, cmdSN: ini.cmdSN++, expStatSN: ini.expStatSN, cdb: write10(4000, 256), data: Buffer.alloc(0) });
    const first = await ini.next();
    const second = await ini.next();
    t.equal(first?.kind, 'R2T');
    t.equal(second?.kind, 'R2T', 'two R2Ts outstanding');
    if (first?.kind !== 'R2T' || second?.kind !== 'R2T') return;
    t.equal(second.bufferOffset, 65536);
    // The second sequence first: a hole would reach the disk if this were accepted.
    ini.send({ kind: 'DataOut', final: true, lun: 0n, itt, ttt: second.ttt, expStatSN: ini.expStatSN, dataSN: 0,
      bufferOffset: 65536, data: Buffer.alloc(65536, 0x5a) });
    const rej = await ini.next() as Reject;
    t.equal(rej.kind, 'Reject');
    const after = await ini.command(read10(4000, 256), { read: 128 * 1024 });
    t.ok(after.data.equals(before.data), 'the LBA range is unchanged');
  });

  await t.test('CmdSN beyond MaxCmdSN is ignored; the next in-window command works', async t => {
    const ini = await loggedIn(t, target.port);
    const itt = ini.nextItt();
    ini.send({ kind: 'ScsiCommand', immediate: false, final: true, read: false, write: false, attr: 1, lun: 0n, itt,
      expectedDataTransferLength: 0, cmdSN: ini.cmdSN + 1000, expStatSN: ini.expStatSN, cdb: TUR, data: Buffer.alloc(0) });
    await t.rejects(ini.next(500), /no PDU/, 'no answer');
    const r = await ini.command(TUR);
    t.equal(r.status, 0);
  });

  await t.test('out-of-order CmdSN is delivered in order', async t => {
    const ini = await loggedIn(t, target.port);
    const first = ini.cmdSN;
    const send = (cmdSN: number, itt: number): void => ini.send({ kind: 'ScsiCommand', immediate: false, final: true, read: false,
      write: false, attr: 1, lun: 0n, itt, expectedDataTransferLength: 0, cmdSN, expStatSN: ini.expStatSN, cdb: TUR, data: Buffer.alloc(0) });
    send(first + 1, 0x9001);
    await t.rejects(ini.next(300), /no PDU/, 'held until the gap fills');
    send(first, 0x9000);
    ini.cmdSN += 2;
    const a = await ini.next() as ScsiResponse;
    const b = await ini.next() as ScsiResponse;
    t.same([a.itt, b.itt].sort(), [0x9000, 0x9001]);
  });

  await t.test('NOP-Out ping is echoed', async t => {
    const ini = await loggedIn(t, target.port);
    const itt = ini.nextItt();
    ini.send({ kind: 'NopOut', immediate: true, lun: 0n, itt, ttt: RESERVED_TAG, cmdSN: ini.cmdSN, expStatSN: ini.expStatSN, data: Buffer.from('ping') });
    const nop = await ini.next();
    t.equal(nop?.kind, 'NopIn');
    if (nop?.kind === 'NopIn') {
      t.equal(nop.itt, itt);
      t.equal(nop.data.toString(), 'ping');
    }
  });

  await t.test('SNACK and unknown opcodes are rejected, the session survives', async t => {
    const ini = await loggedIn(t, target.port);
    ini.send({ kind: 'SnackRequest', type: 0, lun: 0n, itt: ini.nextItt(), ttt: RESERVED_TAG, expStatSN: ini.expStatSN, begRun: 0, runLength: 0 });
    const rej = await ini.next() as Reject;
    t.equal(rej.kind, 'Reject');
    const bogus = Buffer.alloc(48);
    bogus[0] = 0x1c; // unassigned initiator opcode
    ini.sendRaw(bogus);
    const rej2 = await ini.next() as Reject;
    t.equal(rej2.kind, 'Reject');
    t.equal(rej2.reason, RejectReason.CommandNotSupported);
    t.equal((await ini.command(TUR)).status, 0);
  });

  await t.test('ABORT TASK for an unknown task', async t => {
    const ini = await loggedIn(t, target.port);
    ini.send({ kind: 'TaskManagementRequest', immediate: true, function: TmfFunction.AbortTask, lun: 0n, itt: ini.nextItt(),
      referencedTaskTag: 0x7777, cmdSN: ini.cmdSN, expStatSN: ini.expStatSN, refCmdSN: ini.cmdSN - 1, expDataSN: 0 });
    const r = await ini.next();
    t.equal(r?.kind, 'TaskManagementResponse');
    if (r?.kind === 'TaskManagementResponse') t.equal(r.response, TmfResponse.TaskDoesNotExist);
    ini.send({ kind: 'TaskManagementRequest', immediate: true, function: TmfFunction.LogicalUnitReset, lun: 0n, itt: ini.nextItt(),
      referencedTaskTag: RESERVED_TAG, cmdSN: ini.cmdSN, expStatSN: ini.expStatSN, refCmdSN: 0, expDataSN: 0 });
    const r2 = await ini.next();
    if (r2?.kind === 'TaskManagementResponse') t.equal(r2.response, TmfResponse.FunctionComplete);
    else t.fail(`unexpected ${r2?.kind}`);
  });

  await t.test('reinstatement closes the old session; logout closes the connection', async t => {
    const a = await loggedIn(t, target.port, { isid: 0x400000001234n });
    const b = await loggedIn(t, target.port, { isid: 0x400000001234n });
    t.ok(await a.waitClosed(), 'old connection closed on reinstatement');
    const resp = await b.logout();
    t.equal(resp?.kind, 'LogoutResponse');
    t.ok(await b.waitClosed(), 'closed after logout');
  });

  await t.test('CRC32C header and data digests', async t => {
    const ini = await loggedIn(t, target.port, { keys: [['HeaderDigest', 'CRC32C'], ['DataDigest', 'CRC32C'], ['MaxRecvDataSegmentLength', '65536']] });
    t.equal(ini.negotiated.get('HeaderDigest'), 'CRC32C');
    const data = pattern(64 * 1024, 9);
    t.equal((await ini.command(write10(2000, 128), { write: data })).status, 0);
    const r = await ini.command(read10(2000, 128), { read: data.length });
    t.ok(r.data.equals(data));
    // A corrupted header digest drops the connection.
    const bad = Buffer.alloc(52);
    bad[0] = 0x40; // NOP-Out, immediate
    bad.writeUInt32BE(RESERVED_TAG, 20);
    bad.writeUInt32LE(0xdeadbeef, 48);
    ini.sendRaw(bad);
    t.ok(await ini.waitClosed(), 'header digest error drops the connection');
  });
});

t.test('NOP-In pings drop a dead connection and keep a live one', async t => {
  const target = await startInProcessTarget(t, { nopInIntervalMs: 200, nopInTimeoutMs: 1000 });
  const dead = await TestInitiator.connect(target.port);
  t.teardown(() => dead.close());
  t.equal((await dead.login()).status, 0);
  const ping = await dead.next(2000);
  t.equal(ping?.kind, 'NopIn');
  if (ping?.kind === 'NopIn') {
    t.equal(ping.itt, RESERVED_TAG, 'target-initiated ping');
    t.not(ping.ttt, RESERVED_TAG, 'asks for an answer');
  }
  t.ok(await dead.waitClosed(5000), 'unanswered ping drops the connection');

  const live = await TestInitiator.connect(target.port);
  t.teardown(() => live.close());
  t.equal((await live.login()).status, 0);
  const deadline = Date.now() + 2500; // longer than interval + timeout
  while (Date.now() < deadline) {
    const p = await live.next(2000);
    if (p?.kind === 'NopIn' && p.itt === RESERVED_TAG) {
      live.send({ kind: 'NopOut', immediate: true, lun: 0n, itt: RESERVED_TAG, ttt: p.ttt, cmdSN: live.cmdSN, expStatSN: live.expStatSN, data: Buffer.alloc(0) });
    }
  }
  t.notOk(live.closed, 'answered pings keep the connection');
});
