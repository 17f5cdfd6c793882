import t from 'tap';
import { crc32c } from '../../../src/protocol/iscsi/digest.js';
import {
  FRAME_HEADER_LENGTH, FrameErrorCode, FrameFlag, Opcode, ReplicaIoError, ReplicaStatus, chunksTouched, decodeHeader,
  decodeHello, decodeIoSeqs, decodeMapStatus, encodeFrame, encodeFrameWithCrc, encodeHeader, encodeHello, encodeIoSeqs, encodeMapStatus,
  errorForStatus, statusForStoreErrorCode, statusName, type FrameError, type FrameFields, type ReplicaHello,
} from '../../../src/protocol/replica/frame.js';
import { FrameReader, type ReceivedFrame } from '../../../src/protocol/replica/frame-reader.js';
import { hex, randomChunks, rng } from '../../fixtures/pdu-builder.js';

/** Bytes 0..59 written out by hand, then the header CRC (CRC32C is checked against RFC vectors in digest.test.ts). */
function golden(...lines: string[]): Buffer {
  const body = hex(...lines);
  if (body.length !== 60) throw new Error(`golden body is ${body.length} bytes`);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(crc32c(body));
  return Buffer.concat([body, crc]);
}

const hello: ReplicaHello = {
  volumeName: 'pvc-1', volumeUuid: 'uuid-1', replicaId: 'r1', controlAddress: '10.0.0.1:9500',
  epoch: 3, checkpointedIoSeq: 10, highestIoSeq: 12, capacityBytes: 1 << 20, blockSize: 512, chunkSize: 4096, pid: 42,
};

t.test('golden header bytes per opcode', async t => {
  // A PING request, fully literal: magic "CSTR" LE, version 1, opcode 8, tag 7, nothing else.
  t.same(encodeHeader({ opcode: Opcode.Ping, tag: 7 }), golden(
    '43 53 54 52  01 08 00 00  00 00 00 00  07 00 00 00',
    '00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00',
    '00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00',
    '00 00 00 00  00 00 00 00  00 00 00 00',
  ), 'PING');
  t.equal(encodeHeader({ opcode: Opcode.Ping, tag: 7 }).readUInt32LE(60), crc32c(encodeHeader({ opcode: Opcode.Ping, tag: 7 }).subarray(0, 60)));

  const data = Buffer.from('0123456789abcdef'.repeat(32)); // 512 bytes
  const dcrc = crc32c(data);
  const [wh, wp] = encodeFrame({ opcode: Opcode.Write, flags: FrameFlag.Fua, tag: 0x01020304, epoch: 5, ioSeq: 0x1_0000_0002, offset: 4096, length: 512 }, data);
  const crcLE = Buffer.alloc(4);
  crcLE.writeUInt32LE(dcrc);
  t.same(wh, golden(
    '43 53 54 52  01 03 02 00  00 00 00 00  04 03 02 01',
    '05 00 00 00  00 00 00 00  02 00 00 00  01 00 00 00',
    '00 10 00 00  00 00 00 00  00 02 00 00  00 02 00 00',
    crcLE.toString('hex') + ' 00 00 00 00  00 00 00 00',
  ), 'WRITE with FUA, u64 high word, payload CRC');
  t.equal(wp, data, 'payload handed back as is (no concat)');

  const cases: [string, FrameFields, string][] = [
    ['READ', { opcode: Opcode.Read, tag: 1, epoch: 1, offset: 512, length: 1024 },
      '43 53 54 52  01 02 00 00  00 00 00 00  01 00 00 00  01 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 02 00 00  00 00 00 00  00 04 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00'],
    ['SYNC', { opcode: Opcode.Sync, tag: 2, epoch: 1 },
      '43 53 54 52  01 04 00 00  00 00 00 00  02 00 00 00  01 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00'],
    ['UNMAP', { opcode: Opcode.Unmap, tag: 3, epoch: 1, ioSeq: 9, offset: 0, length: 8192 },
      '43 53 54 52  01 05 00 00  00 00 00 00  03 00 00 00  01 00 00 00  00 00 00 00  09 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 20 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00'],
    ['WRITE_ZEROES', { opcode: Opcode.WriteZeroes, tag: 4, epoch: 1, ioSeq: 10, offset: 1024, length: 512 },
      '43 53 54 52  01 06 00 00  00 00 00 00  04 00 00 00  01 00 00 00  00 00 00 00  0a 00 00 00  00 00 00 00  00 04 00 00  00 00 00 00  00 02 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00'],
    ['MAP_STATUS', { opcode: Opcode.MapStatus, tag: 5, epoch: 1, offset: 0, length: 0x10000 },
      '43 53 54 52  01 07 00 00  00 00 00 00  05 00 00 00  01 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 01 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00'],
    ['error response', { opcode: Opcode.Read, flags: FrameFlag.Response, status: ReplicaStatus.MediumError, tag: 6, offset: 0xffff_fe00 },
      '43 53 54 52  01 02 01 00  06 00 00 00  06 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 fe ff ff  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00'],
  ];
  for (const [name, fields, body] of cases) t.same(encodeHeader(fields), golden(body), name);

  const hp = encodeHello(hello);
  const [hh] = encodeFrame({ opcode: Opcode.Hello, tag: 0, epoch: 3 }, hp);
  t.equal(hh!.readUInt32LE(44), hp.length, 'HELLO payloadLength');
  t.equal(hh!.readUInt32LE(48), crc32c(hp), 'HELLO payloadCrc');
  t.equal(hh![5], 1, 'HELLO opcode');
  t.strictSame(decodeHello(hp), hello, 'HELLO JSON round trip');
});

