// ReplicaVolume (k = 1) without a replica: what grow() accepts and refuses.
import t from 'tap';
import { ReplicaVolume } from '../../../src/target/volume/replica-volume.js';
import { silentLogger } from '../../../src/shared/logger.js';

t.test('grow: a multiple of the block size grows and tells listeners; shrinking and fractions are refused by name', async (t) => {
  const v = new ReplicaVolume({ blockSize: 4096, capacityBytes: 1 << 20, epoch: 1, logger: silentLogger() });
  const seen: bigint[] = [];
  v.onCapacityChange((n) => seen.push(n));
  t.throws(() => v.grow((1 << 20) + 512), { message: `${(1 << 20) + 512} is not a multiple of the block size 4096` });
  t.throws(() => v.grow(1 << 19), { message: 'cannot shrink from 256 to 128 blocks' });
  v.grow(1 << 20);
  t.same(seen, [], 'the same size changes nothing');
  v.grow(2 << 20);
  t.equal(v.blockCount, 512n);
  t.same(seen, [512n]);
});
