// The backend interface: what the public classes (lib/kvm.ts, vm.ts, vcpu.ts, ...) ask of a
// KVM implementation. Two implement it: lib/native/ (the addon over the real /dev/kvm) and
// lib/emulator/ (pure TypeScript). The contracts below are the kernel's; where a method
// names an ioctl, it fails exactly as that ioctl does, with a KvmError (lib/errors.ts)
// carrying the kernel's errno and the ioctl's name.
//
// Arguments reach a backend already checked for JS type and range by the public layer
// (safe integers, buffers of the right length, open objects); a backend checks what the
// kernel checks. Raw 64-bit values (registers, cap args, masks) are bigints; addresses,
// sizes, page numbers and offsets are numbers (safe integers).

import type { Arch } from './constants';

/** What the host's KVM is. */
export interface HostInfo {
  /** 'kvm_intel' | 'kvm_amd' | 'kvm_pvm' | 'kvm_arm' | 'kvm_s390' | 'emulator' | 'unknown' */
  flavour: string;
  /** true when this host itself runs under a hypervisor (KVM is nested); null when unknown */
  nested: boolean | null;
  /** `uname -r` of the host, or the emulated kernel's version */
  kernel: string;
  /** one line a person can read, e.g. 'kvm_pvm (nested; no VMX/EPT/PML, shadow paging)' */
  description: string;
  /** the (modelled) host logs dirty pages through Intel PML: the ring reserves 64 + 512 entries */
  pml: boolean;
  /** the CPU this process runs on */
  cpu: CpuInfo;
}

/** A CPU as /proc/cpuinfo names it. */
export interface CpuInfo {
  /** 'Intel', 'AMD', ... (x86 vendor_id, decoded) */
  vendor: string;
  /** the model name, e.g. 'AMD EPYC' or 'Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz' */
  model: string;
}

/** struct kvm_regs (x86-64). */
export interface Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** struct kvm_segment. */
export interface Segment {
  base: bigint; limit: number; selector: number; type: number;
  present: number; dpl: number; db: number; s: number; l: number; g: number; avl: number;
  unusable: number;
}

/** struct kvm_dtable. */
export interface DTable { base: bigint; limit: number }

/** struct kvm_sregs (x86-64). */
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment;
  tr: Segment; ldt: Segment;
  gdt: DTable; idt: DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint; apicBase: bigint;
  /** 4 u64 words (KVM_NR_INTERRUPTS bits) */
  interruptBitmap: bigint[];
}

/** kvm_run.io, decoded: the value is the data the guest wrote (out) or the bytes at data_offset (in). */
export interface IoExit {
  port: number;
  direction: 'in' | 'out';
  /** bytes per access: 1, 2 or 4 */
  size: number;
  count: number;
  /** the first access's data as a little-endian number */
  value: number;
}

/** kvm_run.mmio, decoded. */
export interface MmioExit {
  physAddr: number;
  len: number;
  isWrite: boolean;
  /** the bytes written (isWrite), len bytes */
  data: number[];
}

/** What one KVM_RUN came back with. */
export interface ExitInfo {
  /** ExitReason (kvm_run.exit_reason); ExitReason.Intr when KVM_RUN returned EINTR (a kick) */
  reason: number;
  io?: IoExit;
  mmio?: MmioExit;
  /** KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason; KVM_EXIT_INTERNAL_ERROR: suberror */
  detail?: bigint;
}

/** A workload for the guest harness (lib/guest/), in the form the public Workload builds. */
export type WorkloadSpec =
  | { kind: 'stride'; firstPage: number; pages: number; stridePages: number }
  | { kind: 'random'; firstPage: number; spanPages: number; pagesPerEpoch: number; seed: bigint }
  | { kind: 'counter'; page: number }
  | { kind: 'spin' };

/** Guest actions the emulator can perform where a native host would need a real guest. */
export interface EmulatorHooks {
  /**
   * A guest write of `length` bytes at guest-physical `gpa`, made by vCPU `vcpuId` (logged
   * in its ring when the ring is on) or with no vCPU context (`null`: logged in the slot's
   * bitmap, or dropped with the kernel's warning when the ring is on without WITH_BITMAP).
   * The bytes written are zeros unless the caller wrote guest memory first.
   */
  guestWrite(vcpuId: number | null, gpa: number, length?: number): void;
  /**
   * What a PVM host does to a ring that a run overfills (DESIGN §5): vCPU `vcpuId` stores the
   * u64 `value` at the first 8 bytes of `pages` consecutive guest pages from `gpa`, and every
   * store is pushed to its ring whether or not the page was protected, past the soft limit
   * and past the ring's size (the kernel warns once; the oldest entries are overwritten and
   * lost). Pages outside logged RAM are skipped. RangeError without a ring.
   */
  overfillRing(vcpuId: number, gpa: number, pages: number, value?: bigint): void;
  /**
   * An s390 guest's ESSA on one page with operation request code `orc` (0..7).
   * Returns the page's CMMA value before the operation; RangeError for orc > 7.
   */
  essa(gfn: number, orc: number): number;
}

