// Text rendering for the CLI: the status table, rebuild progress bars with ETA, session list.
// Pure functions of the management replies, so the output is testable without a terminal.
import cliProgress from 'cli-progress';
import type { RebuildProgress, Session, VolumeStatus } from '../protocol/management/management-codec.js';
import { formatTable } from '../shared/text-table.js';

const BAR_WIDTH = 30;
const BAR_OPTIONS = {
  barsize: BAR_WIDTH,
  barCompleteString: '█'.repeat(BAR_WIDTH),
  barIncompleteString: '░'.repeat(BAR_WIDTH),
  barGlue: '',
  autopaddingChar: '0',
};

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  return cliProgress.Format.TimeFormat(Math.round(seconds), BAR_OPTIONS as never, 1) as string;
}

/** Columns padded to their widest cell, all left-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return formatTable(header.map((h) => ({ header: h })), rows);
}

export function rebuildLine(id: string, r: RebuildProgress): string {
  const fraction = r.bytesTotal > 0 ? Math.min(1, r.bytesDone / r.bytesTotal) : 0;
  const bar = cliProgress.Format.BarFormat(fraction, BAR_OPTIONS as never) as string;
  const pct = r.bytesTotal > 0 ? `${(fraction * 100).toFixed(1).padStart(5)}%` : '    ?%';
  const rate = r.rateBytesPerSec > 0 ? `${formatBytes(r.rateBytesPerSec)}/s` : '-';
  const eta = r.etaSeconds >= 0 ? formatDuration(r.etaSeconds) : '?';
  const total = r.bytesTotal > 0 ? formatBytes(r.bytesTotal) : '?';
  return `rebuild ${id} ${bar} ${pct}  ${formatBytes(r.bytesDone)} / ${total}  ${rate}  ETA ${eta}  from ${r.source || '?'} (${r.state})`;
}

export function renderStatus(s: VolumeStatus): string {
  const head = [
    `volume ${s.name}  ${s.phase}  ${formatBytes(s.capacityBytes)} (${s.blockSize}-byte blocks)  uuid ${s.uuid}`,
    `iqn ${s.iqn}  portal ${s.portal}  epoch ${s.epoch}  up ${formatDuration(s.uptimeSeconds)}`,
    `replicas ${s.replicas.filter((r) => r.quorum).length}/${s.replicationFactor} in sync, write quorum ${s.consistencyFactor}, ` +
      `rebuild rate ${s.rebuildRateMibPerSec > 0 ? `${s.rebuildRateMibPerSec} MiB/s` : 'unlimited'}`,
  ];
  const rows = s.replicas.map((r) => [
    r.id, r.mode, r.quorum ? 'yes' : 'no', String(r.checkpointedIoSeq),
    `${r.inflightReads}/${r.inflightWrites}/${r.inflightSyncs}`,
    r.uptimeSeconds > 0 ? formatDuration(r.uptimeSeconds) : '-', r.address || '-', r.reason,
  ]);
  const out = [...head, '', table(['REPLICA', 'MODE', 'QUORUM', 'CHECKPOINT', 'INFLIGHT R/W/S', 'UP', 'ADDRESS', 'REASON'], rows)];
  const rebuilds = s.replicas.filter((r) => r.rebuild !== undefined && (r.rebuild.state === 'running' || r.rebuild.state === 'backoff'));
  if (rebuilds.length > 0) out.push('', ...rebuilds.map((r) => rebuildLine(r.id, r.rebuild!)));
  return out.join('\n');
}

export function renderSessions(sessions: readonly Session[]): string {
  if (sessions.length === 0) return 'no sessions';
  const rows = sessions.flatMap((s) => s.connections.map((c) => [
    s.initiatorName, s.isid, String(s.tsih), c.address, String(c.cid),
    `${c.headerDigest ? 'CRC32C' : 'None'}/${c.dataDigest ? 'CRC32C' : 'None'}`,
    ['MaxRecvDataSegmentLength', 'MaxBurstLength', 'FirstBurstLength', 'ImmediateData', 'InitialR2T']
      .filter((k) => s.parameters[k] !== undefined).map((k) => `${k}=${s.parameters[k]}`).join(' '),
  ]));
  return table(['INITIATOR', 'ISID', 'TSIH', 'ADDRESS', 'CID', 'DIGESTS H/D', 'PARAMETERS'], rows);
}
