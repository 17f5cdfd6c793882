// Runs replica processes for `npm start` the way Kubernetes runs the replica pods: one child
// process per replica, restarted after a delay when it exits. The target never imports replica code;
// it only executes the replica command (dist/src/replica/main.js) with flags.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../shared/logger.js';

/** The replica command, next to this file in the build (dist/src/target/volume → dist/src/replica). */
export const REPLICA_MAIN = fileURLToPath(new URL('../../replica/main.js', import.meta.url));

export interface ReplicaSpec {
  readonly id: string;
  readonly device: string;
  /** Arguments after the command (device, volume, target, --format ...). */
  readonly args: readonly string[];
}

export interface ReplicaSupervisorOptions {
  readonly logger: Logger;
  readonly restartDelayMs: number;
  /** Each (re)start of a replica process: its id and pid. */
  readonly onStart?: (id: string, pid: number) => void;
  /** A replica process printed its ready line. */
  readonly onReady?: (id: string, pid: number) => void;
  readonly onExit?: (id: string, pid: number, code: number | null, signal: NodeJS.Signals | null) => void;
}

interface Slot {
  readonly spec: ReplicaSpec;
  child: ChildProcess | undefined;
  timer: NodeJS.Timeout | undefined;
  restarts: number;
}

export class ReplicaSupervisor {
  readonly #o: ReplicaSupervisorOptions;
  readonly #slots = new Map<string, Slot>();
  #stopping = false;

  constructor(options: ReplicaSupervisorOptions) {
    this.#o = options;
  }

  start(spec: ReplicaSpec): void {
    const slot: Slot = { spec, child: undefined, timer: undefined, restarts: 0 };
    this.#slots.set(spec.id, slot);
    this.#spawn(slot);
  }

  /** Current pid of a replica process (undefined while it is down). */
  pid(id: string): number | undefined {
    return this.#slots.get(id)?.child?.pid;
  }

  #spawn(slot: Slot): void {
    if (this.#stopping) return;
    const child = spawn(process.execPath, [REPLICA_MAIN, ...slot.spec.args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    slot.child = child;
    const pid = child.pid;
    const log = this.#o.logger.child({ replica: slot.spec.id, pid });
    if (pid === undefined) {
      log.error('could not start the replica process');
      slot.child = undefined;
      this.#scheduleRestart(slot);
      return;
    }
    this.#o.onStart?.(slot.spec.id, pid);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('ready ')) this.#o.onReady?.(slot.spec.id, pid);
    });
    child.on('error', (err) => log.error({ err }, 'replica process error'));
    child.on('exit', (code, signal) => {
      slot.child = undefined;
      this.#o.onExit?.(slot.spec.id, pid, code, signal);
      if (this.#stopping) return;
      log.warn({ code, signal, restartInMs: this.#o.restartDelayMs }, 'replica process exited; restarting');
      this.#scheduleRestart(slot);
    });
  }

  #scheduleRestart(slot: Slot): void {
    if (this.#stopping) return;
    slot.restarts++;
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      this.#spawn(slot);
    }, this.#o.restartDelayMs);
  }

  /** SIGTERM every replica (they checkpoint and close), SIGKILL after a grace period. */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    const exits: Promise<void>[] = [];
    for (const slot of this.#slots.values()) {
      if (slot.timer !== undefined) clearTimeout(slot.timer);
      const child = slot.child;
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) continue;
      exits.push(new Promise<void>((resolve) => {
        const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
        child.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        child.kill('SIGTERM');
      }));
    }
    await Promise.all(exits);
  }
}