t.test('header round trip and validation', async t => {
  const fields = { opcode: Opcode.Write, flags: 3, status: 7, tag: 0xffff_ffff, epoch: Number.MAX_SAFE_INTEGER, ioSeq: 2 ** 40 + 5, offset: 2 ** 52, length: 0xffff_ffff };
  const h = decodeHeader(encodeHeader(fields, 10, 0xdeadbeef));
  t.strictSame(h, { ...fields, payloadLength: 10, payloadCrc: 0xdeadbeef });
  t.throws(() => encodeHeader({ opcode: 1, tag: 0, epoch: 2 ** 53 }), RangeError, 'encode refuses unsafe u64');
  t.throws(() => encodeHeader({ opcode: 1, tag: -1 }), RangeError, 'encode refuses bad tag');
  const codeOf = (buf: Buffer): string | undefined => {
    try { decodeHeader(buf); return undefined; } catch (err) { return (err as FrameError).code; }
  };
  const good = encodeHeader({ opcode: Opcode.Ping, tag: 1 });
  const reCrc = (b: Buffer): Buffer => { b.writeUInt32LE(crc32c(b.subarray(0, 60)), 60); return b; };
  const badMagic = Buffer.from(good); badMagic[0] = 0; reCrc(badMagic);
  const badVersion = Buffer.from(good); badVersion[4] = 2; reCrc(badVersion);
  const badCrc = Buffer.from(good); badCrc.writeUInt8(badCrc.readUInt8(20) ^ 1, 20);
  const bigU64 = Buffer.from(good); bigU64.writeUInt32LE(0x20_0000, 28); reCrc(bigU64);
  t.equal(codeOf(badMagic), FrameErrorCode.BadMagic);
  t.equal(codeOf(badVersion), FrameErrorCode.BadVersion);
  t.equal(codeOf(badCrc), FrameErrorCode.BadHeaderCrc);
  t.equal(codeOf(bigU64), FrameErrorCode.BadU64, 'u64 ≥ 2^53 refused');
  const maxSafe = Buffer.from(good); maxSafe.writeUInt32LE(0x1f_ffff, 28); maxSafe.writeUInt32LE(0xffff_ffff, 24); reCrc(maxSafe);
  t.equal(decodeHeader(maxSafe).ioSeq, Number.MAX_SAFE_INTEGER, '2^53 - 1 accepted');
});

