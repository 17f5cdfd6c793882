// The file a running target writes into its data directory (state/endpoints.json) so that tools
// given only --data-dir find its management, iSCSI and metrics ports, whatever ports it was given.
export const ENDPOINTS_FILE = 'endpoints.json';

export interface TargetEndpoints {
  readonly pid: number;
  readonly iqn: string;
  /** host:port of the gRPC management service. */
  readonly management: string;
  readonly portal: string;
  /** host:port of /metrics, /healthz, /readyz; absent when disabled. */
  readonly metrics?: string;
}

export function formatEndpoints(e: TargetEndpoints): string {
  return `${JSON.stringify(e, null, 2)}\n`;
}

/** Parses and checks the file; throws an Error naming the problem. */
export function parseEndpoints(text: string): TargetEndpoints {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  const o = raw as Record<string, unknown>;
  if (typeof o !== 'object' || o === null) throw new Error('not a JSON object');
  const str = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v === '') throw new Error(`field '${k}' is missing or not a string`);
    return v;
  };
  const pid = o['pid'];
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) throw new Error("field 'pid' is not a process id");
  const metrics = o['metrics'];
  if (metrics !== undefined && typeof metrics !== 'string') throw new Error("field 'metrics' is not a string");
  return { pid, iqn: str('iqn'), management: str('management'), portal: str('portal'), ...(metrics !== undefined ? { metrics } : {}) };
}
