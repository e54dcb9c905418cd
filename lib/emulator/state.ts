// The emulated x86 state ioctls beyond registers, as an x86 KVM without the in-kernel devices
// answers them. What is modelled is what costs nothing to model honestly: storage the kernel
// keeps per vCPU or VM with the kernel's checks (FPU, debug registers, MP state, CPUID, the TSS
// and identity-map addresses, kvmclock). The rest answers as the kernel's own code path does
// when the feature is absent (each case says which), and KVM_CHECK_EXTENSION agrees
// (profiles.ts): KVM_CAP_IRQCHIP, _PIT2, _XSAVE, _XSAVE2, _XCRS and _VCPU_EVENTS are 0.
//
// Behaviour measured on the native host (kernel 6.18) that the model copies:
// - KVM_GET_FPU never reports MXCSR (kvm_arch_vcpu_ioctl_get_fpu() copies every fxsave field
//   but mxcsr): it reads 0, and the pad bytes read 0. A fresh vCPU's FPU has fcw 0x37f, all else 0.
// - KVM_SET_DEBUGREGS takes any DR6/DR7 below 2^32 and KVM_GET_DEBUGREGS returns them as set;
//   a fresh vCPU has DR6 0xffff0ff0, DR7 0x400.
// - KVM_GET/SET_MSRS stop at the first MSR the kernel does not know, returning how many they
//   processed; E2BIG from 256 entries (MAX_IO_MSRS).
// - KVM_SET_CPUID2: E2BIG above 256 entries; a fresh vCPU has none (KVM_GET_CPUID2 nent 0).

import {
  CLOCK_DATA_SIZE,
  CLOCK_HOST_TSC,
  CLOCK_REALTIME,
  CLOCK_TSC_STABLE,
  COUNTED_HEADER_SIZE,
  CPUID_ENTRY_SIZE,
  DEBUGREGS_SIZE,
  FPU_SIZE,
  MAX_CPUID_ENTRIES,
  MAX_IO_MSRS,
  MpState,
} from '../kvm-structs';
import { fail } from '../errors';

/** KVM_CLOCK_VALID_FLAGS: what KVM_CAP_ADJUST_CLOCK answers and KVM_SET_CLOCK accepts. */
export const CLOCK_VALID_FLAGS = CLOCK_TSC_STABLE | CLOCK_REALTIME | CLOCK_HOST_TSC;

function u32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at, true);
}

/** One emulated vCPU's state beyond kvm_regs and kvm_sregs. */
export class EmulatedVcpuState {
  readonly #fpu = new Uint8Array(FPU_SIZE);
  readonly #debugregs = new Uint8Array(DEBUGREGS_SIZE);
  #mpState: number = MpState.Runnable;
  /** the entries of the last KVM_SET_CPUID2 (40 bytes each) */
  #cpuid = new Uint8Array(0);
  /** KVM_RUN has been called (kvm_vcpu_has_run()): KVM_SET_CPUID2 then takes only the same table */
  hasRun = false;

