// libiscsi's conformance suite (iscsi-test-cu, family ALL: SCSI + iSCSI tests, 230 of them in
// libiscsi 1.19) against the real target over 127.0.0.1.
// BASELINE_TGTD=1 runs it against Debian's tgtd instead and only reports the numbers
// (tgtd 1.0.85 with these flags: 162 passed, 9 failed, 59 skipped).
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { runCommand, requireTool, tail } from '../fixtures/exec.js';
import { parseCUnitOutput } from '../fixtures/cunit.js';
import { startPeer, BASELINE_TGTD } from '../fixtures/peer.js';

// The whole suite takes ~1-5 min; the cap is for a target that hangs test after test.
const HARD_LIMIT_MS = 20 * 60_000;
// No output for this long = a hung test (the longest single tests take seconds on tgtd).
const IDLE_LIMIT_MS = 3 * 60_000;
const MIN_PASSED = 175;
// Skips we accept, with the reason. A skip means the target lacks a feature libiscsi
// probes for; add an entry here only as a deliberate decision.
const ACCEPTED_SKIPS: ReadonlyMap<string, string> = new Map([]);
const INITIATOR_1 = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test';
const INITIATOR_2 = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2';

t.setTimeout(HARD_LIMIT_MS + 5 * 60_000);

t.test('iscsi-test-cu -t ALL', async t => {
  const cu = requireTool('iscsi-test-cu');
  const peer = await startPeer(t, { sizeBytes: 1 << 30 });
  const url = peer.url();
  t.comment(`peer ${peer.kind} pid ${peer.pid} at ${url}`);

  let running = '';
  const result = await runCommand(cu, [
    '--test', 'ALL',
    '--dataloss', // write/unmap/reservation tests: the LUN is a throwaway
    '--allow-sanitize', // otherwise the 10 SANITIZE tests skip whatever the target does
    '--initiator-name', INITIATOR_1,
    '--initiator-name-2', INITIATOR_2,
    url,
    url, // a second URL enables the MultipathIO tests (otherwise skipped)
  ], {
    timeoutMs: HARD_LIMIT_MS,
    idleTimeoutMs: IDLE_LIMIT_MS,
    t,
    onLine: line => {
      const m = /^ {2}Test: (\S+)/.exec(line);
      if (m !== null) running = m[1] ?? '';
    },
  });
  // The full output is long; keep it (overwritten each run) for a developer to read.
  const outFile = join(tmpdir(), `cstor-ts-iscsi-test-cu-${peer.kind}.out`);
  writeFileSync(outFile, result.stdout + '\n--- stderr ---\n' + result.stderr);
  t.comment(`full output: ${outFile}`);
  const report = parseCUnitOutput(result.stdout);
  const secs = (result.durationMs / 1000).toFixed(1);
  t.comment(`iscsi-test-cu exit ${result.code} signal ${result.signal} in ${secs} s; summary ${JSON.stringify(report.summary?.tests)}`);
  t.comment(`parsed: ${report.passed.length} passed, ${report.failed.length} failed, ${report.skipped.length} skipped`);
  if (report.failed.length > 0) t.comment(`failed: ${report.failed.join(' ')}`);
  if (report.skipped.length > 0) t.comment(`skipped: ${report.skipped.join(' ')}`);

  const failedDetail = report.tests
    .filter(x => x.outcome === 'failed')
    .map(x => `${x.name}: ${x.detail.filter(l => l.includes('[FAILED]') || /^\d+\. /.test(l)).slice(0, 3).join(' | ')}`);

  t.equal(result.killedBy, undefined,
    `iscsi-test-cu finished by itself (killed: ${result.killedBy}; running test: ${report.unfinished ?? running})`);
  t.ok(report.summary !== undefined, 'CUnit printed its run summary', { stdoutTail: tail(result.stdout, 20), stderrTail: tail(result.stderr, 20) });
  if (report.summary !== undefined) {
    t.equal(report.summary.tests.passed + report.summary.tests.failed, report.tests.length,
      'every test in the summary was parsed');
  }

  if (BASELINE_TGTD) {
    t.comment('BASELINE_TGTD=1: numbers reported, not asserted');
  } else {
    t.equal(report.summary?.suites.failed ?? -1, 0, 'no suite failed to initialise');
    t.same(report.failed, [], `0 failed (${report.failed.length} failed):\n${failedDetail.join('\n')}`);
    const unexpectedSkips = report.skipped.filter(n => !ACCEPTED_SKIPS.has(n));
    const skipReasons = report.tests
      .filter(x => x.outcome === 'skipped' && !ACCEPTED_SKIPS.has(x.name))
      .map(x => `${x.name}: ${x.detail.find(l => l.includes('[SKIPPED]')) ?? ''}`);
    t.same(unexpectedSkips, [], `0 skipped (${unexpectedSkips.length} skipped):\n${skipReasons.join('\n')}`);
    t.ok(report.passed.length >= MIN_PASSED, `at least ${MIN_PASSED} passed (got ${report.passed.length})`);
  }

  peer.assertAlive(t, 'target survived the conformance suite');
  const inq = await runCommand(requireTool('iscsi-inq'), [url], { timeoutMs: 30_000, t });
  t.equal(inq.code, 0, 'a fresh iscsi-inq session works afterwards', { stdout: inq.stdout, stderr: inq.stderr });
  t.match(inq.stdout, /Peripheral Device Type:DIRECT_ACCESS/, 'and reports a disk');
});
