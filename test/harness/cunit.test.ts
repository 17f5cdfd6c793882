// The iscsi-test-cu output parser decides whether the conformance test passes, so its
// tricky cases (libiscsi's skips, output after a result, a hang mid-test) are pinned here.
import t from 'tap';
import { parseCUnitOutput } from '../fixtures/cunit.js';

const SAMPLE = `
     CUnit - A unit testing framework for C - Version 2.1-3

Suite: GetLBAStatus
  Test: Simple ...passed
  Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed
FAILED
    1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
  Test: UnmapSingle ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
Suite: Reserve6
  Test: TargetWarmReset ...    [SKIPPED] Task Management functionfor WarmReset is not working/implemented

passed
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6)

Suite: Sanitize
  Test: Reset ...    [SKIPPED] SANITIZE OVERWRITE is not implemented according to REPORT_SUPPORTED_OPCODES.
passed    [FAILED] PRIN command: failed with sense. RESERVATION CONFLICT
    [FAILED] PRIN command: failed with sense. RESERVATION CONFLICT

Suite: Read10
  Test: Simple ...    Test READ10 of 1-256 blocks at the start of the LUN
passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      4      4    n/a      0        0
               tests      7      7      6      1        0
             asserts    100    100     99      1      n/a

Elapsed time =    3.711 seconds
`;

t.test('outcomes and summary', async t => {
  const r = parseCUnitOutput(SAMPLE);
  t.same(r.passed, ['GetLBAStatus.Simple', 'Reserve6.LUNReset', 'Read10.Simple']);
  t.same(r.failed, ['GetLBAStatus.BeyondEol']);
  t.same(r.skipped, ['GetLBAStatus.UnmapSingle', 'Reserve6.TargetWarmReset', 'Sanitize.Reset']);
  t.equal(r.unfinished, undefined);
  t.same(r.summary?.tests, { total: 7, ran: 7, passed: 6, failed: 1, inactive: 0 });
  t.same(r.summary?.suites, { total: 4, ran: 4, failed: 0, inactive: 0 });
  t.same(r.summary?.asserts, { total: 100, ran: 100, passed: 99, failed: 1 });
  const failed = r.tests.find(x => x.name === 'GetLBAStatus.BeyondEol');
  t.match(failed?.detail.join('\n'), /CU_ASSERT_EQUAL/, 'assert lines after FAILED belong to the test');
});

t.test('a run cut off mid-test', async t => {
  const r = parseCUnitOutput('Suite: Read10\n  Test: Simple ...passed\n  Test: Hangs ...    Test READ10 of 1-256 blocks\n');
  t.equal(r.summary, undefined);
  t.equal(r.unfinished, 'Read10.Hangs');
  t.same(r.passed, ['Read10.Simple']);
});
