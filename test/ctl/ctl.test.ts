// cstor-ctl against a real gRPC management server (handlers scripted here; the end-to-end run
// against `npm start` is in test/integration/operations.test.ts): discovery through the data
// directory, each command's output, and one-line errors with non-zero exits.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCtl } from '../../src/ctl/main.js';
import { renderStatus } from '../../src/ctl/render.js';
import { ManagementServer } from '../../src/target/management/management-server.js';
import { ManagementError, type ManagementHandlers, type VolumeStatus } from '../../src/protocol/management/management-codec.js';
import { ENDPOINTS_FILE, formatEndpoints } from '../../src/protocol/management/endpoints.js';
import { createRootLogger } from '../../src/shared/logger.js';

const STATUS: VolumeStatus = {
  name: 'vol1', uuid: '6f1c2b7e-3d4a-4c1e-9a6b-2f0e8d5c7a91', iqn: 'iqn.2016-09.com.openebs.cstor:vol1', phase: 'Degraded',
  capacityBytes: 1 << 30, blockSize: 512, replicationFactor: 3, consistencyFactor: 2, epoch: 7, uptimeSeconds: 125,
  portal: '127.0.0.1:3260', rebuildRateMibPerSec: 200,
  replicas: [
    { id: 'r1', mode: 'Healthy', reason: '', checkpointedIoSeq: 900, inflightReads: 1, inflightWrites: 2, inflightSyncs: 0, uptimeSeconds: 120, quorum: true, address: '127.0.0.1:40001' },
    { id: 'r2', mode: 'Healthy', reason: '', checkpointedIoSeq: 900, inflightReads: 0, inflightWrites: 2, inflightSyncs: 0, uptimeSeconds: 120, quorum: true, address: '127.0.0.1:40002' },
    { id: 'r3', mode: 'Rebuilding', reason: 'restarted', checkpointedIoSeq: 400, inflightReads: 0, inflightWrites: 2, inflightSyncs: 0, uptimeSeconds: 5, quorum: false, address: '127.0.0.1:40003',
      rebuild: { state: 'running', bytesDone: 256 << 20, bytesTotal: 1 << 30, rateBytesPerSec: 64 << 20, etaSeconds: 12, source: 'r1' } },
  ],
};

t.test('commands against a live management server found through --data-dir', async (t) => {
  const calls: string[] = [];
  let capacity = STATUS.capacityBytes;
  const handlers: ManagementHandlers = {
    status: async () => ({ ...STATUS, capacityBytes: capacity }),
    resize: async ({ capacityBytes }) => {
      calls.push(`resize ${capacityBytes}`);
      if (capacityBytes < capacity) throw new ManagementError('FAILED_PRECONDITION', `shrinking is not supported (${capacity} → ${capacityBytes} bytes)`);
      capacity = capacityBytes;
      return { capacityBytes };
    },
    setRebuildRate: async ({ mibPerSec }) => {
      calls.push(`rate ${mibPerSec}`);
      return { mibPerSec };
    },
    ejectReplica: async ({ id, reason }) => {
      calls.push(`eject ${id} ${reason}`);
      if (id !== 'r2') throw new ManagementError('NOT_FOUND', `no replica '${id}'`);
      return { mode: 'Degraded' };
    },
    listSessions: async () => ({
      sessions: [{ initiatorName: 'iqn.1994-05.com.redhat:node1', isid: '23d000000001', tsih: 1,
        connections: [{ address: '127.0.0.1:51000', cid: 0, headerDigest: true, dataDigest: false }],
        parameters: { MaxBurstLength: '262144', ImmediateData: 'Yes' } }],
    }),
  };
  const server = new ManagementServer(handlers, createRootLogger({ level: 'silent' }));
  const { port } = await server.listen('127.0.0.1', 0);
  t.teardown(() => server.close());
  const dir = t.testdir();
  mkdirSync(join(dir, 'state'));
  writeFileSync(join(dir, 'state', ENDPOINTS_FILE), formatEndpoints({ pid: process.pid, iqn: STATUS.iqn, management: `127.0.0.1:${port}`, portal: STATUS.portal }));

  const ctl = async (...argv: string[]): Promise<{ code: number; out: string }> => {
    let out = '';
    const code = await runCtl(argv, (text) => { out += `${text}\n`; });
    return { code, out };
  };
  const json = await ctl('status', '--data-dir', dir, '--json');
  t.equal(json.code, 0);
  t.same(JSON.parse(json.out), STATUS, 'status --json round-trips every field');

  const table = await ctl('status', '--data-dir', dir);
  t.match(table.out, /volume vol1 {2}Degraded {2}1\.0 GiB/);
  t.match(table.out, /r3\s+Rebuilding\s+no\s+400\s+0\/2\/0/);
  t.match(table.out, /rebuild r3 █+░+\s+25\.0%\s+256\.0 MiB \/ 1\.0 GiB\s+64\.0 MiB\/s\s+ETA 12s\s+from r1/, 'a progress bar with ETA');

  t.same(await ctl('resize', '2GiB', '--data-dir', dir), { code: 0, out: `resized to ${2 ** 31} bytes\n` });
  await t.rejects(ctl('resize', '1GiB', '--data-dir', dir), /shrinking is not supported/, 'the server refusal is the message');
  t.same(await ctl('rebuild', 'rate', '50', '--data-dir', dir), { code: 0, out: 'rebuild rate 50 MiB/s\n' });
  t.same(await ctl('replica', 'eject', 'r2', '--reason', 'maintenance', '--data-dir', dir), { code: 0, out: 'replica r2 ejected: now Degraded\n' });
  await t.rejects(ctl('replica', 'eject', 'r9', '--data-dir', dir), /no replica 'r9'/);
  const list = await ctl('replica', 'list', '--address', `127.0.0.1:${port}`);
  t.match(list.out, /^REPLICA\s+MODE/m);
  t.match(list.out, /r3\s+Rebuilding\s+no/);
  const sessions = await ctl('sessions', '--data-dir', dir);
  t.match(sessions.out, /iqn\.1994-05\.com\.redhat:node1\s+23d000000001\s+1\s+127\.0\.0\.1:51000\s+0\s+CRC32C\/None\s+MaxBurstLength=262144 ImmediateData=Yes/);
  t.same(calls, [`resize ${2 ** 31}`, `resize ${2 ** 30}`, 'rate 50', 'eject r2 maintenance', 'eject r9 ejected by an operator']);
});

