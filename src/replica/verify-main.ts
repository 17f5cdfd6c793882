#!/usr/bin/env node
// `cstor-verify`: compare a stopped volume's replicas (see verify.ts). Exit 0 identical, 1 different,
// 2 usage or open errors. The summary (or --json report) goes to stdout; progress to stderr, and only
// when it is a terminal, so scripted runs get clean output.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { verifyReplicas, type Difference, type VerifyReport } from './verify.js';
import { errorMessage } from '../shared/errors.js';

const USAGE = `usage: cstor-verify [--json] [--max-differences N] [--region-bytes N] (--data-dir DIR | FILE FILE ...)
  --data-dir DIR        compare DIR/replica-*.img (the layout of \`npm start -- --data-dir DIR\`)
  FILE ...              compare these replica files or devices
  --json                print the report as JSON
  --max-differences N   differences listed (default 10; all are counted)
  --region-bytes N      bytes compared per step and replica (default 1048576)
Run it with the volume stopped: opening a replica replays its journal.`;

class UsageError extends Error {}

interface Args {
  readonly paths: string[];
  readonly json: boolean;
  readonly maxDifferences: number | undefined;
  readonly regionBytes: number | undefined;
}

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, not '${value}'`);
  return n;
}

/** The replica files of a data directory, in replica order (replica-2 before replica-10). */
async function replicasIn(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new UsageError(`cannot read --data-dir ${dir}: ${(err as Error).message}`);
  }
  const found = names.filter(n => /^replica-.+\.img$/.test(n))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  if (found.length === 0) throw new UsageError(`${dir} has no replicas (no replica-*.img)`);
  return found.map(n => join(dir, n));
}

async function parse(argv: string[]): Promise<Args | 'help'> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'data-dir': { type: 'string' },
        json: { type: 'boolean', default: false },
        'max-differences': { type: 'string' },
        'region-bytes': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help === true) return 'help';
  const dir = values['data-dir'];
  if (dir !== undefined && positionals.length > 0) throw new UsageError('give either --data-dir or replica files, not both');
  if (dir === undefined && positionals.length === 0) throw new UsageError('no replicas given (--data-dir DIR or FILE ...)');
  return {
    paths: dir !== undefined ? await replicasIn(dir) : positionals,
    json: values.json === true,
    maxDifferences: positiveInt('--max-differences', values['max-differences']),
    regionBytes: positiveInt('--region-bytes', values['region-bytes']),
  };
}

function mib(bytes: number): string {
  const m = bytes / (1 << 20);
  return `${Number.isInteger(m) ? m : m.toFixed(2)} MiB`;
}

function hex(n: number | undefined): string {
  return n === undefined ? '-' : `0x${n.toString(16).padStart(8, '0')}`;
}

function describe(d: Difference): string {
  if (d.kind === 'volume' || d.kind === 'geometry') {
    const per = d.detail.map(v => `${v.replicaId}: volume ${v.volumeUuid} capacity ${v.capacityBytes} block ${v.blockSize} chunk ${v.chunkSize}`);
    return `  ${d.kind === 'volume' ? 'different volumes' : 'different geometry'}: ${per.join('; ')}`;
  }
  const range = `offset ${d.offset}..${d.offset + d.length - 1} (${d.length} bytes)`;
  const per = d.detail.map(v => `${v.replicaId} io_seq ${v.ioSeq ?? '-'} crc ${hex(v.crc)}${v.flags ? ` flags ${v.flags}` : ''}${v.error !== undefined ? ` (${v.error})` : ''}`);
  return `  ${d.kind.padEnd(10)} ${range}: ${per.join('; ')}`;
}

export function formatReport(report: VerifyReport): string {
  const lines = report.replicas.map(r =>
    `${r.path}: replica ${r.replicaId} of ${r.volumeName} (${r.volumeUuid}), ${mib(r.capacityBytes)}, highest io_seq ${r.highestIoSeq}`);
  if (report.identical) {
    lines.push(`identical: ${report.chunksCompared} chunks (${mib(report.bytesCompared)}) compared`);
  } else {
    const shown = report.differences.length;
    const more = report.differenceCount > shown ? `, first ${shown} shown` : '';
    lines.push(`DIFFERENT: ${report.differenceCount} difference(s) in ${report.differentChunks} chunk(s) of ${report.chunksCompared} compared${more}`);
    for (const d of report.differences) lines.push(describe(d));
  }
  return `${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = await parse(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`cstor-verify: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const tty = process.stderr.isTTY === true;
  let report: VerifyReport;
  try {
    report = await verifyReplicas(args.paths, {
      ...(args.maxDifferences !== undefined ? { maxDifferences: args.maxDifferences } : {}),
      ...(args.regionBytes !== undefined ? { regionBytes: args.regionBytes } : {}),
      ...(tty ? { onProgress: (p: { bytesDone: number; bytesTotal: number }) => {
        process.stderr.write(`\rverifying: ${Math.floor((100 * p.bytesDone) / p.bytesTotal)}% of ${mib(p.bytesTotal)}`);
      } } : {}),
    });
  } catch (err) {
    if (tty) process.stderr.write('\n');
    process.stderr.write(`cstor-verify: ${errorMessage(err)}\n`);
    return 2;
  }
  if (tty) process.stderr.write('\r\x1b[K');
  process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.identical ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // exitCode, not exit(): let stdout drain when it is a pipe.
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: unknown) => {
    process.stderr.write(`cstor-verify: ${errorMessage(err)}\n`);
    process.exitCode = 2;
  });
}
