import t from 'tap';
import { resolve } from 'node:path';
import { formatHostPort, parseHostPort } from '../../src/shared/cli-values.js';
import {
  parseTargetConfig,
  loadTargetConfig,
  parseSize,
  iscsiNameProblem,
  normalizeIscsiName,
  TARGET_USAGE,
  type TargetConfig,
} from '../../src/target/config.js';

const SECRET = 'abcdefghijkl'; // exactly 12 bytes
const SECRET2 = 'mnopqrstuvwx';

function ok(argv: string[], env: NodeJS.ProcessEnv = {}): TargetConfig {
  const r = parseTargetConfig(argv, env);
  if (!r.ok) throw new Error(`expected ok for ${JSON.stringify(argv)}, got: ${r.error}`);
  return r.config;
}

function err(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  const r = parseTargetConfig(argv, env);
  if (r.ok) throw new Error(`expected an error for ${JSON.stringify(argv)}`);
  return r.error;
}

t.test('defaults', async t => {
  const c = ok([]);
  t.same(c.portal, { host: '127.0.0.1', port: 3260 });
  t.equal(c.dataDir, resolve('./data'));
  t.equal(c.sizeBytes, 1n << 30n);
  t.equal(c.blockSize, 512);
  t.equal(c.iqn, 'iqn.2016-09.com.openebs.cstor:vol1');
  t.equal(c.chap, undefined);
  t.equal(c.mutualChap, undefined);
  t.same(c.allowInitiators, []);
  t.equal(c.logLevel, 'info');
  t.notOk('chap' in c, 'no chap key at all (exactOptionalPropertyTypes)');
});

t.test('--help', async t => {
  const r = parseTargetConfig(['--help'], {});
  t.equal(r.ok, false);
  if (!r.ok) {
    t.equal(r.help, true);
    t.equal(r.error, TARGET_USAGE);
  }
  const h = parseTargetConfig(['-h', '--size', 'bogus'], {});
  t.ok(!h.ok && h.help === true, '-h wins over other errors');
  for (const flag of ['--portal', '--data-dir', '--size', '--block-size', '--iqn', '--chap-user', '--chap-secret',
    '--mutual-chap-user', '--mutual-chap-secret', '--allow-initiator', '--log-level']) {
    t.match(TARGET_USAGE, flag, `usage mentions ${flag}`);
  }
  const e = parseTargetConfig(['--size', 'x'], {});
  t.ok(!e.ok && e.help === undefined, 'errors are not help');
});

t.test('unknown flags, positionals, missing values, repeats', async t => {
  t.match(err(['--bogus']), /Unknown option '--bogus'/);
  t.match(err(['extra']), /positional/i);
  t.match(err(['--size']), /--size/);
  t.equal(err(['--size', '1G', '--size', '2G']), '--size: given more than once');
  t.equal(err(['--portal=1.2.3.4:1', '--portal', '1.2.3.4:2']), '--portal: given more than once');
});

t.test('--portal', async t => {
  t.same(ok(['--portal', '0.0.0.0:3261']).portal, { host: '0.0.0.0', port: 3261 });
  t.same(ok(['--portal', '127.0.0.1:0']).portal, { host: '127.0.0.1', port: 0 }, 'port 0 = any free port');
  t.same(ok(['--portal=localhost:65535']).portal, { host: 'localhost', port: 65535 });
  t.same(ok(['--portal', '10.1.2.3']).portal, { host: '10.1.2.3', port: 3260 }, 'default port');
  t.same(ok(['--portal', '[::1]:3260']).portal, { host: '::1', port: 3260 });
  t.same(ok(['--portal', '[::]']).portal, { host: '::', port: 3260 });
  t.same(ok(['--portal', 'storage-01.example.com:3260']).portal, { host: 'storage-01.example.com', port: 3260 });
  t.equal(err(['--portal', '127.0.0.1:65536']), "--portal: '127.0.0.1:65536': '65536' is not a port (0..65535)");
  t.equal(err(['--portal', '127.0.0.1:']), "--portal: '127.0.0.1:': '' is not a port (0..65535)");
  t.equal(err(['--portal', '127.0.0.1:x']), "--portal: '127.0.0.1:x': 'x' is not a port (0..65535)");
  t.equal(err(['--portal', ':3260']), "--portal: ':3260' has no host (use HOST:PORT, e.g. 127.0.0.1:3260)");
  t.equal(err(['--portal', '::1']), "--portal: '::1': write IPv6 addresses in brackets, e.g. [::1]:3260");
  t.equal(err(['--portal', '[1.2.3.4]:1']), "--portal: '[1.2.3.4]:1': '1.2.3.4' is not an IPv6 address");
  t.equal(err(['--portal', 'bad_host:1']), "--portal: 'bad_host:1': 'bad_host' is not a host name or address");
});

