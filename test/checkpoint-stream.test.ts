// The checkpoint stream: CRC32C, framing, and a replica's reader facing damaged streams.
// The streams are real: a Checkpointer over a stride workload on the emulator writes them.
import fc from 'fast-check';
import { openKvm, Workload } from '../lib';
import { Checkpointer, type CheckpointSink } from '../lib/checkpoint/checkpointer';
import { crc32c } from '../lib/checkpoint/crc32c';
import { FrameDecoder, FrameType, MAGIC, StreamError, encodeFrame, writeEnvelope, sealFrame } from '../lib/checkpoint/format';
import { ReplicaImage } from '../lib/checkpoint/image';
import { createMachine } from '../lib/checkpoint/machine';
import { decodeEpoch } from '../lib/checkpoint/records';
import { ReplicaServer, TcpSink, ReplicaRejected } from '../lib/checkpoint/transport';

/** Collects the stream in memory, acking every epoch at once. */
class CaptureSink implements CheckpointSink {
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  readonly chunks: Buffer[] = [];
  #epoch = -1;
  send(buf: Buffer, done: () => void): void {
    this.chunks.push(Buffer.from(buf));
    done();
    for (let at = 0; at < buf.length; at += 36 + buf.readUInt32LE(at + 12)) {
      if (buf[at + 6] === FrameType.Commit) this.#epoch++;
    }
    const e = this.#epoch;
    queueMicrotask(() => this.onAck(e));
  }
  async close(): Promise<void> {}
}

interface FrameInfo { type: number; start: number; end: number; epoch?: number }

/** A real stream: Header, base epoch 0, epochs 1..epochs, End; with each frame's place. */
async function makeStream(epochs: number, seed = 1): Promise<{ bytes: Buffer; frames: FrameInfo[] }> {
  const kvm = openKvm({ backend: 'emulator' });
  try {
    const m = createMachine(kvm, { dataPages: 64, workloads: Workload.random({ firstPage: 512, spanPages: 64, pagesPerEpoch: 3, seed }) });
    const sink = new CaptureSink();
    // plain Epoch frames: the layout the damage tests below aim at (delta-encoded streams: test/stream-delta.test.ts)
    await new Checkpointer({ machine: m, sink, epochMs: 60_000, delta: false }).run({ epochs });
    const bytes = Buffer.concat(sink.chunks);
    const frames: FrameInfo[] = [];
    new FrameDecoder().push(bytes).forEach((f) => {
      const info: FrameInfo = { type: f.type, start: f.offset, end: f.offset + 36 + f.payload.length };
      if (f.type === FrameType.Epoch || f.type === FrameType.Commit) info.epoch = f.payload.readUInt32LE(0);
      frames.push(info);
    });
    return { bytes, frames };
  } finally {
    kvm.close();
  }
}

/** The image after reading `bytes` whole (the reference for each epoch). */
function imageOf(bytes: Buffer): ReplicaImage {
  const img = new ReplicaImage();
  img.push(Buffer.from(bytes));
  img.end();
  return img;
}

function expectStreamError(fn: () => unknown, code: string): StreamError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(StreamError);
  expect((err as StreamError).code).toBe(code);
  return err as StreamError;
}

describe('crc32c', () => {
  test('standard check value of "123456789" is 0xE3069283', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });
  test('continues across pieces', () => {
    expect(crc32c(Buffer.from('56789'), crc32c(Buffer.from('1234')))).toBe(0xe3069283);
  });
  test('other known vectors (RFC 3720 B.4)', () => {
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
  });
});

describe('framing', () => {
  test('a frame round-trips; any chunking of a stream gives the same frames', () => {
    const frames = [0, 1, 2, 3, 4].map((i) => encodeFrame(FrameType.Ack, 0x1234, i, Buffer.alloc(8 * i, i)));
    const stream = Buffer.concat(frames);
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: stream.length }), { maxLength: 12 }), (cuts) => {
      const points = [...new Set(cuts)].sort((a, b) => a - b);
      const d = new FrameDecoder();
      const got: number[] = [];
      let prev = 0;
      for (const p of [...points, stream.length]) {
        d.push(stream.subarray(prev, p)).forEach((f) => got.push(f.payload.length));
        prev = p;
      }
      d.end();
      expect(got).toEqual([0, 8, 16, 24, 32]);
    }));
  });

  test('envelope damage is caught before the payload arrives', () => {
    const f = encodeFrame(FrameType.Ack, 7, 0, Buffer.alloc(8));
    f.writeUInt32LE(0x7fff_0000, 12); // a huge length: the envelope CRC catches it at once
    expectStreamError(() => new FrameDecoder().push(f.subarray(0, 32)), 'ECRC');
  });

  test('the decoder stays failed after its first error', () => {
    const d = new FrameDecoder();
    const bad = encodeFrame(FrameType.Ack, 7, 0, Buffer.alloc(8));
    bad[40] ^= 1;
    expectStreamError(() => d.push(bad), 'ECRC');
    expectStreamError(() => d.push(encodeFrame(FrameType.Ack, 7, 1, Buffer.alloc(8))), 'ECRC');
  });
});

