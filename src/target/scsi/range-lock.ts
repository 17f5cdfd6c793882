// LBA range locks: COMPARE AND WRITE (and ORWRITE) hold an exclusive lock over their range so the
// read-compare-write is atomic with respect to every other command touching it; reads, writes, unmap
// and write same hold shared locks. Shared locks never wait on each other; the uncontended path is a
// Set insert. Waiters are granted in arrival order among overlapping ranges (no starvation).

interface Held {
  readonly start: bigint;
  readonly end: bigint; // exclusive
  readonly exclusive: boolean;
}

interface Waiter extends Held {
  readonly grant: () => void;
}

export type Release = () => void;

function overlaps(a: Held, b: Held): boolean {
  return a.start < b.end && b.start < a.end;
}

function conflicts(a: Held, b: Held): boolean {
  return (a.exclusive || b.exclusive) && overlaps(a, b);
}

export class RangeLock {
  readonly #held = new Set<Held>();
  readonly #waiters: Waiter[] = [];
  #exclusiveCount = 0; // held + waiting exclusive locks: zero means shared locks need no scan

  /**
   * Lock [lba, lba+blocks). Resolves with a release function; rejects with the signal's reason if
   * aborted while waiting. Zero-length ranges lock nothing.
   */
  acquire(lba: bigint, blocks: number | bigint, exclusive: boolean, signal?: AbortSignal): Promise<Release> | Release {
    const entry: Held = { start: lba, end: lba + BigInt(blocks), exclusive };
    if (entry.end === entry.start) return noop;
    if (!exclusive && this.#exclusiveCount === 0) return this.#take(entry);
    if (this.#grantable(entry, this.#waiters.length)) {
      if (exclusive) this.#exclusiveCount++;
      return this.#take(entry);
    }
    if (exclusive) this.#exclusiveCount++;
    return new Promise<Release>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) {
          this.#waiters.splice(i, 1);
          if (exclusive) this.#exclusiveCount--;
          this.#wake();
        }
        reject(signal?.reason ?? new Error('aborted'));
      };
      const waiter: Waiter = {
        ...entry,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.#take(entry));
        },
      };
      if (signal?.aborted) {
        if (exclusive) this.#exclusiveCount--;
        reject(signal.reason);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Number of held locks (tests). */
  get size(): number {
    return this.#held.size;
  }

  #take(entry: Held): Release {
    this.#held.add(entry);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#held.delete(entry);
      if (entry.exclusive) this.#exclusiveCount--;
      if (this.#waiters.length > 0) this.#wake();
    };
  }

  /** Grantable when it conflicts with no held lock and no earlier waiter. */
  #grantable(entry: Held, waitersBefore: number): boolean {
    for (const h of this.#held) if (conflicts(h, entry)) return false;
    for (let i = 0; i < waitersBefore; i++) if (conflicts(this.#waiters[i]!, entry)) return false;
    return true;
  }

  #wake(): void {
    for (let i = 0; i < this.#waiters.length;) {
      const w = this.#waiters[i]!;
      if (this.#grantable(w, i)) {
        this.#waiters.splice(i, 1);
        w.grant();
      } else {
        i++;
      }
    }
  }
}

const noop: Release = () => {};
