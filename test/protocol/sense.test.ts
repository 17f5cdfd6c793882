import t from 'tap';
import { Asc, SenseKey } from '../../src/protocol/scsi/constants.js';
import { CheckCondition, buildSense, decodeSense, invalidCdbField, invalidParameterField } from '../../src/protocol/scsi/sense.js';

t.test('fixed format with field pointer', async (t) => {
  const s = invalidCdbField(7, 5).toSense(false);
  t.same([...s], [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xcd, 0, 7]);
  const p = invalidParameterField(300).toSense(false);
  t.same([p[15], p[16], p[17]], [0x80, 1, 44], 'parameter list, no bit');
});

t.test('descriptor format with information and field pointer', async (t) => {
  const s = new CheckCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerify, { information: 0x1_0000_0002n }).toSense(true);
  t.same([...s.subarray(0, 8)], [0x72, 0x0e, 0x1d, 0x00, 0, 0, 0, 12]);
  t.same([...s.subarray(8, 12)], [0x00, 0x0a, 0x80, 0]);
  t.equal(s.readBigUInt64BE(12), 0x1_0000_0002n);
  t.same(decodeSense(s), { key: 0xe, asc: 0x1d, ascq: 0, information: 0x1_0000_0002n });
  const f = invalidCdbField(1, 4).toSense(true);
  t.same([...f.subarray(8)], [0x02, 0x06, 0, 0, 0xcc, 0, 1, 0]);
});

t.test('fixed-format INFORMATION is VALID only when it fits in 32 bits', async (t) => {
  const ok = buildSense(SenseKey.MediumError, Asc.UnrecoveredReadError, { information: 0x1234n });
  t.equal(ok[0], 0xf0);
  t.equal(ok.readUInt32BE(3), 0x1234);
  const big = buildSense(SenseKey.MediumError, Asc.UnrecoveredReadError, { information: 0x1_0000_0000n });
  t.equal(big[0], 0x70);
  t.equal(decodeSense(big)!.information, undefined);
});
