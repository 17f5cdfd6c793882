// The target state blob a replica keeps for its target: slot codec, and the store's durable A/B
// slots (fenced by epoch, ordered by generation, torn writes fall back to the other slot).
import t from 'tap';
import { openSync, readSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import {
  EMPTY_TARGET_STATE, MAX_TARGET_STATE_PAYLOAD, TARGET_STATE_SLOT_BYTES, TargetStateError, decodeTargetState,
  encodeTargetState, selectTargetState, type TargetStateBlob,
} from '../../src/replica/target-state.js';
import { TARGET_STATE_OFFSET, TARGET_STATE_REGION_BYTES } from '../../src/replica/store-layout.js';
import { formatStore, ReplicaStore } from '../../src/replica/store.js';
import { StoreError, StoreErrorCode } from '../../src/replica/store-api.js';

t.setTimeout(60_000);

const UUID = '7a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const OTHER = '11111111-2222-4333-8444-555555555555';
const MiB = 1 << 20;

const blob = (generation: number, entries: Record<string, string>, epoch = 3): TargetStateBlob => ({
  generation, epoch, entries: new Map(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v)])),
});
const text = (b: TargetStateBlob): Record<string, string> =>
  Object.fromEntries([...b.entries].map(([k, v]) => [k, v.toString()]));

t.test('slot codec: round trip and strict checks', async (t) => {
  const slot = encodeTargetState(blob(7, { pr: 'registrations', empty: '' }), UUID);
  t.equal(slot.length, TARGET_STATE_SLOT_BYTES);
  const back = decodeTargetState(slot, UUID);
  t.equal(back.state, 'valid');
  if (back.state === 'valid') {
    t.equal(back.blob.generation, 7);
    t.equal(back.blob.epoch, 3);
    t.same(text(back.blob), { pr: 'registrations', empty: '' });
  }
  t.same(decodeTargetState(Buffer.alloc(TARGET_STATE_SLOT_BYTES), UUID), { state: 'empty' }, 'never written');
  t.match(decodeTargetState(slot, OTHER), { state: 'invalid', reason: /another volume/ });
  const torn = Buffer.from(slot);
  torn[70] = torn[70]! ^ 0xff; // inside the payload
  t.match(decodeTargetState(torn, UUID), { state: 'invalid', reason: /checksum/ });
  const version = Buffer.from(slot);
  version.writeUInt32LE(2, 8);
  t.match(decodeTargetState(version, UUID), { state: 'invalid', reason: /format/ });
  // Bytes past the payload are not covered: a smaller blob over a larger one's leftovers stays valid.
  const mixed = Buffer.from(encodeTargetState(blob(9, { a: 'x'.repeat(1000) }), UUID));
  encodeTargetState(blob(10, { a: 'y' }), UUID).copy(mixed, 0, 0, 64 + 1 + 1 + 4 + 1);
  t.match(decodeTargetState(mixed, UUID), { state: 'valid', blob: { generation: 10 } });

  t.throws(() => encodeTargetState(blob(0, {}), UUID), TargetStateError, 'generation 0 is "nothing stored"');
  t.throws(() => encodeTargetState(blob(1, { 'bad/key': 'v' }), UUID), /invalid key/);
  t.throws(() => encodeTargetState(blob(1, { big: 'z'.repeat(MAX_TARGET_STATE_PAYLOAD) }), UUID), /exceeds/);
  t.doesNotThrow(() => encodeTargetState(blob(1, { big: 'z'.repeat(MAX_TARGET_STATE_PAYLOAD - 1 - 3 - 4) }), UUID), 'exactly full');
});

t.test('slot selection: newest valid copy, the other when one is torn', async (t) => {
  const region = Buffer.alloc(2 * TARGET_STATE_SLOT_BYTES);
  t.same(selectTargetState(region, UUID), { blob: EMPTY_TARGET_STATE, slot: -1, problems: [] });
  encodeTargetState(blob(4, { pr: 'four' }), UUID).copy(region, 0);
  encodeTargetState(blob(5, { pr: 'five' }), UUID).copy(region, TARGET_STATE_SLOT_BYTES);
  const both = selectTargetState(region, UUID);
  t.equal(both.slot, 1);
  t.same(text(both.blob), { pr: 'five' });
  region[TARGET_STATE_SLOT_BYTES + 66] = region[TARGET_STATE_SLOT_BYTES + 66]! ^ 1; // in the payload
  const torn = selectTargetState(region, UUID);
  t.equal(torn.slot, 0, 'the torn newer copy is skipped');
  t.same(text(torn.blob), { pr: 'four' });
  t.match(torn.problems, [/slot 1: checksum/]);
});

