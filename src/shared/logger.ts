// One root pino logger per process; components take children ({ conn }, { session }, { replica }).
import { pino, type Logger } from 'pino';

export type { Logger };

export function createRootLogger(options: { level?: string; name?: string; destination?: number } = {}): Logger {
  return pino({
    name: options.name ?? 'cstor-ts',
    level: options.level ?? process.env['LOG_LEVEL'] ?? 'info',
    base: { pid: process.pid },
    // Synchronous writes: nothing is logged per I/O, and a log line must survive process.exit or a crash.
  }, pino.destination({ dest: options.destination ?? 1, sync: true }));
}

/** A logger that drops everything (tests, embedded use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
