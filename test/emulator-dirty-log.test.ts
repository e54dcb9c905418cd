// The emulator's dirty bitmap, manual protect and memslots against upstream KVM
// (kernel-semantics.md §11-§14), with the probe results of §18.2.
//
//   guest-physical 0x100000 (gfn 256) ..  slot 1, 100 pages (not a multiple of 64) unless a test says otherwise
import { Cap, DirtyBitmap, MemFlag, Workload, openKvm, type Kvm, type Vm } from '../lib';
import { expectKvmError } from './helpers/backends';
import { DATA_GFN, DATA_SLOT, makeGuest, range } from './helpers/guest';

const PAGE = 4096;
const BASE = 0x100000;

/** The bitmap's u64 words as 16-digit hex, as the probes print them. */
function words(b: DirtyBitmap, n = b.buffer.byteLength / 8): string[] {
  const v = new DataView(b.buffer);
  return range(0, n).map((i) => v.getBigUint64(i * 8, true).toString(16).padStart(16, '0'));
}

function slot100(vm: Vm, slot = 1, flags: number = MemFlag.LogDirtyPages, base = BASE): void {
  vm.setUserMemoryRegion({ slot, guestPhysAddr: base, memory: vm.createMemory(100 * PAGE), flags });
}

/** Guest stores (with vCPU 0's context) to pages `pages` of the slot at BASE. */
function write(vm: Vm, pages: number[]): void {
  for (const p of pages) vm.emulator!.guestWrite(0, BASE + p * PAGE, 8);
}

