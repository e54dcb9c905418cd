// KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]) and its errno table, on both backends and
// on the emulated Intel host with PML (kernel-semantics.md rules 16-25, measured in §18.2).
// Sizes come from the host: the smallest ring is max(4 KiB, reserved entries * 16) rounded up
// to a power of two, so 4 KiB here and 16 KiB where PML reserves 576 entries.
import { Cap, MemFlag, minRingBytes } from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';

describeEachBackend('dirty ring enable', (b) => {
  const withVm = (fn: (vm: ReturnType<ReturnType<typeof b.open>['createVm']>) => void) => {
    const kvm = b.open();
    try {
      fn(kvm.createVm());
    } finally {
      kvm.close();
    }
  };
  const ringCaps = [Cap.DirtyLogRing, Cap.DirtyLogRingAcqRel];
  const { limits, host } = (() => {
    const kvm = b.open();
    try {
      return { limits: kvm.dirtyRingLimits(), host: kvm.hostInfo };
    } finally {
      kvm.close();
    }
  })();
  const min = limits.minBytes;

  test('the host\'s limits: 64 reserved entries, 576 with PML, told by the backend and confirmed by the kernel', () => {
    if (b.name === 'emulator') expect(host.pml).toBe(b.pml === true); // native: whatever this host has
    expect(limits.reservedEntries).toBe(host.pml ? 576 : 64);
    expect(limits.source).toBe('backend');
    expect(min).toBe(minRingBytes(limits.reservedEntries));
    expect(limits.maxBytes).toBe(1 << 20);
  });

  test.each(ringCaps)('sizes: 0, 3000 and every power of two below the minimum EINVAL; the minimum .. 1 MiB ok; 2 MiB E2BIG (cap %i)', (cap) => {
    const below = [1024, 2048, 4096, 8192].filter((x) => x < min);
    for (const [bytes, code] of [[0, 'EINVAL'], [3000, 'EINVAL'], ...below.map((x) => [x, 'EINVAL']), [1 << 21, 'E2BIG']] as const) {
      withVm((vm) => expectKvmError(() => vm.enableCap(cap, [bytes]), code, 'KVM_ENABLE_CAP'));
    }
    for (let bytes = min; bytes <= 1 << 20; bytes *= 2) withVm((vm) => expect(vm.enableCap(cap, [bytes])).toBe(0));
  });

  test('args[0] is truncated to u32; flags are not checked', () => {
    withVm((vm) => expect(vm.enableCap(Cap.DirtyLogRing, [0x1_0000_0000n + BigInt(min)])).toBe(0));
    withVm((vm) => expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [1n << 32n]), 'EINVAL'));
    withVm((vm) => expect(vm.enableCap(Cap.DirtyLogRing, [min], 0x1234)).toBe(0));
  });

  test('twice, by either cap: EINVAL, but 2 MiB is still E2BIG (size checks come first)', () => {
    withVm((vm) => {
      expect(vm.enableCap(Cap.DirtyLogRing, [2 * min])).toBe(0);
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [2 * min]), 'EINVAL', 'KVM_ENABLE_CAP');
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [4 * min]), 'EINVAL');
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRingAcqRel, [4 * min]), 'EINVAL');
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [3000]), 'EINVAL');
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [1 << 21]), 'E2BIG');
    });
  });

  test('after a vCPU exists: EINVAL (2 MiB still E2BIG)', () => {
    withVm((vm) => {
      vm.createVcpu(0);
      expectKvmError(() => vm.enableDirtyRing(2 * min), 'EINVAL', 'KVM_ENABLE_CAP');
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [3000]), 'EINVAL');
      expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [1 << 21]), 'E2BIG');
    });
  });

  test('after a memory slot exists: allowed', () => {
    withVm((vm) => {
      const mem = vm.createMemory(16 * 4096);
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, flags: MemFlag.LogDirtyPages });
      expect(vm.enableDirtyRing(2 * min)).toBe(Cap.DirtyLogRingAcqRel);
    });
  });

  test('WITH_BITMAP on x86: EINVAL before and after the ring', () => {
    withVm((vm) => {
      expectKvmError(() => vm.enableDirtyRingWithBitmap(), 'EINVAL', 'KVM_ENABLE_CAP');
      vm.enableDirtyRing(2 * min);
      expectKvmError(() => vm.enableDirtyRingWithBitmap(), 'EINVAL', 'KVM_ENABLE_CAP');
    });
  });

  test('KVM_RESET_DIRTY_RINGS: EINVAL with the ring off, 0 with the ring on and no vCPU', () => {
    withVm((vm) => {
      expectKvmError(() => vm.resetDirtyRings(), 'EINVAL', 'KVM_RESET_DIRTY_RINGS');
      vm.enableDirtyRing(2 * min);
      expect(vm.resetDirtyRings()).toBe(0);
    });
  });

  test('with the ring on, the bitmap ioctls are ENXIO before any other check', () => {
    withVm((vm) => {
      vm.enableDirtyRing(2 * min);
      const mem = vm.createMemory(16 * 4096);
      vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: mem, flags: MemFlag.LogDirtyPages });
      for (const slot of [1, 7, 40000]) expectKvmError(() => vm.getDirtyLog(slot), 'ENXIO', 'KVM_GET_DIRTY_LOG');
      const { DirtyBitmap } = require('../lib') as typeof import('../lib');
      expectKvmError(() => vm.clearDirtyLog(1, 0, 16, new DirtyBitmap(16)), 'ENXIO', 'KVM_CLEAR_DIRTY_LOG');
      expectKvmError(() => vm.clearDirtyLog(1, 3, 16, new DirtyBitmap(16)), 'ENXIO', 'KVM_CLEAR_DIRTY_LOG');
      // Manual protect is still accepted with the ring on.
      vm.enableManualDirtyLogProtect(1);
      vm.createVcpu(0);
      expect(vm.resetDirtyRings()).toBe(0);
    });
  });

  test('the vCPU maps a ring of the size the kernel took; none without a ring', () => {
    withVm((vm) => {
      vm.enableCap(Cap.DirtyLogRing, [0x1_0000_0000n + BigInt(2 * min)]);
      const v = vm.createVcpu(0);
      expect(v.dirtyRing?.entries).toBe((2 * min) / 16);
      expect(v.dirtyRing?.buffer.byteLength).toBe(2 * min);
      expect(new Uint32Array(v.dirtyRing!.buffer).every((x) => x === 0)).toBe(true);
    });
    withVm((vm) => expect(vm.createVcpu(0).dirtyRing).toBeNull());
  });

  test('KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 argument table', () => {
    withVm((vm) => {
      for (const [args, flags] of [[2, 0], [4, 0], [7, 0], [1, 1]]) {
        expectKvmError(() => vm.enableCap(Cap.ManualDirtyLogProtect2, [args], flags), 'EINVAL', 'KVM_ENABLE_CAP');
      }
      expect(vm.enableCap(Cap.ManualDirtyLogProtect2, [3])).toBe(0);
      expect(vm.enableCap(Cap.ManualDirtyLogProtect2, [0])).toBe(0);
      expect(vm.enableCap(Cap.ManualDirtyLogProtect2, [3])).toBe(0);
    });
  });

  test('JS argument errors', () => {
    withVm((vm) => {
      expect(() => vm.enableCap(Cap.DirtyLogRing, [1, 2, 3, 4, 5])).toThrow(RangeError);
      expect(() => vm.enableCap(Cap.DirtyLogRing, ['x' as unknown as number])).toThrow(TypeError);
      expect(() => vm.enableCap(Cap.DirtyLogRing, [2 ** 64 as number])).toThrow(RangeError);
      expect(() => vm.enableDirtyRing(-4096)).toThrow(RangeError);
      expect(() => vm.enableCap(Cap.DirtyLogRing, 4096 as unknown as number[])).toThrow(TypeError);
    });
  });
}, { pml: true });