t.test('store: durable put/get, fencing, generation order, torn write, reformat', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'r.img');
  await formatStore(path, { volumeName: 'vol', volumeUuid: UUID, replicaId: 'r1', capacityBytes: 4 * MiB, journalBytes: MiB });
  let store = await ReplicaStore.open(path, { checkpointIntervalMs: 0 });
  t.teardown(() => store.close());
  t.same(await store.targetState(), EMPTY_TARGET_STATE, 'nothing stored after format');

  await store.setEpoch(5);
  await t.rejects(store.putTargetState(blob(1, { pr: 'old target' }, 4)), { code: StoreErrorCode.StaleEpoch }, 'a fenced target cannot write it');
  await store.putTargetState(blob(1, { pr: 'one' }, 5));
  await store.putTargetState(blob(2, { pr: 'two', other: 'x' }, 5));
  await t.rejects(store.putTargetState(blob(1, { pr: 'late' }, 5)), { code: StoreErrorCode.StaleEpoch }, 'an older generation is refused');
  await store.putTargetState(blob(2, { pr: 'two', other: 'x' }, 5)); // a re-push of the same generation
  await t.rejects(store.putTargetState(blob(3, { 'no/slash': 'x' }, 5)), StoreError);
  // A newer epoch in the blob is persisted first, like a data-path request's.
  await store.putTargetState(blob(3, { pr: 'three' }, 6));
  t.equal(store.info.epoch, 6, 'the put raised the persisted epoch');
  await store.close();

  store = await ReplicaStore.open(path, { checkpointIntervalMs: 0 });
  const reopened = await store.targetState();
  t.equal(reopened.generation, 3);
  t.same(text(reopened), { pr: 'three' }, 'survives a reopen');
  t.equal(store.info.epoch, 6);
  await store.close();

  // Tear the newest copy on disk: the previous generation is served.
  const fd = openSync(path, 'r+');
  const region = Buffer.alloc(TARGET_STATE_REGION_BYTES);
  readSync(fd, region, 0, region.length, TARGET_STATE_OFFSET);
  const newest = selectTargetState(region, UUID);
  t.equal(newest.blob.generation, 3);
  const at = TARGET_STATE_OFFSET + newest.slot * TARGET_STATE_SLOT_BYTES + 17; // the generation field
  writeSync(fd, Buffer.from([0xee, 0xee]), 0, 2, at);
  closeSync(fd);
  store = await ReplicaStore.open(path, { checkpointIntervalMs: 0 });
  const fallback = await store.targetState();
  t.equal(fallback.generation, 2, 'the older intact slot');
  t.same(text(fallback), { pr: 'two', other: 'x' });
  // The next put overwrites the torn slot, never the intact one.
  await store.putTargetState(blob(4, { pr: 'four' }, 6));
  await store.close();
  const fd2 = openSync(path, 'r');
  readSync(fd2, region, 0, region.length, TARGET_STATE_OFFSET);
  closeSync(fd2);
  t.same(selectTargetState(region, UUID).problems, [], 'both slots valid again');
  t.equal(selectTargetState(region, UUID).blob.generation, 4);

  // A forced reformat (another volume) leaves no blob behind.
  await formatStore(path, { volumeName: 'vol2', volumeUuid: OTHER, replicaId: 'r1', capacityBytes: 4 * MiB, journalBytes: MiB, force: true });
  const fd3 = openSync(path, 'r');
  readSync(fd3, region, 0, region.length, TARGET_STATE_OFFSET);
  closeSync(fd3);
  t.ok(region.equals(Buffer.alloc(region.length)), 'the target state region is zeroed by format');
  store = await ReplicaStore.open(path, { checkpointIntervalMs: 0 });
  t.equal((await store.targetState()).generation, 0);
});
