// On an x86 VM the s390 storage-attribute calls still reach the kernel, which answers
// ENOTTY (kernel-semantics.md rule 99, measured in §18.2).
import { Cap } from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';

describeEachBackend('s390 calls on x86', (b) => {
  test('CMMA ioctls and migration attributes: ENOTTY; the capability is 0', () => {
    const kvm = b.open();
    try {
      const vm = kvm.createVm();
      expect(vm.checkExtension(Cap.S390CmmaMigration)).toBe(0);
      expectKvmError(() => vm.getCmmaBits({ startGfn: 0, count: 64 }), 'ENOTTY', 'KVM_S390_GET_CMMA_BITS');
      expectKvmError(() => vm.setCmmaBits({ startGfn: 0, values: new Uint8Array(64), mask: -1 }), 'ENOTTY', 'KVM_S390_SET_CMMA_BITS');
      expectKvmError(() => vm.setMigrationMode(true), 'ENOTTY', 'KVM_SET_DEVICE_ATTR');
      expectKvmError(() => vm.getMigrationMode(), 'ENOTTY', 'KVM_GET_DEVICE_ATTR');
      expectKvmError(() => vm.enableCmma(), 'ENOTTY', 'KVM_SET_DEVICE_ATTR');
      expectKvmError(() => vm.hasDeviceAttr(4, 1), 'ENOTTY', 'KVM_HAS_DEVICE_ATTR');
    } finally {
      kvm.close();
    }
  });

  test('JS argument errors come first as TypeError / RangeError', () => {
    const kvm = b.open();
    try {
      const vm = kvm.createVm();
      expect(() => vm.getCmmaBits({ startGfn: -1, count: 1 })).toThrow(RangeError);
      expect(() => vm.getCmmaBits({ startGfn: 0, count: 2 ** 32 })).toThrow(RangeError);
      expect(() => vm.getCmmaBits({ startGfn: 0, count: 8, values: new Uint8Array(4) })).toThrow(RangeError);
      expect(() => vm.setCmmaBits({ startGfn: 0, values: [1] as unknown as Uint8Array, mask: -1 })).toThrow(TypeError);
      expect(() => vm.setCmmaBits({ startGfn: 0, values: new Uint8Array(1), mask: 1.5 })).toThrow(RangeError);
      expect(() => vm.setMigrationMode(1 as unknown as boolean)).toThrow(TypeError);
    } finally {
      kvm.close();
    }
  });
});
