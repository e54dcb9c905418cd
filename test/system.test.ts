// KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE on both backends.
// x86_64 values are the kernel's (kernel-semantics.md §2, measured in §18.2).
import { Cap } from '../lib';
import { describeEachBackend } from './helpers/backends';

describeEachBackend('system', (b) => {
  test('api version 12; capabilities as the x86 kernel reports them, alike on system and VM fd', () => {
    const kvm = b.open();
    try {
      expect(kvm.backend).toBe(b.name);
      expect(kvm.arch).toBe('x86_64');
      expect(kvm.getApiVersion()).toBe(12);
      const vm = kvm.createVm();
      const expected: Array<[Cap, number]> = [
        [Cap.DirtyLogRing, 1048576],
        [Cap.DirtyLogRingAcqRel, 1048576],
        [Cap.DirtyLogRingWithBitmap, 0],
        [Cap.ManualDirtyLogProtect2, 3],
        [Cap.S390CmmaMigration, 0],
        [Cap.NrMemslots, 32764],
        [Cap.UserMemory, 1],
      ];
      for (const [cap, value] of expected) {
        expect([Cap[cap], kvm.checkExtension(cap)]).toEqual([Cap[cap], value]);
        expect([Cap[cap], vm.checkExtension(cap)]).toEqual([Cap[cap], value]);
      }
      expect(kvm.getVcpuMmapSize()).toBeGreaterThanOrEqual(4096);
      expect(kvm.getVcpuMmapSize() % 4096).toBe(0);
    } finally {
      kvm.close();
    }
  });

  test('hostInfo names the flavour', () => {
    const kvm = b.open();
    try {
      const h = kvm.hostInfo;
      expect(typeof h.flavour).toBe('string');
      expect(h.flavour.length).toBeGreaterThan(0);
      expect(typeof h.description).toBe('string');
      if (b.name === 'emulator') expect(h.flavour).toBe('emulator');
    } finally {
      kvm.close();
    }
  });

  test('bad arguments are TypeError / RangeError', () => {
    const kvm = b.open();
    try {
      expect(() => kvm.checkExtension(-1)).toThrow(RangeError);
      expect(() => kvm.checkExtension('192' as unknown as number)).toThrow(TypeError);
      expect(() => kvm.checkExtension(1.5)).toThrow(RangeError);
      expect(kvm.checkExtension(0xffff_ffff)).toBe(0);
    } finally {
      kvm.close();
    }
  });
});
