// The full vCPU and VM state: which pieces each backend offers (and that KVM_CHECK_EXTENSION
// says the same), exact round trips into fresh vCPUs and VMs, and the kernel's errnos, which
// the emulator gives as the native host does for a VM without the in-kernel devices.
import {
  Cap, decodeVcpuState, decodeVmState, encodeVcpuState, encodeVmState, IrqchipId, MpState, VCPUEVENT_VALID_SHADOW,
  type Kvm, type MsrEntry, type VcpuState, type Vm, type Vcpu,
} from '../lib';
import { describeEachBackend, expectKvmError } from './helpers/backends';
import { describeNative } from './helpers/native';

const MSR_IA32_TSC = 0x10;
const MSR_IA32_SYSENTER_EIP = 0x176;
const MSR_STAR = 0xc0000081;
const MSR_LSTAR = 0xc0000082;
const MSR_KERNEL_GS_BASE = 0xc0000102;
const MSR_IA32_CR_PAT = 0x277;

function machine(kvm: Kvm, irqchip: boolean): { vm: Vm; vcpu: Vcpu } {
  const vm = kvm.createVm();
  if (irqchip) {
    vm.createIrqchip();
    vm.createPit2();
  }
  vm.setUserMemoryRegion({ slot: 0, memory: vm.createMemory(2 << 20) });
  return { vm, vcpu: vm.createVcpu(0) };
}

/** The state without MSR_IA32_TSC: a host write close to the kernel's own TSC is taken as synchronisation, not as the value. */
function withoutTsc(s: VcpuState): VcpuState {
  return { ...s, ...(s.msrs ? { msrs: s.msrs.filter((m) => m.index !== MSR_IA32_TSC) } : {}) };
}

