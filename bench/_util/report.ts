// Console output for benchmarks: a plain-text table (human) followed by one JSON document
// (machine), plus a progress line on stderr so stdout stays parseable.
import { isatty } from 'node:tty';

export { formatTable, type Column } from '../../src/shared/text-table.js';

/** Thousands separators without locale surprises (the output is compared across machines). */
export function fmtInt(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export function fmtFixed(n: number, digits: number): string {
  return n.toFixed(digits);
}

/**
 * One progress line on stderr: rewritten in place on a terminal, one line per update otherwise
 * (CI logs and pipes should not fill up with carriage returns).
 */
export class Progress {
  readonly #tty = isatty(2);
  #width = 0;

  update(text: string): void {
    if (this.#tty) {
      const pad = this.#width > text.length ? ' '.repeat(this.#width - text.length) : '';
      process.stderr.write(`\r${text}${pad}`);
      this.#width = text.length;
    } else {
      process.stderr.write(`${text}\n`);
    }
  }

  /** Leave the current line (before printing anything else). */
  done(): void {
    if (this.#tty && this.#width > 0) process.stderr.write('\n');
    this.#width = 0;
  }
}

/** The JSON document: one object, pretty-printed so it diffs well, on stdout. */
export function printJson(doc: unknown): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}
