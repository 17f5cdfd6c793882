// Plain-text tables for terminals and logs: columns padded to their widest cell, a rule under the
// header. Used by cstor-ctl and the benchmarks.

export interface Column {
  readonly header: string;
  readonly align?: 'left' | 'right';
}

/** Format rows of cells as an aligned text table with a header rule. */
export function formatTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map(r => (r[i] ?? '').length)));
  const fmt = (cells: readonly string[]): string =>
    columns.map((c, i) => {
      const cell = cells[i] ?? '';
      const w = widths[i] ?? 0;
      return c.align === 'right' ? cell.padStart(w) : cell.padEnd(w);
    }).join('  ').trimEnd();
  const lines = [fmt(columns.map(c => c.header)), widths.map(w => '-'.repeat(w)).join('  ')];
  for (const r of rows) lines.push(fmt(r));
  return lines.join('\n');
}
