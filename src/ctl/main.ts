#!/usr/bin/env node
// `cstor-ctl` (npm run status): the operator's CLI over the target's management service. It finds a
// running volume from its data directory (state/endpoints.json, written by the target at start) or
// from --address. Failures are one line on stderr and a non-zero exit.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import logUpdate from 'log-update';
import { createManagementClient, type ManagementClient } from '../protocol/management/management-codec.js';
import { ENDPOINTS_FILE, parseEndpoints } from '../protocol/management/endpoints.js';
import { parseHostPort, parseSize } from '../shared/cli-values.js';
import { renderSessions, renderStatus, table } from './render.js';

export const CTL_USAGE = `usage: cstor-ctl COMMAND [options]

Commands:
  status                   volume phase, capacity, replicas, rebuild progress
  resize SIZE              grow the volume (e.g. 2GiB); shrinking is refused
  replica list             the replicas and their modes
  replica eject ID         take a replica out of the quorum (it is rebuilt when it returns)
  rebuild rate MIB         cap rebuilds at MIB MiB/s (0 = unlimited)
  sessions                 logged-in iSCSI sessions and their negotiated parameters

Options:
  --data-dir DIR           find the volume that \`npm start -- --data-dir DIR\` runs (default ./data)
  --address HOST:PORT      or talk to this management address directly
  --json                   print JSON (status, replica list, sessions)
  --watch                  status: refresh in place every --interval seconds (default 1) until Ctrl-C
  --interval SEC           refresh period for --watch
  --reason TEXT            replica eject: the reason recorded
  --help`;

class UsageError extends Error {}

function fail(message: string): never {
  throw new UsageError(message);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The management address: --address, or the endpoints file of the target running in --data-dir. */
function locate(values: { address?: string | undefined; 'data-dir'?: string | undefined }): string {
  if (values.address !== undefined) {
    const a = parseHostPort(values.address, 0);
    if (typeof a === 'string') fail(`--address: ${a}`);
    if (a.port === 0) fail('--address: a port is required');
    return values.address;
  }
  const dir = resolve(values['data-dir'] ?? './data');
  const file = join(dir, 'state', ENDPOINTS_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new Error(`no running volume found in ${dir} (${file} does not exist: is the target started with --data-dir ${dir}?)`);
  }
  let endpoints;
  try {
    endpoints = parseEndpoints(text);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
  if (!pidAlive(endpoints.pid)) throw new Error(`no running volume in ${dir}: its target (pid ${endpoints.pid}) has exited`);
  return endpoints.management;
}

function grpcMessage(err: unknown): string {
  const e = err as { code?: number; details?: string; message?: string };
  if (e.code === 14) return 'the target does not answer (UNAVAILABLE): is it running?';
  if (e.code === 4) return 'the target did not answer in time (DEADLINE_EXCEEDED)';
  return e.details ?? e.message ?? String(err);
}

async function watchStatus(client: ManagementClient, intervalMs: number): Promise<never> {
  const stop = (): never => {
    logUpdate.done();
    client.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  for (;;) {
    try {
      const status = await client.status({}, { deadlineMs: Math.max(2_000, intervalMs) });
      logUpdate(`${renderStatus(status)}\n\n${new Date().toISOString()}  (Ctrl-C to stop)`);
    } catch (err) {
      logUpdate(`cstor-ctl: ${grpcMessage(err)}  (retrying; Ctrl-C to stop)`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function runCtl(argv: readonly string[], out: (text: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      'data-dir': { type: 'string' },
      address: { type: 'string' },
      json: { type: 'boolean' },
      watch: { type: 'boolean' },
      interval: { type: 'string' },
      reason: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help === true || positionals.length === 0) {
    out(CTL_USAGE);
    return values.help === true ? 0 : 64;
  }
  const [command, sub, arg] = positionals;
  const json = values.json === true;
  // Validate the command line before connecting: a typo never reaches the target.
  let run: (client: ManagementClient) => Promise<number>;
  switch (command) {
    case 'status': {
      if (positionals.length > 1) fail(`status takes no arguments, got '${positionals.slice(1).join(' ')}'`);
      const interval = Number(values.interval ?? '1');
      if (!Number.isFinite(interval) || interval < 0.2 || interval > 3600) fail(`--interval: '${values.interval}' must be 0.2..3600 seconds`);
      if (values.watch === true && json) fail('--watch and --json do not go together');
      run = async (client) => {
        if (values.watch === true) return watchStatus(client, interval * 1000);
        const status = await client.status({});
        out(json ? JSON.stringify(status, null, 2) : renderStatus(status));
        return 0;
      };
      break;
    }
    case 'resize': {
      if (sub === undefined || positionals.length !== 2) fail('usage: resize SIZE (e.g. resize 2GiB)');
      const size = parseSize(sub);
      if (size === undefined || size <= 0n || size > BigInt(Number.MAX_SAFE_INTEGER)) fail(`resize: '${sub}' is not a size`);
      run = async (client) => {
        const reply = await client.resize({ capacityBytes: Number(size) });
        out(`resized to ${reply.capacityBytes} bytes`);
        return 0;
      };
      break;
    }
    case 'replica': {
      if (sub === 'list' && positionals.length === 2) {
        run = async (client) => {
          const { replicas } = await client.status({});
          out(json ? JSON.stringify(replicas, null, 2)
            : table(['REPLICA', 'MODE', 'QUORUM', 'CHECKPOINT', 'ADDRESS', 'REASON'],
              replicas.map((r) => [r.id, r.mode, r.quorum ? 'yes' : 'no', String(r.checkpointedIoSeq), r.address || '-', r.reason])));
          return 0;
        };
      } else if (sub === 'eject' && arg !== undefined && positionals.length === 3) {
        run = async (client) => {
          const reply = await client.ejectReplica({ id: arg, reason: values.reason ?? 'ejected by an operator' });
          out(`replica ${arg} ejected: now ${reply.mode}`);
          return 0;
        };
      } else {
        fail('usage: replica list | replica eject ID');
      }
      break;
    }
    case 'rebuild': {
      if (sub !== 'rate' || arg === undefined || positionals.length !== 3) fail('usage: rebuild rate MIB (MiB/s, 0 = unlimited)');
      const rate = Number(arg);
      if (!Number.isFinite(rate) || rate < 0 || rate > 1_000_000) fail(`rebuild rate: '${arg}' is not a rate in MiB/s`);
      run = async (client) => {
        const reply = await client.setRebuildRate({ mibPerSec: rate });
        out(`rebuild rate ${reply.mibPerSec > 0 ? `${reply.mibPerSec} MiB/s` : 'unlimited'}`);
        return 0;
      };
      break;
    }
    case 'sessions': {
      if (positionals.length > 1) fail('sessions takes no arguments');
      run = async (client) => {
        const { sessions } = await client.listSessions({});
        out(json ? JSON.stringify(sessions, null, 2) : renderSessions(sessions));
        return 0;
      };
      break;
    }
    default:
      fail(`unknown command '${command}' (try --help)`);
  }
  const client = createManagementClient(locate(values));
  try {
    return await run(client);
  } catch (err) {
    throw new Error(grpcMessage(err));
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  try {
    process.exitCode = await runCtl(process.argv.slice(2), (text) => process.stdout.write(`${text}\n`));
  } catch (err) {
    const usage = err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`cstor-ctl: ${(err as Error).message}\n`);
    process.exitCode = usage ? 64 : 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  void main();
}
