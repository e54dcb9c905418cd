// Delta-encoded epochs (stream format extension 2, EpochDelta frames): XBZRLE runs against the
// page's previous contents, zero and unchanged pages without data, whole pages where a delta
// would not be smaller; a reader checks the decoded pages against the writer's CRC, so a
// wrong delta is refused, never applied.
import fc from 'fast-check';
import { openKvm, Workload } from '../lib';
import { Checkpointer, type CheckpointSink } from '../lib/checkpoint/checkpointer';
import { FrameDecoder, FrameType, sealFrame, StreamError } from '../lib/checkpoint/format';
import { ReplicaImage } from '../lib/checkpoint/image';
import { createMachine, DATA_GFN } from '../lib/checkpoint/machine';
import { decodeEpochDelta, PageKind } from '../lib/checkpoint/records';
import { applyDelta, encodeDelta } from '../lib/checkpoint/xbzrle';
import { describeEachBackend } from './helpers/backends';

class CaptureSink implements CheckpointSink {
  chunks: Buffer[] = [];
  #epoch = -1;
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  send(buf: Buffer, done: () => void): void {
    this.chunks.push(Buffer.from(buf));
    for (let at = 0; at < buf.length; at += 36 + buf.readUInt32LE(at + 12)) if (buf[at + 6] === FrameType.Commit) this.#epoch++;
    done();
    const e = this.#epoch;
    queueMicrotask(() => this.onAck(e));
  }
  async close(): Promise<void> {}
}

describe('XBZRLE page deltas', () => {
  const page = (fill: (u8: Uint8Array) => void) => {
    const w = new Uint32Array(1024);
    fill(new Uint8Array(w.buffer));
    return w;
  };

  test('a rewritten u64 is about 10 bytes; an unchanged page 0; a page changed everywhere does not fit', () => {
    const old = page((b) => b.fill(7));
    const cur = page((b) => (b.fill(7), b.set([1, 2, 3, 4, 5, 6, 7, 8], 0)));
    const out = new Uint8Array(4096);
    expect(encodeDelta(old, cur, out, 0, 4080)).toBe(10); // skip 0, 8 bytes changed, the 8 bytes
    expect(encodeDelta(old, old, out, 0, 4080)).toBe(0);
    expect(encodeDelta(old, page((b) => b.fill(9)), out, 0, 4080)).toBe(-1);
  });

  test('decode(encode(old, new)) === new for any old page and any set of changed bytes (fast-check)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4096, maxLength: 4096 }), fc.array(fc.tuple(fc.nat(4095), fc.nat(255)), { maxLength: 300 }), (oldBytes, changes) => {
        const old = new Uint32Array(Uint8Array.from(oldBytes).buffer);
        const curBytes = Uint8Array.from(oldBytes);
        for (const [at, v] of changes) curBytes[at] = v;
        const cur = new Uint32Array(curBytes.buffer);
        const out = new Uint8Array(8192);
        const n = encodeDelta(old, cur, out, 0, 8192);
        const back = Uint8Array.from(oldBytes);
        expect(applyDelta(back, out.subarray(0, n))).toBe(true);
        expect(Buffer.from(back).equals(Buffer.from(curBytes))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  test('a delta that reaches past the page, or is cut inside a count, is refused', () => {
    const p = new Uint8Array(4096);
    expect(applyDelta(p, Uint8Array.from([0xff, 0x1f, 4, 1, 2, 3, 4]))).toBe(false); // skip 4095, then 4 bytes
    expect(applyDelta(p, Uint8Array.from([0x80]))).toBe(false);
    expect(applyDelta(p, Uint8Array.from([0, 0]))).toBe(false); // a run of no bytes
    expect(applyDelta(p, Uint8Array.from([0, 4, 1, 2]))).toBe(false); // 4 announced, 2 there
  });
});

/** A delta-encoded checkpoint stream of a stride guest rewriting 64 pages, with the machine it came from. */
async function deltaStream(b: { open: () => ReturnType<typeof openKvm> }, epochs: number) {
  const kvm = b.open();
  const m = createMachine(kvm, { dataPages: 2048, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 64, stridePages: 30 }) });
  const sink = new CaptureSink();
  const ck = new Checkpointer({ machine: m, sink, epochMs: 60_000 });
  const stats = await ck.run({ epochs });
  return { kvm, m, bytes: Buffer.concat(sink.chunks), stats, counts: ck.writer.pageCounts };
}

