// Parsing of command-line values shared by the target and replica commands. Pure.
import { isIP } from 'node:net';

/**
 * A volume UUID as the superblock stores and prints it: 8-4-4-4-12 hex digits. The dashes are
 * required: the replica compares the stored (dashed) UUID with the one it was given as strings.
 */
export function isUuid(raw: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(raw);
}

/**
 * HOST, HOST:PORT or [IPv6]:PORT. Returns the address, or a message naming the problem.
 * RFC 7143 §13.4: the target uses the well-known iSCSI port when none is given; callers pass theirs.
 */
export function parseHostPort(raw: string, defaultPort: number): { host: string; port: number } | string {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(raw);
  if (bracketed !== null) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
    if (isIP(host) !== 6) return `'${raw}': '${host}' is not an IPv6 address`;
  } else {
    const colon = raw.lastIndexOf(':');
    if (colon >= 0 && raw.indexOf(':') !== colon) {
      return `'${raw}': write IPv6 addresses in brackets, e.g. [::1]:${defaultPort}`;
    }
    host = colon >= 0 ? raw.slice(0, colon) : raw;
    portText = colon >= 0 ? raw.slice(colon + 1) : undefined;
    if (host === '') return `'${raw}' has no host (use HOST:PORT, e.g. 127.0.0.1:${defaultPort})`;
    if (isIP(host) === 0 && !isHostname(host)) return `'${raw}': '${host}' is not a host name or address`;
  }
  if (portText === undefined) return { host, port: defaultPort };
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    return `'${raw}': '${portText}' is not a port (0..65535)`;
  }
  return { host, port: Number(portText) };
}

/** HOST:PORT as parseHostPort reads it back: an IPv6 address in brackets. */
export function formatHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function isHostname(host: string): boolean {
  if (host.length > 253) return false;
  return host.split('.').every(label => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
}

const SIZE_UNITS: Record<string, bigint> = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n };

/**
 * Bytes, or K/M/G/T with an optional B, iB or i suffix (Kubernetes writes 10Gi); all multipliers
 * are binary (as qemu-img does).
 */
export function parseSize(raw: string): bigint | undefined {
  const m = /^(\d+)\s*(?:([KMGTkmgt])(?:i?[Bb]|i)?|[Bb])?$/.exec(raw.trim());
  if (m === null || m[1] === undefined) return undefined;
  // Guard BigInt() against absurd digit strings before multiplying.
  if (m[1].length > 30) return undefined;
  const unit = SIZE_UNITS[(m[2] ?? '').toUpperCase()];
  if (unit === undefined) return undefined;
  return BigInt(m[1]) * unit;
}