t.test('--data-dir', async t => {
  t.equal(ok(['--data-dir', '/var/lib/cstor']).dataDir, '/var/lib/cstor');
  t.equal(ok(['--data-dir', 'rel/dir']).dataDir, resolve('rel/dir'));
  t.equal(err(['--data-dir', '']), '--data-dir: must not be empty');
  t.equal(err(['--data-dir', 'a\0b']), '--data-dir: must not contain NUL');
});

t.test('--size', async t => {
  const cases: [string, bigint][] = [
    ['1048576', 1n << 20n], ['1048576B', 1n << 20n], ['1024K', 1n << 20n], ['1024k', 1n << 20n], ['1024KiB', 1n << 20n],
    ['512M', 512n << 20n], ['512MB', 512n << 20n], ['512MiB', 512n << 20n], ['1G', 1n << 30n], ['1GiB', 1n << 30n],
    ['10G', 10n << 30n], ['10Gi', 10n << 30n], ['2T', 2n << 40n], ['2TiB', 2n << 40n], [' 64M ', 64n << 20n], ['64 M', 64n << 20n],
  ];
  for (const [text, bytes] of cases) t.equal(ok(['--size', text]).sizeBytes, bytes, text);
  t.equal(err(['--size', '12Q']), "--size: '12Q' is not a size (use bytes or K/M/G/T suffixes)");
  for (const bad of ['', 'G', '1.5G', '-1G', '1GG', '1iB', '1Gii', '0x100000', '1P']) {
    t.equal(err([`--size=${bad}`]), `--size: '${bad}' is not a size (use bytes or K/M/G/T suffixes)`, JSON.stringify(bad));
  }
  t.equal(err(['--size', '0']), "--size: '0' is smaller than the minimum of 1 MiB");
  t.equal(err(['--size', '1023K']), "--size: '1023K' is smaller than the minimum of 1 MiB");
  t.equal(err(['--size', '9000000T']), "--size: '9000000T' is larger than the maximum of 2^63-1 bytes");
  t.equal(err(['--size', '1048577']), "--size: '1048577' (1048577 bytes) is not a multiple of the block size 512");
  t.equal(err(['--size', '1049088', '--block-size', '4096']),
    "--size: '1049088' (1049088 bytes) is not a multiple of the block size 4096");
  t.equal(ok(['--size', '1049088']).sizeBytes, 1049088n, '512-multiple is fine with 512 blocks');
  t.equal(parseSize('1'.repeat(31)), undefined, 'absurd digit strings are refused');
  t.match(err(['--size', '-1G']), /ambiguous/, 'parseArgs refuses a dash value without =');
});

t.test('--block-size', async t => {
  t.equal(ok(['--block-size', '512']).blockSize, 512);
  t.equal(ok(['--block-size', '4096']).blockSize, 4096);
  for (const bad of ['1024', '4k', '', '0512']) {
    t.equal(err(['--block-size', bad]), `--block-size: '${bad}' is not a supported block size (use 512 or 4096)`);
  }
});