describeEachBackend('vCPU state', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('getState() has every piece stateSkipped() does not name, and KVM_CHECK_EXTENSION agrees', () => {
    const irqchip = kvm.checkExtension(Cap.Irqchip) > 0;
    const { vm, vcpu } = machine(kvm, irqchip);
    const skipped = vcpu.stateSkipped();
    for (const [cap, piece] of [[Cap.Xsave, 'xsave'], [Cap.Xcrs, 'xcrs'], [Cap.VcpuEvents, 'vcpuEvents'], [Cap.Debugregs, 'debugregs'], [Cap.MpState, 'mpState']] as const) {
      expect([piece, piece in skipped]).toEqual([piece, vm.checkExtension(cap) === 0]);
    }
    expect('lapic' in skipped).toBe(!irqchip);
    expect('fpu' in skipped).toBe(!('xsave' in skipped));
    expect('msrs' in skipped).toBe(kvm.getMsrIndexList().length === 0);
    expect('clock' in vm.stateSkipped()).toBe(vm.checkExtension(Cap.AdjustClock) === 0);
    expect([vm.checkExtension(Cap.SetTssAddr), vm.checkExtension(Cap.SetIdentityMapAddr)]).toEqual([1, 1]); // both modelled
    const state = vcpu.getState();
    const pieces = ['regs', 'sregs', 'cpuid', 'fpu', 'xsave', 'xcrs', 'msrs', 'vcpuEvents', 'lapic', 'debugregs', 'mpState'];
    expect(Object.keys(state).sort()).toEqual(pieces.filter((p) => !(p in skipped)).sort());
    if (b.name === 'emulator') {
      // a kernel without the in-kernel devices, XSAVE, XCRS, VCPU_EVENTS, and no MSR it knows
      expect(Object.keys(skipped).sort()).toEqual(['lapic', 'msrs', 'vcpuEvents', 'xcrs', 'xsave']);
      expect([vcpu.xsaveSize, kvm.checkExtension(Cap.Xsave2), kvm.checkExtension(Cap.Irqchip), kvm.checkExtension(Cap.Pit2)]).toEqual([4096, 0, 0, 0]);
      expectKvmError(() => vcpu.getXsave(), 'EINVAL', 'KVM_GET_XSAVE');
      expectKvmError(() => vcpu.getXcrs(), 'EINVAL', 'KVM_GET_XCRS');
      expectKvmError(() => vcpu.getVcpuEvents(), 'EINVAL', 'KVM_GET_VCPU_EVENTS');
      expectKvmError(() => vm.createIrqchip(), 'ENOTTY', 'KVM_CREATE_IRQCHIP');
      expectKvmError(() => vm.createPit2(), 'ENOTTY', 'KVM_CREATE_PIT2');
    } else {
      expect(Object.keys(skipped)).toEqual(['fpu']);
      expect(vcpu.xsaveSize).toBe(Math.max(4096, kvm.checkExtension(Cap.Xsave2)));
      expect(state.xsave!.region.length).toBe(vcpu.xsaveSize);
    }
  });

  test('getState() -> setState() on a fresh vCPU -> getState() is the same state (MSR_IA32_TSC aside)', () => {
    const irqchip = kvm.checkExtension(Cap.Irqchip) > 0;
    const src = machine(kvm, irqchip).vcpu;
    // Distinctive values in every piece the backend has.
    src.setRegs({ rax: 0x1122334455667788n, rsp: 0x7000n, rip: 0x3000n, r15: 0xffff_ffff_ffff_ffffn, rflags: 0x46n });
    src.setSregs({ ...src.getSregs(), cr2: 0xdead_b000n });
    src.setDebugregs({ db: [0x1000n, 0x2000n, 0x3000n, 0x4000n], dr6: 0xffff4ff0n, dr7: 0x401n, flags: 0n });
    if (b.name === 'native') {
      const msrs: MsrEntry[] = [
        { index: MSR_LSTAR, data: 0xffff_ffff_8100_0000n }, { index: MSR_STAR, data: 0x0023_0010_0000_0000n },
        { index: MSR_IA32_SYSENTER_EIP, data: 0x1234n }, { index: MSR_KERNEL_GS_BASE, data: 0xffff_8880_0000_0000n },
        { index: MSR_IA32_CR_PAT, data: 0x0001_0406_0007_0406n },
      ];
      expect(src.setMsrs(msrs)).toBe(msrs.length);
      const events = src.getVcpuEvents();
      src.setVcpuEvents({ ...events, nmi: { ...events.nmi, masked: 1 }, interrupt: { ...events.interrupt, shadow: 1 }, flags: events.flags | VCPUEVENT_VALID_SHADOW });
      const lapic = src.getLapic();
      new DataView(lapic.regs.buffer).setUint32(0x80, 0x30, true); // TPR
      src.setLapic(lapic);
      src.setMpState(MpState.Halted);
      const xsave = src.getXsave();
      const x = new DataView(xsave.region.buffer);
      for (let i = 0; i < 16; i++) x.setUint8(160 + i, 0xa0 + i); // XMM0 in the legacy region
      x.setUint32(24, 0x1f80, true); // MXCSR
      x.setBigUint64(512, x.getBigUint64(512, true) | 3n, true); // XSTATE_BV: x87 | SSE in use
      src.setXsave(xsave);
    } else {
      const fpu = src.getFpu();
      src.setFpu({ ...fpu, fcw: 0x27f, xmm: Uint8Array.from({ length: 256 }, (_, i) => i) });
      src.setCpuid2([{ function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 }]);
    }
    const s1 = src.getState();
    const dst = machine(kvm, irqchip).vcpu;
    dst.setState(s1);
    const s2 = dst.getState();
    expect(withoutTsc(s2)).toEqual(withoutTsc(s1));
    // the distinctive values are there, not merely equal defaults
    expect(s2.regs).toMatchObject({ rax: 0x1122334455667788n, rip: 0x3000n, r15: 0xffff_ffff_ffff_ffffn, rflags: 0x46n });
    expect(s2.sregs.cr2).toBe(0xdead_b000n);
    expect(s2.debugregs).toEqual({ db: [0x1000n, 0x2000n, 0x3000n, 0x4000n], dr6: 0xffff4ff0n, dr7: 0x401n, flags: 0n });
    if (b.name === 'native') {
      expect(s2.msrs!.find((m) => m.index === MSR_LSTAR)!.data).toBe(0xffff_ffff_8100_0000n);
      expect(s2.msrs!.find((m) => m.index === MSR_IA32_CR_PAT)!.data).toBe(0x0001_0406_0007_0406n);
      expect([s2.vcpuEvents!.nmi.masked, s2.vcpuEvents!.interrupt.shadow]).toEqual([1, 1]);
      expect(new DataView(s2.lapic!.regs.buffer).getUint32(0x80, true)).toBe(0x30);
      expect(s2.mpState).toBe(MpState.Halted);
      expect(Array.from(s2.xsave!.region.subarray(160, 176))).toEqual(Array.from({ length: 16 }, (_, i) => 0xa0 + i));
      // every vCPU starts with KVM_GET_SUPPORTED_CPUID's table, as the kernel adjusted it
      expect(s2.cpuid!.map((e) => [e.function, e.index])).toEqual(kvm.getSupportedCpuid().map((e) => [e.function, e.index]));
    } else {
      expect(s2.fpu!.fcw).toBe(0x27f);
      expect(s2.fpu!.mxcsr).toBe(0); // KVM_GET_FPU never reports MXCSR
      expect(Array.from(s2.fpu!.xmm.subarray(0, 4))).toEqual([0, 1, 2, 3]);
      expect(s2.cpuid).toEqual([{ function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 }]);
      expect(s2.mpState).toBe(MpState.Runnable);
    }
  });

  test('encodeVcpuState()/encodeVmState() bytes restore a fresh vCPU and VM to the same state', () => {
    const irqchip = kvm.checkExtension(Cap.Irqchip) > 0;
    const src = machine(kvm, irqchip);
    src.vcpu.setRegs({ rbx: 0xfeedn, rip: 0x3100n });
    const state = src.vcpu.getState();
    const vmState = src.vm.getState();
    const bytes = encodeVcpuState(state);
    const vmBytes = encodeVmState(vmState);
    expect(decodeVcpuState(bytes)).toEqual(state);
    expect(decodeVmState(vmBytes)).toEqual(vmState);
    const dst = machine(kvm, irqchip);
    dst.vm.setState(decodeVmState(vmBytes));
    dst.vcpu.setState(decodeVcpuState(bytes));
    expect(withoutTsc(dst.vcpu.getState())).toEqual(withoutTsc(decodeVcpuState(bytes)));
    expect(dst.vcpu.getRegs()).toMatchObject({ rbx: 0xfeedn, rip: 0x3100n });
  });

  test('setState() checks every piece before the first request: a bad one changes nothing', () => {
    const { vcpu } = machine(kvm, false);
    const before = vcpu.getState();
    vcpu.setState(before); // its own state, on a vCPU without an in-kernel LAPIC
    const bad = { ...before, regs: { ...before.regs, rax: 42n }, debugregs: { ...before.debugregs!, db: [1n] } };
    expect(() => vcpu.setState(bad)).toThrow(RangeError);
    expect(() => vcpu.setState({ ...before, fpu: 'x' } as never)).toThrow(TypeError);
    expect(() => vcpu.setState({ ...before, bogus: 1 } as never)).toThrow(TypeError);
    expect(() => vcpu.setState({ sregs: before.sregs } as never)).toThrow(TypeError);
    expect(vcpu.getRegs().rax).toBe(before.regs.rax);
  });

  test('the errnos of a VM without the in-kernel devices are the same on both backends', () => {
    const { vm, vcpu } = machine(kvm, false);
    const dr = vcpu.getDebugregs();
    expectKvmError(() => vcpu.setDebugregs({ ...dr, flags: 1n }), 'EINVAL', 'KVM_SET_DEBUGREGS');
    expectKvmError(() => vcpu.setDebugregs({ ...dr, dr6: 1n << 32n }), 'EINVAL', 'KVM_SET_DEBUGREGS');
    expectKvmError(() => vcpu.setMpState(99), 'EINVAL', 'KVM_SET_MP_STATE');
    expectKvmError(() => vcpu.setMpState(MpState.Halted), 'EINVAL', 'KVM_SET_MP_STATE'); // only RUNNABLE without a LAPIC
    vcpu.setMpState(MpState.Runnable);
    expectKvmError(() => vcpu.getLapic(), 'EINVAL', 'KVM_GET_LAPIC');
    expectKvmError(() => vcpu.setLapic({ regs: new Uint8Array(1024) }), 'EINVAL', 'KVM_SET_LAPIC');
    expectKvmError(() => vm.getIrqchip(IrqchipId.PicMaster), 'ENXIO', 'KVM_GET_IRQCHIP');
    expectKvmError(() => vm.getIrqchip(IrqchipId.Ioapic), 'ENXIO', 'KVM_GET_IRQCHIP');
    expectKvmError(() => vm.getPit2(), 'ENXIO', 'KVM_GET_PIT2');
    expectKvmError(() => vm.irqLine(4, 1), 'ENXIO', 'KVM_IRQ_LINE');
    expectKvmError(() => vm.setTssAddr(0xffff_f000), 'EINVAL', 'KVM_SET_TSS_ADDR');
    vm.setTssAddr(0xfffb_d000);
    expectKvmError(() => vm.setIdentityMapAddr(0xfffb_c000), 'EINVAL', 'KVM_SET_IDENTITY_MAP_ADDR'); // a vCPU exists
    const clock = vm.getClock();
    expectKvmError(() => vm.setClock({ ...clock, flags: 1 }), 'EINVAL', 'KVM_SET_CLOCK');
    expectKvmError(() => vm.setClock({ ...clock, flags: 16 }), 'EINVAL', 'KVM_SET_CLOCK');
    vm.setClock({ clock: 5_000_000_000n, flags: 0, realtime: 0n, hostTsc: 0n });
    expect(vm.getClock().clock).toBeGreaterThanOrEqual(5_000_000_000n);
    expect(vcpu.getMsrs([0x1234_5678, MSR_LSTAR])).toEqual([]); // the kernel stops at the MSR it does not know
    expect(vcpu.setMsrs([{ index: 0x1234_5678, data: 0n }])).toBe(0);
    vcpu.setCpuid2([]);
    expect(vcpu.getCpuid2()).toEqual([]);
    const fresh = kvm.createVm();
    fresh.setIdentityMapAddr(0xfffb_c000); // before any vCPU
    expect(vm.stateSkipped()).toMatchObject({ irqchip: expect.any(String), pit2: expect.any(String) });
    expect(vm.getState()).toEqual({ clock: expect.any(Object) });
  });

  test('wrong JavaScript arguments are TypeErrors and RangeErrors, before any request', () => {
    const { vm, vcpu } = machine(kvm, false);
    expect(() => vcpu.setFpu({} as never)).toThrow(TypeError);
    expect(() => vcpu.setFpu({ ...vcpu.getFpu(), fcw: 0x10000 })).toThrow(RangeError);
    expect(() => vcpu.setXsave({ region: new Uint8Array(10) })).toThrow(RangeError);
    expect(() => vcpu.setXcrs({ flags: 0, xcrs: new Array(17).fill({ xcr: 0, value: 1n }) })).toThrow(RangeError);
    expect(() => vcpu.getMsrs(new Array(256).fill(0))).toThrow(RangeError);
    expect(() => vcpu.getMsrs('x' as never)).toThrow(TypeError);
    expect(() => vcpu.setMsrs([{ index: -1, data: 0n }])).toThrow(RangeError);
    expect(() => vcpu.setCpuid2(new Array(257).fill({ function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }))).toThrow(RangeError);
    expect(() => vcpu.setLapic({ regs: new Uint8Array(1023) })).toThrow(RangeError);
    expect(() => vcpu.setMpState(-1)).toThrow(RangeError);
    expect(() => vm.setIrqchip(3 as never, {} as never)).toThrow(RangeError);
    expect(() => vm.setPit2({ channels: [], flags: 0 })).toThrow(RangeError);
    expect(() => vm.setClock({ clock: 'x', flags: 0, realtime: 0n, hostTsc: 0n } as never)).toThrow(TypeError);
    expect(() => vm.setState({ irqchip: 1 } as never)).toThrow(TypeError);
    expect(() => vm.irqLine(2 ** 32, 1)).toThrow(RangeError);
  });
});

