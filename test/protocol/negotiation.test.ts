import t from 'tap';
import {
  LoginNegotiator,
  negotiateFullFeature,
  parseNumerical,
  selectFromList,
  isIscsiName,
  KEY_TABLE,
  DEFAULT_TARGET_CONFIG,
  validateTargetConfig,
} from '../../src/protocol/iscsi/negotiation.js';
import { LoginStatus } from '../../src/protocol/iscsi/constants.js';
import { openIscsiOp } from '../fixtures/login-keys.js';

const INAME = 'iqn.2004-10.com.ubuntu:01:abcdef';
const TNAME = 'iqn.2024-01.io.openebs.cstor:vol1';

const securityNormal: Array<[string, string]> = [
  ['InitiatorName', INAME],
  ['InitiatorAlias', 'host1'],
  ['TargetName', TNAME],
  ['SessionType', 'Normal'],
  ['AuthMethod', 'None'],
];


/** Negotiate one operational key after a Normal security stage; returns the answer. */
function answer(key: string, value: string, config = {}): string | undefined {
  const n = new LoginNegotiator(config);
  n.negotiate(securityNormal, 'security');
  const r = n.negotiate([[key, value]], 'operational');
  if (r.error) return `ERROR:${r.error.status}`;
  return new Map(r.response).get(key);
}

t.test('numerical parsing (RFC 7143 5.1)', async (t) => {
  t.equal(parseNumerical('0'), 0);
  t.equal(parseNumerical('262144'), 262144);
  t.equal(parseNumerical('0x40000'), 262144);
  t.equal(parseNumerical('0X1f'), 31);
  for (const bad of ['', '-1', '1.5', '0x', 'abc', ' 1', '1e3', '0b1234']) t.equal(parseNumerical(bad), undefined, bad);
  t.equal(parseNumerical('18446744073709551615'), undefined, 'beyond 2^53 is unusable');
});

t.test('full open-iscsi login', async (t) => {
  const n = new LoginNegotiator();
  const s = n.negotiate(securityNormal, 'security');
  t.notOk(s.error);
  t.same(s.response, [['AuthMethod', 'None']], 'names are recorded, not answered');
  t.same(n.firstResponseKeys(), [['TargetPortalGroupTag', '1']]);
  t.same(n.firstResponseKeys(), [], 'only once');
  t.equal(n.authMethod, 'None');
  t.equal(n.initiatorName, INAME);
  t.equal(n.targetName, TNAME);
  t.equal(n.initiatorAlias, 'host1');

  const o = n.negotiate(openIscsiOp, 'operational');
  t.notOk(o.error);
  t.same(o.response, [
    ['HeaderDigest', 'None'],
    ['DataDigest', 'None'],
    ['DefaultTime2Wait', '2'],
    ['DefaultTime2Retain', '0'],
    ['IFMarker', 'No'],
    ['OFMarker', 'No'],
    ['ErrorRecoveryLevel', '0'],
    ['InitialR2T', 'No'],
    ['ImmediateData', 'Yes'],
    ['MaxBurstLength', '1048576'],
    ['FirstBurstLength', '262144'],
    ['MaxOutstandingR2T', '1'],
    ['MaxConnections', '1'],
    ['DataPDUInOrder', 'Yes'],
    ['DataSequenceInOrder', 'Yes'],
  ]);
  t.same(n.finalDeclarations(), [['MaxRecvDataSegmentLength', '262144']]);
  t.same(n.finalDeclarations(), []);
  t.notOk(n.awaitingAnswers);
  t.same(n.params(), {
    headerDigest: 'None',
    dataDigest: 'None',
    maxConnections: 1,
    initialR2T: false,
    immediateData: true,
    maxBurstLength: 1048576,
    firstBurstLength: 262144,
    defaultTime2Wait: 2,
    defaultTime2Retain: 0,
    maxOutstandingR2T: 1,
    dataPDUInOrder: true,
    dataSequenceInOrder: true,
    errorRecoveryLevel: 0,
    iscsiProtocolLevel: 1,
    maxRecvDataSegmentLength: 262144,
    maxXmitDataSegmentLength: 262144,
    sessionType: 'Normal',
    authMethod: 'None',
    initiatorName: INAME,
    initiatorAlias: 'host1',
    targetName: TNAME,
  });
});