t.test('payload helpers', async t => {
  t.equal(chunksTouched(0, 4096, 4096), 1);
  t.equal(chunksTouched(512, 4096, 4096), 2);
  t.equal(chunksTouched(4095 * 0 + 3584, 1024, 4096), 2);
  t.equal(chunksTouched(0, 0, 4096), 0);
  const seqs = Float64Array.from([0, 1, 2 ** 53 - 1]);
  t.strictSame(decodeIoSeqs(encodeIoSeqs(seqs)), seqs);
  t.equal(decodeIoSeqs(Buffer.alloc(7)), undefined);
  t.strictSame(decodeMapStatus(encodeMapStatus(65536, true)), { length: 65536, mapped: true });
  t.equal(encodeMapStatus(1, false).length, 9);
  t.throws(() => decodeHello(Buffer.from('{')));
  t.throws(() => decodeHello(Buffer.from(JSON.stringify({ ...hello, blockSize: 1000 }))));
  t.throws(() => decodeHello(Buffer.from(JSON.stringify({ ...hello, pid: 'x' }))));
  const withInstance = { ...hello, instance: '6f1c2d4e-0000-4000-8000-000000000001' };
  t.strictSame(decodeHello(encodeHello(withInstance)), withInstance, 'HELLO instance round trip');
  t.notOk('instance' in decodeHello(encodeHello(hello)), 'no instance: none decoded (a replica that sends none)');
  t.throws(() => decodeHello(Buffer.from(JSON.stringify({ ...hello, instance: 7 }))), /instance/);
  t.throws(() => decodeHello(Buffer.from(JSON.stringify({ ...hello, instance: '' }))), /instance/);
  t.throws(() => decodeHello(Buffer.from(JSON.stringify({ ...hello, instance: 'x'.repeat(129) }))), /instance/);
  const withComplete = { ...hello, completeIoSeq: 3 };
  t.strictSame(decodeHello(encodeHello(withComplete)), withComplete, 'HELLO completeIoSeq round trip');
  t.notOk('completeIoSeq' in decodeHello(encodeHello(hello)), 'no completeIoSeq: none decoded (an older replica)');
  for (const bad of [-1, 1.5, '3', 2 ** 53]) {
    t.throws(() => decodeHello(Buffer.from(JSON.stringify({ ...hello, completeIoSeq: bad }))), /completeIoSeq/, `completeIoSeq ${bad} refused`);
  }
  t.equal(statusForStoreErrorCode('EMEDIUM'), ReplicaStatus.MediumError);
  t.equal(statusForStoreErrorCode('EIO'), ReplicaStatus.IoError);
  t.equal(statusForStoreErrorCode('ENOSPC'), ReplicaStatus.NoSpace);
  t.equal(statusForStoreErrorCode('ESTALE_EPOCH'), ReplicaStatus.StaleEpoch);
  t.equal(statusForStoreErrorCode('ERANGE'), ReplicaStatus.OutOfRange);
  t.equal(statusForStoreErrorCode('EALIGN'), ReplicaStatus.Misaligned);
  t.equal(statusForStoreErrorCode('ECLOSED'), ReplicaStatus.Closed);
  t.equal(statusForStoreErrorCode('EINVAL'), ReplicaStatus.Invalid);
  t.equal(statusForStoreErrorCode('whatever'), ReplicaStatus.IoError);
  const e = errorForStatus(ReplicaStatus.MediumError, 'bad chunk', 8192);
  t.ok(e instanceof ReplicaIoError);
  t.equal(e.status, ReplicaStatus.MediumError);
  t.equal(e.offset, 8192);
  t.equal(e.statusName, 'MediumError');
  t.equal(errorForStatus(999, 'x').status, ReplicaStatus.IoError, 'unknown status → IO_ERROR');
  t.equal(statusName(ReplicaStatus.Refused), 'Refused');
  t.equal(Object.values(ReplicaStatus).length, 13);
});

interface Out {
  frames: string[];
  errors: string[];
}

function describe(f: ReceivedFrame): string {
  const h = f.header;
  return `${h.opcode}/${h.flags}/${h.status}/${h.tag}/${h.epoch}/${h.ioSeq}/${h.offset}/${h.length}:${f.payload.length}:${crc32c(f.payload)}:${f.payloadCrcOk}:${f.allocated}`;
}

function parse(chunks: Buffer[], options: ConstructorParameters<typeof FrameReader>[0] = {}): Out {
  const out: Out = { frames: [], errors: [] };
  const reader = new FrameReader(options, f => out.frames.push(describe(f)), err => out.errors.push(err.code));
  for (const c of chunks) reader.push(c);
  return out;
}