t.test('--iqn and iSCSI names', async t => {
  for (const good of [
    'iqn.2016-09.com.openebs.cstor:vol1', 'iqn.1992-01.com.example', 'iqn.2001-04.com.example:storage:diskarrays-sn-a8675309',
    'iqn.2001-04.com.example:storage.tape1.sys1.xyz', 'iqn.2005-03.org.open-iscsi:abc123', 'iqn.2020-12.de.münchen:disk',
  ]) t.equal(ok(['--iqn', good]).iqn, good, good);
  t.equal(ok(['--iqn', 'eui.02004567a425678d']).iqn, 'eui.02004567A425678D', 'eui hex normalised upper');
  t.equal(ok(['--iqn', 'naa.52004567BA64678D']).iqn, 'naa.52004567BA64678D');
  t.equal(ok(['--iqn', 'naa.62004567BA64678D0123456789ABCDEF']).iqn, 'naa.62004567BA64678D0123456789ABCDEF');
  const cases: [string, string][] = [
    ['', "'' is empty"],
    ['vol1', "'vol1' is not an iSCSI name (must start with 'iqn.', 'eui.' or 'naa.')"],
    ['IQN.2016-09.com.x:y', "'IQN.2016-09.com.x:y' must be lower case (iSCSI names are case-folded, RFC 3722)"],
    ['iqn.2016-09.com.X:vol', "'iqn.2016-09.com.X:vol' must be lower case (iSCSI names are case-folded, RFC 3722)"],
    ['iqn.16-09.com.x', "'iqn.16-09.com.x' is not an iqn. name (iqn.YYYY-MM.reversed.domain[:unique], RFC 3720 3.2.6.3.1)"],
    ['iqn.2016-9.com.x', "'iqn.2016-9.com.x' is not an iqn. name (iqn.YYYY-MM.reversed.domain[:unique], RFC 3720 3.2.6.3.1)"],
    ['iqn.2016-09', "'iqn.2016-09' is not an iqn. name (iqn.YYYY-MM.reversed.domain[:unique], RFC 3720 3.2.6.3.1)"],
    ['iqn.2016-13.com.x', "'iqn.2016-13.com.x' has month 13, not 01..12"],
    ['iqn.2016-00.com.x', "'iqn.2016-00.com.x' has month 00, not 01..12"],
    ['iqn.2016-09.com..x', "'iqn.2016-09.com..x' has 'com..x', which is not a reversed domain name"],
    ['iqn.2016-09.-com.x', "'iqn.2016-09.-com.x' has '-com.x', which is not a reversed domain name"],
    ['iqn.2016-09.com.x:', "'iqn.2016-09.com.x:' has nothing after ':'"],
    ['iqn.2016-09.com.x:a b', "'iqn.2016-09.com.x:a b' contains characters iSCSI names do not allow (only a-z, 0-9, '-', '.', ':')"],
    ['iqn.2016-09.com.x:a_b', "'iqn.2016-09.com.x:a_b' contains characters iSCSI names do not allow (only a-z, 0-9, '-', '.', ':')"],
    ['eui.0200', "'eui.0200' is not an eui. name (eui. + 16 hex digits, RFC 3720 3.2.6.3.2)"],
    ['eui.02004567A425678G', "'eui.02004567A425678G' is not an eui. name (eui. + 16 hex digits, RFC 3720 3.2.6.3.2)"],
    ['naa.1234', "'naa.1234' is not a naa. name (naa. + 16 or 32 hex digits, RFC 3980)"],
  ];
  for (const [name, message] of cases) t.equal(err(['--iqn', name]), `--iqn: ${message}`, name);
  const long = 'iqn.2016-09.com.x:' + 'a'.repeat(206);
  t.equal(iscsiNameProblem(long), 'is longer than 223 bytes (RFC 3720 3.2.6.1)');
  t.equal(iscsiNameProblem(long.slice(0, 223)), undefined, '223 bytes is fine');
  t.equal(normalizeIscsiName('EUI.abcdef0123456789'), 'eui.ABCDEF0123456789');
});

