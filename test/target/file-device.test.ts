import t from 'tap';
import { readFile, stat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockDeviceError } from '../../src/target/volume/block-device.js';
import { ExtentSet, FileBlockDevice } from '../../src/target/volume/file-device.js';

t.test('create sparse, read/write/zero, reopen', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'vol.img');
  await t.rejects(FileBlockDevice.open(path, { blockSize: 512 }), { code: 'ENOENT' }, 'no size: must exist');
  const dev = await FileBlockDevice.open(path, { size: 1n << 20n, blockSize: 4096 });
  t.equal(dev.blockCount, 256n);
  t.equal(dev.writeCache, true);
  const data = Buffer.alloc(8192, 7);
  await dev.write(3n, data, { fua: true });
  const back = Buffer.alloc(8192);
  await dev.read(3n, 2, back);
  t.ok(back.equals(data));
  await dev.writeZeroes(4n, 1);
  await dev.unmap(3n, 0);
  await dev.read(3n, 2, back);
  t.ok(back.subarray(0, 4096).equals(Buffer.alloc(4096, 7)));
  t.ok(back.subarray(4096).equals(Buffer.alloc(4096)));
  await dev.flush();
  await t.rejects(dev.read(255n, 2, Buffer.alloc(8192)), BlockDeviceError);

  let grown = 0n;
  dev.onCapacityChange((n) => { grown = n; });
  await dev.grow(2n << 20n);
  t.equal(grown, 512n);
  t.equal(dev.blockCount, 512n);
  await dev.close();
  t.equal((await stat(path)).size, 2 << 20);
  const again = await FileBlockDevice.open(path, { blockSize: 512, writeCache: false });
  t.equal(again.blockCount, 4096n);
  t.equal(again.writeCache, false);
  const b = Buffer.alloc(512);
  await again.read(24n, 1, b);
  t.ok(b.equals(Buffer.alloc(512, 7)));
  await again.close();
});

t.test('state sidecar is written atomically', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'vol.img');
  const dev = await FileBlockDevice.open(path, { size: 65536n, blockSize: 512 });
  t.equal(await dev.loadState('pr'), undefined);
  await dev.saveState('pr', Buffer.from('one'));
  await dev.saveState('pr', Buffer.from('two'));
  t.equal((await dev.loadState('pr'))!.toString(), 'two');
  t.same(await readdir(`${path}.state`), ['pr'], 'no temporary files left');
  t.equal((await readFile(join(`${path}.state`, 'pr'))).toString(), 'two');
  await t.rejects(dev.saveState('../x', Buffer.alloc(1)), RangeError);
  await dev.close();
});

t.test('deallocation tracking for GET LBA STATUS', async (t) => {
  const s = new ExtentSet();
  s.add(10n, 20n);
  s.add(20n, 30n); // touching: merged
  s.add(40n, 50n);
  t.equal(s.size, 2);
  t.same(s.status(0n, 100), { blocks: 10, mapped: true });
  t.same(s.status(12n, 100), { blocks: 18, mapped: false });
  t.same(s.status(12n, 5), { blocks: 5, mapped: false });
  s.remove(15n, 45n); // splits the first, trims the second
  t.same(s.status(10n, 100), { blocks: 5, mapped: false });
  t.same(s.status(15n, 100), { blocks: 30, mapped: true });
  t.same(s.status(45n, 100), { blocks: 5, mapped: false });
  s.add(0n, 100n);
  t.equal(s.size, 1);
});
