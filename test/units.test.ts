// The public value classes, without any backend.
import fc from 'fast-check';
import { DirtyBitmap, DirtyPages, DirtyRing, Workload, KvmError } from '../lib';

describe('DirtyBitmap', () => {
  test('kernel layout: little-endian u64 words, bit i = page i', () => {
    const b = DirtyBitmap.of(100, [0, 5, 63, 64, 99]);
    expect(b.buffer.byteLength).toBe(16);
    const v = new DataView(b.buffer);
    expect(v.getBigUint64(0, true)).toBe((1n << 0n) | (1n << 5n) | (1n << 63n));
    expect(v.getBigUint64(8, true)).toBe((1n << 0n) | (1n << 35n));
    expect(b.count()).toBe(5);
    expect(b.toArray()).toEqual([0, 5, 63, 64, 99]);
  });

  test('bits past `pages` in the last word are ignored by count/forEach', () => {
    const b = new DirtyBitmap(70);
    new Uint8Array(b.buffer).fill(0xff);
    expect(b.count()).toBe(70);
  });

  test('set/clear/has agree with a Set, for any pages', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), fc.array(fc.nat(), { maxLength: 200 }), (pages, ops) => {
        const b = new DirtyBitmap(pages);
        const ref = new Set<number>();
        for (const x of ops) {
          const p = x % pages;
          if (ref.has(p)) { b.clear(p); ref.delete(p); } else { b.set(p); ref.add(p); }
        }
        expect(b.toArray()).toEqual([...ref].sort((a, c) => a - c));
        expect(b.count()).toBe(ref.size);
      }),
    );
  });

  test('bad pages: RangeError / TypeError', () => {
    const b = new DirtyBitmap(10);
    expect(() => b.set(10)).toThrow(RangeError);
    expect(() => b.has(-1)).toThrow(RangeError);
    expect(() => b.has(1.5)).toThrow(RangeError);
    expect(() => b.has('1' as unknown as number)).toThrow(TypeError);
    expect(() => new DirtyBitmap(-1)).toThrow(RangeError);
    expect(() => new DirtyBitmap(NaN)).toThrow(RangeError);
  });
});

describe('DirtyPages', () => {
  test('capacity, clear, bad capacity', () => {
    const d = new DirtyPages(4);
    expect(d.capacity).toBe(4);
    expect(d.length).toBe(0);
    expect(d.slots).toBeInstanceOf(Uint32Array);
    expect(d.offsets).toBeInstanceOf(Float64Array);
    d.length = 3;
    d.clear();
    expect(d.length).toBe(0);
    expect(() => new DirtyPages(-1)).toThrow(RangeError);
    expect(() => new DirtyPages('3' as unknown as number)).toThrow(TypeError);
  });
});

describe('DirtyRing over a kernel-layout buffer', () => {
  // Plays the kernel's part: push = write slot/offset, then flags = DIRTY.
  function push(buf: ArrayBuffer, index: number, slot: number, offset: number): void {
    const v = new DataView(buf);
    const e = (index % (buf.byteLength / 16)) * 16;
    v.setUint32(e + 4, slot, true);
    v.setBigUint64(e + 8, BigInt(offset), true);
    v.setUint32(e, 1, true);
  }
  const flags = (buf: ArrayBuffer, i: number) => new DataView(buf).getUint32(i * 16, true);

  test('harvest collects DIRTY entries in order, marks them RESET, stops at the first non-DIRTY', () => {
    const buf = new ArrayBuffer(4096);
    const ring = new DirtyRing(buf);
    expect(ring.entries).toBe(256);
    push(buf, 0, 1, 10);
    push(buf, 1, 0x10002, 2 ** 40 + 7);
    push(buf, 3, 1, 99); // a gap at 2: not collected
    expect(ring.pending()).toBe(2);
    const out = new DirtyPages(8);
    expect(ring.harvest(out)).toBe(2);
    expect([...out.slots.subarray(0, 2)]).toEqual([1, 0x10002]);
    expect([...out.offsets.subarray(0, 2)]).toEqual([10, 2 ** 40 + 7]);
    expect([flags(buf, 0), flags(buf, 1), flags(buf, 2), flags(buf, 3)]).toEqual([2, 2, 0, 1]);
    expect(ring.pending()).toBe(0);
    expect(ring.fetchIndex).toBe(2);
  });

  test('harvest never writes past the capacity of out, and honours max', () => {
    const buf = new ArrayBuffer(4096);
    const ring = new DirtyRing(buf);
    for (let i = 0; i < 10; i++) push(buf, i, 1, i);
    const out = new DirtyPages(4);
    expect(ring.harvest(out, 3)).toBe(3);
    expect(ring.harvest(out)).toBe(1);
    expect(ring.harvest(out)).toBe(0);
    expect(out.length).toBe(4);
    out.clear();
    expect(ring.harvest(out, 0)).toBe(0);
    expect(ring.harvest(out)).toBe(4);
    expect([...out.offsets]).toEqual([4, 5, 6, 7]);
  });

  test('the fetch index wraps around the ring', () => {
    const buf = new ArrayBuffer(4096);
    const ring = new DirtyRing(buf);
    const out = new DirtyPages(256);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 200; i++) push(buf, round * 200 + i, 1, round * 1000 + i);
      out.clear();
      expect(ring.harvest(out)).toBe(200);
      expect(out.offsets[0]).toBe(round * 1000);
      expect(out.offsets[199]).toBe(round * 1000 + 199);
      new Uint32Array(buf).forEach((_, j, a) => { if (j % 4 === 0 && a[j] === 2) a[j] = 0; }); // the kernel's reset
    }
  });

  test('bad arguments', () => {
    const ring = new DirtyRing(new ArrayBuffer(4096));
    expect(() => ring.harvest({} as DirtyPages)).toThrow(TypeError);
    expect(() => ring.harvest(new DirtyPages(1), -1)).toThrow(RangeError);
  });
});

