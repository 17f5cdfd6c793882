// FIFO exclusive locks over chunk ranges. Every store operation holds its chunks from before it
// reads metadata until its metadata is updated, so overlapping operations apply in arrival order
// (which is io_seq order on one connection) and a read never sees a chunk mid-write, whose data
// and CRC would disagree.

export class ChunkLocks {
  /** chunk -> the release promise of the last operation queued on it */
  readonly #tails = new Map<number, Promise<void>>();

  get held(): number {
    return this.#tails.size;
  }

  /** Resolves with a release function once every earlier operation on [first, last] has released. */
  lock(first: number, last: number): Promise<() => void> | (() => void) {
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    let waits: Promise<void>[] | undefined;
    for (let c = first; c <= last; c++) {
      const tail = this.#tails.get(c);
      if (tail !== undefined) (waits ??= []).push(tail);
      this.#tails.set(c, mine);
    }
    const unlock = (): void => {
      for (let c = first; c <= last; c++) {
        if (this.#tails.get(c) === mine) this.#tails.delete(c);
      }
      release();
    };
    // The uncontended case (nearly every I/O) returns synchronously: no extra promise turn.
    if (waits === undefined) return unlock;
    return Promise.all(waits).then(() => unlock);
  }
}
