import t from 'tap';
import { serialLt, serialAdd } from '../../src/protocol/iscsi/serial.js';
t.test('serial', async t => {
  t.ok(serialLt(1, 2));
  t.ok(serialLt(0xffffffff, 0));
  t.notOk(serialLt(0, 0xffffffff));
  t.equal(serialAdd(0xffffffff, 2), 1);
});
