// The emulated kernels: what KVM_CHECK_EXTENSION answers and which dirty-tracking features
// exist, per architecture (DESIGN.md §4). Every number is upstream KVM's (kernel-semantics.md
// §1-§2); the x86_64 limits are the ones measured on the development host (§18.2).

import { availableParallelism } from 'node:os';
import { Cap, DIRTY_GFN_SIZE, DIRTY_RING_MAX_ENTRIES, DIRTY_RING_RSVD_ENTRIES, PAGE_SIZE, SyncRegs, type Arch } from '../constants';
import { CLOCK_VALID_FLAGS } from './state';

export interface Profile {
  readonly arch: Arch;
  /** KVM_DIRTY_LOG_PAGE_OFFSET: 0 means the arch has no dirty ring (rule 7). */
  readonly dirtyLogPageOffset: number;
  /** CONFIG_HAVE_KVM_DIRTY_RING_TSO: plain KVM_CAP_DIRTY_LOG_RING is offered (rule 11). */
  readonly ringTso: boolean;
  /** CONFIG_HAVE_KVM_DIRTY_RING_ACQ_REL (rule 11). */
  readonly ringAcqRel: boolean;
  /** CONFIG_NEED_KVM_DIRTY_RING_WITH_BITMAP (rule 12). */
  readonly ringWithBitmap: boolean;
  /** Reserved entries per ring: KVM_DIRTY_RING_RSVD_ENTRIES + kvm_cpu_dirty_log_size() (no PML: 0). */
  readonly ringReservedEntries: number;
  /**
   * KVM_DIRTY_LOG_MANUAL_CAPS, answered for KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (rule 13); 0 where
   * the arch does not select CONFIG_KVM_GENERIC_DIRTYLOG_READ_PROTECT, which also leaves it
   * without KVM_CLEAR_DIRTY_LOG (ENOTTY) and with a GET that always clears.
   */
  readonly manualDirtyLogCaps: number;
  /** KVM_CAP_S390_CMMA_MIGRATION and the s390 CMMA ioctls (rule 14). */
  readonly cmma: boolean;
  /** kvm_arch_nr_memslot_as_ids(): address spaces (KVM_CAP_MULTI_ADDRESS_SPACE answers it when > 1). */
  readonly addressSpaces: number;
  /** KVM_USER_MEM_SLOTS (KVM_CAP_NR_MEMSLOTS). */
  readonly userMemSlots: number;
  /** KVM_MAX_VCPUS (KVM_CAP_MAX_VCPUS). */
  readonly maxVcpus: number;
  /** KVM_MAX_VCPU_IDS (KVM_CAP_MAX_VCPU_ID): KVM_CREATE_VCPU takes ids below it. */
  readonly maxVcpuIds: number;
  /** KVM_MEM_READONLY is a valid memslot flag (__KVM_HAVE_READONLY_MEM). */
  readonly readonlyMem: boolean;
  /** KVM_GET_VCPU_MMAP_SIZE: kvm_run + PIO data page (x86) + coalesced MMIO ring (CONFIG_KVM_MMIO). */
  readonly vcpuMmapSize: number;
  /** The modelled host logs through Intel PML (x86_64 only): kvm_cpu_dirty_log_size() is 512. */
  readonly pml: boolean;
}

const RING_MAX_BYTES = DIRTY_RING_MAX_ENTRIES * DIRTY_GFN_SIZE;