t.test('one-way CHAP', async t => {
  t.same(ok(['--chap-user', 'alice', '--chap-secret', SECRET]).chap, { user: 'alice', secret: SECRET });
  t.same(ok(['--chap-user', 'alice'], { CHAP_SECRET: SECRET }).chap, { user: 'alice', secret: SECRET }, 'secret from env');
  t.same(ok(['--chap-user', 'alice', '--chap-secret', SECRET2], { CHAP_SECRET: SECRET }).chap?.secret, SECRET2, 'flag wins');
  t.equal(ok([], { CHAP_SECRET: SECRET }).chap, undefined, 'env alone does not enable CHAP');
  t.equal(err(['--chap-secret', SECRET]), '--chap-secret: needs --chap-user');
  t.equal(err(['--chap-user', 'alice']), '--chap-user: needs a secret (--chap-secret or env CHAP_SECRET)');
  t.equal(err(['--chap-user', 'alice'], { CHAP_SECRET: '' }), '--chap-user: needs a secret (--chap-secret or env CHAP_SECRET)');
  t.equal(err(['--chap-user', '', '--chap-secret', SECRET]), '--chap-user: must not be empty');
  t.equal(err(['--chap-user', 'a\tb', '--chap-secret', SECRET]), '--chap-user: must not contain control characters');
  t.equal(err(['--chap-user', 'u'.repeat(256), '--chap-secret', SECRET]), '--chap-user: is longer than 255 bytes');
  t.equal(err(['--chap-user', 'alice', '--chap-secret', 'short']),
    '--chap-secret: secret is 5 bytes; CHAP secrets must be at least 12 bytes (96 bits, RFC 7143 12.1.3)');
  t.equal(err(['--chap-user', 'alice'], { CHAP_SECRET: '01234567890' }),
    'CHAP_SECRET: secret is 11 bytes; CHAP secrets must be at least 12 bytes (96 bits, RFC 7143 12.1.3)');
  t.equal(err(['--chap-user', 'alice', '--chap-secret', 's'.repeat(256)]), '--chap-secret: secret is longer than 255 bytes');
  t.same(ok(['--chap-user', 'alice', '--chap-secret', 's'.repeat(255)]).chap?.secret.length, 255);
});

t.test('mutual CHAP', async t => {
  const base = ['--chap-user', 'alice', '--chap-secret', SECRET];
  const c = ok([...base, '--mutual-chap-user', 'target', '--mutual-chap-secret', SECRET2]);
  t.same(c.mutualChap, { user: 'target', secret: SECRET2 });
  t.same(ok([...base, '--mutual-chap-user', 'target'], { MUTUAL_CHAP_SECRET: SECRET2 }).mutualChap?.secret, SECRET2);
  t.same(ok(['--chap-user', 'alice', '--mutual-chap-user', 'target'], { CHAP_SECRET: SECRET, MUTUAL_CHAP_SECRET: SECRET2 }).mutualChap,
    { user: 'target', secret: SECRET2 }, 'both secrets from env');
  t.equal(ok(base, { MUTUAL_CHAP_SECRET: SECRET2 }).mutualChap, undefined);
  t.equal(err(['--mutual-chap-user', 'target', '--mutual-chap-secret', SECRET2]),
    '--mutual-chap-user: mutual CHAP needs one-way CHAP too (--chap-user and --chap-secret)');
  t.equal(err([...base, '--mutual-chap-secret', SECRET2]), '--mutual-chap-secret: needs --mutual-chap-user');
  t.equal(err([...base, '--mutual-chap-user', 'target']),
    '--mutual-chap-user: needs a secret (--mutual-chap-secret or env MUTUAL_CHAP_SECRET)');
  t.equal(err([...base, '--mutual-chap-user', 'target', '--mutual-chap-secret', 'tiny']),
    '--mutual-chap-secret: secret is 4 bytes; CHAP secrets must be at least 12 bytes (96 bits, RFC 7143 12.1.3)');
  t.equal(err([...base, '--mutual-chap-user', 'target'], { MUTUAL_CHAP_SECRET: 'tiny' }),
    'MUTUAL_CHAP_SECRET: secret is 4 bytes; CHAP secrets must be at least 12 bytes (96 bits, RFC 7143 12.1.3)');
  t.equal(err([...base, '--mutual-chap-user', 'target', '--mutual-chap-secret', SECRET]),
    '--mutual-chap-secret: must differ from the one-way CHAP secret (RFC 3720 8.2.1)');
});

t.test('--allow-initiator', async t => {
  const c = ok(['--allow-initiator', 'iqn.2005-03.org.open-iscsi:a', '--allow-initiator', 'eui.02004567a425678d',
    '--allow-initiator', 'iqn.2005-03.org.open-iscsi:a']);
  t.same(c.allowInitiators, ['iqn.2005-03.org.open-iscsi:a', 'eui.02004567A425678D'], 'normalised and de-duplicated');
  t.equal(err(['--allow-initiator', 'iqn.2005-03.org.open-iscsi:a', '--allow-initiator', 'bogus']),
    "--allow-initiator: 'bogus' is not an iSCSI name (must start with 'iqn.', 'eui.' or 'naa.')");
  t.equal(err(['--allow-initiator', 'iqn.2005-03.ORG.x']),
    "--allow-initiator: 'iqn.2005-03.ORG.x' must be lower case (iSCSI names are case-folded, RFC 3722)");
});

