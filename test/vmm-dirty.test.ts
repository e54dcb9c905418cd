// VMM-side writes: memory.write(), dmaWrite() and markVmmDirty() set bits in the memory's VMM
// dirty bitmap, takeVmmDirty() collects and clears them (ORing into the caller's bitmap), and
// KVM's own dirty log never sees these writes, which is why the bitmap exists.
import { DirtyBitmap, MemFlag, Workload, type Kvm } from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';
import { DATA_GFN, DATA_SLOT, makeGuest } from './helpers/guest';

const pagesOf = (b: DirtyBitmap): number[] => {
  const out: number[] = [];
  b.forEach((p) => out.push(p));
  return out;
};

describeEachBackend('VMM dirty bitmap', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('write, dmaWrite and markVmmDirty mark exactly the pages they touch; take collects and clears', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(64 * 4096);
    expect(mem.pages).toBe(64);
    mem.write(4096 * 3 + 100, Uint8Array.from([1, 2, 3]));
    expect(Array.from(mem.view(4096 * 3 + 100, 3))).toEqual([1, 2, 3]);
    mem.write(4096 * 9 - 1, Uint8Array.from([7, 8])); // straddles pages 8 and 9
    mem.dmaWrite(4096 * 40, 3 * 4096, (v) => {
      expect(v.length).toBe(3 * 4096);
      v.fill(0x5a);
    });
    expect(mem.view(4096 * 42, 4096).every((x) => x === 0x5a)).toBe(true);
    new Uint8Array(mem.buffer)[4096 * 20] = 1; // through buffer: untracked ...
    mem.markVmmDirty(4096 * 20, 1); // ... unless marked
    mem.write(4096 * 63, new Uint8Array(0)); // nothing written, nothing marked
    expect(pagesOf(mem.takeVmmDirty())).toEqual([3, 8, 9, 20, 40, 41, 42]);
    expect(pagesOf(mem.takeVmmDirty())).toEqual([]); // cleared
    mem.write(0, Uint8Array.of(1));
    const into = new DirtyBitmap(100).set(70).set(3);
    expect(mem.takeVmmDirty(into)).toBe(into);
    expect(pagesOf(into)).toEqual([0, 3, 70]); // ORed into what was there
  });

  test('dmaWrite marks the pages even when fill throws halfway', () => {
    const mem = kvm.createVm().createMemory(16 * 4096);
    expect(() => mem.dmaWrite(4096 * 5, 4096, () => {
      throw new Error('device failed');
    })).toThrow('device failed');
    expect(pagesOf(mem.takeVmmDirty())).toEqual([5]);
  });

  test('KVM\'s dirty log does not see VMM writes: only the VMM bitmap has them', () => {
    const g = makeGuest(kvm, { dataPages: 64 });
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN + 1, pages: 1 }));
    g.vcpu.run(); // the guest writes page 1 of the slot
    g.data.write(4096 * 10, Uint8Array.of(0xff)); // the VMM writes page 10
    expect(pagesOf(g.vm.getDirtyLog(DATA_SLOT))).toEqual([1]);
    expect(pagesOf(g.data.takeVmmDirty())).toEqual([10]);
    expect(new Uint8Array(g.data.buffer)[4096 * 10]).toBe(0xff);
  });

  test('bad arguments and closed memory', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(4 * 4096);
    vm.setUserMemoryRegion({ slot: 0, memory: mem, flags: MemFlag.LogDirtyPages });
    expect(() => mem.write(4 * 4096 - 1, Uint8Array.of(1, 2))).toThrow(RangeError);
    expect(() => mem.write(-1, Uint8Array.of(1))).toThrow(RangeError);
    expect(() => mem.write(0, [1] as never)).toThrow(TypeError);
    expect(() => mem.dmaWrite(0, 1, 'x' as never)).toThrow(TypeError);
    expect(() => mem.markVmmDirty(0, 4 * 4096 + 1)).toThrow(RangeError);
    expect(() => mem.takeVmmDirty(new DirtyBitmap(3))).toThrow(RangeError);
    expect(() => mem.takeVmmDirty({} as never)).toThrow(TypeError);
    expect(pagesOf(mem.takeVmmDirty())).toEqual([]); // the refused calls marked nothing
    mem.close();
    expectKvmError(() => mem.write(0, Uint8Array.of(1)), 'EBADF');
    expectKvmError(() => mem.dmaWrite(0, 1, () => undefined), 'EBADF');
    expectKvmError(() => mem.markVmmDirty(0, 1), 'EBADF');
    expectKvmError(() => mem.takeVmmDirty(), 'EBADF');
  });
});
