// The emulator's architecture profiles (DESIGN.md §4): what KVM_CHECK_EXTENSION answers and
// how KVM_ENABLE_CAP of the ring caps behaves on each (kernel-semantics.md §2-§4, rule 19).
import { Cap, MemFlag, Workload, openKvm, type Arch } from '../lib';
import { expectKvmError } from './helpers/backends';

const MIB = 1 << 20;

const table: Array<[Arch, Record<string, number>, number]> = [
  ['x86_64', { DirtyLogRing: MIB, DirtyLogRingAcqRel: MIB, DirtyLogRingWithBitmap: 0, ManualDirtyLogProtect2: 3, S390CmmaMigration: 0, NrMemslots: 32764, MultiAddressSpace: 0, MaxVcpus: 1024, MaxVcpuId: 4096, ReadonlyMem: 1 }, 3 * 4096],
  ['arm64', { DirtyLogRing: 0, DirtyLogRingAcqRel: MIB, DirtyLogRingWithBitmap: 1, ManualDirtyLogProtect2: 3, S390CmmaMigration: 0, NrMemslots: 32767, MultiAddressSpace: 0, MaxVcpus: 512, MaxVcpuId: 512, ReadonlyMem: 1 }, 2 * 4096],
  ['s390x', { DirtyLogRing: 0, DirtyLogRingAcqRel: 0, DirtyLogRingWithBitmap: 0, ManualDirtyLogProtect2: 0, S390CmmaMigration: 1, NrMemslots: 32, MultiAddressSpace: 0, MaxVcpus: 255, MaxVcpuId: 255, ReadonlyMem: 0 }, 4096],
];

describe.each(table)('emulator profile %s', (arch, caps, mmapSize) => {
  test('KVM_CHECK_EXTENSION: the same answers on the system and the VM fd (rule 15)', () => {
    const kvm = openKvm({ backend: 'emulator', arch });
    try {
      expect(kvm.arch).toBe(arch);
      expect(kvm.backend).toBe('emulator');
      expect(kvm.getApiVersion()).toBe(12);
      expect(kvm.getVcpuMmapSize()).toBe(mmapSize);
      expect(kvm.hostInfo).toMatchObject({ flavour: 'emulator', nested: null, kernel: '6.18 (emulated)' });
      const vm = kvm.createVm();
      for (const [name, value] of Object.entries(caps)) {
        const cap = Cap[name as keyof typeof Cap];
        expect([name, kvm.checkExtension(cap)]).toEqual([name, value]);
        expect([name, vm.checkExtension(cap)]).toEqual([name, value]);
      }
      expect(kvm.checkExtension(Cap.UserMemory)).toBe(1);
      expect(kvm.checkExtension(999)).toBe(0);
    } finally {
      kvm.close();
    }
  });
});