describe('emulator dirty bitmap (x86_64 profile)', () => {
  let kvm: Kvm;
  beforeEach(() => (kvm = openKvm({ backend: 'emulator' })));
  afterEach(() => kvm.close());

  test('rules 76, 79, 42: GET snapshots, clears and re-protects; host writes are not logged (§18.2 0x7c00)', () => {
    const g = makeGuest(kvm);
    new Uint8Array(g.data.buffer).fill(1, 5 * PAGE, 5 * PAGE + 10); // host write to page 5
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN + 10, pages: 5 }));
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['0000000000007c00']);
    expect(g.vm.getDirtyLog(DATA_SLOT).count()).toBe(0);
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN + 10, pages: 2 }));
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['0000000000000c00']);
  });

  test('rule 79: a page written 100 times over two runs is one bit; pages 0..69 are ffff.. 3f', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN + 5, pages: 50, stridePages: 0 }));
    g.vcpu.run();
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['0000000000000020']);
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN, pages: 70 }));
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 2)).toEqual(['ffffffffffffffff', '000000000000003f']);
  });

  test('rules 77, 87, 89: manual protect: GET copies; CLEAR clears and re-protects (probe64 0x7, 0xf, 0xc, 0xf)', () => {
    const g = makeGuest(kvm, { manualProtect: 1 });
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN, pages: 3 }));
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['0000000000000007']);
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN + 3, pages: 1 }));
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['000000000000000f']);
    g.vm.clearDirtyLog(DATA_SLOT, 0, 64, DirtyBitmap.of(64, [0, 1]));
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['000000000000000c']);
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN, pages: 4 }));
    g.vcpu.run();
    expect(words(g.vm.getDirtyLog(DATA_SLOT), 1)).toEqual(['000000000000000f']);
  });

  test('rules 68, 70, 82, 87: INITIALLY_SET applies to bitmaps created afterwards (§18.2 words)', () => {
    const vm = kvm.createVm();
    slot100(vm, 1);
    vm.enableManualDirtyLogProtect(3);
    slot100(vm, 2, MemFlag.LogDirtyPages, BASE + 0x100000);
    expect(vm.getDirtyLog(1).count()).toBe(0);
    expect(words(vm.getDirtyLog(2))).toEqual(['ffffffffffffffff', '0000000fffffffff']);
    expect(vm.getDirtyLog(2).count()).toBe(100); // manual protect: GET does not clear
    vm.clearDirtyLog(2, 0, 64, DirtyBitmap.of(64, [0, 1, 2, 3]));
    expect(vm.getDirtyLog(2).count()).toBe(96);
    const ones = new DirtyBitmap(64);
    new Uint8Array(ones.buffer).fill(0xff);
    vm.clearDirtyLog(2, 64, 36, ones); // bits past the slot's end have no effect
    expect(words(vm.getDirtyLog(2))).toEqual(['fffffffffffffff0', '0000000000000000']);
    // rule 69: logging off drops the bitmap; on again allocates a new one (INITIALLY_SET again)
    const mem = vm.createMemory(100 * PAGE);
    vm.setUserMemoryRegion({ slot: 3, guestPhysAddr: 0x800000, memory: mem, flags: MemFlag.LogDirtyPages });
    vm.setUserMemoryRegion({ slot: 3, guestPhysAddr: 0x800000, memory: mem, flags: 0 });
    expectKvmError(() => vm.getDirtyLog(3), 'ENOENT', 'KVM_GET_DIRTY_LOG');
    vm.setUserMemoryRegion({ slot: 3, guestPhysAddr: 0x800000, memory: mem, flags: MemFlag.LogDirtyPages });
    expect(vm.getDirtyLog(3).count()).toBe(100);
  });

  test('rule 69: a move keeps the bitmap (old->dirty_bitmap is reused) and write-protects the slot again', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(100 * PAGE);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory: mem, flags: MemFlag.LogDirtyPages });
    vm.createVcpu(0);
    write(vm, [3, 4]);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BASE + 0x400000, memory: mem, flags: MemFlag.LogDirtyPages });
    expect(vm.getDirtyLog(1).toArray()).toEqual([3, 4]);
    vm.emulator!.guestWrite(0, BASE + 0x400000 + 3 * PAGE);
    vm.emulator!.guestWrite(0, BASE + 3 * PAGE); // the old address is no RAM any more
    expect(vm.getDirtyLog(1).toArray()).toEqual([3]);
  });

  test('rule 85 and the CLEAR table of §18.2 (100-page slot)', () => {
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.createMemory(16 * PAGE) }); // no logging
    slot100(vm);
    const m = new DirtyBitmap(128);
    const cases: Array<[number, number, string | 0]> = [
      [0, 64, 0], [1, 64, 'EINVAL'], [0, 63, 'EINVAL'], [64, 36, 0],
      [64, 37, 'EINVAL'], [0, 100, 0], [128, 0, 'EINVAL'], [64, 0, 0],
    ];
    for (const [first, num, want] of cases) {
      if (want === 0) vm.clearDirtyLog(1, first, num, m);
      else expectKvmError(() => vm.clearDirtyLog(1, first, num, m), want, 'KVM_CLEAR_DIRTY_LOG');
    }
    expectKvmError(() => vm.clearDirtyLog(0, 0, 16, m), 'ENOENT', 'KVM_CLEAR_DIRTY_LOG'); // no bitmap
    expectKvmError(() => vm.clearDirtyLog(5, 0, 64, m), 'ENOENT', 'KVM_CLEAR_DIRTY_LOG'); // missing
    expectKvmError(() => vm.clearDirtyLog(5, 1, 64, m), 'EINVAL', 'KVM_CLEAR_DIRTY_LOG'); // alignment first
    expectKvmError(() => vm.clearDirtyLog(32767, 1, 64, m), 'EINVAL', 'KVM_CLEAR_DIRTY_LOG');
    expectKvmError(() => vm.clearDirtyLog(32767, 0, 64, m), 'EINVAL', 'KVM_CLEAR_DIRTY_LOG');
  });

  test('rules 73-74: GET validation order; exactly ALIGN(npages, 64) / 8 bytes are written', () => {
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.createMemory(16 * PAGE) });
    slot100(vm);
    expectKvmError(() => vm.getDirtyLog(0), 'ENOENT', 'KVM_GET_DIRTY_LOG');
    expectKvmError(() => vm.getDirtyLog(5), 'ENOENT', 'KVM_GET_DIRTY_LOG');
    for (const s of [32764, 32767, (1 << 16) | 1, (2 << 16) | 1]) expectKvmError(() => vm.getDirtyLog(s), 'EINVAL', 'KVM_GET_DIRTY_LOG');
    const into = new DirtyBitmap(192);
    new Uint8Array(into.buffer).fill(0xaa);
    vm.getDirtyLog(1, into);
    expect(words(into)).toEqual(['0000000000000000', '0000000000000000', 'aaaaaaaaaaaaaaaa']);
  });

  test('rule 80: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 arguments (2, 4, 7, flags 1 -> EINVAL; 3, 0, 3 -> 0)', () => {
    const vm = kvm.createVm();
    for (const [a, f] of [[2, 0], [4, 0], [7, 0], [1, 1]]) {
      expectKvmError(() => vm.enableCap(Cap.ManualDirtyLogProtect2, [a], f), 'EINVAL', 'KVM_ENABLE_CAP');
    }
    for (const a of [3, 0, 3]) expect(vm.enableCap(Cap.ManualDirtyLogProtect2, [a])).toBe(0);
    vm.createVcpu(0);
    expect(vm.enableCap(Cap.ManualDirtyLogProtect2, [1])).toBe(0); // rule 81: any time
  });

  test('rules 66, 72 and __kvm_set_memory_region(): flags, ids, alignment, overlap, changes, delete', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(64 * PAGE);
    const region = (over: Record<string, unknown>) => () => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BASE, memory: mem, ...over });
    const SET = 'KVM_SET_USER_MEMORY_REGION';
    expectKvmError(region({ flags: 4 }), 'EINVAL', SET);
    expectKvmError(region({ slot: 32764 }), 'EINVAL', SET);
    expectKvmError(region({ slot: (1 << 16) | 1 }), 'EINVAL', SET); // one address space here
    expectKvmError(region({ guestPhysAddr: BASE + 1 }), 'EINVAL', SET);
    expectKvmError(region({ memorySize: PAGE + 1 }), 'EINVAL', SET);
    expectKvmError(region({ memoryOffset: 512, memorySize: PAGE }), 'EINVAL', SET);
    expectKvmError(() => vm.setUserMemoryRegion({ slot: 1, memory: null }), 'EINVAL', SET); // delete a missing slot
    region({})();
    region({})(); // nothing changed: 0
    expectKvmError(region({ slot: 2, guestPhysAddr: BASE + 63 * PAGE }), 'EEXIST', SET);
    expectKvmError(region({ slot: 2, guestPhysAddr: BASE + 63 * PAGE + 1 }), 'EINVAL', SET); // alignment before overlap
    expectKvmError(region({ memorySize: 32 * PAGE }), 'EINVAL', SET); // size of an existing slot
    expectKvmError(region({ memoryOffset: PAGE, memorySize: 63 * PAGE }), 'EINVAL', SET);
    expectKvmError(region({ flags: MemFlag.ReadOnly }), 'EINVAL', SET); // READONLY may not toggle
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: BASE - 64 * PAGE, memory: mem });
    expectKvmError(region({ guestPhysAddr: BASE - 32 * PAGE }), 'EEXIST', SET); // a move onto slot 2
    vm.setUserMemoryRegion({ slot: 1, memory: null });
    expectKvmError(() => vm.getDirtyLog(1), 'ENOENT', 'KVM_GET_DIRTY_LOG');
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: BASE - 64 * PAGE, memory: mem, flags: MemFlag.LogDirtyPages }); // flags only
    expect(vm.getDirtyLog(2).count()).toBe(0);
  });

  test('KVM_CREATE_VCPU: ids below KVM_MAX_VCPU_IDS (4096 measured), EEXIST for a duplicate', () => {
    const vm = kvm.createVm();
    expect(kvm.checkExtension(Cap.MaxVcpuId)).toBe(4096);
    expectKvmError(() => vm.createVcpu(4096), 'EINVAL', 'KVM_CREATE_VCPU');
    expect(vm.createVcpu(4095).id).toBe(4095);
    expectKvmError(() => vm.createVcpu(4095), 'EEXIST', 'KVM_CREATE_VCPU');
  });

  test('KVM_MEM_READONLY: guest stores become MMIO exits and are not logged', () => {
    const g = makeGuest(kvm);
    const ro = g.vm.createMemory(8 * PAGE);
    new Uint8Array(ro.buffer).fill(0x5a);
    g.vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x1000000, memory: ro, flags: MemFlag.LogDirtyPages | MemFlag.ReadOnly });
    g.vcpu.load(Workload.stride({ firstPage: 0x1000, pages: 2 }));
    const exit = g.vcpu.run();
    expect(exit.mmio).toEqual({ physAddr: 0x1000000, len: 8, isWrite: true, data: [1, 0, 0, 0, 0, 0, 0, 0] });
    expect(g.vcpu.run().mmio?.physAddr).toBe(0x1001000);
    expect(g.vcpu.run().io?.value).toBe(1);
    expect(new Uint8Array(ro.buffer)[0]).toBe(0x5a);
    expect(g.vm.getDirtyLog(2).count()).toBe(0);
  });
});

