// The task set of one logical unit (SAM-5 8.x): active tasks in arrival order, each with an
// abort signal. SIMPLE (and untagged/ACA) tasks run concurrently; an ORDERED task starts after every
// older task completed and holds back every newer SIMPLE task until it completes; HEAD OF QUEUE starts
// at once. Task management aborts matching tasks and resolves once they have all finished.

export const TaskAttribute = {
  Untagged: 0,
  Simple: 1,
  Ordered: 2,
  HeadOfQueue: 3,
  Aca: 4,
} as const;

/** How an aborted task completes: no response at all, or TASK ABORTED status (control page TAS=1). */
export type AbortMode = 'silent' | 'status';

export interface Task {
  readonly initiatorPortName: string;
  readonly tag: number;
  readonly attr: number;
  readonly signal: AbortSignal;
  /** Set when task management aborted the task. */
  readonly abortMode: AbortMode | undefined;
  /** Resolves when ordering lets the task start; undefined when it may start now. */
  readonly ready: Promise<void> | undefined;
}

/**
 * The AbortSignal of one task. Node's AbortController costs several microseconds to create (its signal
 * is a full EventTarget) and every SCSI command gets one; this does what the SCSI layer uses (aborted,
 * reason, throwIfAborted, 'abort' listeners, onabort) for the price of a small object.
 */
class TaskSignal {
  aborted = false;
  reason: unknown = undefined;
  onabort: ((ev: Event) => unknown) | null = null;
  #listeners: ((ev: Event) => unknown)[] | undefined;

  addEventListener(type: string, listener: ((ev: Event) => unknown) | null): void {
    if (type !== 'abort' || listener === null || this.aborted) return;
    const list = this.#listeners ??= [];
    // EventTarget semantics: the same listener is added once. Every listener here is 'once'.
    if (!list.includes(listener)) list.push(listener);
  }

  removeEventListener(type: string, listener: ((ev: Event) => unknown) | null): void {
    const list = this.#listeners;
    if (type !== 'abort' || list === undefined || listener === null) return;
    const i = list.indexOf(listener);
    if (i >= 0) list.splice(i, 1);
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const list = this.#listeners ?? [];
    this.#listeners = undefined;
    const ev = { type: 'abort', target: this } as unknown as Event;
    for (const l of [...(this.onabort === null ? [] : [this.onabort]), ...list]) {
      try {
        l(ev);
      } catch (err) {
        // As EventTarget does: a throwing listener neither stops the others nor the caller.
        queueMicrotask(() => { throw err; });
      }
    }
  }
}

class TaskEntry implements Task {
  readonly initiatorPortName: string;
  readonly tag: number;
  readonly attr: number;
  readonly #signal = new TaskSignal();
  #done: Promise<void> | undefined;
  #resolveDone: (() => void) | undefined;
  #finished = false;
  ready: Promise<void> | undefined;
  abortMode: AbortMode | undefined;

  constructor(initiatorPortName: string, tag: number, attr: number) {
    this.initiatorPortName = initiatorPortName;
    this.tag = tag;
    this.attr = attr;
  }

  get signal(): AbortSignal {
    // Structurally what every consumer of a task's signal uses (see TaskSignal).
    return this.#signal as unknown as AbortSignal;
  }

  /** Resolves once the task finished; created only when someone waits (a TMF, an ORDERED task). */
  get done(): Promise<void> {
    if (this.#done === undefined) {
      this.#done = this.#finished ? Promise.resolve() : new Promise<void>((resolve) => { this.#resolveDone = resolve; });
    }
    return this.#done;
  }

  /** Whether anyone waits on `done`. */
  get awaited(): boolean {
    return this.#resolveDone !== undefined;
  }

  abort(reason: unknown): void {
    this.#signal.abort(reason);
  }

  readonly finish = (): void => {
    this.#finished = true;
    const resolve = this.#resolveDone;
    this.#resolveDone = undefined;
    resolve?.();
  };
}

export class TaskAbortedError extends Error {
  constructor() {
    super('task aborted');
    this.name = 'TaskAbortedError';
  }
}

export class TaskSet {
  readonly #active = new Set<TaskEntry>();
  #lastOrdered: TaskEntry | undefined;

  begin(initiatorPortName: string, tag: number, attr: number): Task {
    const task = new TaskEntry(initiatorPortName, tag, attr);
    if (attr === TaskAttribute.Ordered) {
      if (this.#active.size > 0) task.ready = Promise.all([...this.#active].map((t) => t.done)).then(() => {});
      this.#lastOrdered = task;
    } else if (attr !== TaskAttribute.HeadOfQueue && this.#lastOrdered) {
      task.ready = this.#lastOrdered.done;
    }
    this.#active.add(task);
    return task;
  }

  end(task: Task): void {
    const entry = task as TaskEntry;
    this.#active.delete(entry);
    if (this.#lastOrdered === entry) this.#lastOrdered = undefined;
    // After the current turn, so the task's execute() has resolved before a TMF waiting on it does.
    // Nobody waits on most tasks: then there is nothing to defer.
    if (entry.awaited) setImmediate(entry.finish);
    else entry.finish();
  }

  find(initiatorPortName: string, tag: number): Task | undefined {
    for (const t of this.#active) if (t.initiatorPortName === initiatorPortName && t.tag === tag) return t;
    return undefined;
  }

  get size(): number {
    return this.#active.size;
  }

  /**
   * Abort every active task `match` selects, completing each as `mode` says. Resolves with the aborted
   * tasks once all of them finished (their execute() promises have resolved).
   */
  async abort(match: (t: Task) => boolean, mode: (t: Task) => AbortMode): Promise<readonly Task[]> {
    const victims = [...this.#active].filter(match);
    for (const t of victims) {
      if (t.abortMode === undefined) t.abortMode = mode(t);
      t.abort(new TaskAbortedError());
    }
    await Promise.all(victims.map((t) => t.done));
    return victims;
  }
}

/** Wait for `ready` unless the task is aborted first (then reject with the abort reason). */
export function waitUnlessAborted(ready: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    ready.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, reject);
  });
}