t.test('--log-level', async t => {
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) {
    t.equal(ok(['--log-level', level]).logLevel, level);
  }
  t.equal(ok([], { LOG_LEVEL: 'debug' }).logLevel, 'debug', 'LOG_LEVEL env as default');
  t.equal(ok(['--log-level', 'warn'], { LOG_LEVEL: 'debug' }).logLevel, 'warn', 'flag wins');
  t.equal(err(['--log-level', 'verbose']),
    "--log-level: 'verbose' is not a log level (use fatal, error, warn, info, debug, trace, silent)");
  t.equal(err([], { LOG_LEVEL: 'loud' }), "LOG_LEVEL: 'loud' is not a log level (use fatal, error, warn, info, debug, trace, silent)");
});

t.test('everything together', async t => {
  const c = ok(['--portal', '127.0.0.1:0', '--data-dir', '/tmp/d', '--size', '64MiB', '--block-size', '4096',
    '--iqn', 'iqn.2025-01.org.example:disk0', '--chap-user', 'u', '--chap-secret', SECRET, '--mutual-chap-user', 't',
    '--mutual-chap-secret', SECRET2, '--allow-initiator', 'iqn.2005-03.org.open-iscsi:vm', '--log-level', 'debug',
    '--replica-port', '127.0.0.1:0', '--restart-delay', '0', '--replica-hold', '5']);
  t.same(c, {
    portal: { host: '127.0.0.1', port: 0 }, dataDir: '/tmp/d', sizeBytes: 64n << 20n, blockSize: 4096,
    iqn: 'iqn.2025-01.org.example:disk0', chap: { user: 'u', secret: SECRET }, mutualChap: { user: 't', secret: SECRET2 },
    allowInitiators: ['iqn.2005-03.org.open-iscsi:vm'], logLevel: 'debug', nopInIntervalS: 5, nopInTimeoutS: 30,
    replicaPort: { host: '127.0.0.1', port: 0 }, restartDelayS: 0, replicaHoldS: 5, replicas: 3, rebuildRateMiBs: 200,
    externalReplicas: false, replicaIds: ['r1', 'r2', 'r3'], writeQuorum: 2, replicaTimeoutS: 5,
    metricsPort: { host: '127.0.0.1', port: 9500 }, managementPort: { host: '127.0.0.1', port: 0 }, volumeName: 'disk0',
  });
  t.equal(err(['--replicas', '6']), "--replicas: '6' must be a whole number from 1 to 5");
  t.equal(err(['--rebuild-rate', 'fast']), "--rebuild-rate: 'fast' is not a whole number of MiB/s");
  t.equal(ok(['--rebuild-adaptive', 'off']).rebuildAdaptive, false);
  t.equal(ok(['--rebuild-adaptive', 'on']).rebuildAdaptive, true);
  t.equal(err(['--rebuild-adaptive', 'maybe']), "--rebuild-adaptive: 'maybe' is not on or off");
  t.equal(err(['--replica-port', '127.0.0.1:99999']), "--replica-port: '127.0.0.1:99999': '99999' is not a port (0..65535)");
  t.equal(err(['--replica-hold', '0']), "--replica-hold: '0' is not a whole number of seconds from 1 to 3600");
});

