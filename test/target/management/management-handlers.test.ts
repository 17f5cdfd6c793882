// Management rules that protect the volume: no shrink, no eject that would drop the quorum,
// unknown replicas named; status fields derived from the volume view.
import t from 'tap';
import { managementHandlers, type ManagedReplica, type ManagedVolume } from '../../../src/target/management/management-handlers.js';

function volumeView(modes: ManagedReplica['mode'][]): ManagedVolume & { grown: number[]; ejected: string[] } {
  let capacity = 1 << 30;
  let rate = 200;
  const replicas: ManagedReplica[] = modes.map((mode, i) => ({
    id: `r${i + 1}`, mode, reason: mode === 'healthy' ? undefined : 'test', checkpointedIoSeq: 10 * i, inflightReads: 0, inflightWrites: i,
    inflightSyncs: 0, connectedAt: mode === 'offline' ? undefined : Date.now() - 5000, address: mode === 'offline' ? undefined : `127.0.0.1:${4000 + i}`, rebuild: undefined,
  }));
  const view = {
    name: 'vol1', uuid: 'u', iqn: 'iqn.x:vol1', portal: '127.0.0.1:3260', startedAt: Date.now() - 60_000, replicationFactor: modes.length, consistencyFactor: 2,
    grown: [] as number[], ejected: [] as string[],
    epoch: () => 3,
    phase: () => { const h = replicas.filter((r) => r.mode === 'healthy').length; return h === modes.length ? 'healthy' as const : h >= 2 ? 'degraded' as const : 'offline' as const; },
    capacityBytes: () => capacity,
    blockSize: () => 512,
    replicas: () => replicas,
    grow: async (bytes: number) => { view.grown.push(bytes); capacity = bytes; return bytes; },
    rebuildRateMiBs: () => rate,
    setRebuildRateMiBs: async (mib: number) => { rate = mib; },
    eject: async (id: string) => { view.ejected.push(id); return 'degraded' as const; },
    sessions: () => [],
  };
  return view;
}

t.test('status, grow, rate and eject rules', async (t) => {
  const v = volumeView(['healthy', 'healthy', 'degraded']);
  const h = managementHandlers(v);
  const s = await h.status({});
  t.equal(s.phase, 'Degraded');
  t.same(s.replicas.map((r) => [r.id, r.mode, r.quorum]), [['r1', 'Healthy', true], ['r2', 'Healthy', true], ['r3', 'Degraded', false]]);
  t.ok(s.replicas[0]!.uptimeSeconds >= 4.9 && s.uptimeSeconds >= 59.9);
  await t.rejects(h.resize({ capacityBytes: 1 << 29 }), /shrinking is not supported/);
  await t.rejects(h.resize({ capacityBytes: (1 << 30) + 100 }), /not a multiple of the 512-byte block size/);
  t.same(await h.resize({ capacityBytes: 1 << 30 }), { capacityBytes: 1 << 30 }, 'same size: nothing to do');
  t.same(await h.resize({ capacityBytes: 2 ** 31 }), { capacityBytes: 2 ** 31 });
  t.same(v.grown, [2 ** 31]);
  t.same(await h.setRebuildRate({ mibPerSec: 0 }), { mibPerSec: 0 });
  await t.rejects(h.setRebuildRate({ mibPerSec: -1 }), /expected 0 \(unlimited\) or more/);
  await t.rejects(h.ejectReplica({ id: 'r1', reason: '' }), /would leave fewer in-sync replicas than the write quorum/);
  await t.rejects(h.ejectReplica({ id: 'r7', reason: '' }), /no replica 'r7' \(replicas: r1, r2, r3\)/);
  t.same(await h.ejectReplica({ id: 'r3', reason: '' }), { mode: 'Degraded' }, 'a replica outside the quorum can always be ejected');
  t.same(v.ejected, ['r3']);

  const offline = managementHandlers(volumeView(['healthy', 'offline', 'offline']));
  await t.rejects(offline.resize({ capacityBytes: 2 ** 31 }), /the volume is offline/);
});