describe('rule 19 on the emulator: every check, in order', () => {
  test('x86_64: size checks, E2BIG, twice, after a vCPU, u32 truncation, flags ignored', () => {
    const kvm = openKvm({ backend: 'emulator' });
    const ring = (vm: ReturnType<typeof kvm.createVm>, bytes: number | bigint, cap = Cap.DirtyLogRing, flags = 0) => vm.enableCap(cap, [bytes], flags);
    for (const [bytes, code] of [[0, 'EINVAL'], [3000, 'EINVAL'], [1024, 'EINVAL'], [2048, 'EINVAL'], [2 * MIB, 'E2BIG'], [1n << 32n, 'EINVAL']] as const) {
      for (const cap of [Cap.DirtyLogRing, Cap.DirtyLogRingAcqRel]) expectKvmError(() => ring(kvm.createVm(), bytes, cap), code, 'KVM_ENABLE_CAP');
    }
    for (const bytes of [4096, 8192, MIB]) expect(ring(kvm.createVm(), bytes)).toBe(0);
    // u32 truncation: 0x1_0000_1000 is a 4096-byte ring
    const trunc = kvm.createVm();
    expect(ring(trunc, 0x1_0000_1000n)).toBe(0);
    expect(trunc.createVcpu(0).dirtyRing!.buffer.byteLength).toBe(4096);
    expect(ring(kvm.createVm(), 4096, Cap.DirtyLogRing, 0x1234)).toBe(0);
    const twice = kvm.createVm();
    expect(ring(twice, 8192)).toBe(0);
    expectKvmError(() => ring(twice, 8192), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => ring(twice, 16384, Cap.DirtyLogRingAcqRel), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => ring(twice, 3000), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => ring(twice, 2 * MIB), 'E2BIG', 'KVM_ENABLE_CAP');
    const late = kvm.createVm();
    late.createVcpu(0);
    expectKvmError(() => ring(late, 8192), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => ring(late, 3000), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => ring(late, 2 * MIB), 'E2BIG', 'KVM_ENABLE_CAP');
    expect(late.vcpus[0].dirtyRing).toBeNull();
    // rule 25 on x86: no WITH_BITMAP before or after the ring
    const wb = kvm.createVm();
    expectKvmError(() => wb.enableDirtyRingWithBitmap(), 'EINVAL', 'KVM_ENABLE_CAP');
    wb.enableDirtyRing(8192);
    expectKvmError(() => wb.enableDirtyRingWithBitmap(), 'EINVAL', 'KVM_ENABLE_CAP');
    kvm.close();
  });

  test('s390x: no ring at all (KVM_DIRTY_LOG_PAGE_OFFSET 0)', () => {
    const kvm = openKvm({ backend: 'emulator', arch: 's390x' });
    const vm = kvm.createVm();
    expectKvmError(() => vm.enableCap(Cap.DirtyLogRing, [4096]), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => vm.enableDirtyRing(4096), 'EINVAL', 'KVM_ENABLE_CAP');
    expectKvmError(() => vm.resetDirtyRings(), 'EINVAL', 'KVM_RESET_DIRTY_RINGS');
    expect(vm.createVcpu(0).dirtyRing).toBeNull();
    kvm.close();
  });

  test('x86_64: the s390 ioctls and VM device attributes are ENOTTY (rule 99)', () => {
    const kvm = openKvm({ backend: 'emulator' });
    const vm = kvm.createVm();
    expectKvmError(() => vm.getCmmaBits({ startGfn: 0, count: 64 }), 'ENOTTY', 'KVM_S390_GET_CMMA_BITS');
    expectKvmError(() => vm.setCmmaBits({ startGfn: 0, values: new Uint8Array(64), mask: -1 }), 'ENOTTY', 'KVM_S390_SET_CMMA_BITS');
    expectKvmError(() => vm.setMigrationMode(true), 'ENOTTY', 'KVM_SET_DEVICE_ATTR');
    expectKvmError(() => vm.hasDeviceAttr(4, 1), 'ENOTTY', 'KVM_HAS_DEVICE_ATTR');
    expectKvmError(() => vm.enableCmma(), 'ENOTTY', 'KVM_SET_DEVICE_ATTR');
    expect(() => vm.emulator!.essa(600, 1)).toThrow(expect.objectContaining({ code: 'ENOTTY' }));
    kvm.close();
  });
});

describe('the workload models run on every profile', () => {
  test.each(['arm64', 's390x'] as const)('%s: a stride epoch exits with the x86 harness\'s OUT and logs its pages', (arch) => {
    const kvm = openKvm({ backend: 'emulator', arch });
    try {
      const vm = kvm.createVm();
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.createMemory(2 * 1024 * 1024) });
      vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 2 * 1024 * 1024, memory: vm.createMemory(64 * 4096), flags: MemFlag.LogDirtyPages });
      const v = vm.createVcpu(0);
      v.load(Workload.stride({ firstPage: 520, pages: 3 }));
      expect(v.run().io).toEqual({ port: 0x10, direction: 'out', size: 1, count: 1, value: 1 });
      expect(v.runBuffer.byteLength).toBe(kvm.getVcpuMmapSize());
      expect(vm.getDirtyLog(1).toArray()).toEqual([8, 9, 10]);
    } finally {
      kvm.close();
    }
  });
});
