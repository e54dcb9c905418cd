// The emulator's dirty ring against upstream KVM's rules (kernel-semantics.md §5-§9), with
// the worked examples of §18.2 as upstream would give them (write-protect logging: a page is
// logged once per protect cycle; the PVM deviations of §18.4 are not reproduced).
//
//   gfn 0 .. 511       slot 0  harness (page tables + code), not logged
//   gfn 512 .. 1535    slot 1  logged; entry.offset = gfn - 512
import { Cap, DirtyBitmap, DirtyPages, ExitReason, MemFlag, Workload, openKvm, type Kvm, type Vcpu } from '../lib';
import { STRIDE_GPA } from '../lib/guest/x86';
import { backends, expectKvmError } from './helpers/backends';
import { DATA_GFN, DATA_SLOT, makeGuest, range } from './helpers/guest';
import { expectSameRegs } from './helpers/regs';

const PAGE = 4096;

/** Harvests every DIRTY entry of the vCPU's ring: [slot, offset] pairs, in ring order. */
function harvest(vcpu: Vcpu, max?: number): Array<[number, number]> {
  const out = new DirtyPages(65536);
  vcpu.dirtyRing!.harvest(out, max);
  return Array.from({ length: out.length }, (_, i) => [out.slots[i], out.offsets[i]] as [number, number]);
}

/** struct kvm_dirty_gfn `i` of a ring buffer. */
function entry(ring: ArrayBuffer, i: number): { flags: number; slot: number; offset: bigint } {
  const v = new DataView(ring, i * 16, 16);
  return { flags: v.getUint32(0, true), slot: v.getUint32(4, true), offset: v.getBigUint64(8, true) };
}

function setFlags(ring: ArrayBuffer, i: number, flags: number): void {
  new DataView(ring, i * 16, 4).setUint32(0, flags, true);
}

