// The task set of one logical unit (SAM-5 8.x): active tasks in arrival order, each with an
// AbortController. SIMPLE (and untagged/ACA) tasks run concurrently; an ORDERED task starts after every
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

class TaskEntry implements Task {
  readonly initiatorPortName: string;
  readonly tag: number;
  readonly attr: number;
  readonly controller = new AbortController();
  readonly done: Promise<void>;
  readonly finish: () => void;
  ready: Promise<void> | undefined;
  abortMode: AbortMode | undefined;

  constructor(initiatorPortName: string, tag: number, attr: number) {
    this.initiatorPortName = initiatorPortName;
    this.tag = tag;
    this.attr = attr;
    let finish!: () => void;
    this.done = new Promise<void>((resolve) => { finish = resolve; });
    this.finish = finish;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }
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
    setImmediate(entry.finish);
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
      t.controller.abort(new TaskAbortedError());
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
