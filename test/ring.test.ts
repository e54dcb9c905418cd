// The dirty ring with a real guest (native) or the model (emulator), and on the emulated Intel
// host with PML: epochs, resets, ring full. Ring sizes come from the host (makeGuest ringFor,
// kvm.dirtyRingLimits()): a PML host reserves 576 entries where this one reserves 64.
import { DirtyPages, ExitReason, Workload, type DirtyRing } from '../lib';
import { describeEachBackend } from './helpers/backends';
import { DATA_GFN, DATA_SLOT, makeGuest, range, uniqSorted } from './helpers/guest';

/** Harvests everything pending into page numbers (gfn), checking every entry names slot 1. */
function harvestGfns(ring: DirtyRing, out = new DirtyPages(ring.entries)): number[] {
  out.clear();
  ring.harvest(out);
  const gfns: number[] = [];
  for (let i = 0; i < out.length; i++) {
    expect(out.slots[i]).toBe(DATA_SLOT);
    gfns.push(DATA_GFN + out.offsets[i]);
  }
  return gfns;
}

describeEachBackend('dirty ring', (b) => {
  let kvm: ReturnType<typeof b.open>;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('a stride epoch yields exactly the pages it wrote; reset returns the number harvested; the next epoch yields them again', () => {
    const g = makeGuest(kvm, { ringFor: 128 });
    const ring = g.vcpu.dirtyRing!;
    const pages = range(600, 64, 3);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 64, stridePages: 3 }));
    for (let epoch = 1; epoch <= 3; epoch++) {
      const exit = g.vcpu.run();
      expect(exit.reason).toBe(ExitReason.Io);
      expect(exit.io).toEqual({ port: 0x10, direction: 'out', size: 1, count: 1, value: epoch });
      expect(ring.pending()).toBe(64); // each page written once per epoch: one entry each
      const got = harvestGfns(ring);
      expect(got).toEqual(pages); // in the order written
      expect(ring.pending()).toBe(0);
      expect(g.vm.resetDirtyRings()).toBe(64);
      expect(g.vm.resetDirtyRings()).toBe(0);
      for (const p of pages) expect(g.word(p)).toBe(BigInt(epoch));
      expect(g.word(601)).toBe(0n);
    }
  });

  test('partial harvest: reset re-arms only the collected prefix', () => {
    const g = makeGuest(kvm, { ringFor: 20 });
    const ring = g.vcpu.dirtyRing!;
    g.vcpu.load(Workload.stride({ firstPage: 700, pages: 10 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    const out = new DirtyPages(16);
    expect(ring.harvest(out, 4)).toBe(4);
    expect(g.vm.resetDirtyRings()).toBe(4);
    expect(ring.pending()).toBe(6);
    out.clear();
    expect(ring.harvest(out)).toBe(6);
    expect([...out.offsets.subarray(0, 6)]).toEqual(range(700 - DATA_GFN + 4, 6));
    expect(g.vm.resetDirtyRings()).toBe(6);
  });

  test('ring full: the vCPU stops at the soft limit, cannot run on without a reset, and no page is lost', () => {
    // The host's smallest ring: 256 entries, soft limit 192 here (PML: 1024 and 448); one
    // epoch writes P distinct pages between the soft limit and the ring's size (never more
    // than the ring holds: DESIGN §5): 220 here, 700 with PML.
    const limits = kvm.dirtyRingLimits();
    const entries = limits.minBytes / 16;
    const soft = limits.softLimit(limits.minBytes);
    const P = soft + Math.floor(((entries - soft) * 7) / 16);
    const g = makeGuest(kvm, { ringBytes: limits.minBytes });
    const ring = g.vcpu.dirtyRing!;
    expect(ring.entries).toBe(entries);
    const out = new DirtyPages(entries);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: P }));
    const seen: number[] = [];
    const fullAt: number[] = [];
    let exit = g.vcpu.run();
    if (kvm.hostInfo.flavour !== 'kvm_pvm') {
      // Upstream: exit right after the push that reached the soft limit, that write retired.
      expect(exit.reason).toBe(ExitReason.DirtyRingFull);
      expect(ring.pending()).toBe(soft);
      expect(g.word(600 + soft - 1)).toBe(1n);
      expect(g.word(600 + soft)).toBe(0n);
    }
    for (let guard = 0; exit.reason !== ExitReason.Io && guard < 10; guard++) {
      expect(exit.reason).toBe(ExitReason.DirtyRingFull);
      const pending = ring.pending();
      fullAt.push(pending);
      expect(pending).toBeGreaterThanOrEqual(soft);
      // Without a reset the vCPU exits again at once and pushes nothing.
      expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
      expect(ring.pending()).toBe(pending);
      seen.push(...harvestGfns(ring, out));
      expect(g.vm.resetDirtyRings()).toBe(pending);
      exit = g.vcpu.run();
    }
    expect(exit.io?.value).toBe(1);
    seen.push(...harvestGfns(ring, out));
    g.vm.resetDirtyRings();
    expect(uniqSorted(seen)).toEqual(range(600, P));
    for (const p of range(600, P)) expect(g.word(p)).toBe(1n);
    if (kvm.hostInfo.flavour === 'kvm_pvm') {
      // PVM's batch emulation usually passes the soft limit within a run (DESIGN §5); a run
      // interrupted and re-entered on a busy host stops at it instead. Either way, a vCPU
      // whose ring is at or past the soft limit when it enters exits at once, pushing nothing.
      g.vcpu.load(Workload.stride({ firstPage: 600, pages: P }));
      const again: number[] = [];
      let e = g.vcpu.run();
      for (let guard = 0; e.reason === ExitReason.DirtyRingFull && guard < 10; guard++) {
        const pending = ring.pending();
        expect(pending).toBeGreaterThanOrEqual(soft);
        again.push(...harvestGfns(ring, out));
        expect(g.vm.resetDirtyRings()).toBe(pending);
        e = g.vcpu.run();
      }
      expect(e.io?.value).toBe(1);
      const pending = ring.pending();
      if (pending >= soft) {
        expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
        expect(ring.pending()).toBe(pending);
      }
      again.push(...harvestGfns(ring, out));
      expect(g.vm.resetDirtyRings()).toBe(pending);
      expect(uniqSorted(again)).toEqual(range(600, P));
    } else {
      expect(fullAt).toEqual([soft]);
    }
  });

  test('two vCPUs: each has its own ring; one reset covers both and returns the sum', () => {
    const g = makeGuest(kvm, { ringFor: 8, vcpus: 2 });
    const [v0, v1] = g.vcpusAll;
    v0.load(Workload.stride({ firstPage: 600, pages: 3 }));
    v1.load(Workload.stride({ firstPage: 800, pages: 4 }));
    expect(v0.run().reason).toBe(ExitReason.Io);
    expect(v1.run().reason).toBe(ExitReason.Io);
    expect(harvestGfns(v0.dirtyRing!)).toEqual(range(600, 3));
    expect(harvestGfns(v1.dirtyRing!)).toEqual(range(800, 4));
    expect(g.vm.resetDirtyRings()).toBe(7);
  });

  test('random workload: the pages of the xorshift64 sequence, epoch after epoch', () => {
    const g = makeGuest(kvm, { ringFor: 100 });
    const ring = g.vcpu.dirtyRing!;
    const spec = { firstPage: 600, spanPages: 300, pagesPerEpoch: 50, seed: 12345 };
    g.vcpu.load(Workload.random(spec));
    let x = 12345n;
    const mask = (1n << 64n) - 1n;
    for (let epoch = 1; epoch <= 3; epoch++) {
      const expected: number[] = [];
      for (let i = 0; i < 50; i++) {
        x ^= (x << 13n) & mask;
        x ^= x >> 7n;
        x ^= (x << 17n) & mask;
        expected.push(600 + Number(x % 300n));
      }
      const exit = g.vcpu.run();
      expect(exit.io?.value).toBe(epoch);
      // Upstream logs a page once per protect cycle; PVM logs every write (DESIGN §5): compare sets.
      expect(uniqSorted(harvestGfns(ring))).toEqual(uniqSorted(expected));
      g.vm.resetDirtyRings();
      for (const p of expected) expect(g.word(p)).toBe(BigInt(epoch));
    }
  });

  test('counter: increments its u64 and reports the low 32 bits on port 0x11', () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    g.vcpu.load(Workload.counter({ page: 900 }));
    for (let i = 1; i <= 5; i++) {
      const exit = g.vcpu.run();
      expect(exit.reason).toBe(ExitReason.Io);
      expect(exit.io).toEqual({ port: 0x11, direction: 'out', size: 4, count: 1, value: i });
      expect(g.word(900)).toBe(BigInt(i));
    }
    expect(uniqSorted(harvestGfns(g.vcpu.dirtyRing!))).toEqual([900]);
  });

  test('host writes through memory.buffer are never logged; a slot without logging logs nothing', () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    new Uint8Array(g.data.buffer).fill(7, 0, 4096 * 10);
    g.vm.setUserMemoryRegion({ slot: DATA_SLOT, guestPhysAddr: DATA_GFN * 4096, memory: g.data, flags: 0 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 5 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    expect(g.vcpu.dirtyRing!.pending()).toBe(0);
    expect(g.word(600)).toBe(1n);
  });
}, { pml: true });
