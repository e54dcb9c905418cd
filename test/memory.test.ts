// Guest memory: zero-copy buffer and views, their limits, and what closing does to them.
import { ExitReason, MemFlag, Workload, type Kvm } from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';

describeEachBackend('guest memory', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('buffer and view() share the same bytes; bad ranges are RangeErrors; closed is EBADF', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(16 * 4096);
    expect(mem.size).toBe(65536);
    expect(mem.buffer.byteLength).toBe(65536);
    const v = mem.view(4096, 8);
    v[0] = 0xab;
    expect(new Uint8Array(mem.buffer)[4096]).toBe(0xab);
    expect(mem.view().length).toBe(65536);
    expect(() => mem.view(65537, 0)).toThrow(RangeError);
    expect(() => mem.view(4096, 65536)).toThrow(RangeError);
    expect(() => mem.view(-1, 1)).toThrow(RangeError);
    expect(() => vm.createMemory(4095)).toThrow(RangeError);
    expect(() => vm.createMemory(0)).toThrow(RangeError);
    mem.close();
    expect(v.length).toBe(0);
    expectKvmError(() => mem.view(0, 1), 'EBADF');
    // A closed memory cannot back a new slot.
    expectKvmError(() => vm.setUserMemoryRegion({ slot: 1, memory: mem }), 'EBADF', 'KVM_SET_USER_MEMORY_REGION');
  });

  test('memory of another VM is refused', () => {
    const a = kvm.createVm();
    const c = kvm.createVm();
    expect(() => c.setUserMemoryRegion({ slot: 0, memory: a.createMemory(4096) })).toThrow(TypeError);
  });
});

describeEachBackend('guest memory above 4 GiB', (b) => {
  test('an 8 GiB slot: view() reaches past 4 GiB and the guest writes there', () => {
    const kvm = b.open();
    try {
      const vm = kvm.createVm();
      let mem;
      try {
        mem = vm.createMemory(8 * 2 ** 30);
      } catch (e) {
        // The emulator's memory is a real ArrayBuffer: it may refuse 8 GiB (RangeError), as V8 does.
        expect(b.name).toBe('emulator');
        expect((e as Error).name).toBe('RangeError');
        return;
      }
      vm.setUserMemoryRegion({ slot: 0, memory: mem, flags: MemFlag.LogDirtyPages });
      const page = 5 * 2 ** 18 + 3; // 5 GiB + 3 pages
      const v = vm.createVcpu(0);
      v.load(Workload.stride({ firstPage: page, pages: 1 }));
      expect(v.run().reason).toBe(ExitReason.Io);
      expect(new DataView(mem.view(page * 4096, 8).buffer, mem.view(page * 4096, 8).byteOffset).getBigUint64(0, true)).toBe(1n);
    } finally {
      kvm.close();
    }
  });
});
