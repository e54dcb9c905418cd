// Closing: idempotent, children first, EBADF from every method of a closed object,
// detached buffers, no fd left behind.
import { readdirSync } from 'node:fs';
import { DirtyBitmap, DirtyPages, Workload, type Kvm } from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';
import { makeGuest } from './helpers/guest';

const fdCount = () => readdirSync('/proc/self/fd').length;

describeEachBackend('lifecycle', (b) => {
  test('every method of a closed Kvm, Vm, Vcpu, ring throws EBADF naming the ioctl; buffers are detached', () => {
    const kvm: Kvm = b.open();
    const ringBytes = kvm.dirtyRingLimits().bytesFor(16);
    const g = makeGuest(kvm, { ringBytes });
    const ring = g.vcpu.dirtyRing!;
    const mem = g.data;
    expect(mem.buffer.byteLength).toBe(1024 * 4096);
    expect(ring.buffer.byteLength).toBe(ringBytes);
    const view = new Uint8Array(mem.buffer);
    kvm.close();
    kvm.close(); // idempotent

    expect(g.vm.closed).toBe(true);
    expect(g.vcpu.closed).toBe(true);
    expect(mem.closed).toBe(true);
    expect(mem.buffer.byteLength).toBe(0);
    expect(ring.buffer.byteLength).toBe(0);
    expect(view.length).toBe(0); // views over a detached buffer read as empty
    expect(view[0]).toBeUndefined();
    expect(g.vcpu.runBuffer.byteLength).toBe(0);

    expectKvmError(() => kvm.getApiVersion(), 'EBADF', 'KVM_GET_API_VERSION');
    expectKvmError(() => kvm.checkExtension(192), 'EBADF', 'KVM_CHECK_EXTENSION');
    expectKvmError(() => kvm.getVcpuMmapSize(), 'EBADF', 'KVM_GET_VCPU_MMAP_SIZE');
    expectKvmError(() => kvm.createVm(), 'EBADF', 'KVM_CREATE_VM');

    const vm = g.vm;
    expectKvmError(() => vm.checkExtension(192), 'EBADF', 'KVM_CHECK_EXTENSION');
    expectKvmError(() => vm.enableCap(192, [4096]), 'EBADF', 'KVM_ENABLE_CAP');
    expectKvmError(() => vm.enableDirtyRing(4096), 'EBADF', 'KVM_ENABLE_CAP');
    expectKvmError(() => vm.enableManualDirtyLogProtect(), 'EBADF', 'KVM_ENABLE_CAP');
    expectKvmError(() => vm.createMemory(4096), 'EBADF');
    expectKvmError(() => vm.setUserMemoryRegion({ slot: 3, memory: null }), 'EBADF', 'KVM_SET_USER_MEMORY_REGION');
    expectKvmError(() => vm.createVcpu(1), 'EBADF', 'KVM_CREATE_VCPU');
    expectKvmError(() => vm.getDirtyLog(1), 'EBADF', 'KVM_GET_DIRTY_LOG');
    expectKvmError(() => vm.clearDirtyLog(1, 0, 64, new DirtyBitmap(64)), 'EBADF', 'KVM_CLEAR_DIRTY_LOG');
    expectKvmError(() => vm.resetDirtyRings(), 'EBADF', 'KVM_RESET_DIRTY_RINGS');
    expectKvmError(() => vm.enableCmma(), 'EBADF', 'KVM_SET_DEVICE_ATTR');
    expectKvmError(() => vm.setMigrationMode(true), 'EBADF', 'KVM_SET_DEVICE_ATTR');
    expectKvmError(() => vm.getMigrationMode(), 'EBADF', 'KVM_GET_DEVICE_ATTR');
    expectKvmError(() => vm.getCmmaBits({ startGfn: 0, count: 1 }), 'EBADF', 'KVM_S390_GET_CMMA_BITS');
    expectKvmError(() => vm.setCmmaBits({ startGfn: 0, values: new Uint8Array(1), mask: -1 }), 'EBADF', 'KVM_S390_SET_CMMA_BITS');

    const v = g.vcpu;
    expectKvmError(() => v.run(), 'EBADF', 'KVM_RUN');
    expectKvmError(() => v.getRegs(), 'EBADF', 'KVM_GET_REGS');
    expectKvmError(() => v.setRegs({ rax: 1n }), 'EBADF', 'KVM_SET_REGS');
    expectKvmError(() => v.getSregs(), 'EBADF', 'KVM_GET_SREGS');
    expectKvmError(() => v.load(Workload.spin()), 'EBADF');
    expectKvmError(() => v.kick(), 'EBADF');
    expectKvmError(() => mem.view(0, 4096), 'EBADF');
    expectKvmError(() => mem.dataRanges(), 'EBADF');
    expectKvmError(() => ring.harvest(new DirtyPages(1)), 'EBADF');
    expectKvmError(() => ring.pending(), 'EBADF');
    return expect(v.runAsync()).rejects.toMatchObject({ code: 'EBADF', ioctl: 'KVM_RUN' });
  });

  test('closing a vCPU leaves the VM usable; closing a VM leaves the Kvm usable', () => {
    const kvm = b.open();
    try {
      const g = makeGuest(kvm, { ringFor: 16, vcpus: 2 });
      g.vcpusAll[0].close();
      expect(g.vm.vcpus.map((v) => v.id)).toEqual([1]);
      expect(g.vm.resetDirtyRings()).toBe(0);
      g.vm.close();
      expect(g.vcpusAll[1].closed).toBe(true);
      expect(kvm.getApiVersion()).toBe(12);
      kvm.createVm().close();
    } finally {
      kvm.close();
    }
  });

  test('Symbol.dispose closes', () => {
    const kvm = b.open();
    {
      using vm = kvm.createVm();
      vm.createVcpu(0);
    }
    kvm.close();
    expect(kvm.closed).toBe(true);
  });

  test('1,000 VM lifecycles leave /proc/self/fd as it was', () => {
    const kvm = b.open();
    try {
      // Warm up (lazy library fds), then count.
      makeGuest(kvm, { ringFor: 16, dataPages: 16 }).vm.close();
      const before = fdCount();
      for (let i = 0; i < 1000; i++) {
        const g = makeGuest(kvm, { ringFor: 16, dataPages: 16 });
        if (i % 100 === 0) g.vcpu.load(Workload.stride({ firstPage: 512, pages: 4 }));
        g.vm.close();
      }
      expect(fdCount()).toBe(before);
    } finally {
      kvm.close();
    }
  });
});