t.test('libiscsi-style login starting in operational stage', async (t) => {
  const n = new LoginNegotiator();
  const r = n.negotiate(
    [
      ['InitiatorName', 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test'],
      ['TargetName', TNAME],
      ['SessionType', 'Normal'],
      ['HeaderDigest', 'None,CRC32C'],
      ['DataDigest', 'None,CRC32C'],
      ['InitialR2T', 'Yes'],
      ['ImmediateData', 'Yes'],
      ['MaxBurstLength', '262144'],
      ['FirstBurstLength', '262144'],
      ['MaxRecvDataSegmentLength', '262144'],
      ['DataPDUInOrder', 'Yes'],
      ['DataSequenceInOrder', 'Yes'],
    ],
    'operational',
  );
  t.notOk(r.error);
  const a = new Map(r.response);
  t.equal(a.get('HeaderDigest'), 'None');
  t.equal(a.get('InitialR2T'), 'Yes');
  t.equal(a.get('FirstBurstLength'), '262144');
  const p = n.params();
  t.equal(p.maxRecvDataSegmentLength, 8192, 'target has not declared yet');
  t.equal(p.defaultTime2Retain, 20, 'RFC default when not negotiated');
  n.finalDeclarations();
  t.equal(n.params().maxRecvDataSegmentLength, 262144);
});

t.test('result functions', async (t) => {
  const table: Array<[string, string, string, object?]> = [
    // boolean OR
    ['InitialR2T', 'No', 'No'],
    ['InitialR2T', 'Yes', 'Yes'],
    ['InitialR2T', 'No', 'Yes', { initialR2T: true }],
    ['DataPDUInOrder', 'No', 'Yes'],
    ['DataPDUInOrder', 'No', 'No', { dataPDUInOrder: false }],
    ['DataSequenceInOrder', 'No', 'Yes'],
    ['DataSequenceInOrder', 'Yes', 'Yes', { dataSequenceInOrder: false }],
    // boolean AND
    ['ImmediateData', 'Yes', 'Yes'],
    ['ImmediateData', 'No', 'No'],
    ['ImmediateData', 'Yes', 'No', { immediateData: false }],
    ['ImmediateData', 'yes', 'Reject'],
    // numerical min
    ['MaxBurstLength', '16776192', '1048576'],
    ['MaxBurstLength', '65536', '65536'],
    ['MaxBurstLength', '0x10000', '65536'],
    ['MaxBurstLength', '511', 'Reject'],
    ['MaxBurstLength', '16777216', 'Reject'],
    ['MaxBurstLength', 'lots', 'Reject'],
    ['FirstBurstLength', '16776192', '262144'],
    ['FirstBurstLength', '65536', '65536'],
    ['FirstBurstLength', '100', 'Reject'],
    ['MaxConnections', '8', '1'],
    ['MaxConnections', '0', 'Reject'],
    ['MaxConnections', '4', '4', { maxConnections: 16 }],
    ['MaxOutstandingR2T', '1', '1'],
    ['MaxOutstandingR2T', '64', '8'],
    ['MaxOutstandingR2T', '0', 'Reject'],
    ['DefaultTime2Retain', '20', '0'],
    ['DefaultTime2Retain', '0', '0'],
    ['DefaultTime2Retain', '3601', 'Reject'],
    ['ErrorRecoveryLevel', '2', '0'],
    ['ErrorRecoveryLevel', '0', '0'],
    ['ErrorRecoveryLevel', '3', 'Reject'],
    ['ErrorRecoveryLevel', '2', '1', { errorRecoveryLevel: 1 }],
    ['iSCSIProtocolLevel', '2', '1'],
    ['iSCSIProtocolLevel', '0', '0'],
    ['iSCSIProtocolLevel', '32', 'Reject'],
    // numerical max
    ['DefaultTime2Wait', '0', '2'],
    ['DefaultTime2Wait', '10', '10'],
    ['DefaultTime2Wait', '3601', 'Reject'],
    // list
    ['HeaderDigest', 'None', 'None'],
    ['HeaderDigest', 'CRC32C,None', 'CRC32C'],
    ['HeaderDigest', 'None,CRC32C', 'None'],
    ['HeaderDigest', 'CRC32C', 'Reject', { headerDigest: ['None'] }],
    ['HeaderDigest', 'None', 'Reject', { headerDigest: ['CRC32C'] }],
    ['HeaderDigest', 'Foo,CRC32C', 'CRC32C'],
    ['HeaderDigest', 'Foo', 'Reject'],
    ['DataDigest', 'CRC32C,None', 'CRC32C'],
    ['DataDigest', 'CRC32C,None', 'None', { dataDigest: ['None'] }],
    ['TaskReporting', 'FastAbort,RFC3720', 'RFC3720'],
    ['TaskReporting', 'ResponseFence', 'Reject'],
    // obsolete markers (RFC 7143 13.26)
    ['IFMarker', 'No', 'No'],
    ['OFMarker', 'Yes', 'No'],
    ['IFMarkInt', '2048', 'Reject'],
    ['OFMarkInt', '1~65535', 'Reject'],
    // unknown / extension keys
    ['X-com.example.Foo', 'bar', 'NotUnderstood'],
    ['X#Something', 'bar', 'NotUnderstood'],
    ['NoSuchKey', '1', 'NotUnderstood'],
    // reserved constants as offers
    ['InitialR2T', 'Reject', 'Reject'],
    ['MaxBurstLength', 'Irrelevant', 'Reject'],
  ];
  for (const [key, offer, expected, config] of table) {
    t.equal(answer(key, offer, config), expected, `${key}=${offer} ${config ? JSON.stringify(config) : ''}`);
  }
});

t.test('FirstBurstLength never exceeds MaxBurstLength', async (t) => {
  const n = new LoginNegotiator();
  n.negotiate(securityNormal, 'security');
  const r = n.negotiate([['FirstBurstLength', '262144'], ['MaxBurstLength', '65536']], 'operational');
  const a = new Map(r.response);
  t.equal(a.get('MaxBurstLength'), '65536');
  t.equal(a.get('FirstBurstLength'), '65536');
  t.same(r.response.map(([k]) => k), ['FirstBurstLength', 'MaxBurstLength'], 'answers keep offer order');
  t.equal(n.params().firstBurstLength, 65536);

  const n2 = new LoginNegotiator();
  n2.negotiate(securityNormal, 'security');
  n2.negotiate([['FirstBurstLength', '262144']], 'operational');
  n2.negotiate([['MaxBurstLength', '4096']], 'operational');
  t.equal(n2.params().firstBurstLength, 4096, 'clamped in params() when MaxBurstLength comes later');
});

t.test('FirstBurstLength irrelevant when InitialR2T=Yes and ImmediateData=No', async (t) => {
  const n = new LoginNegotiator();
  n.negotiate(securityNormal, 'security');
  const r = n.negotiate([['FirstBurstLength', '65536'], ['InitialR2T', 'Yes'], ['ImmediateData', 'No']], 'operational');
  t.same(new Map(r.response).get('FirstBurstLength'), 'Irrelevant');
  const n2 = new LoginNegotiator({ immediateData: false });
  n2.negotiate(securityNormal, 'security');
  const r2 = n2.negotiate([['InitialR2T', 'Yes'], ['ImmediateData', 'Yes'], ['FirstBurstLength', '65536']], 'operational');
  t.same(new Map(r2.response).get('FirstBurstLength'), 'Irrelevant', 'target AND made ImmediateData No');
});

t.test('discovery session', async (t) => {
  const n = new LoginNegotiator();
  const s = n.negotiate([['InitiatorName', INAME], ['SessionType', 'Discovery'], ['AuthMethod', 'None']], 'security');
  t.notOk(s.error);
  t.equal(n.sessionType, 'Discovery');
  t.same(n.firstResponseKeys(), [], 'no TPGT in discovery');
  const o = n.negotiate(
    [
      ['HeaderDigest', 'None'],
      ['DataDigest', 'None'],
      ['DefaultTime2Wait', '2'],
      ['DefaultTime2Retain', '0'],
      ['IFMarker', 'No'],
      ['OFMarker', 'No'],
      ['ErrorRecoveryLevel', '0'],
      ['MaxConnections', '1'],
      ['InitialR2T', 'No'],
      ['ImmediateData', 'Yes'],
      ['MaxBurstLength', '16776192'],
      ['FirstBurstLength', '262144'],
      ['MaxOutstandingR2T', '1'],
      ['DataPDUInOrder', 'Yes'],
      ['DataSequenceInOrder', 'Yes'],
      ['MaxRecvDataSegmentLength', '32768'],
    ],
    'operational',
  );
  t.notOk(o.error);
  const a = new Map(o.response);
  for (const k of ['MaxConnections', 'InitialR2T', 'ImmediateData', 'MaxBurstLength', 'FirstBurstLength', 'MaxOutstandingR2T', 'DataPDUInOrder', 'DataSequenceInOrder']) {
    t.equal(a.get(k), 'Irrelevant', k);
  }
  t.equal(a.get('HeaderDigest'), 'None');
  t.equal(a.get('DefaultTime2Wait'), '2');
  t.equal(a.get('ErrorRecoveryLevel'), '0');
  t.equal(n.params().maxXmitDataSegmentLength, 32768);
  t.same(n.finalDeclarations(), [['MaxRecvDataSegmentLength', '262144']]);
});

t.test('SessionType in the same request decides irrelevance', async (t) => {
  const n = new LoginNegotiator();
  const r = n.negotiate([['MaxConnections', '1'], ['InitiatorName', INAME], ['SessionType', 'Discovery']], 'operational');
  t.equal(new Map(r.response).get('MaxConnections'), 'Irrelevant');
});

t.test('protocol errors', async (t) => {
  const err = (pairs: Array<[string, string]>, stage: 'security' | 'operational', pre?: Array<[string, string]>) => {
    const n = new LoginNegotiator();
    if (pre) n.negotiate(pre, 'security');
    return n.negotiate(pairs, stage).error?.status;
  };
  t.equal(err([['SessionType', 'Bogus']], 'security'), LoginStatus.SessionTypeNotSupported);
  t.equal(err([['SessionType', 'normal']], 'security'), LoginStatus.SessionTypeNotSupported);
  t.equal(err([['MaxBurstLength', '65536']], 'security'), LoginStatus.InitiatorError, 'operational key in security stage');
  t.equal(err([['AuthMethod', 'None']], 'operational'), LoginStatus.InitiatorError, 'security key in operational stage');
  t.equal(err([['CHAP_A', '5']], 'operational'), LoginStatus.InitiatorError);
  t.equal(err([['SendTargets', 'All']], 'operational'), LoginStatus.InitiatorError, 'FFPO key during login');
  t.equal(err([['TargetPortalGroupTag', '1']], 'security'), LoginStatus.InitiatorError, 'target-only key');
  t.equal(err([['TargetAddress', '1.2.3.4']], 'security'), LoginStatus.InitiatorError);
  t.equal(err([['TargetAlias', 'x']], 'security'), LoginStatus.InitiatorError);
  t.equal(err([['InitiatorName', '']], 'security'), LoginStatus.InitiatorError);
  t.equal(err([['MaxRecvDataSegmentLength', '100']], 'operational'), LoginStatus.InitiatorError);
  t.equal(err([['MaxRecvDataSegmentLength', 'big']], 'operational'), LoginStatus.InitiatorError);
  t.equal(err([['InitiatorName', INAME]], 'security', securityNormal), LoginStatus.InitiatorError, 'redeclared name');
  t.equal(err([['AuthMethod', 'None']], 'security', securityNormal), LoginStatus.InitiatorError, 'renegotiated AuthMethod');

  const n = new LoginNegotiator();
  n.negotiate(securityNormal, 'security');
  t.notOk(n.negotiate([['MaxBurstLength', '65536']], 'operational').error);
  t.equal(n.negotiate([['MaxBurstLength', '65536']], 'operational').error?.status, LoginStatus.InitiatorError, 'renegotiation across PDUs');
});

t.test('missing names', async (t) => {
  const n = new LoginNegotiator();
  n.negotiate([['SessionType', 'Normal'], ['InitiatorName', INAME]], 'security');
  t.equal(n.missingNames()?.status, LoginStatus.MissingParameter, 'TargetName needed for Normal');
  const d = new LoginNegotiator();
  d.negotiate([['SessionType', 'Discovery'], ['InitiatorName', INAME]], 'security');
  t.equal(d.missingNames(), undefined);
  const e = new LoginNegotiator();
  e.negotiate([['TargetName', TNAME]], 'security');
  t.equal(e.missingNames()?.status, LoginStatus.MissingParameter);
});

t.test('MaxRecvDataSegmentLength declarations', async (t) => {
  const n = new LoginNegotiator({ maxRecvDataSegmentLength: 65536 });
  n.negotiate(securityNormal, 'security');
  t.equal(n.params().maxXmitDataSegmentLength, 8192, 'initiator default');
  const r = n.negotiate([['MaxRecvDataSegmentLength', '0x1000000']], 'operational');
  t.same(r.response, [], 'declarations are not answered');
  t.equal(n.params().maxXmitDataSegmentLength, 16777215, 'clamped to the RFC maximum');
  t.same(n.finalDeclarations(), [['MaxRecvDataSegmentLength', '65536']]);
});

t.test('AuthMethod', async (t) => {
  const chapOnly = { authMethods: ['CHAP'] as const };
  const pick = (offer: string, config: object) => {
    const n = new LoginNegotiator(config);
    const r = n.negotiate([['InitiatorName', INAME], ['TargetName', TNAME], ['AuthMethod', offer]], 'security');
    return { answer: new Map(r.response).get('AuthMethod'), status: r.error?.status, method: n.authMethod, required: n.authRequired };
  };
  t.same(pick('CHAP,None', chapOnly), { answer: 'CHAP', status: undefined, method: 'CHAP', required: true });
  t.same(pick('None', chapOnly), { answer: 'Reject', status: LoginStatus.AuthenticationFailure, method: undefined, required: true });
  t.same(pick('None,CHAP', { authMethods: ['CHAP', 'None'] }), { answer: 'None', status: undefined, method: 'None', required: false }, "initiator's order wins");
  t.same(pick('KRB5,SRP,CHAP', { authMethods: ['CHAP', 'None'] }), { answer: 'CHAP', status: undefined, method: 'CHAP', required: false });
  t.same(pick('CHAP', {}), { answer: 'Reject', status: LoginStatus.AuthenticationFailure, method: undefined, required: false });

  const n = new LoginNegotiator(chapOnly);
  const r = n.negotiate([['AuthMethod', 'CHAP']], 'security');
  t.same(r.security, new Map());
  const r2 = n.negotiate([['CHAP_A', '5']], 'security');
  t.same(r2.response, []);
  t.same([...r2.security], [['CHAP_A', '5']], 'CHAP keys are passed through');
  const r3 = n.negotiate([['CHAP_N', 'u'], ['CHAP_R', '0x00']], 'security');
  t.notOk(r3.error, 'CHAP keys are not subject to renegotiation checks');
  t.equal(r3.security.size, 2);
});

t.test('target offers keys whose RFC default it cannot accept', async (t) => {
  const n = new LoginNegotiator({ immediateData: false, maxBurstLength: 131072, firstBurstLength: 32768, headerDigest: ['CRC32C'] });
  n.negotiate(securityNormal, 'security');
  n.negotiate([['InitialR2T', 'No']], 'operational');
  const decl = n.finalDeclarations();
  t.same(decl, [
    ['MaxRecvDataSegmentLength', '262144'],
    ['HeaderDigest', 'CRC32C'],
    ['ImmediateData', 'No'],
    ['MaxBurstLength', '131072'],
    ['FirstBurstLength', '32768'],
  ]);
  t.ok(n.awaitingAnswers);
  const r = n.negotiate([['HeaderDigest', 'CRC32C'], ['ImmediateData', 'No'], ['MaxBurstLength', '131072'], ['FirstBurstLength', '16384']], 'operational');
  t.notOk(r.error);
  t.same(r.response, [], 'answers to our offers are not answered');
  t.notOk(n.awaitingAnswers);
  const p = n.params();
  t.equal(p.headerDigest, 'CRC32C');
  t.equal(p.immediateData, false);
  t.equal(p.maxBurstLength, 131072);
  t.equal(p.firstBurstLength, 16384);

  const bad = new LoginNegotiator({ immediateData: false });
  bad.negotiate(securityNormal, 'security');
  bad.finalDeclarations();
  t.equal(bad.negotiate([['ImmediateData', 'Yes']], 'operational').error?.status, LoginStatus.InitiatorError);

  const none = new LoginNegotiator();
  none.negotiate(securityNormal, 'security');
  t.same(none.finalDeclarations(), [['MaxRecvDataSegmentLength', '262144']], 'defaults acceptable: nothing offered');
});

t.test('full feature phase text requests', async (t) => {
  const n = new LoginNegotiator();
  n.negotiate(securityNormal, 'security');
  n.negotiate(openIscsiOp, 'operational');
  n.finalDeclarations();
  const p = n.params();
  const r = negotiateFullFeature(
    [
      ['SendTargets', 'All'],
      ['MaxRecvDataSegmentLength', '65536'],
      ['MaxBurstLength', '65536'],
      ['HeaderDigest', 'CRC32C'],
      ['X-foo', '1'],
      ['Bogus', '1'],
    ],
    p,
  );
  t.equal(r.sendTargets, 'All');
  t.equal(r.params.maxXmitDataSegmentLength, 65536);
  t.equal(p.maxXmitDataSegmentLength, 262144, 'input not mutated');
  t.same(r.response, [
    ['MaxBurstLength', 'Reject'],
    ['HeaderDigest', 'Reject'],
    ['X-foo', 'NotUnderstood'],
    ['Bogus', 'NotUnderstood'],
  ]);
  const r2 = negotiateFullFeature([['MaxRecvDataSegmentLength', '1']], p);
  t.same(r2.response, [['MaxRecvDataSegmentLength', 'Reject']]);
  t.notOk('sendTargets' in r2);
});

t.test('helpers and table', async (t) => {
  t.equal(selectFromList('A,B,C', ['C', 'B']), 'B');
  t.equal(selectFromList('A', ['B']), undefined);
  t.ok(isIscsiName(INAME));
  t.ok(isIscsiName('eui.02004567A425678D'));
  t.notOk(isIscsiName('foo'));
  t.notOk(isIscsiName(`iqn.${'x'.repeat(230)}`));
  t.equal(validateTargetConfig(DEFAULT_TARGET_CONFIG), undefined);
  t.match(validateTargetConfig({ ...DEFAULT_TARGET_CONFIG, firstBurstLength: 2 << 20 }), /FirstBurstLength/);
  t.throws(() => new LoginNegotiator({ maxRecvDataSegmentLength: 100 }));
  for (const [k, spec] of Object.entries(KEY_TABLE)) {
    if ('default' in spec && 'min' in spec) {
      const d = parseNumerical(spec.default);
      t.ok(d !== undefined && d >= spec.min && d <= spec.max, `${k} default in range`);
    }
  }
});
