import t from 'tap';
import { PduWriter } from '../../src/protocol/iscsi/pdu-writer.js';
import { PduReader } from '../../src/protocol/iscsi/pdu-reader.js';
import { encodeBhs, encodePdu } from '../../src/protocol/iscsi/pdu-codec.js';
import { crc32c } from '../../src/protocol/iscsi/digest.js';
import type { AnyPdu } from '../../src/protocol/iscsi/pdu-types.js';
import { goldens } from '../fixtures/golden-pdus.js';
import { initiatorPdus, targetPdus } from '../fixtures/sample-pdus.js';
import { hex, norm } from '../fixtures/pdu-builder.js';

t.test('without digests: header, caller data, shared padding', async t => {
  const w = new PduWriter({});
  for (const g of goldens) {
    const bufs = w.encode(g.pdu);
    t.equal(Buffer.concat(bufs).toString('hex'), g.wire.toString('hex'), `${g.name}: golden bytes`);
    t.equal(bufs[0]!.length, encodeBhs(g.pdu).length, 'first buffer is the whole header');
  }
  const dataOut = initiatorPdus.find(p => p.kind === 'DataOut' && p.data.length === 8190)!;
  const bufs = w.encode(dataOut);
  t.equal(bufs.length, 3);
  t.equal(bufs[1], dataOut.kind === 'DataOut' ? dataOut.data : undefined, 'data segment is not copied');
  t.equal(bufs[2]!.toString('hex'), '0000');
  t.equal(w.encode(dataOut)[2]!.buffer, bufs[2]!.buffer, 'padding is a shared buffer');
  const aligned = initiatorPdus.find(p => p.kind === 'DataOut' && p.data.length === 512)!;
  t.equal(w.encode(aligned).length, 2, 'no padding buffer when aligned');
  t.equal(w.encode(initiatorPdus.find(p => p.kind === 'LogoutRequest')!).length, 1, 'no data: header only');
});

t.test('with digests: header digest in the header allocation, padding + data digest in the tail', async t => {
  const w = new PduWriter({ headerDigest: true, dataDigest: true });
  // NOP-Out golden: 5 data bytes, 3 padding bytes.
  const g = goldens[0]!;
  const [header, data, tail, ...rest] = w.encode(g.pdu);
  t.equal(rest.length, 0);
  t.equal(header!.length, 52);
  t.equal(header!.subarray(0, 48).toString('hex'), g.wire.subarray(0, 48).toString('hex'));
  t.equal(header!.readUInt32LE(48), crc32c(g.wire.subarray(0, 48)), 'header digest, little-endian');
  t.equal(data!.toString('latin1'), 'ping!');
  t.equal(tail!.length, 3 + 4);
  t.equal(tail!.subarray(0, 3).toString('hex'), '000000');
  t.equal(tail!.readUInt32LE(3), crc32c(hex('70 69 6e 67 21 00 00 00')), 'data digest covers the padding');

  // With AHS, the header digest covers BHS + AHS.
  const cmd = goldens[2]!;
  const [h2] = w.encode(cmd.pdu);
  t.equal(h2!.length, 48 + 28 + 4);
  t.equal(h2!.readUInt32LE(76), crc32c(cmd.wire.subarray(0, 76)));

  // Aligned data: tail is the digest only.
  const aligned = initiatorPdus.find(p => p.kind === 'DataOut' && p.data.length === 512)!;
  const parts = w.encode(aligned);
  t.equal(parts[2]!.length, 4);
  t.equal(parts[2]!.readUInt32LE(0), crc32c(encodePdu(aligned).subarray(48)));
});

t.test('setDigests applies to the next encode', async t => {
  const w = new PduWriter();
  const pdu = initiatorPdus[0]!;
  t.equal(w.encode(pdu)[0]!.length, 48);
  w.setDigests(true, false);
  const bufs = w.encode(pdu);
  t.equal(bufs[0]!.length, 52);
  t.equal(bufs[2]!.length, 3, 'padding only, no data digest');
});

t.test('writer output parses back with the reader, every digest mode', async t => {
  for (const [h, d] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    for (const [side, pdus] of [['target', initiatorPdus], ['initiator', targetPdus]] as const) {
      const w = new PduWriter({ headerDigest: h, dataDigest: d });
      const stream = Buffer.concat((pdus as AnyPdu[]).flatMap(p => w.encode(p)));
      const got: unknown[] = [];
      const reader = new PduReader({ side, maxRecvDataSegmentLength: 65536, headerDigest: h, dataDigest: d },
        p => got.push(norm(p)), e => t.fail(e.message));
      for (let o = 0; o < stream.length; o += 1000) reader.push(stream.subarray(o, o + 1000));
      t.strictSame(got, (pdus as AnyPdu[]).map(norm), `${side} side, header ${h}, data ${d}`);
    }
  }
});

t.test('reserved bytes are zero even in a recycled allocation', async t => {
  // Buffer.allocUnsafe may hand out dirty pool memory: the encoder must clear it.
  const dirty = Buffer.allocUnsafe(4096);
  dirty.fill(0xa5);
  const w = new PduWriter({ headerDigest: true });
  for (let i = 0; i < 200; i++) {
    const [header] = w.encode(targetPdus[0]!);
    t.equal(header!.subarray(36, 48).toString('hex'), '00'.repeat(12));
  }
});
