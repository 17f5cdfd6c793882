import t from 'tap';
import {
  parseTextData,
  encodeTextPairs,
  TextAccumulator,
  splitForResponse,
  MAX_KEY_BYTES,
} from '../../src/protocol/iscsi/text.js';
import { LoginStatus } from '../../src/protocol/iscsi/constants.js';
import { openIscsiOp } from '../fixtures/login-keys.js';


t.test('encode/parse round trip', async (t) => {
  const buf = encodeTextPairs(openIscsiOp);
  t.equal(buf.at(-1), 0);
  t.equal(buf.toString('latin1').split('\0').length, openIscsiOp.length + 1);
  const r = parseTextData(buf);
  t.notOk(r.error);
  t.same(r.pairs, openIscsiOp);
  t.same(encodeTextPairs(new Map(openIscsiOp)), buf, 'iterables other than arrays');
  t.equal(encodeTextPairs([]).length, 0);
});

t.test('utf-8 values and values containing "="', async (t) => {
  const pairs: Array<[string, string]> = [['InitiatorAlias', 'hôte=1'], ['TargetName', 'iqn.2024-01.io.x:ü']];
  const buf = encodeTextPairs(pairs);
  t.equal(buf.length, Buffer.byteLength('InitiatorAlias=hôte=1\0TargetName=iqn.2024-01.io.x:ü\0'));
  t.same(parseTextData(buf).pairs, pairs);
  t.same(parseTextData(Buffer.from('SendTargets=\0')).pairs, [['SendTargets', '']], 'empty value is legal');
});

t.test('lenient: stray NULs and a missing final NUL', async (t) => {
  t.same(parseTextData(Buffer.from('\0A=1\0\0B=2')).pairs, [['A', '1'], ['B', '2']]);
  t.same(parseTextData(Buffer.alloc(0)).pairs, []);
});

t.test('malformed entries are protocol errors', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['no =', Buffer.from('A=1\0garbage\0')],
    ['empty key', Buffer.from('=x\0')],
    ['key too long', Buffer.from(`${'K'.repeat(MAX_KEY_BYTES + 1)}=1\0`)],
    ['value too long', Buffer.from(`TargetAlias=${'v'.repeat(256)}\0`)],
    ['list element too long', Buffer.from(`HeaderDigest=None,${'v'.repeat(256)}\0`)],
    ['duplicate key', Buffer.from('A=1\0B=2\0A=1\0')],
    ['bad utf-8', Buffer.concat([Buffer.from('A='), Buffer.of(0xc3, 0x28), Buffer.of(0)])],
  ];
  for (const [name, buf] of cases) {
    const r = parseTextData(buf);
    t.equal(r.error?.status, LoginStatus.InitiatorError, name);
  }
  // Exactly at the limits is fine.
  t.notOk(parseTextData(Buffer.from(`${'K'.repeat(MAX_KEY_BYTES)}=${'v'.repeat(255)}\0`)).error);
  // CHAP binary values may be long.
  const longChap = `CHAP_C=0x${'ab'.repeat(2000)}\0`;
  t.notOk(parseTextData(Buffer.from(longChap)).error);
  t.ok(parseTextData(Buffer.from(`CHAP_C=0x${'ab'.repeat(4100)}\0`)).error);
  // Pairs parsed before the error are kept.
  t.same(parseTextData(Buffer.from('A=1\0A=2\0')).pairs, [['A', '1']]);
});

t.test('accumulator: split at every offset (including inside keys and values)', async (t) => {
  const text = encodeTextPairs(openIscsiOp);
  for (let cut = 0; cut <= text.length; cut++) {
    const acc = new TextAccumulator(text.length);
    t.equal(acc.push(text.subarray(0, cut), true), 'more');
    t.ok(acc.pending || cut === 0);
    t.equal(acc.push(text.subarray(cut), false), 'complete');
    const whole = acc.take();
    if (!whole.equals(text)) {
      t.fail(`mismatch at cut ${cut}`);
      break;
    }
    t.equal(acc.length, 0);
  }
  // Three-way split at every pair of offsets on a smaller text.
  const small = encodeTextPairs([['CHAP_N', 'user'], ['CHAP_R', '0x00112233']]);
  let bad = 0;
  for (let a = 0; a <= small.length; a++) {
    for (let b = a; b <= small.length; b++) {
      const acc = new TextAccumulator(small.length);
      acc.push(small.subarray(0, a), true);
      acc.push(small.subarray(a, b), true);
      acc.push(small.subarray(b), false);
      const r = parseTextData(acc.take());
      if (r.error || r.pairs.length !== 2) bad++;
    }
  }
  t.equal(bad, 0);
});

t.test('accumulator copies input and is bounded', async (t) => {
  const acc = new TextAccumulator(10);
  const src = Buffer.from('A=1\0');
  acc.push(src, true);
  src.fill(0x5a); // caller reuses its buffer
  t.equal(acc.push(Buffer.from('B=2\0'), false), 'complete');
  t.equal(acc.take().toString(), 'A=1\0B=2\0');

  t.equal(acc.push(Buffer.alloc(8), true), 'more');
  t.equal(acc.push(Buffer.alloc(3), true), 'overflow');
  t.equal(acc.push(Buffer.alloc(1), false), 'overflow', 'sticky until reset');
  acc.reset();
  t.equal(acc.push(Buffer.alloc(10), false), 'complete', 'exactly maxBytes fits');
  t.equal(acc.take().length, 10);
  t.throws(() => new TextAccumulator(-1));
});

t.test('splitForResponse', async (t) => {
  const data = Buffer.from('x'.repeat(10));
  t.same(splitForResponse(data, 4).map((b) => b.length), [4, 4, 2]);
  t.same(splitForResponse(data, 5).map((b) => b.length), [5, 5]);
  t.same(splitForResponse(data, 10).map((b) => b.length), [10]);
  t.same(splitForResponse(Buffer.alloc(0), 8).map((b) => b.length), [0]);
  t.same(Buffer.concat(splitForResponse(data, 3)), data);
  t.throws(() => splitForResponse(data, 0));
  // A long SendTargets answer reassembles through the accumulator.
  const st = encodeTextPairs(
    Array.from({ length: 50 }, (_, i) => ['TargetName', `iqn.2024-01.io.example:vol${i}`] as const),
  );
  const acc = new TextAccumulator(1 << 16);
  const segs = splitForResponse(st, 64);
  segs.forEach((s, i) => acc.push(s, i < segs.length - 1));
  t.same(acc.take(), st);
});
