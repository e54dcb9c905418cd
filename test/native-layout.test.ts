// The native mappings have the kernel's layout: struct kvm_dirty_gfn, the ring at page
// KVM_DIRTY_LOG_PAGE_OFFSET of the vCPU fd, kvm_run of KVM_GET_VCPU_MMAP_SIZE bytes.
//
//   gfn 0 .. 511      slot 0  harness (page tables + code)
//   gfn 512 .. 1535   slot 1  logged; ring entry offset = gfn - 512
import { Cap, ExitReason, Workload, type Kvm } from '../lib';
import { DIRTY_GFN_F_DIRTY, DIRTY_GFN_SIZE, DIRTY_LOG_PAGE_OFFSET, EXIT_IO_OUT, PAGE_SIZE } from '../lib/constants';
import * as S from '../lib/kvm-structs';
import { loadBinding } from '../lib/native/binding';
import { DATA_GFN, DATA_SLOT, makeGuest } from './helpers/guest';
import { describeNative } from './helpers/native';

describeNative('native mapping layout', (open) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = open()));
  afterEach(() => kvm.close());

  test('the addon was compiled with the layouts lib/constants.ts assumes', () => {
    const layout = loadBinding().layout;
    expect(layout).toMatchObject({
      pageSize: PAGE_SIZE,
      dirtyGfnSize: DIRTY_GFN_SIZE,
      dirtyGfnSlotOffset: 4,
      dirtyGfnOffsetOffset: 8,
      dirtyLogPageOffset: DIRTY_LOG_PAGE_OFFSET,
      kvmRunImmediateExitOffset: 1,
      kvmRunExitReasonOffset: 8,
      cmmaLogSize: 32,
    });
    // a real-time signal, never SIGUSR1 (10, Node's inspector)
    expect(layout.kickSignal).toBeGreaterThanOrEqual(34);
  });

  test('the state structs were compiled with the kernel\'s C layout that lib/kvm-structs.ts encodes', () => {
    // Debian's 6.1 header declares flexible arrays that C++ sizes differently (kvm_msrs 16,
    // kvm_xsave 4100): native/uapi.h substitutes the C layouts; this is what they came to.
    expect(loadBinding().layout.stateStructs).toEqual({
      regs: S.REGS_SIZE, sregs: S.SREGS_SIZE, sregsInterruptBitmap: 280,
      fpu: S.FPU_SIZE, fpuXmm: 152, fpuMxcsr: 408, xsave: S.XSAVE_SIZE, xcrs: S.XCRS_SIZE,
      msrsHeader: S.COUNTED_HEADER_SIZE, msrEntry: S.MSR_ENTRY_SIZE, lapic: S.LAPIC_SIZE,
      vcpuEvents: S.VCPU_EVENTS_SIZE, vcpuEventsSipiVector: 16, vcpuEventsSmi: 24, vcpuEventsExceptionHasPayload: 55, vcpuEventsExceptionPayload: 56,
      debugregs: S.DEBUGREGS_SIZE, debugregsFlags: 48, cpuidHeader: S.COUNTED_HEADER_SIZE, cpuidEntry: S.CPUID_ENTRY_SIZE,
      irqchip: S.IRQCHIP_SIZE, irqchipChip: 8, ioapicRedirtbl: 24, pitState2: S.PIT_STATE2_SIZE, pitState2Flags: 72,
      pitChannelCountLoadTime: 16, clockData: S.CLOCK_DATA_SIZE, clockDataRealtime: 16, clockDataHostTsc: 24,
    });
  });

  test('kvm_run is KVM_GET_VCPU_MMAP_SIZE bytes and holds the exit the run returned', () => {
    const g = makeGuest(kvm);
    const run = g.vcpu.runBuffer;
    expect(run.byteLength).toBe(kvm.getVcpuMmapSize());
    g.vcpu.load(Workload.counter({ page: 700 }));
    const exit = g.vcpu.run();
    expect(exit).toEqual({ reason: ExitReason.Io, io: { port: 0x11, direction: 'out', size: 4, count: 1, value: 1 } });
    // struct kvm_run: exit_reason at 8; io { u8 direction, u8 size, u16 port, u32 count, u64 data_offset } at 32
    const v = new DataView(run);
    expect(v.getUint32(8, true)).toBe(ExitReason.Io);
    expect(v.getUint8(32)).toBe(EXIT_IO_OUT);
    expect(v.getUint8(33)).toBe(4);
    expect(v.getUint16(34, true)).toBe(0x11);
    expect(v.getUint32(36, true)).toBe(1);
    const dataOffset = Number(v.getBigUint64(40, true));
    expect(dataOffset).toBeLessThan(run.byteLength);
    expect(v.getUint32(dataOffset, true)).toBe(1);
    expect(g.word(700)).toBe(1n);
  });

  test('the ring is the vCPU fd at page KVM_DIRTY_LOG_PAGE_OFFSET: entries the guest pushed, in the kernel layout', () => {
    const bytes = kvm.dirtyRingLimits().minBytes; // 4 KiB; 16 KiB on an Intel host with PML
    const g = makeGuest(kvm, { ringBytes: bytes });
    const ring = g.vcpu.dirtyRing!.buffer;
    expect(ring.byteLength).toBe(bytes);
    expect(g.vcpu.dirtyRing!.entries).toBe(bytes / 16);
    // a fresh ring is all zeros (vzalloc), unlike kvm_run
    expect(new Uint8Array(ring).every((b) => b === 0)).toBe(true);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 5, stridePages: 3 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    const v = new DataView(ring);
    const entries = Array.from({ length: 6 }, (_, i) => ({
      flags: v.getUint32(i * 16, true),
      slot: v.getUint32(i * 16 + 4, true),
      offset: Number(v.getBigUint64(i * 16 + 8, true)),
    }));
    const pushed = [600, 603, 606, 609, 612].map((gfn) => ({ flags: DIRTY_GFN_F_DIRTY, slot: DATA_SLOT, offset: gfn - DATA_GFN }));
    expect(entries).toEqual([...pushed, { flags: 0, slot: 0, offset: 0 }]);
  });

  test('the ring takes the size the kernel took: (u32)args[0] of either ring cap', () => {
    const vm = kvm.createVm();
    const min = kvm.dirtyRingLimits().minBytes;
    vm.enableCap(Cap.DirtyLogRing, [0x1_0000_0000n + BigInt(2 * min)]); // truncated to 2 * min by the kernel
    const vcpu = vm.createVcpu(0);
    expect(vcpu.dirtyRing!.buffer.byteLength).toBe(2 * min);
    expect(vcpu.dirtyRing!.entries).toBe((2 * min) / 16);
    vm.close();

    const acqRel = kvm.createVm();
    acqRel.enableCap(Cap.DirtyLogRingAcqRel, [4 * min]);
    expect(acqRel.createVcpu(3).dirtyRing!.buffer.byteLength).toBe(4 * min);
    acqRel.close();

    const none = kvm.createVm();
    expect(() => none.enableCap(Cap.DirtyLogRing, [3000])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const vcpu2 = none.createVcpu(0); // the failed enable left the VM without a ring
    expect(vcpu2.dirtyRing).toBeNull();
    none.close();
  });
});