describeNative('in-kernel devices and their state', (open) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = open()));
  afterEach(() => kvm.close());

  test('the kernel\'s rules for creating them', () => {
    const vm = kvm.createVm();
    expectKvmError(() => vm.createPit2(), 'ENOENT', 'KVM_CREATE_PIT2'); // the PIT needs the irqchip
    vm.createIrqchip();
    expectKvmError(() => vm.createIrqchip(), 'EEXIST', 'KVM_CREATE_IRQCHIP');
    vm.createPit2();
    expectKvmError(() => vm.createPit2(), 'EEXIST', 'KVM_CREATE_PIT2');
    expectKvmError(() => vm.getIrqchip(3 as IrqchipId), 'EINVAL', 'KVM_GET_IRQCHIP');
    const late = kvm.createVm();
    late.createVcpu(0);
    expectKvmError(() => late.createIrqchip(), 'EINVAL', 'KVM_CREATE_IRQCHIP'); // after a vCPU
  });

  test('an MSR the kernel refuses is skipped when it already holds the value, else a KvmError naming it', () => {
    // MSR_KVM_ASYNC_PF_INT: readable, but the kernel takes no write without an in-kernel LAPIC
    const MSR_KVM_ASYNC_PF_INT = 0x4b564d06;
    const { vcpu } = machine(kvm, false);
    const state = vcpu.getState();
    expect(state.msrs!.find((m) => m.index === MSR_KVM_ASYNC_PF_INT)?.data).toBe(0n);
    expect(vcpu.setMsrs([{ index: MSR_KVM_ASYNC_PF_INT, data: 0n }])).toBe(0);
    vcpu.setState({ ...state, msrs: state.msrs!.map((m) => (m.index === MSR_LSTAR ? { ...m, data: 0xffff_ffff_8200_0000n } : m)) });
    expect(vcpu.getMsrs([MSR_LSTAR])).toEqual([{ index: MSR_LSTAR, data: 0xffff_ffff_8200_0000n }]); // the MSRs after it were written
    const differs = { ...state, msrs: state.msrs!.map((m) => (m.index === MSR_KVM_ASYNC_PF_INT ? { ...m, data: 0x20n } : m)) };
    expectKvmError(() => vcpu.setState(differs), 'EINVAL', 'KVM_SET_MSRS');
    expect(() => vcpu.setState(differs)).toThrow(/MSR 0x4b564d06 = 0x20/);
  });

  test('KVM_IRQ_LINE raises a PIC input: its IRR bit is set', () => {
    const vm = kvm.createVm();
    vm.createIrqchip();
    expect(vm.getIrqchip(IrqchipId.PicMaster).irr).toBe(0);
    vm.irqLine(4, 1);
    expect(vm.getIrqchip(IrqchipId.PicMaster).irr).toBe(0x10);
  });

  test('vm.getState() -> setState() on a fresh VM -> getState() is the same (the PIT\'s load time and the clock aside)', () => {
    const src = machine(kvm, true).vm;
    src.setIrqchip(IrqchipId.PicMaster, { ...src.getIrqchip(IrqchipId.PicMaster), imr: 0xab, irqBase: 0x30 });
    src.setIrqchip(IrqchipId.PicSlave, { ...src.getIrqchip(IrqchipId.PicSlave), imr: 0xcd, irqBase: 0x38 });
    const ioapic = src.getIrqchip(IrqchipId.Ioapic);
    src.setIrqchip(IrqchipId.Ioapic, { ...ioapic, id: 5, redirtbl: ioapic.redirtbl.map((e, i) => (i === 3 ? 0x10025n : e)) });
    const pit = src.getPit2();
    src.setPit2({ ...pit, channels: [{ ...pit.channels[0], mode: 2, count: 0x1234 }, pit.channels[1], pit.channels[2]] });
    const s1 = src.getState();
    expect(s1.irqchip!.picMaster).toMatchObject({ imr: 0xab, irqBase: 0x30 });
    expect(s1.irqchip!.ioapic).toMatchObject({ baseAddress: 0xfec00000, id: 5 });
    expect(s1.irqchip!.ioapic.redirtbl[3]).toBe(0x10025n);
    const dst = machine(kvm, true).vm;
    dst.setState(s1);
    const s2 = dst.getState();
    expect(s2.irqchip).toEqual(s1.irqchip);
    const channels = (s: typeof s1): unknown => s.pit2!.channels.map(({ countLoadTime: _, ...c }) => c);
    expect(channels(s2)).toEqual(channels(s1));
    expect(s2.pit2!.channels[0]).toMatchObject({ mode: 2, count: 0x1234 });
    expect(s2.clock!.clock).toBeGreaterThanOrEqual(s1.clock!.clock);
  });
});
