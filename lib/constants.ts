// Constants of <linux/kvm.h>, named as the kernel names them (PascalCase, prefix dropped).
// Generated once from the uapi header (Debian's 6.1 copy) plus the later numbers the
// project relies on (kernel-semantics.md §1); the values are the kernel's ABI.

/** KVM_CAP_* for KVM_CHECK_EXTENSION and KVM_ENABLE_CAP. */
export enum Cap {
  /** KVM_CAP_IRQCHIP */
  Irqchip = 0,
  /** KVM_CAP_HLT */
  Hlt = 1,
  /** KVM_CAP_MMU_SHADOW_CACHE_CONTROL */
  MmuShadowCacheControl = 2,
  /** KVM_CAP_USER_MEMORY */
  UserMemory = 3,
  /** KVM_CAP_SET_TSS_ADDR */
  SetTssAddr = 4,
  /** KVM_CAP_VAPIC */
  Vapic = 6,
  /** KVM_CAP_EXT_CPUID */
  ExtCpuid = 7,
  /** KVM_CAP_CLOCKSOURCE */
  Clocksource = 8,
  /** KVM_CAP_NR_VCPUS */
  NrVcpus = 9,
  /** KVM_CAP_NR_MEMSLOTS */
  NrMemslots = 10,
  /** KVM_CAP_PIT */
  Pit = 11,
  /** KVM_CAP_NOP_IO_DELAY */
  NopIoDelay = 12,
  /** KVM_CAP_PV_MMU */
  PvMmu = 13,
  /** KVM_CAP_MP_STATE */
  MpState = 14,
  /** KVM_CAP_COALESCED_MMIO */
  CoalescedMmio = 15,
  /** KVM_CAP_SYNC_MMU */
  SyncMmu = 16,
  /** KVM_CAP_IOMMU */
  Iommu = 18,
  /** KVM_CAP_DESTROY_MEMORY_REGION_WORKS */
  DestroyMemoryRegionWorks = 21,
  /** KVM_CAP_USER_NMI */
  UserNmi = 22,
  /** KVM_CAP_SET_GUEST_DEBUG */
  SetGuestDebug = 23,
  /** KVM_CAP_REINJECT_CONTROL */
  ReinjectControl = 24,
  /** KVM_CAP_IRQ_ROUTING */
  IrqRouting = 25,
  /** KVM_CAP_IRQ_INJECT_STATUS */
  IrqInjectStatus = 26,
  /** KVM_CAP_ASSIGN_DEV_IRQ */
  AssignDevIrq = 29,
  /** KVM_CAP_JOIN_MEMORY_REGIONS_WORKS */
  JoinMemoryRegionsWorks = 30,
  /** KVM_CAP_MCE */
  Mce = 31,
  /** KVM_CAP_IRQFD */
  Irqfd = 32,
  /** KVM_CAP_PIT2 */
  Pit2 = 33,
  /** KVM_CAP_SET_BOOT_CPU_ID */
  SetBootCpuId = 34,
  /** KVM_CAP_PIT_STATE2 */
  PitState2 = 35,
  /** KVM_CAP_IOEVENTFD */
  Ioeventfd = 36,
  /** KVM_CAP_SET_IDENTITY_MAP_ADDR */
  SetIdentityMapAddr = 37,
  /** KVM_CAP_XEN_HVM */
  XenHvm = 38,
  /** KVM_CAP_ADJUST_CLOCK */
  AdjustClock = 39,
  /** KVM_CAP_INTERNAL_ERROR_DATA */
  InternalErrorData = 40,
  /** KVM_CAP_VCPU_EVENTS */
  VcpuEvents = 41,
  /** KVM_CAP_S390_PSW */
  S390Psw = 42,
  /** KVM_CAP_PPC_SEGSTATE */
  PpcSegstate = 43,
  /** KVM_CAP_HYPERV */
  Hyperv = 44,
  /** KVM_CAP_HYPERV_VAPIC */
  HypervVapic = 45,
  /** KVM_CAP_HYPERV_SPIN */
  HypervSpin = 46,
  /** KVM_CAP_PCI_SEGMENT */
  PciSegment = 47,
  /** KVM_CAP_PPC_PAIRED_SINGLES */
  PpcPairedSingles = 48,
  /** KVM_CAP_INTR_SHADOW */
  IntrShadow = 49,
  /** KVM_CAP_DEBUGREGS */
  Debugregs = 50,
  /** KVM_CAP_X86_ROBUST_SINGLESTEP */
  X86RobustSinglestep = 51,
  /** KVM_CAP_PPC_OSI */
  PpcOsi = 52,
  /** KVM_CAP_PPC_UNSET_IRQ */
  PpcUnsetIrq = 53,
  /** KVM_CAP_ENABLE_CAP */
  EnableCap = 54,
  /** KVM_CAP_XSAVE */
  Xsave = 55,
  /** KVM_CAP_XCRS */
  Xcrs = 56,
  /** KVM_CAP_PPC_GET_PVINFO */
  PpcGetPvinfo = 57,
  /** KVM_CAP_PPC_IRQ_LEVEL */
  PpcIrqLevel = 58,
  /** KVM_CAP_ASYNC_PF */
  AsyncPf = 59,
  /** KVM_CAP_TSC_CONTROL */
  TscControl = 60,
  /** KVM_CAP_GET_TSC_KHZ */
  GetTscKhz = 61,
  /** KVM_CAP_PPC_BOOKE_SREGS */
  PpcBookeSregs = 62,
  /** KVM_CAP_SPAPR_TCE */
  SpaprTce = 63,
  /** KVM_CAP_PPC_SMT */
  PpcSmt = 64,
  /** KVM_CAP_PPC_RMA */
  PpcRma = 65,
  /** KVM_CAP_MAX_VCPUS */
  MaxVcpus = 66,
  /** KVM_CAP_PPC_HIOR */
  PpcHior = 67,
  /** KVM_CAP_PPC_PAPR */
  PpcPapr = 68,
  /** KVM_CAP_SW_TLB */
  SwTlb = 69,
  /** KVM_CAP_ONE_REG */
  OneReg = 70,
  /** KVM_CAP_S390_GMAP */
  S390Gmap = 71,
  /** KVM_CAP_TSC_DEADLINE_TIMER */
  TscDeadlineTimer = 72,
  /** KVM_CAP_S390_UCONTROL */
  S390Ucontrol = 73,
  /** KVM_CAP_SYNC_REGS */
  SyncRegs = 74,
  /** KVM_CAP_PCI_2_3 */
  Pci23 = 75,
  /** KVM_CAP_KVMCLOCK_CTRL */
  KvmclockCtrl = 76,
  /** KVM_CAP_SIGNAL_MSI */
  SignalMsi = 77,
  /** KVM_CAP_PPC_GET_SMMU_INFO */
  PpcGetSmmuInfo = 78,
  /** KVM_CAP_S390_COW */
  S390Cow = 79,
  /** KVM_CAP_PPC_ALLOC_HTAB */
  PpcAllocHtab = 80,
  /** KVM_CAP_READONLY_MEM */
  ReadonlyMem = 81,
  /** KVM_CAP_IRQFD_RESAMPLE */
  IrqfdResample = 82,
  /** KVM_CAP_PPC_BOOKE_WATCHDOG */
  PpcBookeWatchdog = 83,
  /** KVM_CAP_PPC_HTAB_FD */
  PpcHtabFd = 84,
  /** KVM_CAP_S390_CSS_SUPPORT */
  S390CssSupport = 85,
  /** KVM_CAP_PPC_EPR */
  PpcEpr = 86,
  /** KVM_CAP_ARM_PSCI */
  ArmPsci = 87,
  /** KVM_CAP_ARM_SET_DEVICE_ADDR */
  ArmSetDeviceAddr = 88,
  /** KVM_CAP_DEVICE_CTRL */
  DeviceCtrl = 89,
  /** KVM_CAP_IRQ_MPIC */
  IrqMpic = 90,
  /** KVM_CAP_PPC_RTAS */
  PpcRtas = 91,
  /** KVM_CAP_IRQ_XICS */
  IrqXics = 92,
  /** KVM_CAP_ARM_EL1_32BIT */
  ArmEl132BIT = 93,
  /** KVM_CAP_SPAPR_MULTITCE */
  SpaprMultitce = 94,
  /** KVM_CAP_EXT_EMUL_CPUID */
  ExtEmulCpuid = 95,
  /** KVM_CAP_HYPERV_TIME */
  HypervTime = 96,
  /** KVM_CAP_IOAPIC_POLARITY_IGNORED */
  IoapicPolarityIgnored = 97,
  /** KVM_CAP_ENABLE_CAP_VM */
  EnableCapVm = 98,
  /** KVM_CAP_S390_IRQCHIP */
  S390Irqchip = 99,
  /** KVM_CAP_IOEVENTFD_NO_LENGTH */
  IoeventfdNoLength = 100,
  /** KVM_CAP_VM_ATTRIBUTES */
  VmAttributes = 101,
  /** KVM_CAP_ARM_PSCI_0_2 */
  ArmPsci02 = 102,
  /** KVM_CAP_PPC_FIXUP_HCALL */
  PpcFixupHcall = 103,
  /** KVM_CAP_PPC_ENABLE_HCALL */
  PpcEnableHcall = 104,
  /** KVM_CAP_CHECK_EXTENSION_VM */
  CheckExtensionVm = 105,
  /** KVM_CAP_S390_USER_SIGP */
  S390UserSigp = 106,
  /** KVM_CAP_S390_VECTOR_REGISTERS */
  S390VectorRegisters = 107,
  /** KVM_CAP_S390_MEM_OP */
  S390MemOp = 108,
  /** KVM_CAP_S390_USER_STSI */
  S390UserStsi = 109,
  /** KVM_CAP_S390_SKEYS */
  S390Skeys = 110,
  /** KVM_CAP_MIPS_FPU */
  MipsFpu = 111,
  /** KVM_CAP_MIPS_MSA */
  MipsMsa = 112,
  /** KVM_CAP_S390_INJECT_IRQ */
  S390InjectIrq = 113,
  /** KVM_CAP_S390_IRQ_STATE */
  S390IrqState = 114,
  /** KVM_CAP_PPC_HWRNG */
  PpcHwrng = 115,
  /** KVM_CAP_DISABLE_QUIRKS */
  DisableQuirks = 116,
  /** KVM_CAP_X86_SMM */
  X86Smm = 117,
  /** KVM_CAP_MULTI_ADDRESS_SPACE */
  MultiAddressSpace = 118,
  /** KVM_CAP_GUEST_DEBUG_HW_BPS */
  GuestDebugHwBps = 119,
  /** KVM_CAP_GUEST_DEBUG_HW_WPS */
  GuestDebugHwWps = 120,
  /** KVM_CAP_SPLIT_IRQCHIP */
  SplitIrqchip = 121,
  /** KVM_CAP_IOEVENTFD_ANY_LENGTH */
  IoeventfdAnyLength = 122,
  /** KVM_CAP_HYPERV_SYNIC */
  HypervSynic = 123,
  /** KVM_CAP_S390_RI */
  S390Ri = 124,
  /** KVM_CAP_SPAPR_TCE_64 */
  SpaprTce64 = 125,
  /** KVM_CAP_ARM_PMU_V3 */
  ArmPmuV3 = 126,
  /** KVM_CAP_VCPU_ATTRIBUTES */
  VcpuAttributes = 127,
  /** KVM_CAP_MAX_VCPU_ID */
  MaxVcpuId = 128,
  /** KVM_CAP_X2APIC_API */
  X2apicApi = 129,
  /** KVM_CAP_S390_USER_INSTR0 */
  S390UserInstr0 = 130,
  /** KVM_CAP_MSI_DEVID */
  MsiDevid = 131,
  /** KVM_CAP_PPC_HTM */
  PpcHtm = 132,
  /** KVM_CAP_SPAPR_RESIZE_HPT */
  SpaprResizeHpt = 133,
  /** KVM_CAP_PPC_MMU_RADIX */
  PpcMmuRadix = 134,
  /** KVM_CAP_PPC_MMU_HASH_V3 */
  PpcMmuHashV3 = 135,
  /** KVM_CAP_IMMEDIATE_EXIT */
  ImmediateExit = 136,
  /** KVM_CAP_MIPS_VZ */
  MipsVz = 137,
  /** KVM_CAP_MIPS_TE */
  MipsTe = 138,
  /** KVM_CAP_MIPS_64BIT */
  Mips64BIT = 139,
  /** KVM_CAP_S390_GS */
  S390Gs = 140,
  /** KVM_CAP_S390_AIS */
  S390Ais = 141,
  /** KVM_CAP_SPAPR_TCE_VFIO */
  SpaprTceVfio = 142,
  /** KVM_CAP_X86_DISABLE_EXITS */
  X86DisableExits = 143,
  /** KVM_CAP_ARM_USER_IRQ */
  ArmUserIrq = 144,
  /** KVM_CAP_S390_CMMA_MIGRATION */
  S390CmmaMigration = 145,
  /** KVM_CAP_PPC_FWNMI */
  PpcFwnmi = 146,
  /** KVM_CAP_PPC_SMT_POSSIBLE */
  PpcSmtPossible = 147,
  /** KVM_CAP_HYPERV_SYNIC2 */
  HypervSynic2 = 148,
  /** KVM_CAP_HYPERV_VP_INDEX */
  HypervVpIndex = 149,
  /** KVM_CAP_S390_AIS_MIGRATION */
  S390AisMigration = 150,
  /** KVM_CAP_PPC_GET_CPU_CHAR */
  PpcGetCpuChar = 151,
  /** KVM_CAP_S390_BPB */
  S390Bpb = 152,
  /** KVM_CAP_GET_MSR_FEATURES */
  GetMsrFeatures = 153,
  /** KVM_CAP_HYPERV_EVENTFD */
  HypervEventfd = 154,
  /** KVM_CAP_HYPERV_TLBFLUSH */
  HypervTlbflush = 155,
  /** KVM_CAP_S390_HPAGE_1M */
  S390Hpage1M = 156,
  /** KVM_CAP_NESTED_STATE */
  NestedState = 157,
  /** KVM_CAP_ARM_INJECT_SERROR_ESR */
  ArmInjectSerrorEsr = 158,
  /** KVM_CAP_MSR_PLATFORM_INFO */
  MsrPlatformInfo = 159,
  /** KVM_CAP_PPC_NESTED_HV */
  PpcNestedHv = 160,
  /** KVM_CAP_HYPERV_SEND_IPI */
  HypervSendIpi = 161,
  /** KVM_CAP_COALESCED_PIO */
  CoalescedPio = 162,
  /** KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
  HypervEnlightenedVmcs = 163,
  /** KVM_CAP_EXCEPTION_PAYLOAD */
  ExceptionPayload = 164,
  /** KVM_CAP_ARM_VM_IPA_SIZE */
  ArmVmIpaSize = 165,
  /** KVM_CAP_MANUAL_DIRTY_LOG_PROTECT */
  ManualDirtyLogProtect = 166,
  /** KVM_CAP_HYPERV_CPUID */
  HypervCpuid = 167,
  /** KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 */
  ManualDirtyLogProtect2 = 168,
  /** KVM_CAP_PPC_IRQ_XIVE */
  PpcIrqXive = 169,
  /** KVM_CAP_ARM_SVE */
  ArmSve = 170,
  /** KVM_CAP_ARM_PTRAUTH_ADDRESS */
  ArmPtrauthAddress = 171,
  /** KVM_CAP_ARM_PTRAUTH_GENERIC */
  ArmPtrauthGeneric = 172,
  /** KVM_CAP_PMU_EVENT_FILTER */
  PmuEventFilter = 173,
  /** KVM_CAP_ARM_IRQ_LINE_LAYOUT_2 */
  ArmIrqLineLayout2 = 174,
  /** KVM_CAP_HYPERV_DIRECT_TLBFLUSH */
  HypervDirectTlbflush = 175,
  /** KVM_CAP_PPC_GUEST_DEBUG_SSTEP */
  PpcGuestDebugSstep = 176,
  /** KVM_CAP_ARM_NISV_TO_USER */
  ArmNisvToUser = 177,
  /** KVM_CAP_ARM_INJECT_EXT_DABT */
  ArmInjectExtDabt = 178,
  /** KVM_CAP_S390_VCPU_RESETS */
  S390VcpuResets = 179,
  /** KVM_CAP_S390_PROTECTED */
  S390Protected = 180,
  /** KVM_CAP_PPC_SECURE_GUEST */
  PpcSecureGuest = 181,
  /** KVM_CAP_HALT_POLL */
  HaltPoll = 182,
  /** KVM_CAP_ASYNC_PF_INT */
  AsyncPfInt = 183,
  /** KVM_CAP_LAST_CPU */
  LastCpu = 184,
  /** KVM_CAP_SMALLER_MAXPHYADDR */
  SmallerMaxphyaddr = 185,
  /** KVM_CAP_S390_DIAG318 */
  S390Diag318 = 186,
  /** KVM_CAP_STEAL_TIME */
  StealTime = 187,
  /** KVM_CAP_X86_USER_SPACE_MSR */
  X86UserSpaceMsr = 188,
  /** KVM_CAP_X86_MSR_FILTER */
  X86MsrFilter = 189,
  /** KVM_CAP_ENFORCE_PV_FEATURE_CPUID */
  EnforcePvFeatureCpuid = 190,
  /** KVM_CAP_SYS_HYPERV_CPUID */
  SysHypervCpuid = 191,
  /** KVM_CAP_DIRTY_LOG_RING */
  DirtyLogRing = 192,
  /** KVM_CAP_X86_BUS_LOCK_EXIT */
  X86BusLockExit = 193,
  /** KVM_CAP_PPC_DAWR1 */
  PpcDawr1 = 194,
  /** KVM_CAP_SET_GUEST_DEBUG2 */
  SetGuestDebug2 = 195,
  /** KVM_CAP_SGX_ATTRIBUTE */
  SgxAttribute = 196,
  /** KVM_CAP_VM_COPY_ENC_CONTEXT_FROM */
  VmCopyEncContextFrom = 197,
  /** KVM_CAP_PTP_KVM */
  PtpKvm = 198,
  /** KVM_CAP_HYPERV_ENFORCE_CPUID */
  HypervEnforceCpuid = 199,
  /** KVM_CAP_SREGS2 */
  Sregs2 = 200,
  /** KVM_CAP_EXIT_HYPERCALL */
  ExitHypercall = 201,
  /** KVM_CAP_PPC_RPT_INVALIDATE */
  PpcRptInvalidate = 202,
  /** KVM_CAP_BINARY_STATS_FD */
  BinaryStatsFd = 203,
  /** KVM_CAP_EXIT_ON_EMULATION_FAILURE */
  ExitOnEmulationFailure = 204,
  /** KVM_CAP_ARM_MTE */
  ArmMte = 205,
  /** KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM */
  VmMoveEncContextFrom = 206,
  /** KVM_CAP_VM_GPA_BITS */
  VmGpaBits = 207,
  /** KVM_CAP_XSAVE2 */
  Xsave2 = 208,
  /** KVM_CAP_SYS_ATTRIBUTES */
  SysAttributes = 209,
  /** KVM_CAP_PPC_AIL_MODE_3 */
  PpcAilMode3 = 210,
  /** KVM_CAP_S390_MEM_OP_EXTENSION */
  S390MemOpExtension = 211,
  /** KVM_CAP_PMU_CAPABILITY */
  PmuCapability = 212,
  /** KVM_CAP_DISABLE_QUIRKS2 */
  DisableQuirks2 = 213,
  /** KVM_CAP_VM_TSC_CONTROL */
  VmTscControl = 214,
  /** KVM_CAP_SYSTEM_EVENT_DATA */
  SystemEventData = 215,
  /** KVM_CAP_ARM_SYSTEM_SUSPEND */
  ArmSystemSuspend = 216,
  /** KVM_CAP_S390_PROTECTED_DUMP */
  S390ProtectedDump = 217,
  /** KVM_CAP_X86_TRIPLE_FAULT_EVENT */
  X86TripleFaultEvent = 218,
  /** KVM_CAP_X86_NOTIFY_VMEXIT */
  X86NotifyVmexit = 219,
  /** KVM_CAP_VM_DISABLE_NX_HUGE_PAGES */
  VmDisableNxHugePages = 220,
  /** KVM_CAP_S390_ZPCI_OP */
  S390ZpciOp = 221,
  /** KVM_CAP_S390_CPU_TOPOLOGY */
  S390CpuTopology = 222,
  /** KVM_CAP_DIRTY_LOG_RING_ACQ_REL */
  DirtyLogRingAcqRel = 223,
  /** KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP */
  DirtyLogRingWithBitmap = 228,
  /** KVM_CAP_MEMORY_ATTRIBUTES */
  MemoryAttributes = 233,
  /** KVM_CAP_GUEST_MEMFD */
  GuestMemfd = 234,
  /** KVM_CAP_VM_TYPES */
  VmTypes = 235,
  /** KVM_CAP_USER_MEMORY2 */
  UserMemory2 = 231,
}

