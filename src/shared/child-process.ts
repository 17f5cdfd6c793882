// Stopping a child process we spawned detached (its PID is also its process-group id), by its own
// PID, never by name: the machine may run other targets and tgtd instances we don't own. Used by
// the benches and the test fixtures.
import type { ChildProcess } from 'node:child_process';

/** Signal the child's process group, or the child alone when it leads none; gone is fine. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, then SIGKILL after graceMs if it ignores it; then whatever it left in its group. */
export async function killChild(child: ChildProcess, graceMs: number): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>(res => child.once('exit', () => res()));
  signalGroup(pid, 'SIGTERM');
  const timer = setTimeout(() => signalGroup(pid, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  // The leader is gone; helpers it started (qemu under vm-initiator) go too.
  signalGroup(pid, 'SIGKILL');
}
