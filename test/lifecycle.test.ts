// Closing: idempotent, children first, EBADF from every method of a closed object,
// detached buffers, no fd left behind.
import { readdirSync } from 'node:fs';
import { Cap, DirtyBitmap, DirtyPages, IrqchipId, Workload, type Kvm } from '../lib';
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
    const xsaveGet = kvm.checkExtension(Cap.Xsave2) > 0 ? 'KVM_GET_XSAVE2' : 'KVM_GET_XSAVE';
    const state = g.vcpu.getState();
    const vmState = g.vm.getState();
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
    expectKvmError(() => kvm.getSupportedCpuid(), 'EBADF', 'KVM_GET_SUPPORTED_CPUID');
    expectKvmError(() => kvm.getMsrIndexList(), 'EBADF', 'KVM_GET_MSR_INDEX_LIST');

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
    expectKvmError(() => vm.createIrqchip(), 'EBADF', 'KVM_CREATE_IRQCHIP');
    expectKvmError(() => vm.createPit2(), 'EBADF', 'KVM_CREATE_PIT2');
    expectKvmError(() => vm.setTssAddr(0xfffbd000), 'EBADF', 'KVM_SET_TSS_ADDR');
    expectKvmError(() => vm.setIdentityMapAddr(0xfffbc000), 'EBADF', 'KVM_SET_IDENTITY_MAP_ADDR');
    expectKvmError(() => vm.irqLine(4, 1), 'EBADF', 'KVM_IRQ_LINE');
    expectKvmError(() => vm.getIrqchip(IrqchipId.PicMaster), 'EBADF', 'KVM_GET_IRQCHIP');
    expectKvmError(() => vm.setIrqchip(IrqchipId.PicMaster, {} as never), 'EBADF', 'KVM_SET_IRQCHIP');
    expectKvmError(() => vm.getPit2(), 'EBADF', 'KVM_GET_PIT2');
    expectKvmError(() => vm.setPit2({} as never), 'EBADF', 'KVM_SET_PIT2');
    expectKvmError(() => vm.getClock(), 'EBADF', 'KVM_GET_CLOCK');
    expectKvmError(() => vm.setClock(vmState.clock!), 'EBADF', 'KVM_SET_CLOCK');
    expectKvmError(() => vm.getState(), 'EBADF', 'KVM_GET_IRQCHIP');
    expectKvmError(() => vm.setState(vmState), 'EBADF', 'KVM_SET_IRQCHIP');
    expectKvmError(() => vm.stateSkipped(), 'EBADF', 'KVM_CHECK_EXTENSION');

    const v = g.vcpu;
    expectKvmError(() => v.run(), 'EBADF', 'KVM_RUN');
    expectKvmError(() => v.getRegs(), 'EBADF', 'KVM_GET_REGS');
    expectKvmError(() => v.setRegs({ rax: 1n }), 'EBADF', 'KVM_SET_REGS');
    expectKvmError(() => v.getSregs(), 'EBADF', 'KVM_GET_SREGS');
    expectKvmError(() => v.load(Workload.spin()), 'EBADF');
    expectKvmError(() => v.loadImage({ image: Uint8Array.of(0xf4) }), 'EBADF');
    expectKvmError(() => v.completeIo(), 'EBADF', 'KVM_RUN');
    expectKvmError(() => v.xsaveSize, 'EBADF');
    expectKvmError(() => v.getFpu(), 'EBADF', 'KVM_GET_FPU');
    expectKvmError(() => v.setFpu({} as never), 'EBADF', 'KVM_SET_FPU');
    expectKvmError(() => v.getXsave(), 'EBADF', xsaveGet);
    expectKvmError(() => v.setXsave({} as never), 'EBADF', 'KVM_SET_XSAVE');
    expectKvmError(() => v.getXcrs(), 'EBADF', 'KVM_GET_XCRS');
    expectKvmError(() => v.setXcrs({} as never), 'EBADF', 'KVM_SET_XCRS');
    expectKvmError(() => v.getMsrs([0x10]), 'EBADF', 'KVM_GET_MSRS');
    expectKvmError(() => v.setMsrs([]), 'EBADF', 'KVM_SET_MSRS');
    expectKvmError(() => v.getLapic(), 'EBADF', 'KVM_GET_LAPIC');
    expectKvmError(() => v.setLapic({} as never), 'EBADF', 'KVM_SET_LAPIC');
    expectKvmError(() => v.getVcpuEvents(), 'EBADF', 'KVM_GET_VCPU_EVENTS');
    expectKvmError(() => v.setVcpuEvents({} as never), 'EBADF', 'KVM_SET_VCPU_EVENTS');
    expectKvmError(() => v.getDebugregs(), 'EBADF', 'KVM_GET_DEBUGREGS');
    expectKvmError(() => v.setDebugregs({} as never), 'EBADF', 'KVM_SET_DEBUGREGS');
    expectKvmError(() => v.getMpState(), 'EBADF', 'KVM_GET_MP_STATE');
    expectKvmError(() => v.setMpState(0), 'EBADF', 'KVM_SET_MP_STATE');
    expectKvmError(() => v.getCpuid2(), 'EBADF', 'KVM_GET_CPUID2');
    expectKvmError(() => v.setCpuid2([]), 'EBADF', 'KVM_SET_CPUID2');
    expectKvmError(() => v.getState(), 'EBADF', 'KVM_GET_REGS');
    expectKvmError(() => v.setState(state), 'EBADF', 'KVM_SET_REGS');
    expectKvmError(() => v.stateSkipped(), 'EBADF', 'KVM_CHECK_EXTENSION');
    expectKvmError(() => mem.write(0, Uint8Array.of(1)), 'EBADF');
    expectKvmError(() => mem.dmaWrite(0, 1, () => undefined), 'EBADF');
    expectKvmError(() => mem.markVmmDirty(0, 1), 'EBADF');
    expectKvmError(() => mem.takeVmmDirty(), 'EBADF');
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