/** kvm_run.exit_reason (KVM_EXIT_*). */
export enum ExitReason {
  /** KVM_EXIT_UNKNOWN */
  Unknown = 0,
  /** KVM_EXIT_EXCEPTION */
  Exception = 1,
  /** KVM_EXIT_IO */
  Io = 2,
  /** KVM_EXIT_HYPERCALL */
  Hypercall = 3,
  /** KVM_EXIT_DEBUG */
  Debug = 4,
  /** KVM_EXIT_HLT */
  Hlt = 5,
  /** KVM_EXIT_MMIO */
  Mmio = 6,
  /** KVM_EXIT_IRQ_WINDOW_OPEN */
  IrqWindowOpen = 7,
  /** KVM_EXIT_SHUTDOWN */
  Shutdown = 8,
  /** KVM_EXIT_FAIL_ENTRY */
  FailEntry = 9,
  /** KVM_EXIT_INTR */
  Intr = 10,
  /** KVM_EXIT_SET_TPR */
  SetTpr = 11,
  /** KVM_EXIT_TPR_ACCESS */
  TprAccess = 12,
  /** KVM_EXIT_S390_SIEIC */
  S390Sieic = 13,
  /** KVM_EXIT_S390_RESET */
  S390Reset = 14,
  /** KVM_EXIT_DCR */
  Dcr = 15,
  /** KVM_EXIT_NMI */
  Nmi = 16,
  /** KVM_EXIT_INTERNAL_ERROR */
  InternalError = 17,
  /** KVM_EXIT_OSI */
  Osi = 18,
  /** KVM_EXIT_PAPR_HCALL */
  PaprHcall = 19,
  /** KVM_EXIT_S390_UCONTROL */
  S390Ucontrol = 20,
  /** KVM_EXIT_WATCHDOG */
  Watchdog = 21,
  /** KVM_EXIT_S390_TSCH */
  S390Tsch = 22,
  /** KVM_EXIT_EPR */
  Epr = 23,
  /** KVM_EXIT_SYSTEM_EVENT */
  SystemEvent = 24,
  /** KVM_EXIT_S390_STSI */
  S390Stsi = 25,
  /** KVM_EXIT_IOAPIC_EOI */
  IoapicEoi = 26,
  /** KVM_EXIT_HYPERV */
  Hyperv = 27,
  /** KVM_EXIT_ARM_NISV */
  ArmNisv = 28,
  /** KVM_EXIT_X86_RDMSR */
  X86Rdmsr = 29,
  /** KVM_EXIT_X86_WRMSR */
  X86Wrmsr = 30,
  /** KVM_EXIT_DIRTY_RING_FULL */
  DirtyRingFull = 31,
  /** KVM_EXIT_AP_RESET_HOLD */
  ApResetHold = 32,
  /** KVM_EXIT_X86_BUS_LOCK */
  X86BusLock = 33,
  /** KVM_EXIT_XEN */
  Xen = 34,
  /** KVM_EXIT_RISCV_SBI */
  RiscvSbi = 35,
  /** KVM_EXIT_RISCV_CSR */
  RiscvCsr = 36,
  /** KVM_EXIT_NOTIFY */
  Notify = 37,
  /** KVM_EXIT_MEMORY_FAULT */
  MemoryFault = 39,
  /** KVM_EXIT_TDX */
  Tdx = 40,
  /** KVM_EXIT_ARM_SEA */
  ArmSea = 41,
}