function stream(): Buffer {
  const payload = Buffer.alloc(700);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
  const parts: Buffer[] = [
    ...encodeFrame({ opcode: Opcode.Hello, tag: 0 }, encodeHello(hello)),
    ...encodeFrame({ opcode: Opcode.Write, tag: 1, epoch: 1, ioSeq: 5, offset: 512, length: 700 }, payload),
    ...encodeFrame({ opcode: Opcode.Ping, tag: 2 }),
    ...encodeFrame({ opcode: Opcode.Read, flags: FrameFlag.Response, tag: 3, length: 512 }, payload.subarray(0, 512), encodeIoSeqs([1])),
    ...encodeFrame({ opcode: Opcode.Sync, tag: 4 }),
    ...encodeFrame({ opcode: Opcode.MapStatus, flags: FrameFlag.Response, tag: 5 }, encodeMapStatus(4096, true)),
  ];
  return Buffer.concat(parts);
}

t.test('encodeFrameWithCrc continues a known first-part CRC; an empty first part has none to continue', async t => {
  const fields = { opcode: Opcode.Read, flags: FrameFlag.Response, status: 0, tag: 7, epoch: 3, ioSeq: 9, offset: 4096, length: 8192 };
  const data = Buffer.from('chunk data '.repeat(400));
  const trailer = Buffer.from('io_seq trailer');
  const plain = encodeFrame(fields, data, trailer);
  t.same(encodeFrameWithCrc(fields, crc32c(data), data, trailer), plain, 'same bytes as computing it all');
  t.same(encodeFrameWithCrc(fields, crc32c(data), data), encodeFrame(fields, data));
  t.same(encodeFrameWithCrc(fields, 0xdeadbeef, Buffer.alloc(0), trailer), encodeFrame(fields, Buffer.alloc(0), trailer));
  // The known CRC is trusted, not recomputed: a wrong one reaches the header (callers pass verified ones).
  t.not(encodeFrameWithCrc(fields, 0xdeadbeef, data)[0]!.readUInt32LE(48), encodeFrame(fields, data)[0]!.readUInt32LE(48));
});

t.test('every split offset of a multi-frame stream', async t => {
  const s = stream();
  const whole = parse([s]);
  t.equal(whole.frames.length, 6);
  t.equal(whole.errors.length, 0);
  t.ok(whole.frames.every(f => f.includes(':true:')), 'all payload CRCs ok');
  const expected = JSON.stringify(whole);
  let bad = 0;
  let badAlloc = 0;
  const alloc = (size: number): Buffer => Buffer.alloc(size);
  const wholeAlloc = JSON.stringify(parse([s], { allocatePayload: alloc }));
  for (let k = 1; k < s.length; k++) {
    if (JSON.stringify(parse([s.subarray(0, k), s.subarray(k)])) !== expected) bad++;
    if (JSON.stringify(parse([s.subarray(0, k), s.subarray(k)], { allocatePayload: alloc })) !== wholeAlloc) badAlloc++;
  }
  t.equal(bad, 0, `identical at all ${s.length - 1} split offsets`);
  t.equal(badAlloc, 0, 'identical with an allocator at every split offset');
  const next = rng(s.length);
  for (const max of [1, 3, 63, 65, 200]) {
    t.equal(JSON.stringify(parse(randomChunks(s, next, max))), expected, `random chunks 1..${max}`);
    t.equal(JSON.stringify(parse(randomChunks(s, next, max), { allocatePayload: alloc })), wholeAlloc, `random chunks 1..${max} with allocator`);
  }
});

t.test('zero-copy view when the payload sits in one chunk; allocator fills its own buffer', async t => {
  const data = Buffer.alloc(4096, 9);
  const s = Buffer.concat(encodeFrame({ opcode: Opcode.Write, tag: 1, length: 4096 }, data));
  let got: Buffer | undefined;
  new FrameReader({}, f => { got = f.payload; }, () => t.fail('no error')).push(s);
  t.equal(got!.buffer, s.buffer, 'payload is a view of the received chunk');
  const target = Buffer.alloc(4096);
  const sizes: number[] = [];
  let allocated: ReceivedFrame | undefined;
  const r = new FrameReader({ allocatePayload: (size, h) => { sizes.push(size); return h.opcode === Opcode.Write ? target : undefined; } },
    f => { allocated = f; }, () => t.fail('no error'));
  for (const c of randomChunks(s, rng(1), 100)) r.push(c);
  t.strictSame(sizes, [4096], 'allocator asked once with the full size');
  t.equal(allocated!.payload, target);
  t.ok(allocated!.allocated);
  t.same(target, data);
});

