// Micro benchmark of the PDU hot path: parsing a stream of SCSI Command + Data-Out PDUs delivered in
// socket-sized chunks, and encoding Data-In PDUs. Prints a table and one JSON line.
// Run: npm run build && node dist/bench/protocol/pdu.bench.js
//  or: node --import=./node_modules/@tapjs/typescript/dist/esm/import.mjs bench/protocol/pdu.bench.ts
import { performance } from 'node:perf_hooks';
import { PduReader } from '../../src/protocol/iscsi/pdu-reader.js';
import { PduWriter } from '../../src/protocol/iscsi/pdu-writer.js';
import { hardwareCrc32c } from '../../src/protocol/iscsi/digest.js';
import type { DataIn, DataOut, ScsiCommand } from '../../src/protocol/iscsi/pdu-types.js';

interface Row {
  case: string;
  ops: number;
  'ops/s': number;
  'MB/s': number;
  'ns/op': number;
}

const MIN_MS = 300;

/** Run `fn` (doing `opsPerCall` operations over `bytesPerCall` bytes) repeatedly for at least MIN_MS. */
function measure(name: string, opsPerCall: number, bytesPerCall: number, fn: () => void): Row {
  for (let i = 0; i < 3; i++) fn(); // warm up
  let calls = 0;
  const start = performance.now();
  let elapsed = 0;
  do {
    fn();
    calls++;
    elapsed = performance.now() - start;
  } while (elapsed < MIN_MS);
  const ops = calls * opsPerCall;
  const s = elapsed / 1000;
  return {
    case: name,
    ops,
    'ops/s': Math.round(ops / s),
    'MB/s': Math.round((calls * bytesPerCall) / s / 1e5) / 10,
    'ns/op': Math.round((elapsed * 1e6) / ops),
  };
}

function writeStream(pairs: number, blockBytes: number, digests: boolean): Buffer {
  const w = new PduWriter({ headerDigest: digests, dataDigest: digests });
  const data = Buffer.alloc(blockBytes, 0x5a);
  const parts: Buffer[] = [];
  for (let i = 0; i < pairs; i++) {
    const cmd: ScsiCommand = {
      kind: 'ScsiCommand', immediate: false, final: true, read: false, write: true, attr: 1,
      lun: 0x0001_0000_0000_0000n, itt: i, expectedDataTransferLength: blockBytes, cmdSN: i, expStatSN: i,
      cdb: Buffer.from([0x2a, 0, 0, 0, 0, i & 0xff, 0, 0, blockBytes >> 9, 0, 0, 0, 0, 0, 0, 0]), data: Buffer.alloc(0),
    };
    const out: DataOut = {
      kind: 'DataOut', final: true, lun: 0x0001_0000_0000_0000n, itt: i, ttt: i, expStatSN: i, dataSN: 0,
      bufferOffset: 0, data,
    };
    parts.push(...w.encode(cmd), ...w.encode(out));
  }
  return Buffer.concat(parts);
}

/** Chunk like a socket would deliver (64 KiB reads, unaligned with PDU boundaries). */
function chunk(stream: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 0; o < stream.length; o += size) out.push(stream.subarray(o, o + size));
  return out;
}

const rows: Row[] = [];
for (const digests of [false, true]) {
  for (const block of [4096, 65536]) {
    const pairs = block === 4096 ? 2000 : 200;
    const chunks = chunk(writeStream(pairs, block, digests), 65536);
    const bytes = chunks.reduce((n, c) => n + c.length, 0);
    let sink = 0;
    const fn = (): void => {
      const r = new PduReader({ side: 'target', maxRecvDataSegmentLength: 262144, headerDigest: digests, dataDigest: digests },
        p => { sink += p.kind === 'DataOut' ? p.data.length : 1; }, e => { throw e; });
      for (const c of chunks) r.push(c);
    };
    rows.push(measure(`parse cmd+data-out ${block / 1024}K${digests ? ' +digests' : ''}`, pairs * 2, bytes, fn));
    if (sink < 0) console.log(sink);
  }
}

for (const digests of [false, true]) {
  for (const block of [4096, 65536]) {
    const w = new PduWriter({ headerDigest: digests, dataDigest: digests });
    const pdu: DataIn = {
      kind: 'DataIn', final: true, acknowledge: false, overflow: false, underflow: false, statusPresent: true,
      status: 0, lun: 0x0001_0000_0000_0000n, itt: 1, ttt: 0xffff_ffff, statSN: 1, expCmdSN: 2, maxCmdSN: 33,
      dataSN: 0, bufferOffset: 0, residualCount: 0, data: Buffer.alloc(block, 0xa5),
    };
    const n = 1000;
    let sink = 0;
    rows.push(measure(`encode data-in ${block / 1024}K${digests ? ' +digests' : ''}`, n, n * (48 + block), () => {
      for (let i = 0; i < n; i++) sink += w.encode(pdu).length;
    }));
    if (sink < 0) console.log(sink);
  }
}

console.log(`CRC32C hardware: ${hardwareCrc32c()}, node ${process.version}`);
console.table(rows);
console.log(JSON.stringify({ bench: 'protocol/pdu', crc32cHardware: hardwareCrc32c(), rows }));