/** kvm_userspace_memory_region.flags (KVM_MEM_*). */
export enum MemFlag {
  /** KVM_MEM_LOG_DIRTY_PAGES */
  LogDirtyPages = 1,
  /** KVM_MEM_READONLY */
  ReadOnly = 2,
}

/** kvm_run.kvm_valid_regs / kvm_dirty_regs bits on x86 (KVM_SYNC_X86_*), offered as KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS). */
export enum SyncRegs {
  /** KVM_SYNC_X86_REGS: struct kvm_regs at kvm_run.s.regs */
  X86Regs = 1,
  /** KVM_SYNC_X86_SREGS */
  X86Sregs = 2,
  /** KVM_SYNC_X86_EVENTS */
  X86Events = 4,
}

/** Byte offsets in struct kvm_run: kvm_valid_regs, kvm_dirty_regs (u64 each), and s.regs (struct kvm_sync_regs; x86: kvm_regs first). */
export const RUN_VALID_REGS = 288;
export const RUN_DIRTY_REGS = 296;
export const RUN_SYNC_REGS = 304;

/** struct kvm_dirty_gfn.flags (KVM_DIRTY_GFN_F_*). */
export const DIRTY_GFN_F_DIRTY = 1;
export const DIRTY_GFN_F_RESET = 2;
/** sizeof(struct kvm_dirty_gfn): u32 flags, u32 slot, u64 offset. */
export const DIRTY_GFN_SIZE = 16;
/** KVM_DIRTY_RING_RSVD_ENTRIES (include/linux/kvm_host.h). */
export const DIRTY_RING_RSVD_ENTRIES = 64;
/** KVM_DIRTY_RING_MAX_ENTRIES (include/linux/kvm_host.h). */
export const DIRTY_RING_MAX_ENTRIES = 65536;
/** KVM_DIRTY_LOG_PAGE_OFFSET on x86 and arm64: the ring's page offset in the vCPU fd. */
export const DIRTY_LOG_PAGE_OFFSET = 64;

/** KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 argument bits. */
export const DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1;
export const DIRTY_LOG_INITIALLY_SET = 2;

/** KVM_API_VERSION, the answer of KVM_GET_API_VERSION. */
export const KVM_API_VERSION = 12;

/** x86 guest page size; also the unit of bitmaps, rings and CMMA values. */
export const PAGE_SIZE = 4096;

/** KVM_EXIT_IO directions. */
export const EXIT_IO_IN = 0;
export const EXIT_IO_OUT = 1;

/** s390 storage attributes (arch/s390/include/uapi/asm/kvm.h). */
export const S390_CMMA_PEEK = 1;
export const S390_SKEYS_MAX = 1048576;
export const S390_CMMA_SIZE_MAX = S390_SKEYS_MAX;
/** VM device attribute groups and attributes used for CMMA migration. */
export const S390_VM_MEM_CTRL = 0;
export const S390_VM_MEM_ENABLE_CMMA = 0;
export const S390_VM_MEM_CLR_CMMA = 1;
export const S390_VM_MIGRATION = 4;
export const S390_VM_MIGRATION_STOP = 0;
export const S390_VM_MIGRATION_START = 1;
export const S390_VM_MIGRATION_STATUS = 2;
/** PGSTE bits a KVM_S390_SET_CMMA_BITS mask may touch: usage state (0x03000000) and NODAT (0x40000000). */
export const PGSTE_GPS_USAGE_MASK = 0x03000000;
export const PGSTE_GPS_NODAT = 0x40000000;

export type Arch = 'x86_64' | 'arm64' | 's390x';
