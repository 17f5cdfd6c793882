import t from 'tap';
import { createHash } from 'node:crypto';
import {
  parseChapBinary,
  formatChapBinary,
  chapResponse,
  TargetChap,
  initiatorChapResponse,
  verifyTargetChapResponse,
  validateChapSecret,
  validateChapConfig,
} from '../../src/protocol/iscsi/chap.js';
import { LoginStatus } from '../../src/protocol/iscsi/constants.js';

const USER = 'iqn.2024-01.io.example:initiator';
const SECRET = 'initiator-secret-1';
const MUTUAL = { user: 'target-user', secret: 'target-secret-22' };

/** Deterministic "random": id byte 0x2a, then challenge bytes 0,1,2... */
function fakeRandom(): (n: number) => Buffer {
  return (n) => (n === 1 ? Buffer.of(0x2a) : Buffer.from(Array.from({ length: n }, (_, i) => i)));
}

const m = (pairs: Array<[string, string]>): Map<string, string> => new Map(pairs);

t.test('binary encoding', async (t) => {
  t.same(parseChapBinary('0x00ff10'), Buffer.of(0, 0xff, 0x10));
  t.same(parseChapBinary('0XABcd'), Buffer.of(0xab, 0xcd));
  t.same(parseChapBinary('0xabc'), Buffer.of(0x0a, 0xbc), 'odd digit count: implied leading zero');
  t.same(parseChapBinary('0bAAEC'), Buffer.of(0, 1, 2));
  t.same(parseChapBinary('0BAQ=='), Buffer.of(1));
  for (const bad of ['', '0x', '0b', '0xzz', 'abcd', '0b@@@@', '0bAQ=', '12', '0y12']) {
    t.equal(parseChapBinary(bad), undefined, JSON.stringify(bad));
  }
  t.equal(formatChapBinary(Buffer.of(0xab, 0x01)), '0xab01');
});

t.test('known answer: MD5(id || secret || challenge)', async (t) => {
  const secret = Buffer.from('abcdefghijkl');
  const challenge = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const expected = createHash('md5')
    .update(Buffer.concat([Buffer.of(7), secret, challenge]))
    .digest('hex');
  t.equal(chapResponse(7, secret, challenge).toString('hex'), expected);
  // RFC 1321 test vector: MD5("abc") with id 0x61 ('a') and secret "bc".
  t.equal(chapResponse(0x61, Buffer.from('bc'), Buffer.alloc(0)).toString('hex'), '900150983cd24fb0d6963f7d28e17f72');
});

t.test('one-way CHAP success', async (t) => {
  const chap = new TargetChap({ user: USER, secret: SECRET, randomBytes: fakeRandom() });
  t.same(chap.step(new Map()), { ok: true, response: [], done: false }, 'no CHAP keys yet: no-op');
  const s1 = chap.step(m([['CHAP_A', '7,6,5']]));
  if (!s1.ok) throw new Error('step1');
  const r1 = m(s1.response);
  t.equal(r1.get('CHAP_A'), '5');
  t.equal(r1.get('CHAP_I'), '42');
  t.equal(r1.get('CHAP_C'), formatChapBinary(Buffer.from(Array.from({ length: 16 }, (_, i) => i))));
  t.equal(s1.done, false);

  const s2 = chap.step(m(initiatorChapResponse(r1, { user: USER, secret: SECRET })));
  t.same(s2, { ok: true, response: [], done: true });
  t.ok(chap.done);
  t.notOk(chap.mutual);
  t.same(chap.step(new Map()), { ok: true, response: [], done: true });
  const again = chap.step(m([['CHAP_A', '5']]));
  t.equal(again.ok, false, 'CHAP keys after completion fail');
});

t.test('challenge uses real randomness by default and is ≥16 bytes', async (t) => {
  const a = new TargetChap({ user: USER, secret: SECRET }).step(m([['CHAP_A', '5']]));
  const b = new TargetChap({ user: USER, secret: SECRET }).step(m([['CHAP_A', '5']]));
  if (!a.ok || !b.ok) throw new Error('step');
  const ca = parseChapBinary(m(a.response).get('CHAP_C') ?? '');
  const cb = parseChapBinary(m(b.response).get('CHAP_C') ?? '');
  t.ok(ca && ca.length >= 16);
  t.notSame(ca, cb);
  t.throws(() => new TargetChap({ user: USER, secret: SECRET, challengeLength: 8 }));
});