export const PROFILES: Readonly<Record<Arch, Profile>> = {
  x86_64: {
    arch: 'x86_64',
    dirtyLogPageOffset: 64,
    ringTso: true,
    ringAcqRel: true,
    ringWithBitmap: false,
    ringReservedEntries: DIRTY_RING_RSVD_ENTRIES,
    manualDirtyLogCaps: 3,
    cmma: false,
    addressSpaces: 1,
    userMemSlots: 32764,
    maxVcpus: 1024,
    maxVcpuIds: 4096,
    readonlyMem: true,
    vcpuMmapSize: 3 * PAGE_SIZE,
    pml: false,
  },
  arm64: {
    arch: 'arm64',
    dirtyLogPageOffset: 64,
    ringTso: false,
    ringAcqRel: true,
    ringWithBitmap: true,
    ringReservedEntries: DIRTY_RING_RSVD_ENTRIES,
    manualDirtyLogCaps: 3,
    cmma: false,
    addressSpaces: 1,
    // generic KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM (SHRT_MAX) - 0 internal slots
    userMemSlots: 32767,
    maxVcpus: 512,
    maxVcpuIds: 512,
    readonlyMem: true,
    // no PIO page on arm64
    vcpuMmapSize: 2 * PAGE_SIZE,
    pml: false,
  },
  s390x: {
    arch: 's390x',
    dirtyLogPageOffset: 0,
    ringTso: false,
    ringAcqRel: false,
    ringWithBitmap: false,
    ringReservedEntries: DIRTY_RING_RSVD_ENTRIES,
    // arch/s390/kvm/Kconfig does not select KVM_GENERIC_DIRTYLOG_READ_PROTECT: s390 has its own
    // kvm_vm_ioctl_get_dirty_log() (kvm-s390.c), no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, no CLEAR.
    manualDirtyLogCaps: 0,
    cmma: true,
    addressSpaces: 1,
    // arch/s390/include/asm/kvm_host.h: KVM_USER_MEM_SLOTS 32
    userMemSlots: 32,
    maxVcpus: 255,
    maxVcpuIds: 255,
    readonlyMem: false,
    // neither a PIO page nor CONFIG_KVM_MMIO
    vcpuMmapSize: PAGE_SIZE,
    pml: false,
  },
};

/** The PML buffer's entries (PML_ENTITY_NUM, arch/x86/kvm/vmx/vmx.h): kvm_cpu_dirty_log_size() with PML. */
export const PML_ENTRIES = 512;

/**
 * The profile for `arch`; with `pml`, the x86_64 profile of an Intel host that logs through
 * PML (EPT + PML on): 64 + 512 reserved ring entries, so 4 and 8 KiB rings are EINVAL, 16 KiB
 * is the smallest, and a ring's soft limit is entries - 576. Everything else is unchanged.
 */
export function profileFor(arch: Arch, options: { pml?: boolean } = {}): Profile {
  const base = PROFILES[arch];
  if (base === undefined) throw new RangeError(`the emulator has no profile for arch ${JSON.stringify(arch)}`);
  if (!options.pml) return base;
  if (arch !== 'x86_64') throw new RangeError(`pml models an Intel x86_64 host; arch ${arch} has no PML`);
  return { ...base, pml: true, ringReservedEntries: DIRTY_RING_RSVD_ENTRIES + PML_ENTRIES };
}

/** KVM_CHECK_EXTENSION as the profile's kernel answers it (same on the system and VM fd, rule 15). */
export function checkExtension(p: Profile, cap: number): number {
  switch (cap) {
    case Cap.UserMemory:
    case Cap.ImmediateExit:
    case Cap.CheckExtensionVm:
    case Cap.EnableCapVm:
      return 1;
    case Cap.NrVcpus:
      return Math.min(availableParallelism(), p.maxVcpus);
    case Cap.MaxVcpus:
      return p.maxVcpus;
    case Cap.MaxVcpuId:
      return p.maxVcpuIds;
    case Cap.NrMemslots:
      return p.userMemSlots;
    case Cap.MultiAddressSpace:
      return p.addressSpaces > 1 ? p.addressSpaces : 0;
    case Cap.ReadonlyMem:
      return p.readonlyMem ? 1 : 0;
    case Cap.DirtyLogRing:
      return p.dirtyLogPageOffset !== 0 && p.ringTso ? RING_MAX_BYTES : 0;
    case Cap.DirtyLogRingAcqRel:
      return p.dirtyLogPageOffset !== 0 && p.ringAcqRel ? RING_MAX_BYTES : 0;
    case Cap.DirtyLogRingWithBitmap:
      return p.ringWithBitmap ? 1 : 0;
    case Cap.ManualDirtyLogProtect2:
      return p.manualDirtyLogCaps;
    case Cap.S390CmmaMigration:
    case Cap.VmAttributes:
      return p.cmma ? 1 : 0;
    // The vCPU and VM state state.ts models, on every profile (the registers are x86's
    // everywhere). Not modelled, so 0 (the default): Irqchip, Pit, Pit2, PitState2, Xsave,
    // Xsave2, Xcrs, VcpuEvents.
    case Cap.MpState:
    case Cap.Debugregs:
    case Cap.SetTssAddr:
    case Cap.SetIdentityMapAddr:
      return 1;
    case Cap.AdjustClock:
      return CLOCK_VALID_FLAGS;
    // x86's general registers only (the model keeps no sregs or events in kvm_run)
    case Cap.SyncRegs:
      return p.arch === 'x86_64' ? SyncRegs.X86Regs : 0;
    default:
      return 0;
  }
}