describe('emulator dirty ring (x86_64 profile)', () => {
  let kvm: Kvm;
  beforeEach(() => (kvm = openKvm({ backend: 'emulator' })));
  afterEach(() => kvm.close());

  test('layout: the kernel sizes (3-page kvm_run, bytes/16 entries of u32 flags, u32 slot, u64 offset)', () => {
    const g = makeGuest(kvm, { ringBytes: 8192 });
    expect(kvm.getVcpuMmapSize()).toBe(3 * PAGE);
    expect(g.vcpu.runBuffer.byteLength).toBe(3 * PAGE);
    const ring = g.vcpu.dirtyRing!;
    expect(ring.buffer.byteLength).toBe(8192);
    expect(ring.entries).toBe(512);
    // rule 28: a new ring is all zeros
    expect(new Uint8Array(ring.buffer).every((b) => b === 0)).toBe(true);
    g.vm.emulator!.guestWrite(0, (DATA_GFN + 10) * PAGE, 8);
    expect(entry(ring.buffer, 0)).toEqual({ flags: 1, slot: DATA_SLOT, offset: 10n });
    expect(entry(ring.buffer, 1)).toEqual({ flags: 0, slot: 0, offset: 0n });
  });

  test('rule 43: a page is logged once per protect cycle, however often it is written', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    // stride 0: page 600 written 50 times per epoch (PVM would log 50 entries, upstream 1)
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 50, stridePages: 0 }));
    expect(g.vcpu.run().io?.value).toBe(1);
    expect(g.vcpu.dirtyRing!.pending()).toBe(1);
    expect(g.vcpu.run().io?.value).toBe(2); // no reset in between: still writable, nothing logged
    expect(harvest(g.vcpu)).toEqual([[DATA_SLOT, 600 - DATA_GFN]]);
    expect(g.vcpu.run().io?.value).toBe(3); // harvested but not reset: still not re-protected
    expect(g.vcpu.dirtyRing!.pending()).toBe(0);
    expect(g.vm.resetDirtyRings()).toBe(1); // re-protects page 600
    expect(g.vcpu.run().io?.value).toBe(4);
    expect(harvest(g.vcpu)).toEqual([[DATA_SLOT, 600 - DATA_GFN]]);
    expect(g.word(600)).toBe(4n);
  });

  test('rules 45-49: a 256-entry ring exits at exactly 192 entries, the 192nd store retired', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN, pages: 220 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    const ring = g.vcpu.dirtyRing!;
    expect(ring.pending()).toBe(192);
    expect(entry(ring.buffer, 191)).toEqual({ flags: 1, slot: DATA_SLOT, offset: 191n });
    expect(g.word(DATA_GFN + 191)).toBe(1n);
    expect(g.word(DATA_GFN + 192)).toBe(0n);
    // stopped right after the store: rip past `mov [rdx], rbx`, rdx and rcx not yet advanced
    const regs = g.vcpu.getRegs();
    expect(regs.rip).toBe(BigInt(STRIDE_GPA + 0x0e));
    expect(regs.rcx).toBe(220n - 191n);
    expect(regs.rdx).toBe(BigInt((DATA_GFN + 191) * PAGE));
    // rule 48: KVM_RUN again without a reset exits at once and pushes nothing
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    expect(ring.pending()).toBe(192);
    expect(harvest(g.vcpu).map(([, o]) => o)).toEqual(range(0, 192));
    // harvested but not reset: still full
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    expect(g.vm.resetDirtyRings()).toBe(192);
    expect(g.vcpu.run().io?.value).toBe(1);
    expect(harvest(g.vcpu).map(([, o]) => o)).toEqual(range(192, 28));
    expect(g.vm.resetDirtyRings()).toBe(28);
    for (const p of range(DATA_GFN, 220)) expect(g.word(p)).toBe(1n);
  });

  test('rule 50: a partial reset while full lets the vCPU go on until the limit again', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN, pages: 220 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    expect(harvest(g.vcpu, 100)).toHaveLength(100);
    expect(g.vm.resetDirtyRings()).toBe(100);
    // 92 outstanding + the 28 pages left = 120 < 192: the epoch completes
    expect(g.vcpu.run().io?.value).toBe(1);
    expect(g.vcpu.dirtyRing!.pending()).toBe(120);
    expect(harvest(g.vcpu)).toHaveLength(120);
    expect(g.vm.resetDirtyRings()).toBe(120);
    // epoch 2 logs all 220 pages again: full after 192, then the last 28
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    expect(harvest(g.vcpu).map(([, o]) => o)).toEqual(range(0, 192));
    expect(g.vm.resetDirtyRings()).toBe(192);
    expect(g.vcpu.run().io?.value).toBe(2);
    expect(harvest(g.vcpu).map(([, o]) => o)).toEqual(range(192, 28));
  });

  test('rules 47-48: pushes without a run (guestWrite with a vCPU) fill the ring; the next run exits at once', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: 900, pages: 1 }));
    for (const p of range(DATA_GFN, 192)) g.vm.emulator!.guestWrite(0, p * PAGE);
    const before = g.vcpu.getRegs();
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    expect(g.vcpu.getRegs()).toEqual(before);
    expect(g.word(900)).toBe(0n);
    expect(harvest(g.vcpu, 1)).toHaveLength(1);
    expect(g.vm.resetDirtyRings()).toBe(1); // 191 < 192: runnable again...
    // ...until the store to page 900 pushes the 192nd entry: it retires, then the vCPU exits
    expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
    expect(g.word(900)).toBe(1n);
    expect(harvest(g.vcpu)).toHaveLength(192); // 191 left + page 900
    expect(g.vm.resetDirtyRings()).toBe(192);
    expect(g.vcpu.run().io?.value).toBe(1);
  });

  test('rules 34, 36, 54: reset stops at the first entry without RESET; flags 3 counts as harvested', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: 542, pages: 2 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    const buf = g.vcpu.dirtyRing!.buffer;
    expect([entry(buf, 0).offset, entry(buf, 1).offset]).toEqual([30n, 31n]);
    setFlags(buf, 1, 2); // out of order: #1 RESET, #0 still DIRTY
    expect(g.vm.resetDirtyRings()).toBe(0);
    expect([entry(buf, 0).flags, entry(buf, 1).flags]).toEqual([1, 2]);
    setFlags(buf, 0, 3); // DIRTY | RESET: bit 0 is ignored
    expect(g.vm.resetDirtyRings()).toBe(2);
    expect([entry(buf, 0).flags, entry(buf, 1).flags]).toEqual([0, 0]);
    expect(g.vm.resetDirtyRings()).toBe(0);
  });

  test('rule 56: entries of a slot deleted before the reset are counted and zeroed', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: 552, pages: 3 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    expect(harvest(g.vcpu)).toHaveLength(3);
    g.vm.setUserMemoryRegion({ slot: DATA_SLOT, memory: null });
    expect(g.vm.resetDirtyRings()).toBe(3);
    expect(entry(g.vcpu.dirtyRing!.buffer, 2).flags).toBe(0);
    // a new slot 1 over the same memory starts write-protected: logged again
    g.vm.setUserMemoryRegion({ slot: DATA_SLOT, guestPhysAddr: DATA_GFN * PAGE, memory: g.data, flags: MemFlag.LogDirtyPages });
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    expect(harvest(g.vcpu).map(([, o]) => o)).toEqual([40, 41, 42]);
  });

  test('rule 58: the worked batching example resets 7 entries and re-protects exactly those pages', () => {
    const vm = kvm.createVm();
    vm.enableDirtyRing(4096);
    const m1 = vm.createMemory(128 * PAGE);
    const m2 = vm.createMemory(64 * PAGE);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: m1, flags: MemFlag.LogDirtyPages });
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x400000, memory: m2, flags: MemFlag.LogDirtyPages });
    const v = vm.createVcpu(0);
    const hook = vm.emulator!;
    const pages: Array<[number, number]> = [[1, 10], [1, 11], [1, 12], [1, 5], [1, 70], [1, 71], [2, 10]];
    const gpa = ([slot, off]: [number, number]) => (slot === 1 ? 0x100000 : 0x400000) + off * PAGE;
    for (const p of pages) hook.guestWrite(0, gpa(p));
    hook.guestWrite(0, gpa([1, 20])); // logged too, but left DIRTY: not reset, not re-protected
    expect(harvest(v, 7)).toEqual(pages);
    expect(vm.resetDirtyRings()).toBe(7);
    for (const p of pages) hook.guestWrite(0, gpa(p));
    hook.guestWrite(0, gpa([1, 20])); // still writable: not logged again
    hook.guestWrite(0, gpa([1, 13])); // never written: protected since the slot was made
    expect(harvest(v)).toEqual([[1, 20], ...pages, [1, 13]]);
  });

  test('rule 58: a batch whose highest page is beyond its (re-created, smaller) slot is not re-protected at all', () => {
    const vm = kvm.createVm();
    vm.enableDirtyRing(4096);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: vm.createMemory(128 * PAGE), flags: MemFlag.LogDirtyPages });
    const v = vm.createVcpu(0);
    const hook = vm.emulator!;
    hook.guestWrite(0, 0x100000 + 95 * PAGE);
    hook.guestWrite(0, 0x100000 + 101 * PAGE);
    expect(harvest(v)).toEqual([[1, 95], [1, 101]]);
    vm.setUserMemoryRegion({ slot: 1, memory: null });
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: vm.createMemory(100 * PAGE), flags: MemFlag.LogDirtyPages });
    hook.guestWrite(0, 0x100000 + 95 * PAGE); // the new slot's page 95: logged, now writable
    expect(vm.resetDirtyRings()).toBe(2); // batch (slot 1, offset 95, bits 0 and 6): 101 >= 100, skipped whole
    hook.guestWrite(0, 0x100000 + 95 * PAGE);
    expect(v.dirtyRing!.pending()).toBe(1); // still writable: not logged again
    expect(harvest(v)).toEqual([[1, 95]]);
    expect(vm.resetDirtyRings()).toBe(1); // batch (1, 95, bit 0): re-protected
    hook.guestWrite(0, 0x100000 + 95 * PAGE);
    expect(harvest(v)).toEqual([[1, 95]]);
  });

  test('rules 47, 54: RESET on an entry never pushed is consumed; the vCPU runs until a push raises the request', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 1 }));
    const buf = g.vcpu.dirtyRing!.buffer;
    setFlags(buf, 0, 2);
    expect(g.vm.resetDirtyRings()).toBe(1); // reset_index 1, dirty_index 0: "used" wraps to 2^32 - 1
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      // no KVM_REQ_DIRTY_RING_SOFT_FULL is pending, so the guest runs; its push (with the
      // kernel's "should never get full" WARN) brings used back to 0
      expect(g.vcpu.run().io?.value).toBe(1);
      expect(warn).toHaveBeenCalledTimes(1);
    } finally {
      warn.mockRestore();
    }
    expect(entry(buf, 0)).toEqual({ flags: 1, slot: DATA_SLOT, offset: BigInt(600 - DATA_GFN) });
    expect(harvest(g.vcpu)).toHaveLength(1);
    expect(g.vm.resetDirtyRings()).toBe(0); // reset_index is past entry 0 already
  });

  test('rules 53, 55, 62: EINVAL without a ring, 0 without vCPUs, one reset sums all vCPUs', () => {
    const plain = kvm.createVm();
    expectKvmError(() => plain.resetDirtyRings(), 'EINVAL', 'KVM_RESET_DIRTY_RINGS');
    const g = makeGuest(kvm, { ringBytes: 4096, vcpus: 2 });
    const [v0, v1] = g.vcpusAll;
    for (const p of range(600, 3)) g.vm.emulator!.guestWrite(0, p * PAGE);
    for (const p of range(700, 4)) g.vm.emulator!.guestWrite(1, p * PAGE);
    expect(harvest(v0)).toEqual(range(600 - DATA_GFN, 3).map((o) => [DATA_SLOT, o]));
    expect(harvest(v1)).toEqual(range(700 - DATA_GFN, 4).map((o) => [DATA_SLOT, o]));
    expect(g.vm.resetDirtyRings()).toBe(7);
    const empty = kvm.createVm();
    empty.enableDirtyRing(4096);
    expect(empty.resetDirtyRings()).toBe(0);
  });

  test('rules 38, 40, 63: unlogged slots log nothing; writes without a vCPU are dropped on x86; bitmap ioctls ENXIO', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      g.vm.emulator!.guestWrite(null, 600 * PAGE);
      g.vm.emulator!.guestWrite(null, 601 * PAGE);
      expect(warn).toHaveBeenCalledTimes(1); // WARN_ON_ONCE
    } finally {
      warn.mockRestore();
    }
    g.vm.emulator!.guestWrite(0, 100 * PAGE); // slot 0 is not logged
    expect(g.vcpu.dirtyRing!.pending()).toBe(0);
    expectKvmError(() => g.vm.getDirtyLog(DATA_SLOT), 'ENXIO', 'KVM_GET_DIRTY_LOG');
    expectKvmError(() => g.vm.getDirtyLog(40000), 'ENXIO', 'KVM_GET_DIRTY_LOG');
    expectKvmError(() => g.vm.clearDirtyLog(DATA_SLOT, 3, 16, new DirtyBitmap(64)), 'ENXIO', 'KVM_CLEAR_DIRTY_LOG');
    // rule 65: manual protect is still accepted
    g.vm.enableManualDirtyLogProtect(1);
  });

  test('rule 22: the ring can be enabled after memslots; their bitmaps become unreachable', () => {
    const vm = kvm.createVm();
    const m = vm.createMemory(16 * PAGE);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: m, flags: MemFlag.LogDirtyPages });
    vm.emulator!.guestWrite(null, 0x100000);
    expect(vm.getDirtyLog(1).toArray()).toEqual([0]);
    expect(vm.enableDirtyRing(8192)).toBe(Cap.DirtyLogRingAcqRel);
    expectKvmError(() => vm.getDirtyLog(1), 'ENXIO', 'KVM_GET_DIRTY_LOG');
    const v = vm.createVcpu(0);
    vm.emulator!.guestWrite(0, 0x101000);
    expect(harvest(v)).toEqual([[1, 1]]);
  });

  test('a vCPU closed with harvested entries: the kernel ring lives on and the reset still counts them', () => {
    const g = makeGuest(kvm, { ringBytes: 4096, vcpus: 2 });
    g.vm.emulator!.guestWrite(1, 600 * PAGE);
    const v1 = g.vcpusAll[1];
    expect(harvest(v1)).toHaveLength(1);
    v1.close();
    expect(v1.runBuffer.byteLength).toBe(0);
    expect(g.vm.resetDirtyRings()).toBe(1);
    expectKvmError(() => g.vm.createVcpu(1), 'EEXIST', 'KVM_CREATE_VCPU');
  });
});