/** The /dev/kvm fd (KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_CREATE_VM). */
export interface BackendSystem {
  readonly backend: 'native' | 'emulator';
  readonly arch: Arch;
  readonly hostInfo: HostInfo;
  /**
   * KVM_DIRTY_RING_RSVD_ENTRIES + kvm_cpu_dirty_log_size() as the backend knows it (64 without
   * PML, 576 with); undefined when it cannot tell. Kvm.dirtyRingLimits() checks it against the
   * smallest ring the kernel takes.
   */
  readonly ringReservedEntries: number | undefined;
  /** KVM_GET_API_VERSION */
  getApiVersion(): number;
  /** KVM_CHECK_EXTENSION on the system fd */
  checkExtension(cap: number): number;
  /** KVM_GET_VCPU_MMAP_SIZE */
  getVcpuMmapSize(): number;
  /** KVM_CREATE_VM with machine type `type` (0) */
  createVm(type: number): BackendVm;
  /** KVM_GET_SUPPORTED_CPUID: struct kvm_cpuid2 (8-byte header, then the entries), x86 */
  getSupportedCpuid(): Uint8Array;
  /** KVM_GET_MSR_INDEX_LIST: the MSRs the kernel saves and restores, x86 */
  getMsrIndexList(): Uint32Array;
  /** Closes the fd. The public layer has closed every VM first. */
  close(): void;
}

/** Guest RAM: anonymous shared memory in a memfd (native) or an ArrayBuffer (emulator). */
export interface BackendMemory {
  /**
   * The whole mapping, zero-copy; detached (byteLength 0) once closed. Node-API cannot make
   * an external ArrayBuffer above buffer.constants.MAX_LENGTH (4 GiB on Node 20): larger
   * memory throws RangeError here and is reached through view().
   */
  readonly buffer: ArrayBuffer;
  readonly size: number;
  /** A zero-copy view of [offset, offset + length), detached (length 0) once closed. */
  view(offset: number, length: number): Uint8Array;
  /**
   * Byte ranges [start, end, start, end, ...] (page-aligned, ascending) outside which every
   * byte reads as zero, found without reading the memory: native, the pages the memfd holds
   * (SEEK_DATA/SEEK_HOLE); emulator, the whole memory. The public layer checks for closed.
   */
  dataRanges(): Float64Array;
  /** Detaches `buffer`, then unmaps. Idempotent. */
  close(): void;
}

/** One slot of KVM_SET_USER_MEMORY_REGION. memorySize 0 (memory null) deletes the slot. */
export interface MemoryRegion {
  /** (as_id << 16) | slot id, as the kernel takes it */
  slot: number;
  flags: number;
  guestPhysAddr: number;
  memorySize: number;
  memory: BackendMemory | null;
  /** offset of the slot's first byte in `memory` */
  memoryOffset: number;
}