t.test('usage errors never reach a target; a missing or dead target is named', async (t) => {
  const ctl = (...argv: string[]): Promise<number> => runCtl(argv, () => {});
  await t.rejects(ctl('frobnicate'), /unknown command 'frobnicate'/);
  await t.rejects(ctl('resize'), /usage: resize SIZE/);
  await t.rejects(ctl('resize', 'lots'), /resize: 'lots' is not a size/);
  await t.rejects(ctl('rebuild', 'rate', 'fast'), /'fast' is not a rate/);
  await t.rejects(ctl('replica', 'remove', 'r1'), /usage: replica list \| replica eject ID/);
  await t.rejects(ctl('status', '--watch', '--json'), /do not go together/);
  await t.rejects(ctl('status', '--bogus'), /Unknown option '--bogus'/);
  t.equal(await ctl(), 64, 'no command prints the usage and fails');
  t.equal(await ctl('--help'), 0);

  const dir = t.testdir();
  await t.rejects(ctl('status', '--data-dir', dir), /no running volume found in .*endpoints\.json does not exist/);
  mkdirSync(join(dir, 'state'));
  writeFileSync(join(dir, 'state', ENDPOINTS_FILE), '{"pid": 1}');
  await t.rejects(ctl('status', '--data-dir', dir), /endpoints\.json: field 'iqn' is missing/);
  // A pid that cannot exist (above pid_max) stands for a target that exited.
  writeFileSync(join(dir, 'state', ENDPOINTS_FILE), formatEndpoints({ pid: 2 ** 30, iqn: 'iqn.x:y', management: '127.0.0.1:1', portal: '127.0.0.1:3260' }));
  await t.rejects(ctl('status', '--data-dir', dir), /its target \(pid 1073741824\) has exited/);
  await t.rejects(ctl('status', '--address', '127.0.0.1:1'), /does not answer \(UNAVAILABLE\)/);
});

t.test('renderStatus without a rebuild has no progress line', async (t) => {
  const text = renderStatus({ ...STATUS, phase: 'Healthy', replicas: STATUS.replicas.slice(0, 2) });
  t.notMatch(text, /rebuild r\d/);
  t.match(text, /2\/3 in sync, write quorum 2, rebuild rate 200 MiB\/s/);
});
