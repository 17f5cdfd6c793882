// Preload (NODE_OPTIONS=--import=...) that CPU-profiles a process and the node children it spawns,
// which `--cpu-prof` cannot do (node refuses it in NODE_OPTIONS). SIGUSR2 starts the profiler, the
// next SIGUSR2 stops it and writes CPUPROF_DIR/<pid>-<n>.cpuprofile: the harness profiles only the
// measured run, not start-up or preconditioning.
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env['CPUPROF_DIR'];
if (dir !== undefined && dir !== '') {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: Number(process.env['CPUPROF_INTERVAL_US'] ?? '500') });
  let running = false;
  let n = 0;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.start');
      return;
    }
    running = false;
    session.post('Profiler.stop', (err, res) => {
      if (err === null) writeFileSync(join(dir, `${process.pid}-${n++}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
