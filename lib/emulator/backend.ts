// The emulator backend: a pure-TypeScript KVM with upstream's dirty-tracking semantics, per
// architecture profile (DESIGN.md §4; rule numbers refer to kernel-semantics.md). One file
// per kernel object:
//
//   profiles.ts  what each arch offers (KVM_CHECK_EXTENSION, limits, mmap sizes)
//   system.ts    the /dev/kvm fd
//   vm.ts        the VM fd: caps, memslots, dirty bitmap GET/CLEAR, ring reset, s390 delegation
//   vcpu.ts      the vCPU fd: KVM_RUN over the workload model, kvm_run, registers
//   ring.ts      one vCPU's dirty ring (the kernel's struct kvm_dirty_gfn layout)
//   memory.ts    guest RAM and memslots (bitmap + write protection per slot)
//   cmma.ts      s390 storage attributes (KVM_S390_GET/SET_CMMA_BITS, migration mode, ESSA)
//   ../guest/model.ts  the workloads, executing lib/guest/x86.ts's code
//
// Where the kernel's behaviour depends on the CPU or the host, the emulator chose:
// - Logging is upstream's write-protection: a page is logged by the first guest store after it
//   was (re)protected (rule 43), never once per store as on the PVM development host (§18.4).
//   With no PML, a ring reserves 64 entries (rule 6); openKvm({ pml: true }) models an Intel host
//   with PML instead (64 + 512 reserved, profiles.ts profileFor), as nobody here has one. Writes KVM makes itself
//   (EmulatorHooks.guestWrite with vcpuId null) are logged every time.
// - Exits leave registers as KVM's instruction emulator does, which is what the native backend
//   shows on this host, RFLAGS included: after an OUT or an MMIO store rip is past the
//   instruction; an MMIO load completes on the next KVM_RUN from kvm_run.mmio.data; a store
//   that fills the ring to its soft limit retires before KVM_EXIT_DIRTY_RING_FULL.
// - Only the guest harness's 64-bit code runs. A vCPU with nothing loaded (real mode at the
//   reset vector) or other code exits with KVM_EXIT_INTERNAL_ERROR, suberror
//   KVM_INTERNAL_ERROR_EMULATION; a store above what the harness page tables map is a triple
//   fault (KVM_EXIT_SHUTDOWN); a memslot whose memory was closed makes KVM_RUN fail with EFAULT.
// - run() cannot be kicked from the one JS thread: a synchronous run of Workload.spin()
//   returns ExitReason.Intr after SYNC_SPIN_MS (vcpu.ts). runAsync() runs in slices on the
//   event loop; kick() lands between slices; a kick with no run pending (or
//   kvm_run.immediate_exit) makes the next run return Intr at once.
// - s390x has no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 and no KVM_CLEAR_DIRTY_LOG (ENOTTY): its
//   Kconfig does not select KVM_GENERIC_DIRTYLOG_READ_PROTECT. arm64 fails the s390 ioctls and
//   KVM_GET_DEVICE_ATTR with its kvm_arch_vm_ioctl() default, EINVAL; its one VM attribute is
//   the SMCCC filter (group 0, attr 0).
// - The registers are x86's on every profile: the workloads are x86 code. So is the rest of the
//   vCPU and VM state (state.ts): FPU, debug registers, MP state, CPUID storage, TSS and
//   identity-map addresses and kvmclock are modelled; there is no in-kernel irqchip, PIT,
//   XSAVE, XCRS or vCPU events (their caps answer 0, their requests fail as a kernel without
//   them, or a VM without them, does) and no MSR.

import type { BackendOptions, BackendSystem } from '../backend';
import { profileFor } from './profiles';
import { EmulatedSystem } from './system';

/** Opens the emulated /dev/kvm for `options.arch` (default x86_64), of a PML host with `options.pml`; `device` is ignored. */
export function openEmulatorBackend(options: BackendOptions = {}): BackendSystem {
  return new EmulatedSystem(profileFor(options.arch ?? 'x86_64', { pml: options.pml }));
}