t.test('--external-replicas and --volume-uuid', async t => {
  const d = ok([]);
  t.equal(d.externalReplicas, false, 'the target runs its replicas by default');
  t.notOk('volumeUuid' in d, 'no volume uuid unless given');
  const c = ok(['--external-replicas', '--volume-uuid', '6A1F0C3E-2B4D-4E5F-8A9B-0C1D2E3F4A5B']);
  t.equal(c.externalReplicas, true);
  t.equal(c.volumeUuid, '6a1f0c3e-2b4d-4e5f-8a9b-0c1d2e3f4a5b', 'lower-cased, as replicas announce it');
  t.equal(err(['--volume-uuid', '6a1f0c3e2b4d4e5f8a9b0c1d2e3f4a5b']),
    "--volume-uuid: '6a1f0c3e2b4d4e5f8a9b0c1d2e3f4a5b' is not a UUID (8-4-4-4-12 hex digits)");
  t.equal(err(['--volume-uuid', 'vol1']), "--volume-uuid: 'vol1' is not a UUID (8-4-4-4-12 hex digits)");
  t.equal(err(['--external-replicas', '--external-replicas']), '--external-replicas: given more than once');
  t.match(err(['--external-replicas=yes']), /--external-replicas/, 'a boolean flag takes no value');
  for (const flag of ['--external-replicas', '--volume-uuid', '--replica-port', '--rebuild-rate']) {
    t.match(TARGET_USAGE, flag, `usage mentions ${flag}`);
  }
  t.match(TARGET_USAGE, 'replicas listening <HOST>:<PORT>', 'usage names the replica-port line');
});

t.test('NOP-In ping flags', async t => {
  const ok = parseTargetConfig(['--nop-in-interval', '0', '--nop-in-timeout', '120'], {});
  t.ok(ok.ok);
  if (ok.ok) {
    t.equal(ok.config.nopInIntervalS, 0);
    t.equal(ok.config.nopInTimeoutS, 120);
  }
  const defaults = parseTargetConfig([], {});
  if (defaults.ok) t.same([defaults.config.nopInIntervalS, defaults.config.nopInTimeoutS], [5, 30]);
  const bad = parseTargetConfig(['--nop-in-timeout', '0'], {});
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.error, /^--nop-in-timeout: '0' is not a whole number of seconds/);
  const junk = parseTargetConfig(['--nop-in-interval', '5s'], {});
  if (!junk.ok) t.match(junk.error, /^--nop-in-interval:/);
  else t.fail('5s accepted');
});

t.test('volume identity, quorum and replica flags', async t => {
  const c = ok([]);
  t.equal(c.volumeName, 'vol1', 'the name comes from the IQN');
  t.same(c.replicaIds, ['r1', 'r2', 'r3']);
  t.equal(c.writeQuorum, 2);
  t.equal(c.replicaTimeoutS, 5);
  t.same(c.metricsPort, { host: '127.0.0.1', port: 9500 });
  t.same(c.managementPort, { host: '127.0.0.1', port: 0 });
  const named = ok(['--volume-name', 'pvc-42']);
  t.equal(named.iqn, 'iqn.2016-09.com.openebs.cstor:pvc-42', "cStor's IQN prefix + the name");
  t.equal(ok(['--volume-name', 'pvc-42', '--iqn', 'iqn.2020-01.com.example:disk']).volumeName, 'pvc-42');
  t.match(err(['--volume-name', 'Bad_Name']), /^--volume-name: 'Bad_Name' must be 1\.\.63 lower-case/);
  const ids = ok(['--replica-ids', 'a,b,c,d,e']);
  t.equal(ids.replicas, 5, 'the id list sets K');
  t.equal(ids.writeQuorum, 3);
  t.match(err(['--replica-ids', 'a,b', '--replicas', '3']), /names 2 replicas, --replicas is 3/);
  t.match(err(['--replica-ids', 'a,a,b']), /lists an id twice/);
  t.match(err(['--replica-ids', 'a,b c,d']), /'b c' is not a replica id/);
  t.equal(ok(['--write-quorum', '3']).writeQuorum, 3);
  t.match(err(['--write-quorum', '1']), /^--write-quorum: '1' must be from 2 \(a majority of 3\) to 3/);
  t.match(err(['--write-quorum', '4']), /must be from 2/);
  t.equal(ok(['--replica-timeout', '0.5']).replicaTimeoutS, 0.5);
  t.match(err(['--replica-timeout', '0']), /from 0\.1 to 600/);
  t.equal(ok(['--metrics-port', 'off']).metricsPort, undefined);
  t.same(ok(['--metrics-port', '0.0.0.0:0']).metricsPort, { host: '0.0.0.0', port: 0 });
  t.match(err(['--management-port', 'a:b:c']), /^--management-port: /);
});

