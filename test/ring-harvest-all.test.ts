// vm.harvestDirtyRings(): every vCPU's ring in one backend call (native/ring.cc on the kernel's
// rings, the same protocol in TypeScript on the emulator's) against DirtyRing.harvestAll, the
// TypeScript loop over the same rings: identical entries and per-ring counts, identical ring
// state, fetch indexes and reset counts.
//
// Two VMs of three vCPUs run the same stride workloads, so their rings fill identically; VM A
// is harvested with one call per epoch, VM B ring by ring in TypeScript.
//   gfn 0 .. 511      slot 0  harness
//   gfn 512 .. 1535   slot 1  logged (ring entry offset = gfn - 512)
import { DirtyPages, ExitReason, Workload, type Kvm } from '../lib';
import { DirtyRing } from '../lib/ring';
import { describeEachBackend } from './helpers/backends';
import { makeGuest, range } from './helpers/guest';

/** Pages per epoch of vCPU 0, 1, 2: each writes its own pages, each page once per epoch. */
const PAGES = [5, 17, 40];
const FIRST = [600, 700, 800];

describeEachBackend('harvestDirtyRings: all rings in one call', (b) => {
  let kvm: Kvm;
  let ringBytes: number;
  beforeEach(() => {
    kvm = b.open();
    ringBytes = kvm.dirtyRingLimits().minBytes;
  });
  afterEach(() => kvm.close());

  function guest() {
    const g = makeGuest(kvm, { ringBytes, vcpus: 3 });
    g.vcpusAll.forEach((v, i) => v.load(Workload.stride({ firstPage: FIRST[i], pages: PAGES[i] })));
    return g;
  }

  test('the same entries, counts, ring state and resets as the TypeScript loop, epoch after epoch, while the rings wrap', () => {
    const a = guest();
    const g = guest();
    const rings = g.vcpusAll.map((v) => v.dirtyRing!);
    const epochs = Math.ceil((2 * rings[2].entries) / PAGES[2]) + 1;
    const outA = new DirtyPages(64 * 3);
    const outB = new DirtyPages(64 * 3);
    const countsA = new Uint32Array(3);
    const countsB = new Uint32Array(3);
    for (let epoch = 1; epoch <= epochs; epoch++) {
      for (const x of [a, g]) for (const v of x.vcpusAll) expect(v.run().reason).toBe(ExitReason.Io);
      outA.clear();
      outB.clear();
      expect(a.vm.harvestDirtyRings(a.vcpusAll, outA, countsA)).toBe(62);
      expect(DirtyRing.harvestAll(rings, outB, countsB)).toBe(62);
      expect([...countsA]).toEqual(PAGES);
      expect([...countsB]).toEqual(PAGES);
      // ring after ring, each in the order its vCPU wrote
      const offsets = PAGES.flatMap((k, i) => range(FIRST[i] - 512, k));
      expect([...outA.offsets.subarray(0, outA.length)]).toEqual(offsets);
      expect([...outB.offsets.subarray(0, outB.length)]).toEqual(offsets);
      expect([...outA.slots.subarray(0, outA.length)]).toEqual(new Array(62).fill(1));
      a.vcpusAll.forEach((v, i) => {
        expect(v.dirtyRing!.fetchIndex).toBe(epoch * PAGES[i]);
        expect(new Uint8Array(v.dirtyRing!.buffer)).toEqual(new Uint8Array(rings[i].buffer));
      });
      expect(a.vm.resetDirtyRings()).toBe(62);
      expect(g.vm.resetDirtyRings()).toBe(62);
    }
    // vCPU 2's ring wrapped twice: the call follows the fetch index round the ring
    expect(rings[2].fetchIndex).toBeGreaterThan(2 * rings[2].entries);
  });

  test('an output smaller than the rings hold takes ring after ring up to its capacity, as the TypeScript loop does', () => {
    const a = guest();
    const g = guest();
    for (const x of [a, g]) for (const v of x.vcpusAll) v.run();
    const outA = new DirtyPages(30);
    const outB = new DirtyPages(30);
    const countsA = new Uint32Array(4).fill(9);
    const countsB = new Uint32Array(4).fill(9);
    expect(a.vm.harvestDirtyRings(a.vcpusAll, outA, countsA)).toBe(30);
    expect(DirtyRing.harvestAll(g.vcpusAll.map((v) => v.dirtyRing!), outB, countsB)).toBe(30);
    expect([...countsA]).toEqual([5, 17, 8, 9]); // counts beyond the vCPUs are left alone
    expect([...countsB]).toEqual([5, 17, 8, 9]);
    expect(a.vcpusAll[2].dirtyRing!.pending()).toBe(32);
    // the rest comes with the next call, from where each ring stopped
    const rest = new DirtyPages(64);
    expect(a.vm.harvestDirtyRings(a.vcpusAll, rest, countsA)).toBe(32);
    expect([...countsA.subarray(0, 3)]).toEqual([0, 0, 32]);
    expect(rest.offsets[0]).toBe(FIRST[2] - 512 + 8);
    // and a subset of the vCPUs, in the caller's order (re-armed first: the kernel logs a page once per protect cycle)
    expect(a.vm.resetDirtyRings()).toBe(62);
    for (const v of a.vcpusAll) v.run();
    outA.clear();
    expect(a.vm.harvestDirtyRings([a.vcpusAll[1], a.vcpusAll[0]], outA, countsA)).toBe(22);
    expect([...countsA.subarray(0, 2)]).toEqual([17, 5]);
    expect(outA.offsets[0]).toBe(FIRST[1] - 512);
    expect(a.vcpusAll[2].dirtyRing!.pending()).toBe(40);
  });

  test('bad arguments are refused before any ring is touched', () => {
    const a = guest();
    for (const v of a.vcpusAll) v.run();
    const out = new DirtyPages(256);
    const counts = new Uint32Array(3);
    const other = makeGuest(kvm, { ringBytes, vcpus: 1 });
    const noRing = makeGuest(kvm);
    expect(() => a.vm.harvestDirtyRings(a.vcpusAll, out, new Uint32Array(2))).toThrow(RangeError);
    expect(() => a.vm.harvestDirtyRings([...a.vcpusAll, other.vcpu], out, new Uint32Array(4))).toThrow(TypeError);
    expect(() => noRing.vm.harvestDirtyRings([noRing.vcpu], out, counts)).toThrow(TypeError);
    expect(() => a.vm.harvestDirtyRings(a.vcpusAll, {} as DirtyPages, counts)).toThrow(TypeError);
    expect(() => a.vm.harvestDirtyRings(a.vcpusAll, out, [0, 0, 0] as unknown as Uint32Array)).toThrow(TypeError);
    expect(() => a.vm.harvestDirtyRings(a.vcpusAll[0] as never, out, counts)).toThrow(TypeError);
    other.vcpu.close();
    expect(() => other.vm.harvestDirtyRings([other.vcpu], out, counts)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(a.vcpusAll.map((v) => v.dirtyRing!.pending())).toEqual(PAGES);
    expect(out.length).toBe(0);
    a.vm.close();
    expect(() => a.vm.harvestDirtyRings([], out, counts)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
