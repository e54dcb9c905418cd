// The native batch harvest (native/ring.cc, one C++ call per harvest) against the TypeScript
// Atomics harvest of lib/ring.ts on the same kernel rings: identical entries, identical ring
// state afterwards, identical reset counts.
//
// Two VMs run the same deterministic workload, so their rings fill identically; VM A is
// harvested by the addon, VM B by the TypeScript loop.
//   gfn 0 .. 511      slot 0  harness
//   gfn 512 .. 1535   slot 1  logged (ring entry offset = gfn - 512)
import { DirtyPages, ExitReason, Workload, type Kvm } from '../lib';
import { DirtyRing } from '../lib/ring';
import { makeGuest, type TestGuest } from './helpers/guest';
import { describeNative } from './helpers/native';


describeNative('native batch harvest', (open) => {
  let kvm: Kvm;
  /** The host's smallest ring (256 entries, soft limit 192; PML: 1024, 448): every epoch below pushes fewer. */
  let RING_BYTES: number;
  beforeEach(() => {
    kvm = open();
    RING_BYTES = kvm.dirtyRingLimits().minBytes;
  });
  afterEach(() => kvm.close());

  function pair(workload: Workload): [TestGuest, TestGuest] {
    const a = makeGuest(kvm, { ringBytes: RING_BYTES });
    const b = makeGuest(kvm, { ringBytes: RING_BYTES });
    a.vcpu.load(workload);
    b.vcpu.load(workload);
    return [a, b];
  }

  test('the backend offers it for a ring, not without one', () => {
    const withRing = makeGuest(kvm, { ringBytes: RING_BYTES });
    expect(typeof withRing.vcpu._handle.harvestRing).toBe('function');
    const without = makeGuest(kvm);
    expect(without.vcpu._handle.harvestRing).toBeUndefined();
  });

  test('same entries, same ring state and same reset counts over epochs that wrap the ring', () => {
    // random writes 100 pages per epoch (repeats included, 90-100 entries): enough epochs to
    // push three ringfuls through the host's smallest ring, so the fetch index wraps.
    const [a, b] = pair(Workload.random({ firstPage: 520, spanPages: 900, pagesPerEpoch: 100, seed: 0x1234_5678_9abcn }));
    const native = a.vcpu.dirtyRing!;
    const js = new DirtyRing(b.vcpu.dirtyRing!.buffer); // no batch: the Atomics loop
    const epochs = Math.ceil((3 * native.entries) / 90);
    const outA = new DirtyPages(100 * epochs);
    const outB = new DirtyPages(100 * epochs);
    let harvested = 0;
    for (let epoch = 1; epoch <= epochs; epoch++) {
      expect(a.vcpu.run()).toEqual(b.vcpu.run());
      // uneven pieces: a few, then a larger max, then whatever is left
      for (const max of [3, 50, undefined]) {
        const n = native.harvest(outA, max);
        expect(js.harvest(outB, max)).toBe(n);
        harvested += n;
      }
      expect(native.pending()).toBe(0);
      expect(new Uint8Array(native.buffer)).toEqual(new Uint8Array(b.vcpu.dirtyRing!.buffer));
      expect(a.vm.resetDirtyRings()).toBe(b.vm.resetDirtyRings());
    }
    expect(harvested).toBeGreaterThan(2 * native.entries);
    expect(native.fetchIndex).toBe(js.fetchIndex);
    expect(outA.length).toBe(outB.length);
    expect(outA.slots.subarray(0, outA.length)).toEqual(outB.slots.subarray(0, outB.length));
    expect(outA.offsets.subarray(0, outA.length)).toEqual(outB.offsets.subarray(0, outB.length));
    expect(new Set(outA.slots.subarray(0, outA.length))).toEqual(new Set([1]));
  });

  test('both stop at the first entry whose flags are not exactly DIRTY, and at the output capacity', () => {
    const [a, b] = pair(Workload.stride({ firstPage: 600, pages: 10 }));
    expect(a.vcpu.run().reason).toBe(ExitReason.Io);
    expect(b.vcpu.run().reason).toBe(ExitReason.Io);
    // entry 4 carries DIRTY | RESET (3): not collectable, as the selftests compare flags == DIRTY
    for (const g of [a, b]) new Uint32Array(g.vcpu.dirtyRing!.buffer)[4 * 4] = 3;
    const native = a.vcpu.dirtyRing!;
    const js = new DirtyRing(b.vcpu.dirtyRing!.buffer);
    const small = [new DirtyPages(3), new DirtyPages(3)];
    expect(native.harvest(small[0])).toBe(3);
    expect(js.harvest(small[1])).toBe(3);
    expect(native.harvest(small[0])).toBe(0); // full
    const rest = [new DirtyPages(16), new DirtyPages(16)];
    expect(native.harvest(rest[0])).toBe(1); // entry 3, then entry 4 (flags 3) stops it
    expect(js.harvest(rest[1])).toBe(1);
    expect([...rest[0].offsets.subarray(0, 1)]).toEqual([600 + 3 * 1 - 512]);
    expect(new Uint8Array(native.buffer)).toEqual(new Uint8Array(b.vcpu.dirtyRing!.buffer));
    expect(a.vm.resetDirtyRings()).toBe(5); // entries 0-3, then entry 4 (the kernel looks only at RESET)
    expect(b.vm.resetDirtyRings()).toBe(5);
  });

  test('the raw call writes from `start` on and never past the shorter output array', () => {
    const g = makeGuest(kvm, { ringBytes: RING_BYTES });
    g.vcpu.load(Workload.stride({ firstPage: 700, pages: 20 }));
    g.vcpu.run();
    const harvest = g.vcpu._handle.harvestRing!;
    const slots = new Uint32Array(12).fill(0xeeeeeeee);
    const offsets = new Float64Array(10).fill(-1);
    expect(harvest(0, 100, slots, offsets, 4)).toBe(6); // room: min(12, 10) - 4
    expect([...offsets]).toEqual([-1, -1, -1, -1, 188, 189, 190, 191, 192, 193]);
    expect([...slots.subarray(10)]).toEqual([0xeeeeeeee, 0xeeeeeeee]);
    // the free-running fetch index is taken modulo the ring size, also past 2^32
    expect(harvest(2 ** 33 + 6, 2, slots, offsets, 0)).toBe(2);
    expect([...offsets.subarray(0, 2)]).toEqual([194, 195]);
    // (errors made in C++ carry the main realm's RangeError: compare names, not classes)
    expect(() => harvest(0, 1, slots, offsets, 11)).toThrow(expect.objectContaining({ name: 'RangeError' }));
    expect(() => harvest(-1, 1, slots, offsets, 0)).toThrow(expect.objectContaining({ name: 'RangeError' }));
  });
});
