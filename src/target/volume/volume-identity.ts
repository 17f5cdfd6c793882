// The volume's stable identity (a UUID kept in the data directory), from which the SCSI unit serial
// number and NAA designator derive, so initiators see the same device across restarts.

import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';

export interface VolumeIdentity {
  readonly uuid: string;
  readonly createdAt: string;
}

const FILE = 'volume.json';

/**
 * The identity kept in `dataDir`, created on first use. `uuid` (lower case) is the one the operator
 * assigned: a new data directory takes it, and one that already holds another volume is refused,
 * since serving it under a different identity would mix two volumes' replicas.
 */
export async function loadOrCreateIdentity(dataDir: string, uuid?: string): Promise<VolumeIdentity> {
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, FILE);
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<VolumeIdentity>;
    if (typeof parsed.uuid !== 'string' || !/^[0-9a-f-]{36}$/.test(parsed.uuid)) {
      throw new Error(`${path}: no valid "uuid" field`);
    }
    if (uuid !== undefined && uuid !== parsed.uuid) {
      throw new Error(`${path} holds volume ${parsed.uuid}, not the requested --volume-uuid ${uuid}; use another --data-dir`);
    }
    return { uuid: parsed.uuid, createdAt: String(parsed.createdAt ?? '') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const identity: VolumeIdentity = { uuid: uuid ?? randomUUID(), createdAt: new Date().toISOString() };
  // Write-then-rename so a crash never leaves a half-written identity.
  const tmp = `${path}.tmp`;
  await writeFile(tmp, `${JSON.stringify(identity, null, 2)}\n`);
  const fh = await open(tmp, 'r');
  await fh.datasync();
  await fh.close();
  await rename(tmp, path);
  return identity;
}