// Where the native backend runs, the emulator's buffers must be byte-for-byte what the kernel
// hands out: same sizes, same ring entries, same kvm_run fields, same registers.
const native = backends().find((b) => b.name === 'native');
(native && !native.skipReason ? describe : describe.skip)('emulator layout equals the native backend\'s', () => {
  test('sizes, ring entries, kvm_run and registers after the same stride epochs', () => {
    const kn = native!.open();
    // the emulator of this host: an Intel host with PML reserves 576 ring entries
    const ke = openKvm({ backend: 'emulator', pml: kn.hostInfo.pml });
    try {
      expect(ke.getVcpuMmapSize()).toBe(kn.getVcpuMmapSize());
      for (const cap of [Cap.DirtyLogRing, Cap.DirtyLogRingAcqRel, Cap.DirtyLogRingWithBitmap, Cap.ManualDirtyLogProtect2, Cap.NrMemslots, Cap.MaxVcpus, Cap.MaxVcpuId, Cap.MultiAddressSpace, Cap.S390CmmaMigration]) {
        expect([cap, ke.checkExtension(cap)]).toEqual([cap, kn.checkExtension(cap)]);
      }
      const [n, e] = [kn, ke].map((k) => makeGuest(k, { ringFor: 64 }));
      for (const g of [n, e]) g.vcpu.load(Workload.stride({ firstPage: 600, pages: 10, stridePages: 7 }));
      for (let epoch = 1; epoch <= 3; epoch++) {
        const [xn, xe] = [n, e].map((g) => g.vcpu.run());
        expect(xe).toEqual(xn);
        expectSameRegs(e.vcpu.getRegs(), n.vcpu.getRegs());
        const runBytes = (g: typeof n) => [...new Uint8Array(g.vcpu.runBuffer, 8, 4), ...new Uint8Array(g.vcpu.runBuffer, 32, 16), new Uint8Array(g.vcpu.runBuffer)[4096]];
        expect(runBytes(e)).toEqual(runBytes(n));
        const ringBytes = (g: typeof n) => Buffer.from(g.vcpu.dirtyRing!.buffer.slice(0, 16 * 30)).toString('hex');
        expect(ringBytes(e)).toEqual(ringBytes(n));
        for (const g of [n, e]) {
          harvest(g.vcpu);
          g.vm.resetDirtyRings();
        }
      }
      expect(Buffer.from(e.data.buffer).equals(Buffer.from(n.data.buffer))).toBe(true);
      expect(Buffer.from(e.harness.buffer).equals(Buffer.from(n.harness.buffer))).toBe(true);
      // MMIO stores past the slot's end, then the counter: exits and registers step by step
      const steps: Array<[Workload, number]> = [
        [Workload.stride({ firstPage: DATA_GFN + 1020, pages: 8 }), 6],
        [Workload.stride({ firstPage: DATA_GFN + 1024, pages: 4 }), 6],
        [Workload.stride({ firstPage: 600, pages: 0 }), 2],
        [Workload.random({ firstPage: DATA_GFN + 1000, spanPages: 300, pagesPerEpoch: 12, seed: 3n }), 20],
        [Workload.counter({ page: 700 }), 20],
        [Workload.counter({ page: 5000 }), 3],
      ];
      for (const [w, runs] of steps) {
        for (const g of [n, e]) g.vcpu.load(w);
        for (let i = 0; i < runs; i++) {
          const [xn, xe] = [n, e].map((g) => g.vcpu.run());
          expect(xe).toEqual(xn);
          expectSameRegs(e.vcpu.getRegs(), n.vcpu.getRegs());
        }
      }
    } finally {
      kn.close();
      ke.close();
    }
  });
});