describe('Workload', () => {
  test('specs', () => {
    expect(Workload.stride({ firstPage: 512, pages: 4, stridePages: 2 }).spec).toEqual({ kind: 'stride', firstPage: 512, pages: 4, stridePages: 2 });
    expect(Workload.random({ firstPage: 600, spanPages: 10, pagesPerEpoch: 3, seed: 0 }).spec).toEqual({ kind: 'random', firstPage: 600, spanPages: 10, pagesPerEpoch: 3, seed: 1n });
    expect(Workload.random({ firstPage: 600, spanPages: 10, pagesPerEpoch: 3, seed: -1 }).spec).toMatchObject({ seed: 0xffff_ffff_ffff_ffffn });
    expect(Workload.counter({ page: 700 }).spec).toEqual({ kind: 'counter', page: 700 });
    expect(Workload.spin().spec).toEqual({ kind: 'spin' });
  });

  test('pages below 512 belong to the harness', () => {
    expect(() => Workload.stride({ firstPage: 511, pages: 1 })).toThrow(RangeError);
    expect(() => Workload.counter({ page: 0 })).toThrow(/harness/);
    expect(() => Workload.random({ firstPage: 512, spanPages: 0, pagesPerEpoch: 1 })).toThrow(RangeError);
    expect(() => Workload.stride(null as unknown as { firstPage: number; pages: number })).toThrow(TypeError);
    expect(() => Workload.stride({ firstPage: 512, pages: NaN })).toThrow(RangeError);
    // The harness maps 256 GiB: the last page a workload may write is 2^26 - 1.
    expect(Workload.stride({ firstPage: 2 ** 26 - 2, pages: 2 }).spec).toMatchObject({ pages: 2 });
    expect(() => Workload.stride({ firstPage: 2 ** 26 - 2, pages: 3 })).toThrow(/identity map/);
    expect(() => Workload.random({ firstPage: 2 ** 26 - 10, spanPages: 11, pagesPerEpoch: 1 })).toThrow(/identity map/);
    expect(() => Workload.counter({ page: 2 ** 26 })).toThrow(RangeError);
  });
});

describe('KvmError', () => {
  test('shaped like a Node system error', () => {
    const e = new KvmError(22, 'KVM_ENABLE_CAP');
    expect(e).toMatchObject({ name: 'KvmError', code: 'EINVAL', errno: -22, syscall: 'ioctl', ioctl: 'KVM_ENABLE_CAP' });
    expect(e.message).toBe('EINVAL: invalid argument, ioctl KVM_ENABLE_CAP');
    expect(new KvmError(-9).code).toBe('EBADF');
    expect(new KvmError(2, undefined, 'Is KVM loaded and enabled?', 'open').message).toBe('ENOENT: no such file or directory, open (Is KVM loaded and enabled?)');
  });
});
