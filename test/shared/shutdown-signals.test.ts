// A second SIGTERM during a graceful shutdown (a process-group signal, then the supervisor's own)
// must not kill the process before it finishes: a replica would lose its final checkpoint.
import t from 'tap';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

for (const [first, second] of [['SIGTERM', 'SIGTERM'], ['SIGINT', 'SIGTERM'], ['SIGTERM', 'SIGINT']] as const) {
  t.test(`${first}, then ${second} while shutting down: one clean shutdown`, async (t) => {
    const child = spawn(process.execPath, [...process.execArgv, join(here, '..', 'fixtures', 'shutdown-signals-child.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out === 'ready\n') child.kill(first);
      else if (out.endsWith(`shutting down on ${first}\n`)) child.kill(second);
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    clearTimeout(guard);
    t.same({ code, signal }, { code: 0, signal: null }, 'exited 0, not killed by the second signal');
    t.equal(out, `ready\nshutting down on ${first}\nignored ${second}\nclean exit\n`);
  });
}
