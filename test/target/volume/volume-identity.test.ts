import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadOrCreateIdentity } from '../../../src/target/volume/volume-identity.js';

const UUID = '6a1f0c3e-2b4d-4e5f-8a9b-0c1d2e3f4a5b';

t.test('a generated identity is kept across loads', async (t) => {
  const dir = t.testdir();
  const a = await loadOrCreateIdentity(dir);
  t.match(a.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  const b = await loadOrCreateIdentity(dir);
  t.equal(b.uuid, a.uuid);
  t.equal(JSON.parse(readFileSync(join(dir, 'volume.json'), 'utf8')).uuid, a.uuid, 'persisted in volume.json');
});

t.test('--volume-uuid: a new data dir takes it, the same one is accepted, another one is refused', async (t) => {
  const dir = t.testdir();
  t.equal((await loadOrCreateIdentity(dir, UUID)).uuid, UUID);
  t.equal((await loadOrCreateIdentity(dir, UUID)).uuid, UUID, 'restart with the same uuid');
  t.equal((await loadOrCreateIdentity(dir)).uuid, UUID, 'and without the flag');
  const other = '00000000-0000-4000-8000-000000000001';
  await t.rejects(loadOrCreateIdentity(dir, other), { message: `${join(dir, 'volume.json')} holds volume ${UUID}, not the requested --volume-uuid ${other}; use another --data-dir` });
  t.equal(JSON.parse(readFileSync(join(dir, 'volume.json'), 'utf8')).uuid, UUID, 'the refused start changed nothing');
});
