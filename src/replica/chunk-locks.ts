// FIFO exclusive locks over chunk ranges. Every store operation holds its chunks from before it
// reads metadata until its metadata is updated, so overlapping operations apply in arrival order
// (which is io_seq order on one connection) and a read never sees a chunk mid-write, whose data
// and CRC would disagree.

interface Holder {
  /** Called when the holder releases: one call per chunk a later operation waits on. */
  waiters: (() => void)[] | undefined;
}

export class ChunkLocks {
  /** chunk -> the last operation queued on it */
  readonly #tails = new Map<number, Holder>();

  get held(): number {
    return this.#tails.size;
  }

  /**
   * A release function once every earlier operation on [first, last] has released: at once (no
   * promise, the case of nearly every I/O) when none is queued there, else through a promise.
   */
  lock(first: number, last: number): Promise<() => void> | (() => void) {
    const me: Holder = { waiters: undefined };
    const unlock = (): void => {
      for (let c = first; c <= last; c++) {
        if (this.#tails.get(c) === me) this.#tails.delete(c);
      }
      const waiters = me.waiters;
      me.waiters = undefined;
      if (waiters !== undefined) for (const w of waiters) w();
    };
    let pending = 0;
    let granted: ((u: () => void) => void) | undefined;
    const onRelease = (): void => {
      if (--pending === 0) granted!(unlock);
    };
    for (let c = first; c <= last; c++) {
      const tail = this.#tails.get(c);
      if (tail !== undefined) {
        (tail.waiters ??= []).push(onRelease);
        pending++;
      }
      this.#tails.set(c, me);
    }
    if (pending === 0) return unlock;
    return new Promise((resolve) => { granted = resolve; });
  }
}