describeEachBackend('delta-encoded checkpoint streams', (b) => {
  test('every epoch of the stride guest is a few KiB (pages are deltas), and reads back to the guest\'s memory exactly', async () => {
    const { kvm, m, bytes, stats, counts } = await deltaStream(b, 50);
    try {
      const frames = new FrameDecoder().push(bytes);
      const parts = frames.filter((f) => f.type === FrameType.EpochDelta);
      expect(parts).toHaveLength(51);
      expect(frames.some((f) => f.type === FrameType.Epoch)).toBe(false);
      // epoch 0 holds the harness and the pages as they were; later epochs 64 deltas of one rewritten u64 each
      const later = parts.slice(2).map((f) => decodeEpochDelta(f, 4096));
      for (const p of later) expect(Array.from(p.kinds)).toEqual(new Array(64).fill(PageKind.Delta));
      expect(Math.max(...parts.slice(2).map((f) => f.payload.length))).toBeLessThan(4096);
      expect(counts.delta).toBeGreaterThanOrEqual(64 * 48);
      expect(stats.bytes / 50).toBeLessThan(16 * 1024);
      const img = new ReplicaImage();
      img.push(bytes);
      img.end();
      m.slots.forEach((s, i) => expect(img.memory[i].equals(s.bytes)).toBe(true));
    } finally {
      kvm.close();
    }
  });

  test('a bit flipped in a delta (frame checksum recomputed) fails the decoded pages\' CRC; the image keeps its last epoch', async () => {
    const { kvm, bytes } = await deltaStream(b, 6);
    kvm.close();
    const frames = new FrameDecoder().push(Buffer.from(bytes));
    const target = frames.filter((f) => f.type === FrameType.EpochDelta)[4]; // epoch 4
    const bad = Buffer.from(bytes);
    const part = decodeEpochDelta(target, 4096);
    const dataAt = target.offset + 32 + (target.payload.length - part.data.length);
    bad[dataAt + part.dataStart[0] + 2] ^= 0x40; // inside page 0's changed bytes
    sealFrame(bad, target.offset, target.payload.length);
    const img = new ReplicaImage();
    let err: unknown;
    try {
      img.push(bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StreamError);
    expect((err as StreamError).code).toBe('ECRC');
    expect((err as Error).message).toMatch(/decoded pages do not match the writer's checksum/);
    expect(img.epoch).toBe(3);
  });

  test('a delta against a page the replica does not hold as the writer thinks: refused, not applied', async () => {
    const { kvm, bytes } = await deltaStream(b, 6);
    kvm.close();
    const frames = new FrameDecoder().push(Buffer.from(bytes));
    const commit3 = frames.filter((f) => f.type === FrameType.Commit)[3];
    const upTo = commit3.offset + 36 + commit3.payload.length;
    const img = new ReplicaImage();
    img.push(Buffer.from(bytes.subarray(0, upTo)));
    expect(img.epoch).toBe(3);
    // the replica's copy of one stride page differs from what the writer sent
    const page = 30 * 4096; // the stride's second page, gfn DATA_GFN + 30
    img.memory[1][page + 100] ^= 1;
    const before = Buffer.from(img.memory[1]);
    expect(() => img.push(Buffer.from(bytes.subarray(upTo)))).toThrow(/ECRC: epoch 4 part 0: the decoded pages do not match/);
    expect(img.epoch).toBe(3);
    expect(img.memory[1].equals(before)).toBe(true);
  });

  test('plain streams (delta: false) still read, and carry the same memory', async () => {
    const kvm = b.open();
    try {
      const m = createMachine(kvm, { dataPages: 256, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 8 }) });
      const sink = new CaptureSink();
      await new Checkpointer({ machine: m, sink, epochMs: 60_000, delta: false }).run({ epochs: 5 });
      const bytes = Buffer.concat(sink.chunks);
      expect(new FrameDecoder().push(bytes).some((f) => f.type === FrameType.EpochDelta)).toBe(false);
      const img = new ReplicaImage();
      img.push(bytes);
      m.slots.forEach((s, i) => expect(img.memory[i].equals(s.bytes)).toBe(true));
    } finally {
      kvm.close();
    }
  });
});