t.test('failures are AuthenticationFailure and never leak secrets', async (t) => {
  const run = (keys2: (r1: Map<string, string>) => Array<[string, string]>, mutual = false) => {
    const chap = new TargetChap({ user: USER, secret: SECRET, randomBytes: fakeRandom(), ...(mutual ? { mutual: MUTUAL } : {}) });
    const s1 = chap.step(m([['CHAP_A', '5']]));
    if (!s1.ok) throw new Error('step1');
    return chap.step(m(keys2(m(s1.response))));
  };
  const cases: Array<[string, ReturnType<typeof run>]> = [
    ['wrong secret', run((r) => initiatorChapResponse(r, { user: USER, secret: 'wrong-secret-xx' }))],
    ['wrong user', run((r) => initiatorChapResponse(r, { user: 'someone', secret: SECRET }))],
    ['missing CHAP_R', run(() => [['CHAP_N', USER]])],
    ['malformed CHAP_R', run(() => [['CHAP_N', USER], ['CHAP_R', 'nothex']])],
    ['short CHAP_R', run(() => [['CHAP_N', USER], ['CHAP_R', '0x00']])],
    ['mutual not configured', run((r) => initiatorChapResponse(r, { user: USER, secret: SECRET }, { id: 1, challenge: Buffer.alloc(16, 9) }))],
    ['only CHAP_I', run((r) => [...initiatorChapResponse(r, { user: USER, secret: SECRET }), ['CHAP_I', '3']], true)],
    [
      'reflected challenge',
      run((r) => initiatorChapResponse(r, { user: USER, secret: SECRET }, { id: 1, challenge: parseChapBinary(r.get('CHAP_C') ?? '') ?? Buffer.alloc(0) }), true),
    ],
    ['bad CHAP_I', run((r) => [...initiatorChapResponse(r, { user: USER, secret: SECRET }), ['CHAP_I', '256'], ['CHAP_C', '0x01']], true)],
    ['empty CHAP_C', run((r) => [...initiatorChapResponse(r, { user: USER, secret: SECRET }), ['CHAP_I', '1'], ['CHAP_C', '0x']], true)],
    ['CHAP_A repeated', run(() => [['CHAP_A', '5']])],
  ];
  for (const [name, r] of cases) {
    t.equal(r.ok, false, name);
    if (!r.ok) {
      t.equal(r.status, LoginStatus.AuthenticationFailure, name);
      t.notMatch(r.message, SECRET, name);
      t.notMatch(r.message, MUTUAL.secret, name);
    }
  }
  const noMd5 = new TargetChap({ user: USER, secret: SECRET }).step(m([['CHAP_A', '6,7']]));
  t.equal(noMd5.ok, false);
  const wrongFirst = new TargetChap({ user: USER, secret: SECRET }).step(m([['CHAP_N', USER]]));
  t.equal(wrongFirst.ok, false);
  t.notMatch(JSON.stringify(new TargetChap({ user: USER, secret: SECRET })), SECRET);
});

t.test('mutual CHAP', async (t) => {
  const chap = new TargetChap({ user: USER, secret: SECRET, mutual: MUTUAL, randomBytes: fakeRandom() });
  const s1 = chap.step(m([['CHAP_A', '5']]));
  if (!s1.ok) throw new Error('step1');
  const mine = { id: 200, challenge: Buffer.from('fedcba9876543210fedcba9876543210', 'hex') };
  const s2 = chap.step(m(initiatorChapResponse(m(s1.response), { user: USER, secret: SECRET }, mine)));
  if (!s2.ok) throw new Error(s2.message);
  t.ok(s2.done);
  t.ok(chap.mutual);
  const r2 = m(s2.response);
  t.equal(r2.get('CHAP_N'), MUTUAL.user);
  const expected = createHash('md5').update(Buffer.concat([Buffer.of(200), Buffer.from(MUTUAL.secret), mine.challenge])).digest('hex');
  t.equal(r2.get('CHAP_R'), `0x${expected}`);
  t.ok(verifyTargetChapResponse(r2, MUTUAL, mine));
  t.notOk(verifyTargetChapResponse(r2, { user: MUTUAL.user, secret: 'other-secret-123' }, mine));

  // Mutual configured but the initiator only wants one-way: allowed.
  const oneWay = new TargetChap({ user: USER, secret: SECRET, mutual: MUTUAL, randomBytes: fakeRandom() });
  const o1 = oneWay.step(m([['CHAP_A', '5']]));
  if (!o1.ok) throw new Error('o1');
  t.same(oneWay.step(m(initiatorChapResponse(m(o1.response), { user: USER, secret: SECRET }))), { ok: true, response: [], done: true });
  t.notOk(oneWay.mutual);
});

t.test('hex CHAP_I and base64 CHAP_R from the initiator', async (t) => {
  const chap = new TargetChap({ user: USER, secret: SECRET, mutual: MUTUAL, randomBytes: fakeRandom() });
  const s1 = chap.step(m([['CHAP_A', '5']]));
  if (!s1.ok) throw new Error('step1');
  const c = parseChapBinary(m(s1.response).get('CHAP_C') ?? '') ?? Buffer.alloc(0);
  const resp = chapResponse(42, Buffer.from(SECRET), c);
  const s2 = chap.step(m([['CHAP_N', USER], ['CHAP_R', `0b${resp.toString('base64')}`], ['CHAP_I', '0x10'], ['CHAP_C', '0bAAECAw==']]));
  t.ok(s2.ok && s2.done);
});

t.test('secret validation', async (t) => {
  t.match(validateChapSecret('short'), /at least 12/);
  t.equal(validateChapSecret('twelve-bytes'), undefined);
  t.match(validateChapSecret('x'.repeat(256)), /at most/);
  t.equal(validateChapConfig({ user: USER, secret: SECRET, mutual: MUTUAL }), undefined);
  t.match(validateChapConfig({ user: USER, secret: SECRET, mutual: { user: 'x', secret: SECRET } }), /differ/);
  t.match(validateChapConfig({ user: '', secret: SECRET }), /empty/);
  t.match(validateChapConfig({ user: USER, secret: SECRET, mutual: { user: 'x', secret: 'short' } }), /mutual/);
});