t.test('broken header is fatal; later input ignored', async t => {
  const good = encodeHeader({ opcode: Opcode.Ping, tag: 1 });
  const variants: [string, (b: Buffer) => void, string][] = [
    ['magic', b => { b.writeUInt8(b.readUInt8(1) ^ 0xff, 1); }, FrameErrorCode.BadMagic],
    ['version', b => { b[4] = 9; b.writeUInt32LE(crc32c(b.subarray(0, 60)), 60); }, FrameErrorCode.BadVersion],
    ['header CRC', b => { b.writeUInt8(b.readUInt8(13) ^ 1, 13); }, FrameErrorCode.BadHeaderCrc],
    ['u64 > 2^53', b => { b.writeUInt32LE(0xffff_ffff, 36); b.writeUInt32LE(crc32c(b.subarray(0, 60)), 60); }, FrameErrorCode.BadU64],
  ];
  for (const [name, mutate, code] of variants) {
    const bad = Buffer.from(good);
    mutate(bad);
    const out = parse([good, bad, good]);
    t.equal(out.frames.length, 1, `${name}: frame before it delivered`);
    t.strictSame(out.errors, [code], `${name}: one fatal error, nothing after`);
  }
});

t.test('payload CRC mismatch is reported, not fatal', async t => {
  const [h, p] = encodeFrame({ opcode: Opcode.Write, tag: 1, length: 512 }, Buffer.alloc(512, 1));
  const corrupt = Buffer.from(p!);
  corrupt.writeUInt8(corrupt.readUInt8(100) ^ 0x40, 100);
  const out = parse([h!, corrupt, encodeHeader({ opcode: Opcode.Ping, tag: 2 })]);
  t.equal(out.errors.length, 0);
  t.equal(out.frames.length, 2);
  t.match(out.frames[0], /:false:false$/, 'payloadCrcOk=false');
  t.match(out.frames[1], /^8\//, 'next frame still parsed');
});

t.test('oversized payload refused before buffering', async t => {
  const h = encodeHeader({ opcode: Opcode.Write, tag: 1, length: 2048 }, 2048, 0);
  let allocCalls = 0;
  const errors: string[] = [];
  const reader = new FrameReader({ maxPayloadLength: 1024, allocatePayload: () => { allocCalls++; return undefined; } },
    () => t.fail('no frame'), err => errors.push(err.code));
  reader.push(h);
  t.strictSame(errors, [FrameErrorCode.PayloadTooLarge]);
  t.equal(allocCalls, 0, 'nothing allocated');
  reader.push(Buffer.alloc(2048));
  t.equal(reader.bufferedBytes, 0, 'payload bytes not buffered');
  t.ok(reader.failed);
  t.equal(FRAME_HEADER_LENGTH, 64);
});

t.test('pause / resume / detach', async t => {
  const frames = Buffer.concat([encodeHeader({ opcode: Opcode.Ping, tag: 1 }), encodeHeader({ opcode: Opcode.Ping, tag: 2 }), encodeHeader({ opcode: Opcode.Ping, tag: 3 })]);
  const tags: number[] = [];
  const reader: FrameReader = new FrameReader({}, f => { tags.push(f.header.tag); if (f.header.tag === 1) reader.pause(); }, () => t.fail('no error'));
  reader.push(frames);
  t.strictSame(tags, [1], 'paused after the first');
  t.equal(reader.bufferedBytes, 128);
  reader.resume();
  t.strictSame(tags, [1, 2, 3]);
  const r2: FrameReader = new FrameReader({}, () => r2.pause(), () => t.fail('no error'));
  r2.push(frames.subarray(0, 100));
  const rest = r2.detach();
  t.same(Buffer.concat(rest), frames.subarray(64, 100), 'detach hands back what follows the frame');
});
