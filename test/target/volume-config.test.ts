// The CStorVolume-shaped config file → target flags: every field, env overrides, the command line
// winning over both, and errors that name the field at fault.
import t from 'tap';
import { explainFlagError, mergeConfigFlags, volumeConfigFlags, VolumeConfigError } from '../../src/target/volume-config.js';

const FULL = `
apiVersion: cstor.openebs.io/v1
kind: CStorVolume
metadata:
  name: pvc-1234
  uid: 6f1c2b7e-3d4a-4c1e-9a6b-2f0e8d5c7a91
  labels: { app: db }
spec:
  iqn: iqn.2016-09.com.openebs.cstor:pvc-1234
  capacity: 10Gi
  blockSize: 4096
  replicationFactor: 3
  consistencyFactor: 2
  knownReplicas: [r1, r2, r3]
  externalReplicas: true
  targetPortal: 0.0.0.0:3260
  replicaPort: 6060
  metricsPort: 9500
  managementPort: 127.0.0.1:9501
  dataDir: /var/lib/cstor
  chap:
    user: node-initiator
    secretFile: /etc/cstor/chap-secret
  timeouts:
    replicaIO: 5s
    quorumLossHold: 2m
  rebuild:
    rateMiBps: 150
  logLevel: debug
status:
  phase: Healthy
`;

t.test('every field of a full document becomes its flag', async (t) => {
  const flags = volumeConfigFlags(FULL, {}, 'vol.yaml');
  t.same(flags.map((f) => (f.value === undefined ? f.flag : `${f.flag}=${f.value}`)), [
    '--volume-name=pvc-1234', '--volume-uuid=6f1c2b7e-3d4a-4c1e-9a6b-2f0e8d5c7a91', '--iqn=iqn.2016-09.com.openebs.cstor:pvc-1234',
    '--size=10Gi', '--block-size=4096', '--replicas=3', '--write-quorum=2', '--replica-ids=r1,r2,r3', '--external-replicas',
    '--portal=0.0.0.0:3260', '--replica-port=0.0.0.0:6060', '--metrics-port=0.0.0.0:9500', '--management-port=127.0.0.1:9501',
    '--data-dir=/var/lib/cstor', '--chap-user=node-initiator', '--chap-secret-file=/etc/cstor/chap-secret',
    '--replica-timeout=5', '--replica-hold=120', '--rebuild-rate=150', '--log-level=debug',
  ]);
  t.equal(flags.find((f) => f.flag === '--size')?.source, 'vol.yaml: spec.capacity');
});

t.test('environment variables override the file; the command line overrides both', async (t) => {
  const flags = volumeConfigFlags(FULL, { CSTOR_CAPACITY: '20Gi', CSTOR_REPLICATION_FACTOR: '5', CSTOR_EXTERNAL_REPLICAS: 'false', LOG_LEVEL: '' }, 'vol.yaml');
  t.equal(flags.find((f) => f.flag === '--size')?.value, '20Gi');
  t.equal(flags.find((f) => f.flag === '--size')?.source, 'env CSTOR_CAPACITY');
  t.equal(flags.find((f) => f.flag === '--replicas')?.value, '5');
  t.notOk(flags.some((f) => f.flag === '--external-replicas'), 'env false turns a boolean off');
  t.equal(flags.find((f) => f.flag === '--log-level')?.value, 'debug', 'an empty variable does not override');
  const argv = mergeConfigFlags(flags, ['--size', '1G', '--portal=127.0.0.1:3261']);
  t.notOk(argv.includes('20Gi'), 'the command line --size wins');
  t.notOk(argv.includes('0.0.0.0:3260'), 'the command line --portal= wins');
  t.same(argv.slice(-3), ['--size', '1G', '--portal=127.0.0.1:3261']);
  t.same(volumeConfigFlags(undefined, { CSTOR_IQN: 'iqn.2020-01.x:y' }), [{ flag: '--iqn', value: 'iqn.2020-01.x:y', source: 'env CSTOR_IQN' }], 'no file: env only');
  t.same(volumeConfigFlags('', {}), [], 'an empty file is an empty config');
});

t.test('bad documents are refused with the field named', async (t) => {
  const bad = (text: string): string => {
    try {
      volumeConfigFlags(text, {}, 'vol.yaml');
      return 'accepted';
    } catch (err) {
      t.type(err, VolumeConfigError);
      return (err as Error).message;
    }
  };
  t.match(bad('spec:\n  capacty: 10Gi\n'), /^vol\.yaml: spec\.capacty: unknown field/);
  t.match(bad('kind: CStorPool\n'), /kind: expected CStorVolume, got 'CStorPool'/);
  t.match(bad('- a\n- b\n'), /expected a mapping at the top level/);
  t.match(bad('spec:\n  replicationFactor: three\n'), /^vol\.yaml: spec\.replicationFactor: expected a number, got a string 'three'/);
  t.match(bad('spec:\n  externalReplicas: yes please\n'), /spec\.externalReplicas: expected true or false/);
  t.match(bad('spec:\n  timeouts:\n    replicaIO: soon\n'), /spec\.timeouts\.replicaIO: 'soon' is not a duration/);
  t.match(bad('spec:\n  knownReplicas: []\n'), /spec\.knownReplicas: expected a non-empty list/);
  t.match(bad('spec:\n  capacity: { a: 1 }\n'), /spec\.capacity: expected a size such as 10Gi, got a mapping/);
  t.match(bad('spec:\n  iqn: a\n  iqn: b\n'), /^vol\.yaml: .*[Mm]ap keys must be unique/);
  t.match(bad('spec: [unclosed\n'), /^vol\.yaml: /);
});

t.test('flag errors are reported against the field they came from', async (t) => {
  const flags = volumeConfigFlags('spec:\n  capacity: 12 bananas\n', {}, 'vol.yaml');
  t.equal(explainFlagError("--size: '12 bananas' is not a size", flags, []), "vol.yaml: spec.capacity (--size): '12 bananas' is not a size");
  t.equal(explainFlagError("--size: '3' is too small", flags, ['--size', '3']), "--size: '3' is too small", 'a command-line value is reported as the flag');
  t.equal(explainFlagError('unknown option', flags, []), 'unknown option');
});