describe('emulator dirty ring with bitmap (arm64 profile)', () => {
  let kvm: Kvm;
  beforeEach(() => (kvm = openKvm({ backend: 'emulator', arch: 'arm64' })));
  afterEach(() => kvm.close());

  test('rules 11-12, 16: only the ACQ_REL ring is offered', () => {
    expect(kvm.checkExtension(Cap.DirtyLogRing)).toBe(0);
    expect(kvm.checkExtension(Cap.DirtyLogRingAcqRel)).toBe(1048576);
    expect(kvm.checkExtension(Cap.DirtyLogRingWithBitmap)).toBe(1);
    const vm = kvm.createVm();
    expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [4096]), 'EINVAL', 'KVM_ENABLE_CAP');
    expect(vm.enableDirtyRing(4096)).toBe(Cap.DirtyLogRingAcqRel);
  });

  test('rule 25: WITH_BITMAP needs the ring first, flags 0 and no memslot', () => {
    const vm = kvm.createVm();
    expectKvmError(() => vm.enableDirtyRingWithBitmap(), 'EINVAL', 'KVM_ENABLE_CAP');
    vm.enableDirtyRing(4096);
    expectKvmError(() => vm.enableCap(Cap.DirtyLogRingWithBitmap, [], 1), 'EINVAL', 'KVM_ENABLE_CAP');
    vm.enableDirtyRingWithBitmap();
    vm.enableDirtyRingWithBitmap(); // twice is harmless
    const late = kvm.createVm();
    late.enableDirtyRing(4096);
    late.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: late.createMemory(PAGE) });
    expectKvmError(() => late.enableDirtyRingWithBitmap(), 'EINVAL', 'KVM_ENABLE_CAP');
  });

  test('rules 26-27, 39-40: vCPU writes go to the ring, writes without a vCPU to the bitmap, read last with GET', () => {
    const vm = kvm.createVm();
    vm.enableDirtyRing(4096);
    vm.enableDirtyRingWithBitmap();
    const m = vm.createMemory(100 * PAGE);
    vm.setUserMemoryRegion({ slot: 3, guestPhysAddr: 0x200000, memory: m, flags: MemFlag.LogDirtyPages });
    const v = vm.createVcpu(0);
    const hook = vm.emulator!;
    hook.guestWrite(null, 0x200000 + 5 * PAGE, 16); // e.g. a vgic/ITS table save
    hook.guestWrite(null, 0x200000 + 5 * PAGE); // logged every time; one bit
    hook.guestWrite(null, 0x200000 + 99 * PAGE - 1, 2); // crosses into page 99
    hook.guestWrite(0, 0x200000 + 7 * PAGE);
    expect(harvest(v)).toEqual([[3, 7]]);
    expect(vm.resetDirtyRings()).toBe(1);
    expect(vm.getDirtyLog(3).toArray()).toEqual([5, 98, 99]);
    expect(vm.getDirtyLog(3).toArray()).toEqual([]); // GET without manual protect clears
  });

  test('arm64 has no CMMA: the s390 ioctls fail as kvm_arch_vm_ioctl()\'s default (EINVAL)', () => {
    const vm = kvm.createVm();
    expectKvmError(() => vm.getCmmaBits({ startGfn: 0, count: 8 }), 'EINVAL', 'KVM_S390_GET_CMMA_BITS');
    expectKvmError(() => vm.setCmmaBits({ startGfn: 0, values: new Uint8Array(1), mask: -1 }), 'EINVAL', 'KVM_S390_SET_CMMA_BITS');
    expectKvmError(() => vm.setMigrationMode(true), 'ENXIO', 'KVM_SET_DEVICE_ATTR');
    expectKvmError(() => vm.getMigrationMode(), 'EINVAL', 'KVM_GET_DEVICE_ATTR');
    expect(vm.hasDeviceAttr(4, 1)).toBe(false);
    // group 0 attr 0 is KVM_ARM_VM_SMCCC_CTRL / KVM_ARM_VM_SMCCC_FILTER there
    expect(vm.hasDeviceAttr(0, 0)).toBe(true);
    expectKvmError(() => vm.enableCmma(), 'EFAULT', 'KVM_SET_DEVICE_ATTR');
    expect(kvm.checkExtension(Cap.S390CmmaMigration)).toBe(0);
  });
});