/** A VM fd. */
export interface BackendVm {
  /** KVM_CHECK_EXTENSION on the VM fd */
  checkExtension(cap: number): number;
  /**
   * KVM_ENABLE_CAP (struct kvm_enable_cap { cap, flags, args[4] }); returns the ioctl's result.
   * A ring cap that succeeds makes every later vCPU get a ring of (u32)args[0] bytes.
   */
  enableCap(cap: number, args: readonly [bigint, bigint, bigint, bigint], flags: number): number;
  /** mmap(MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE) of `size` bytes (a multiple of the page size). */
  createMemory(size: number): BackendMemory;
  /** KVM_SET_USER_MEMORY_REGION */
  setUserMemoryRegion(region: MemoryRegion): void;
  /** KVM_CREATE_VCPU, then mmap of kvm_run and (if the ring is on) the ring; on x86 also sets CPUID. */
  createVcpu(id: number): BackendVcpu;
  /** KVM_GET_DIRTY_LOG: writes ALIGN(npages, 64) / 8 bytes of `bitmap` and nothing beyond. */
  getDirtyLog(slot: number, bitmap: Uint8Array): void;
  /** KVM_CLEAR_DIRTY_LOG: reads ALIGN(numPages, 64) / 8 bytes of `bitmap`; bit i is page firstPage + i. */
  clearDirtyLog(slot: number, firstPage: number, numPages: number, bitmap: Uint8Array): void;
  /** KVM_RESET_DIRTY_RINGS, retried on EINTR; returns the number of entries reset. */
  resetDirtyRings(): number;
  /**
   * Every listed vCPU's ring in one call (vCPUs of this VM, each with a ring, checked by the
   * public layer): vCPU i's DIRTY entries from free-running index fetch[i] on, in order, after
   * those of vCPU i - 1, as BackendVcpu.harvestRing collects them (at most one lap of each ring,
   * never past the output from `start`); counts[i] = entries taken from ring i. Returns the total.
   */
  harvestRings(vcpus: readonly BackendVcpu[], fetch: Float64Array, slots: Uint32Array, offsets: Float64Array, start: number, counts: Uint32Array): number;
  /** KVM_SET_DEVICE_ATTR on the VM fd; `value` (u64) is passed through attr.addr when given. */
  setDeviceAttr(group: number, attr: number, value?: bigint): void;
  /** KVM_GET_DEVICE_ATTR on the VM fd, reading a u64 through attr.addr. */
  getDeviceAttr(group: number, attr: number): bigint;
  /** KVM_HAS_DEVICE_ATTR on the VM fd: true on 0, false on ENXIO, throws otherwise. */
  hasDeviceAttr(group: number, attr: number): boolean;
  /**
   * KVM_S390_GET_CMMA_BITS with struct kvm_s390_cmma_log { start_gfn, count, flags, values };
   * `values` has room for `count` bytes. Returns the struct as the kernel updated it.
   */
  getCmmaBits(
    args: { startGfn: number; count: number; flags: number },
    values: Uint8Array,
  ): { startGfn: number; count: number; flags: number; remaining: number };
  /** KVM_S390_SET_CMMA_BITS; `values` holds `count` bytes; mask as the kernel takes it (u64). */
  setCmmaBits(args: { startGfn: number; count: number; flags: number; mask: bigint }, values: Uint8Array): void;
  // The x86 in-kernel devices and clock. A struct argument is a Uint8Array of the kernel
  // struct's exact size (lib/kvm-structs.ts): GETs fill it, SETs read it.
  /** KVM_CREATE_IRQCHIP: PIC master and slave, IOAPIC, a local APIC per later vCPU */
  createIrqchip(): void;
  /** KVM_CREATE_PIT2 with struct kvm_pit_config.flags */
  createPit2(flags: number): void;
  /** KVM_SET_TSS_ADDR */
  setTssAddr(addr: number): void;
  /** KVM_SET_IDENTITY_MAP_ADDR */
  setIdentityMapAddr(addr: number): void;
  /** KVM_IRQ_LINE with struct kvm_irq_level { irq, level } */
  irqLine(irq: number, level: number): void;
  /** KVM_GET_IRQCHIP: struct kvm_irqchip (520 bytes), chip_id already set */
  getIrqchip(chip: Uint8Array): void;
  /** KVM_SET_IRQCHIP */
  setIrqchip(chip: Uint8Array): void;
  /** KVM_GET_PIT2: struct kvm_pit_state2 (112 bytes) */
  getPit2(pit: Uint8Array): void;
  /** KVM_SET_PIT2 */
  setPit2(pit: Uint8Array): void;
  /** KVM_GET_CLOCK: struct kvm_clock_data (48 bytes) */
  getClock(clock: Uint8Array): void;
  /** KVM_SET_CLOCK */
  setClock(clock: Uint8Array): void;
  /** Emulator backend only. */
  readonly emulator?: EmulatorHooks;
  /** Closes the fd. The public layer has closed the VM's vCPUs and memories first. */
  close(): void;
}

