// Each workload writes exactly the pages it should, seen through guest memory, the dirty ring
// and the dirty bitmap: the x86-64 code on the real /dev/kvm (native) and the model on the
// emulator, one suite for both.
//
//   gfn 0 .. 511       slot 0  harness (page tables + code), not logged unless a test says so
//   gfn 512 .. 1535    slot 1  logged (test/helpers/guest.ts)
//
// On this PVM host every emulated guest write is logged (kernel-semantics.md §18.4), so exact
// ring comparisons use workloads that write each page once per epoch; random's ring is
// compared as a set.
import { DirtyPages, ExitReason, MemFlag, Workload, type Kvm, type Vcpu, type Vm } from '../lib';
import { describeEachBackend } from './helpers/backends';
import { DATA_GFN, DATA_SLOT, makeGuest, range, uniqSorted } from './helpers/guest';

const PAGE = 4096;

/** The spec's xorshift64 sequence of pages. */
function randomPages(seed: bigint, firstPage: number, span: number, count: number): number[] {
  let x = seed === 0n ? 1n : seed;
  const pages: number[] = [];
  for (let i = 0; i < count; i++) {
    x = BigInt.asUintN(64, x ^ (x << 13n));
    x ^= x >> 7n;
    x = BigInt.asUintN(64, x ^ (x << 17n));
    pages.push(firstPage + Number(x % BigInt(span)));
  }
  return pages;
}

/** Harvests the whole ring as gfns of slot `slot` (which starts at `base`). */
function harvestGfns(vcpu: Vcpu, slot = DATA_SLOT, base = DATA_GFN): number[] {
  const out = new DirtyPages(65536);
  vcpu.dirtyRing!.harvest(out);
  const gfns: number[] = [];
  for (let i = 0; i < out.length; i++) {
    expect(out.slots[i]).toBe(slot);
    gfns.push(base + out.offsets[i]);
  }
  return gfns;
}

function expectEpochExit(vcpu: Vcpu, epoch: number): void {
  const exit = vcpu.run();
  expect(exit.reason).toBe(ExitReason.Io);
  expect(exit.io).toMatchObject({ port: 0x10, direction: 'out', size: 1, value: epoch & 0xff });
}