describe('emulator dirty bitmap (s390x profile: no generic READ_PROTECT)', () => {
  let kvm: Kvm;
  beforeEach(() => (kvm = openKvm({ backend: 'emulator', arch: 's390x' })));
  afterEach(() => kvm.close());

  test('no manual protect, no CLEAR (ENOTTY); GET always clears (rule 78); no READONLY slots', () => {
    expect(kvm.checkExtension(Cap.ManualDirtyLogProtect2)).toBe(0);
    const vm = kvm.createVm();
    expectKvmError(() => vm.enableManualDirtyLogProtect(1), 'EINVAL', 'KVM_ENABLE_CAP');
    slot100(vm);
    vm.createVcpu(0);
    write(vm, [1, 2]);
    expect(vm.getDirtyLog(1).toArray()).toEqual([1, 2]);
    expect(vm.getDirtyLog(1).toArray()).toEqual([]);
    write(vm, [1, 3]);
    expect(vm.getDirtyLog(1).toArray()).toEqual([1, 3]);
    expectKvmError(() => vm.clearDirtyLog(1, 0, 64, new DirtyBitmap(64)), 'ENOTTY', 'KVM_CLEAR_DIRTY_LOG');
    expectKvmError(() => slot100(vm, 2, MemFlag.ReadOnly, 0x10000000), 'EINVAL', 'KVM_SET_USER_MEMORY_REGION');
    expectKvmError(() => vm.getDirtyLog(32), 'EINVAL', 'KVM_GET_DIRTY_LOG'); // KVM_USER_MEM_SLOTS = 32
  });
});
