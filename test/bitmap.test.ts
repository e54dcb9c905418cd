// KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG with and without manual protect, on both backends
// (kernel-semantics.md §11-§14, the tables of §18.2).
import { DirtyBitmap, ExitReason, MemFlag, Workload, type Kvm } from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';
import { DATA_GFN, DATA_SLOT, makeGuest, range } from './helpers/guest';

const offsets = (gfns: number[]) => gfns.map((g) => g - DATA_GFN);

describeEachBackend('dirty bitmap', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('exactly the written pages; a second get is empty; pages written after a get are reported by the next', () => {
    const g = makeGuest(kvm, { dataPages: 1000 });
    expect(g.vm.getDirtyLog(DATA_SLOT).count()).toBe(0);
    g.vcpu.load(Workload.stride({ firstPage: 522, pages: 70, stridePages: 2 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    const bm = g.vm.getDirtyLog(DATA_SLOT);
    expect(bm.pages).toBe(1000);
    expect(bm.toArray()).toEqual(offsets(range(522, 70, 2)));
    expect(g.vm.getDirtyLog(DATA_SLOT).count()).toBe(0);
    expect(g.vcpu.run().io?.value).toBe(2);
    expect(g.vm.getDirtyLog(DATA_SLOT, bm).toArray()).toEqual(offsets(range(522, 70, 2)));
    expect(g.word(522)).toBe(2n);
  });

  test('the kernel writes ALIGN(pages, 64) / 8 bytes and leaves the rest of a larger bitmap alone', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(100 * 4096);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: mem, flags: MemFlag.LogDirtyPages });
    const into = new DirtyBitmap(192);
    new Uint8Array(into.buffer).fill(0xaa);
    expect(vm.getDirtyLog(1, into)).toBe(into);
    expect([...new Uint8Array(into.buffer)]).toEqual([...new Array(16).fill(0), ...new Array(8).fill(0xaa)]);
    expect(() => vm.getDirtyLog(1, new DirtyBitmap(99))).toThrow(RangeError);
  });

  test('KVM_GET_DIRTY_LOG errno table', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(100 * 4096);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.createMemory(16 * 4096) });
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: mem, flags: MemFlag.LogDirtyPages });
    expectKvmError(() => vm.getDirtyLog(0), 'ENOENT', 'KVM_GET_DIRTY_LOG'); // no logging
    expectKvmError(() => vm.getDirtyLog(5), 'ENOENT', 'KVM_GET_DIRTY_LOG'); // no slot
    for (const slot of [32764, 32767, (1 << 16) | 1, (2 << 16) | 1]) expectKvmError(() => vm.getDirtyLog(slot), 'EINVAL', 'KVM_GET_DIRTY_LOG');
  });

  test('KVM_CLEAR_DIRTY_LOG alignment and range table (100-page slot)', () => {
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.createMemory(16 * 4096) });
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: vm.createMemory(100 * 4096), flags: MemFlag.LogDirtyPages });
    const m = new DirtyBitmap(128);
    const table: Array<[number, number, string | 0]> = [
      [0, 64, 0], [1, 64, 'EINVAL'], [0, 63, 'EINVAL'], [64, 36, 0], [64, 37, 'EINVAL'], [0, 100, 0], [128, 0, 'EINVAL'], [64, 0, 0],
    ];
    for (const [first, n, code] of table) {
      if (code === 0) vm.clearDirtyLog(1, first, n, m);
      else expectKvmError(() => vm.clearDirtyLog(1, first, n, m), code, 'KVM_CLEAR_DIRTY_LOG');
    }
    expectKvmError(() => vm.clearDirtyLog(0, 0, 64, m), 'ENOENT'); // no bitmap
    expectKvmError(() => vm.clearDirtyLog(5, 0, 64, m), 'ENOENT'); // no slot
    expectKvmError(() => vm.clearDirtyLog(5, 1, 64, m), 'EINVAL'); // alignment is checked before the slot lookup
    expectKvmError(() => vm.clearDirtyLog(32767, 1, 64, m), 'EINVAL');
    expect(() => vm.clearDirtyLog(1, 0, 100, new DirtyBitmap(64))).toThrow(RangeError);
  });

  test('manual protect: get does not clear; clear clears (and re-arms) only the given bits', () => {
    const g = makeGuest(kvm, { dataPages: 256, manualProtect: 1 });
    g.vcpu.load(Workload.stride({ firstPage: 512, pages: 3 }));
    g.vcpu.run();
    expect(g.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual([0, 1, 2]);
    expect(g.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual([0, 1, 2]);
    g.vm.clearDirtyLog(DATA_SLOT, 0, 64, DirtyBitmap.of(64, [0, 1, 5]));
    expect(g.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual([2]);
    g.vcpu.load(Workload.stride({ firstPage: 512, pages: 4 }));
    g.vcpu.run();
    expect(g.vm.getDirtyLog(DATA_SLOT).toArray()).toEqual([0, 1, 2, 3]);
    // A clear of the whole slot (256 pages, a multiple of 64) empties it.
    g.vm.clearDirtyLog(DATA_SLOT, 0, 256, DirtyBitmap.of(256, range(0, 256)));
    expect(g.vm.getDirtyLog(DATA_SLOT).count()).toBe(0);
  });

  test('INITIALLY_SET: a slot created afterwards starts all ones; an older slot is untouched', () => {
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: vm.createMemory(100 * 4096), flags: MemFlag.LogDirtyPages });
    vm.enableManualDirtyLogProtect(3);
    expect(vm.getDirtyLog(1).count()).toBe(0);
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x200000, memory: vm.createMemory(100 * 4096), flags: MemFlag.LogDirtyPages });
    const bm = vm.getDirtyLog(2);
    const w = new DataView(bm.buffer);
    expect([w.getBigUint64(0, true), w.getBigUint64(8, true)]).toEqual([0xffff_ffff_ffff_ffffn, 0x0000_000f_ffff_ffffn]);
    expect(vm.getDirtyLog(2).count()).toBe(100);
    vm.clearDirtyLog(2, 0, 64, DirtyBitmap.of(64, [0, 1, 2, 3]));
    expect(vm.getDirtyLog(2).count()).toBe(96);
    const ones = new DirtyBitmap(128);
    new Uint8Array(ones.buffer).fill(0xff);
    vm.clearDirtyLog(2, 64, 36, ones); // bits past the slot's end are ignored
    const w2 = new DataView(vm.getDirtyLog(2).buffer);
    expect([w2.getBigUint64(0, true), w2.getBigUint64(8, true)]).toEqual([0xffff_ffff_ffff_fff0n, 0n]);
  });

  test('logging off frees the bitmap (ENOENT); on again allocates a new one (INITIALLY_SET again)', () => {
    const vm = kvm.createVm();
    vm.enableManualDirtyLogProtect(3);
    const mem = vm.createMemory(100 * 4096);
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x200000, memory: mem, flags: MemFlag.LogDirtyPages });
    vm.clearDirtyLog(2, 0, 100, DirtyBitmap.of(100, range(0, 100)));
    expect(vm.getDirtyLog(2).count()).toBe(0);
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x200000, memory: mem, flags: 0 });
    expectKvmError(() => vm.getDirtyLog(2), 'ENOENT', 'KVM_GET_DIRTY_LOG');
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x200000, memory: mem, flags: MemFlag.LogDirtyPages });
    expect(vm.getDirtyLog(2).count()).toBe(100);
  });
});