  constructor() {
    new DataView(this.#fpu.buffer).setUint16(128, 0x37f, true); // fcw after fpstate_init
    const dr = new DataView(this.#debugregs.buffer);
    dr.setBigUint64(32, 0xffff0ff0n, true); // DR6_ACTIVE_LOW
    dr.setBigUint64(40, 0x400n, true); // DR7_FIXED_1
  }

  getFpu(out: Uint8Array): void {
    out.set(this.#fpu);
  }

  /** kvm_arch_vcpu_ioctl_set_fpu(): the fields go into the fxsave area; GET leaves out MXCSR and the pads. */
  setFpu(fpu: Uint8Array): void {
    this.#fpu.set(fpu);
    this.#fpu[133] = 0; // pad1
    this.#fpu.fill(0, 408); // mxcsr (not reported), pad2
  }

  getDebugregs(out: Uint8Array): void {
    out.set(this.#debugregs);
  }

  /** kvm_vcpu_ioctl_x86_set_debugregs(): flags must be 0, DR6 and DR7 fit in 32 bits. */
  setDebugregs(regs: Uint8Array): void {
    const v = new DataView(regs.buffer, regs.byteOffset, regs.byteLength);
    if (v.getBigUint64(48, true) !== 0n) fail('EINVAL', 'KVM_SET_DEBUGREGS', 'flags must be 0');
    if (v.getBigUint64(32, true) >> 32n !== 0n || v.getBigUint64(40, true) >> 32n !== 0n) {
      fail('EINVAL', 'KVM_SET_DEBUGREGS', 'DR6 and DR7 are 32-bit registers (kvm_dr6_valid, kvm_dr7_valid)');
    }
    this.#debugregs.set(regs.subarray(0, 56)); // db[4], dr6, dr7, flags (0); the reserved words stay 0
  }

  getMpState(): number {
    return this.#mpState;
  }

  /**
   * kvm_arch_vcpu_ioctl_set_mpstate(): without an in-kernel local APIC (the emulator has none)
   * only KVM_MP_STATE_RUNNABLE is accepted, EINVAL otherwise.
   */
  setMpState(state: number): void {
    if (state !== MpState.Runnable) fail('EINVAL', 'KVM_SET_MP_STATE', 'without an in-kernel LAPIC only KVM_MP_STATE_RUNNABLE (0) is accepted');
    this.#mpState = state;
  }

  /** kvm_vcpu_ioctl_get_cpuid2(): E2BIG when nent is below the vCPU's count; else the entries and the count. */
  getCpuid2(cpuid: Uint8Array): number {
    const count = this.#cpuid.length / CPUID_ENTRY_SIZE;
    if (u32(cpuid, 0) < count) fail('E2BIG', 'KVM_GET_CPUID2', `the vCPU has ${count} CPUID entries`);
    cpuid.set(this.#cpuid, COUNTED_HEADER_SIZE);
    new DataView(cpuid.buffer, cpuid.byteOffset, cpuid.byteLength).setUint32(0, count, true);
    return count;
  }

  /**
   * kvm_vcpu_ioctl_set_cpuid2(): E2BIG above KVM_MAX_CPUID_ENTRIES; after KVM_RUN only an
   * identical table (kvm_cpuid_check_equal(), EINVAL). The entries' contents are not checked
   * (the kernel's kvm_check_cpuid() looks at XSAVE sizes and MAXPHYADDR, which the emulator
   * does not model).
   */
  setCpuid2(cpuid: Uint8Array): void {
    const n = u32(cpuid, 0);
    if (n > MAX_CPUID_ENTRIES) fail('E2BIG', 'KVM_SET_CPUID2', `${n} entries, at most ${MAX_CPUID_ENTRIES}`);
    const entries = cpuid.slice(COUNTED_HEADER_SIZE, COUNTED_HEADER_SIZE + n * CPUID_ENTRY_SIZE);
    if (this.hasRun && !sameBytes(entries, this.#cpuid)) fail('EINVAL', 'KVM_SET_CPUID2', 'after KVM_RUN the CPUID can only be set to the same table');
    this.#cpuid = entries;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * msr_io() for the emulated vCPU, which knows no MSR (KVM_GET_MSR_INDEX_LIST is empty): every
 * entry fails as an unknown MSR does in kvm_get_msr_common()/kvm_set_msr_common(), so the ioctl
 * processes 0 entries; E2BIG from MAX_IO_MSRS entries.
 */
export function emulatedMsrIo(msrs: Uint8Array, ioctl: 'KVM_GET_MSRS' | 'KVM_SET_MSRS'): number {
  if (u32(msrs, 0) >= MAX_IO_MSRS) fail('E2BIG', ioctl, `${u32(msrs, 0)} entries, fewer than ${MAX_IO_MSRS} are taken`);
  return 0;
}

/** The emulated VM's TSS and identity-map addresses and kvmclock. */
export class EmulatedVmState {
  /** kvmclock_offset: kvmclock = host monotonic ns + offset; a new VM's clock starts at 0 */
  #clockOffset = -process.hrtime.bigint();
  tssAddr: number | null = null;
  identityMapAddr: number | null = null;

  /** kvm_vm_ioctl_set_tss_addr(): EINVAL above (unsigned int)(-3 * PAGE_SIZE), the 3 pages must fit below 4 GiB. */
  setTssAddr(addr: number): void {
    if (addr > 0xffff_d000) fail('EINVAL', 'KVM_SET_TSS_ADDR', 'the TSS (3 pages) must end below 4 GiB');
    this.tssAddr = addr;
  }

  /** kvm_vm_ioctl_set_identity_map_addr(): only before the first vCPU (EINVAL after). */
  setIdentityMapAddr(addr: number, createdVcpus: number): void {
    if (createdVcpus !== 0) fail('EINVAL', 'KVM_SET_IDENTITY_MAP_ADDR', 'a vCPU already exists');
    this.identityMapAddr = addr;
  }

  /**
   * get_kvmclock() on a host without a stable master clock (as the development host reports
   * before the first KVM_SET_CLOCK): the clock alone, flags 0.
   */
  getClock(out: Uint8Array): void {
    out.fill(0);
    new DataView(out.buffer, out.byteOffset, CLOCK_DATA_SIZE).setBigUint64(0, BigInt.asUintN(64, process.hrtime.bigint() + this.#clockOffset), true);
  }

  /** kvm_vm_ioctl_set_clock(): flags within KVM_CLOCK_VALID_FLAGS; KVM_CLOCK_REALTIME adds the real time since `realtime`. */
  setClock(data: Uint8Array): void {
    const v = new DataView(data.buffer, data.byteOffset, CLOCK_DATA_SIZE);
    const flags = v.getUint32(8, true);
    if ((flags & ~CLOCK_VALID_FLAGS) !== 0) fail('EINVAL', 'KVM_SET_CLOCK', `flags 0x${flags.toString(16)} outside KVM_CLOCK_VALID_FLAGS`);
    let clock = v.getBigUint64(0, true);
    if ((flags & CLOCK_REALTIME) !== 0) {
      const nowReal = BigInt(Date.now()) * 1_000_000n;
      const realtime = v.getBigUint64(16, true);
      if (nowReal > realtime) clock += nowReal - realtime; // never steps kvmclock back
    }
    this.#clockOffset = BigInt.asUintN(64, clock) - process.hrtime.bigint();
  }
}
