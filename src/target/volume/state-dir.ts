// Small persistent key-value state in a local directory (a file-backed LUN's reservations, the
// target's last epoch; a replicated volume keeps its SCSI state on the replicas instead):
// one file per key in a directory, replaced atomically (write temp, fsync, rename, fsync dir).
import { open, mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';

const STATE_KEY = /^[A-Za-z0-9._-]{1,64}$/;

export class StateDir {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  #path(key: string): string {
    if (!STATE_KEY.test(key)) throw new RangeError(`invalid state key ${JSON.stringify(key)}`);
    return join(this.dir, key);
  }

  async load(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.#path(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async save(key: string, value: Buffer): Promise<void> {
    const target = this.#path(key);
    await mkdir(this.dir, { recursive: true });
    const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(value);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
    const d = await open(this.dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}