t.test('--chap-secret-file', async t => {
  const files: Record<string, string> = { '/run/secret': `${SECRET}\n` };
  const read = (p: string): string => {
    const v = files[p];
    if (v === undefined) throw new Error('ENOENT: no such file');
    return v;
  };
  const r = parseTargetConfig(['--chap-user', 'u', '--chap-secret-file', '/run/secret'], {}, read);
  t.ok(r.ok && r.config.chap?.secret === SECRET, 'the trailing newline of a mounted secret is dropped');
  const missing = parseTargetConfig(['--chap-user', 'u', '--chap-secret-file', '/nope'], {}, read);
  t.match(!missing.ok && missing.error, /^--chap-secret-file: cannot read \/nope: ENOENT/);
  const both = parseTargetConfig(['--chap-user', 'u', '--chap-secret', SECRET, '--chap-secret-file', '/run/secret'], {}, read);
  t.match(!both.ok && both.error, /give the secret once/);
});

t.test('--config: a CStorVolume YAML under env and command-line overrides', async t => {
  const files: Record<string, string> = {
    'vol.yaml': 'kind: CStorVolume\nmetadata:\n  name: pvc-7\nspec:\n  capacity: 2Gi\n  replicationFactor: 3\n  consistencyFactor: 3\n  timeouts:\n    replicaIO: 1500ms\n  chap:\n    user: node1\n    secretFile: /run/chap\n',
    '/run/chap': SECRET2,
    'bad.yaml': 'spec:\n  capacity: 12 bananas\n',
  };
  const read = (p: string): string => {
    const v = files[p];
    if (v === undefined) throw new Error(`ENOENT: ${p}`);
    return v;
  };
  const load = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadTargetConfig(argv, env, read);
  const r = load(['--config', 'vol.yaml']);
  t.ok(r.ok, r.ok ? '' : r.error);
  if (r.ok) {
    t.equal(r.config.volumeName, 'pvc-7');
    t.equal(r.config.iqn, 'iqn.2016-09.com.openebs.cstor:pvc-7');
    t.equal(r.config.sizeBytes, 2n << 30n);
    t.equal(r.config.writeQuorum, 3);
    t.equal(r.config.replicaTimeoutS, 1.5);
    t.same(r.config.chap, { user: 'node1', secret: SECRET2 });
  }
  const env = load(['--config=vol.yaml'], { CSTOR_CAPACITY: '4Gi' });
  t.equal(env.ok && env.config.sizeBytes, 4n << 30n, 'env overrides the file');
  const cli = load(['--config', 'vol.yaml', '--size', '1G'], { CSTOR_CAPACITY: '4Gi' });
  t.equal(cli.ok && cli.config.sizeBytes, 1n << 30n, 'the command line overrides both');
  const bad = load(['--config', 'bad.yaml']);
  t.match(!bad.ok && bad.error, /^bad\.yaml: spec\.capacity \(--size\): '12 bananas' is not a size/, 'the field is named');
  const typo = load(['--config', 'vol.yaml'], { CSTOR_REPLICATION_FACTOR: '9' });
  t.match(!typo.ok && typo.error, /^env CSTOR_REPLICATION_FACTOR \(--replicas\): '9' must be a whole number from 1 to 5/);
  t.match((() => { const x = load(['--config', 'missing.yaml']); return !x.ok && x.error; })(), /^--config: cannot read missing\.yaml: ENOENT/);
  t.match((() => { const x = load(['--config', 'vol.yaml', '--config', 'vol.yaml']); return !x.ok && x.error; })(), /given more than once/);
  const plain = load(['--size', '64M']);
  t.equal(plain.ok && plain.config.sizeBytes, 64n << 20n, 'no --config: the flags alone');
});

t.test('formatHostPort writes what parseHostPort reads', async t => {
  t.equal(formatHostPort('127.0.0.1', 3260), '127.0.0.1:3260');
  t.equal(formatHostPort('::1', 6060), '[::1]:6060', 'IPv6 in brackets');
  for (const [host, port] of [['10.1.2.3', 7070], ['fe80::1', 0], ['vol1-target', 9500]] as const) {
    t.same(parseHostPort(formatHostPort(host, port), 1), { host, port }, `${host} round trip`);
  }
});