/** A vCPU fd with its kvm_run page and dirty ring mapped. */
export interface BackendVcpu {
  readonly id: number;
  /** The kvm_run mapping (KVM_GET_VCPU_MMAP_SIZE bytes); detached once closed. */
  readonly runBuffer: ArrayBuffer;
  /** The dirty ring (struct kvm_dirty_gfn[]), null when the VM has no ring; detached once closed. */
  readonly ringBuffer: ArrayBuffer | null;
  /** KVM_RUN on the calling thread; EINTR (a kick) comes back as ExitReason.Intr, other errors throw. */
  run(): ExitInfo;
  /** KVM_RUN on the vCPU's own thread; the event loop keeps running. One at a time (EBUSY otherwise). */
  runAsync(): Promise<ExitInfo>;
  /** Watches (without sleeping) up to `ns` for the pending runAsync() to end; whether it has. */
  spinForExit(ns: number): boolean;
  /** How long (ns) the vCPU's thread watches for the next runAsync() after an exit before it sleeps; returns the previous. */
  setRunWatch(ns: number): number;
  /** Makes a running (or the next) KVM_RUN return promptly with ExitReason.Intr. */
  kick(): void;
  getRegs(): Regs;
  setRegs(regs: Regs): void;
  getSregs(): Sregs;
  setSregs(sregs: Sregs): void;
  /**
   * Loads a workload of the guest harness (lib/guest/): native writes page tables and code
   * into guest-physical [0, 2 MiB) (identity-mapping every memory slot) and sets the
   * registers; the emulator installs its model. Restarts at epoch 1.
   */
  load(spec: WorkloadSpec): void;
  // The rest of the x86 vCPU state. Struct arguments are Uint8Arrays of the kernel struct
  // (lib/kvm-structs.ts); fixed-size ones exactly that size. EBUSY while runAsync() is in flight.
  /** Bytes of the XSAVE image: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) (at least 4096), else 4096. */
  readonly xsaveSize: number;
  /** KVM_GET_FPU: struct kvm_fpu (416 bytes) */
  getFpu(fpu: Uint8Array): void;
  /** KVM_SET_FPU */
  setFpu(fpu: Uint8Array): void;
  /** KVM_GET_XSAVE, or KVM_GET_XSAVE2 where KVM_CAP_XSAVE2 is offered: xsaveSize bytes */
  getXsave(xsave: Uint8Array): void;
  /** KVM_SET_XSAVE: xsaveSize bytes */
  setXsave(xsave: Uint8Array): void;
  /** KVM_GET_XCRS: struct kvm_xcrs (392 bytes) */
  getXcrs(xcrs: Uint8Array): void;
  /** KVM_SET_XCRS */
  setXcrs(xcrs: Uint8Array): void;
  /** KVM_GET_MSRS: struct kvm_msrs with nmsrs entries (indexes set); returns how many were read (it stops at the first refused) */
  getMsrs(msrs: Uint8Array): number;
  /** KVM_SET_MSRS: returns how many were written (it stops at the first refused) */
  setMsrs(msrs: Uint8Array): number;
  /** KVM_GET_LAPIC: struct kvm_lapic_state (1024 bytes) */
  getLapic(lapic: Uint8Array): void;
  /** KVM_SET_LAPIC */
  setLapic(lapic: Uint8Array): void;
  /** KVM_GET_VCPU_EVENTS: struct kvm_vcpu_events (64 bytes) */
  getVcpuEvents(events: Uint8Array): void;
  /** KVM_SET_VCPU_EVENTS */
  setVcpuEvents(events: Uint8Array): void;
  /** KVM_GET_DEBUGREGS: struct kvm_debugregs (128 bytes) */
  getDebugregs(regs: Uint8Array): void;
  /** KVM_SET_DEBUGREGS */
  setDebugregs(regs: Uint8Array): void;
  /** KVM_GET_MP_STATE */
  getMpState(): number;
  /** KVM_SET_MP_STATE */
  setMpState(state: number): void;
  /** KVM_GET_CPUID2: struct kvm_cpuid2 with room for nent entries; returns the vCPU's count (E2BIG if nent is smaller) */
  getCpuid2(cpuid: Uint8Array): number;
  /** KVM_SET_CPUID2: struct kvm_cpuid2 with nent entries */
  setCpuid2(cpuid: Uint8Array): void;
  /**
   * Optional batch harvest (native): from free-running index `fetch`, collect up to `max`
   * DIRTY entries in order (acquire load of flags, copy slot and offset into
   * slots[start + i] / offsets[start + i], release store of RESET). Returns the count.
   */
  harvestRing?(fetch: number, max: number, slots: Uint32Array, offsets: Float64Array, start: number): number;
  /** Kicks and joins a running vCPU, detaches the buffers, unmaps, closes the fd. Idempotent. */
  close(): void;
}

/** How openKvm() builds a backend. */
export interface BackendOptions {
  device?: string;
  arch?: Arch;
  /** emulator, x86_64: model an Intel host with PML (576 reserved ring entries) */
  pml?: boolean;
}