describeEachBackend('guest workloads', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('stride, ring: exactly its pages, in order, once per epoch, holding the epoch', () => {
    const g = makeGuest(kvm, { ringFor: 2048 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 10, stridePages: 3 }));
    const pages = range(600, 10, 3);
    for (let epoch = 1; epoch <= 4; epoch++) {
      expectEpochExit(g.vcpu, epoch);
      expect(harvestGfns(g.vcpu)).toEqual(pages);
      expect(g.vm.resetDirtyRings()).toBe(10);
      for (const p of pages) expect(g.word(p)).toBe(BigInt(epoch));
      expect([g.word(601), g.word(630), g.word(599)]).toEqual([0n, 0n, 0n]);
    }
  });

  test('stride, bitmap: exactly its pages per epoch', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 700, pages: 64, stridePages: 5 }));
    expect(g.vm.getDirtyLog(DATA_SLOT).count()).toBe(0);
    for (let epoch = 1; epoch <= 3; epoch++) {
      expectEpochExit(g.vcpu, epoch);
      expect(g.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual(range(700 - DATA_GFN, 64, 5));
    }
    expect(g.word(700 + 63 * 5)).toBe(3n);
  });

  test('the epoch OUT carries the low byte: epoch 256 sends 0', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 512, pages: 1 }));
    for (let epoch = 1; epoch <= 257; epoch++) expectEpochExit(g.vcpu, epoch);
    expect(g.word(512)).toBe(257n);
  });

  test('page tables and code are never logged, even in a logged slot that holds them', () => {
    const vm: Vm = kvm.createVm();
    vm.enableDirtyRing(kvm.dirtyRingLimits().bytesFor(2048));
    const mem = vm.createMemory(4 * 1024 * 1024); // gfn 0..1023, one logged slot
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, flags: MemFlag.LogDirtyPages });
    const vcpu = vm.createVcpu(0);
    for (const w of [Workload.stride({ firstPage: 512, pages: 8, stridePages: 64 }), Workload.counter({ page: 1000 })]) {
      vcpu.load(w);
      for (let i = 0; i < 3; i++) {
        expect(vcpu.run().reason).toBe(ExitReason.Io);
        const gfns = harvestGfns(vcpu, 0, 0);
        expect(gfns.length).toBeGreaterThan(0);
        expect(gfns.filter((gfn) => gfn < 512)).toEqual([]);
        vm.resetDirtyRings();
      }
    }
  });

  test('page tables and code are never logged: bitmap over the whole guest', () => {
    const vm: Vm = kvm.createVm();
    const mem = vm.createMemory(4 * 1024 * 1024);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, flags: MemFlag.LogDirtyPages });
    const vcpu = vm.createVcpu(0);
    vcpu.load(Workload.stride({ firstPage: 520, pages: 3, stridePages: 100 }));
    for (let epoch = 1; epoch <= 3; epoch++) {
      expectEpochExit(vcpu, epoch);
      expect(vm.getDirtyLog(0).toArray()).toEqual([520, 620, 720]);
    }
  });

  test('random: xorshift64 pages across epochs; bitmap and ring give the same set', () => {
    const spec = { firstPage: 800, spanPages: 300, pagesPerEpoch: 40, seed: 12345n };
    const expected = randomPages(spec.seed, spec.firstPage, spec.spanPages, 3 * spec.pagesPerEpoch);

    const bm = makeGuest(kvm);
    bm.vcpu.load(Workload.random(spec));
    const ring = makeGuest(kvm, { ringFor: 2048 });
    ring.vcpu.load(Workload.random(spec));
    for (let epoch = 1; epoch <= 3; epoch++) {
      const pages = expected.slice((epoch - 1) * 40, epoch * 40);
      expectEpochExit(bm.vcpu, epoch);
      expect(bm.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual(uniqSorted(pages).map((p) => p - DATA_GFN));
      for (const p of pages) expect(bm.word(p)).toBe(BigInt(epoch));

      expectEpochExit(ring.vcpu, epoch);
      const gfns = harvestGfns(ring.vcpu);
      expect(uniqSorted(gfns)).toEqual(uniqSorted(pages));
      // upstream logs a page once per protect cycle; this PVM host logs every write
      expect(gfns.length).toBeGreaterThanOrEqual(uniqSorted(pages).length);
      expect(gfns.length).toBeLessThanOrEqual(pages.length);
      expect(ring.vm.resetDirtyRings()).toBe(gfns.length);
    }
  });

  test('random: seed 0 is seed 1; load() again restarts the sequence at epoch 1', () => {
    const g = makeGuest(kvm);
    const w = Workload.random({ firstPage: 512, spanPages: 1000, pagesPerEpoch: 1, seed: 0 });
    const [p1, p2] = randomPages(1n, 512, 1000, 2);
    g.vcpu.load(w);
    expectEpochExit(g.vcpu, 1);
    expectEpochExit(g.vcpu, 2);
    expect([g.word(p1), g.word(p2)]).toEqual(p1 === p2 ? [2n, 2n] : [1n, 2n]);
    g.vm.getDirtyLog(DATA_SLOT);
    g.vcpu.load(w);
    expectEpochExit(g.vcpu, 1);
    expect(g.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual([p1 - DATA_GFN]);
    expect(g.word(p1)).toBe(1n);
  });

  test('counter: increments its u64 and exits on port 0x11 with the low 32 bits', () => {
    const g = makeGuest(kvm, { ringFor: 2048 });
    g.vcpu.load(Workload.counter({ page: 900 }));
    for (let v = 1; v <= 5; v++) {
      const exit = g.vcpu.run();
      expect(exit.reason).toBe(ExitReason.Io);
      expect(exit.io).toMatchObject({ port: 0x11, direction: 'out', size: 4, value: v });
      expect(g.word(900)).toBe(BigInt(v));
      expect(harvestGfns(g.vcpu)).toEqual([900]);
      expect(g.vm.resetDirtyRings()).toBe(1);
    }
    // the host sets the counter; the guest reads it back: 0xffffffff + 1 sends 0
    new DataView(g.data.buffer).setBigUint64((900 - DATA_GFN) * PAGE, 0xffff_ffffn, true);
    expect(g.vcpu.run().io).toMatchObject({ port: 0x11, size: 4, value: 0 });
    expect(g.word(900)).toBe(0x1_0000_0000n);
  });

  test('spin: writes nothing until kicked', async () => {
    const g = makeGuest(kvm, { ringFor: 2048 });
    g.vcpu.load(Workload.spin());
    const running = g.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 100));
    g.vcpu.kick();
    expect((await running).reason).toBe(ExitReason.Intr);
    expect(g.vcpu.dirtyRing!.pending()).toBe(0);
  });

  test('a full ring stops the vCPU; after harvest + reset the epoch resumes where it stopped', () => {
    // The host's smallest ring (256 entries, soft limit 192; PML: 1024 and 448), P pages per
    // epoch between the two (220; PML: 700); reset only when the ring is full. Upstream stops
    // each epoch at the soft limit and resumes it; this PVM host pushes the whole epoch (still
    // below the hard size) and stops at the next KVM_RUN. Either way each epoch logs its P
    // pages once, in order.
    const limits = kvm.dirtyRingLimits();
    const soft = limits.softLimit(limits.minBytes);
    const P = soft + Math.floor(((limits.minBytes / 16 - soft) * 7) / 16);
    const g = makeGuest(kvm, { ringBytes: limits.minBytes });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: P }));
    let fullExits = 0;
    for (let epoch = 1; epoch <= 3; epoch++) {
      const gfns: number[] = [];
      for (;;) {
        const exit = g.vcpu.run();
        gfns.push(...harvestGfns(g.vcpu));
        if (exit.reason !== ExitReason.DirtyRingFull) {
          expect(exit.io).toMatchObject({ port: 0x10, value: epoch });
          break;
        }
        fullExits++;
        g.vm.resetDirtyRings();
      }
      expect(gfns).toEqual(range(600, P));
    }
    expect(fullExits).toBeGreaterThanOrEqual(2);
    for (const p of range(600, P)) expect(g.word(p)).toBe(3n);
  });

  test('a slot far above the others is mapped too (the harness maps up to the highest slot)', () => {
    const g = makeGuest(kvm, { ringFor: 2048 });
    const high = g.vm.createMemory(2 * 1024 * 1024);
    const highGfn = (40 * 2 ** 30) / PAGE; // 40 GiB
    g.vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: highGfn * PAGE, memory: high, flags: MemFlag.LogDirtyPages });
    g.vcpu.load(Workload.stride({ firstPage: highGfn + 1, pages: 4, stridePages: 100 }));
    expectEpochExit(g.vcpu, 1);
    expect(harvestGfns(g.vcpu, 2, highGfn)).toEqual(range(highGfn + 1, 4, 100));
    const view = new DataView(high.buffer);
    expect(range(1, 4, 100).map((p) => view.getBigUint64(p * PAGE, true))).toEqual([1n, 1n, 1n, 1n]);
  });
});