describe('replica reader: damaged streams keep the last good epoch', () => {
  let stream: { bytes: Buffer; frames: FrameInfo[] };
  let epoch2: FrameInfo[]; // epoch 2's Epoch and Commit frames
  let atEpoch1: ReplicaImage;

  beforeAll(async () => {
    stream = await makeStream(4);
    epoch2 = stream.frames.filter((f) => f.epoch === 2);
    expect(epoch2.map((f) => f.type)).toEqual([FrameType.Epoch, FrameType.Commit]);
    atEpoch1 = imageOf(stream.bytes.subarray(0, epoch2[0].start));
    expect(atEpoch1.epoch).toBe(1);
  });

  test('the whole stream reads back: 5 epochs, End, the last registers', () => {
    const img = imageOf(stream.bytes);
    expect(img.epoch).toBe(4);
    expect(img.finished).toBe(true);
    expect(img.regs[0].regs.rbx).toBe(4n); // random workload: rbx is the epoch that just ended
  });

  test('truncated at every byte offset of an epoch frame and of its commit', () => {
    const data = atEpoch1.memory[1];
    const from = epoch2[0].start;
    const to = epoch2[1].end;
    for (let cut = from; cut < to; cut++) {
      const img = new ReplicaImage();
      img.push(Buffer.from(stream.bytes.subarray(0, cut)));
      if (cut === from) {
        img.end(); // a clean frame boundary after epoch 1's Commit: nothing lost, nothing pending
      } else {
        const err = expectStreamError(() => img.end(), 'ETRUNCATED');
        expect(err.message).toMatch(cut < epoch2[0].end || cut > epoch2[1].start ? /inside a frame/ : /inside epoch 2/);
      }
      expect(img.epoch).toBe(1);
      expect(img.memory[1].equals(data)).toBe(true);
    }
    // One byte more and epoch 2 is in.
    expect(imageOf(stream.bytes.subarray(0, to)).epoch).toBe(2);
  });

  test('a flipped bit anywhere in an epoch frame is rejected; the image stays at epoch 1', () => {
    const f = epoch2[0];
    const epoch = decodeEpoch({ type: FrameType.Epoch, streamId: 0, seq: 0, offset: 0, payload: stream.bytes.subarray(f.start + 32, f.end - 4) }, 4096);
    const pagesAt = f.end - 4 - epoch.gfns.length * 4096;
    // bits in: the envelope (magic excluded), the registers, the gfn list, a page's contents, the trailer
    const spots = [f.start + 9, f.start + 20, f.start + 40, pagesAt - 3, pagesAt + 100, f.end - 5, f.end - 2];
    for (const at of spots) {
      for (const bit of [0, 5]) {
        const bad = Buffer.from(stream.bytes);
        bad[at] ^= 1 << bit;
        const img = new ReplicaImage();
        const err = expectStreamError(() => img.push(bad), 'ECRC');
        expect(err.offset).toBe(f.start);
        expect(img.epoch).toBe(1);
        expect(img.memory[1].equals(atEpoch1.memory[1])).toBe(true);
        expect(img.error).toBe(err);
      }
    }
  });

  test('reordered, repeated and dropped frames', () => {
    const fr = stream.frames;
    const piece = (i: number) => stream.bytes.subarray(fr[i].start, fr[i].end);
    const i2 = fr.indexOf(epoch2[0]);
    const cases: [string, number[], number][] = [
      ['swap epoch 2 and 3', [i2 + 2, i2 + 3, i2, i2 + 1], 1],
      ['Commit before its Epoch', [i2 + 1, i2], 1],
      ['epoch 2 twice', [i2, i2 + 1, i2, i2 + 1], 2],
      ['epoch 2 dropped', [i2 + 2, i2 + 3], 1],
    ];
    for (const [name, order, kept] of cases) {
      const bytes = Buffer.concat([stream.bytes.subarray(0, fr[i2].start), ...order.map(piece)]);
      const img = new ReplicaImage();
      const err = expectStreamError(() => img.push(bytes), 'EORDER');
      expect([name, err.message]).toEqual([name, expect.stringMatching(/frame #\d+ where frame #\d+ was due/)]);
      expect([name, img.epoch]).toEqual([name, kept]);
    }
  });

  test('a well-formed frame at the wrong place (sequence fixed up) is still rejected by epoch order', () => {
    // Re-sequence epoch 3's frames as if they came right after epoch 1: the epoch numbers catch it.
    const fr = stream.frames;
    const i2 = fr.indexOf(epoch2[0]);
    const moved = [fr[i2 + 2], fr[i2 + 3]].map((f, k) => {
      const b = Buffer.from(stream.bytes.subarray(f.start, f.end));
      const payload = b.subarray(32, b.length - 4);
      const out = Buffer.alloc(b.length);
      writeEnvelope(out, 0, b[6], b.readUInt32LE(8), i2 + k, payload.length); // frame i's sequence number is i
      payload.copy(out, 32);
      sealFrame(out, 0, payload.length);
      return out;
    });
    const img = new ReplicaImage();
    const err = expectStreamError(() => img.push(Buffer.concat([stream.bytes.subarray(0, fr[i2].start), ...moved])), 'EORDER');
    expect(err.message).toMatch(/epoch 3 where epoch 2 was due/);
    expect(img.epoch).toBe(1);
  });

  test('foreign magic, foreign version, a frame of another stream', async () => {
    const f = epoch2[0];
    const prefix = stream.bytes.subarray(0, f.start);
    const frame = Buffer.from(stream.bytes.subarray(f.start, f.end));

    const magic = Buffer.from(frame);
    magic.write('RIFF', 0, 'ascii');
    let img = new ReplicaImage();
    expect(expectStreamError(() => img.push(Buffer.concat([prefix, magic])), 'EMAGIC').message).toMatch(/magic 0x46464952, expected 0x4b43444b/);
    expect(img.epoch).toBe(1);

    const version = Buffer.from(frame);
    version.writeUInt16LE(2, 4);
    version.writeUInt32LE(crc32c(version.subarray(0, 24)), 24); // a genuine version-2 envelope
    img = new ReplicaImage();
    expect(expectStreamError(() => img.push(Buffer.concat([prefix, version])), 'EVERSION').message).toMatch(/version 2; this reader knows version 1/);
    expect(img.epoch).toBe(1);

    const other = await makeStream(4, 99);
    const o2 = other.frames.find((x) => x.epoch === 2)!;
    img = new ReplicaImage();
    const err = expectStreamError(() => img.push(Buffer.concat([prefix, other.bytes.subarray(o2.start, o2.end)])), 'EFOREIGN');
    expect(err.message).toMatch(/frame of stream 0x[0-9a-f]{8} in stream 0x[0-9a-f]{8}/);
    expect(img.epoch).toBe(1);
    expect(MAGIC).toBe(Buffer.from('KDCK').readUInt32LE(0));
  });

  test('over TCP: the replica answers a damaged stream with an Error frame, keeps its last good epoch, says why', async () => {
    const server = new ReplicaServer();
    const port = await server.listen(0);
    try {
      const sink = await TcpSink.connect(port);
      const acks: number[] = [];
      const failed = new Promise<Error>((resolve) => (sink.onFailure = resolve));
      sink.onAck = (e) => acks.push(e);
      const outcome = server.nextOutcome();
      const bad = Buffer.from(stream.bytes.subarray(0, epoch2[1].end));
      bad[epoch2[0].end - 100] ^= 4;
      sink.send(bad, () => undefined);
      const err = await failed;
      expect(err).toBeInstanceOf(ReplicaRejected);
      expect((err as ReplicaRejected).code).toBe('ECRC');
      expect(err.message).toMatch(/payload checksum .* does not match .*the replica keeps epoch 1/);
      expect(acks[acks.length - 1]).toBe(1);
      const o = await outcome;
      expect(o.kind).toBe('rejected');
      expect(o.image.epoch).toBe(1);
      expect(o.image.memory[1].equals(atEpoch1.memory[1])).toBe(true);
      sink.destroy();
    } finally {
      await server.close();
    }
  });
});
