// A machine for checkpointing: a VM with its memory slots, vCPUs and the workloads they run,
// and the dirty-tracking mode chosen from the kernel's capabilities (never from the
// backend's name). Checkpointer, replica, failover and migration all build their VMs here,
// so a rebuilt machine has exactly the layout the stream's Header describes.
//
// Two kinds of machine. The standard layout (test/helpers/guest.ts, the CLI, the examples), for
// the built-in workloads:
//
//   gfn 0 .. 511           slot 0  harness: page tables + code (host writes only, not logged)
//   gfn 512 .. 512+data-1  slot 1  workload data, KVM_MEM_LOG_DIRTY_PAGES
//
// Data that would reach the local APIC's page (gpa 0xfee00000: a guest write there exits to
// userspace as MMIO instead of landing in RAM) starts at 4 GiB instead (dataGfnFor), and data
// above 2 GiB is split into slots 1, 2, ... of at most 2 GiB each, so that every slot has a
// Buffer (Node 20 caps one at 4 GiB) and the replica's image is made of ordinary Buffers.
//
// A guest image's machine (createImageMachine: a program of the user's own, vcpu.loadImage()):
// the in-kernel irqchip and PIT, one logged slot from gpa 0 (the harness's 2 MiB, then the
// image), the VMM's devices on an IoBus (a 16550 at COM1 by default), and every epoch records
// the full state (vCPUs, VM, devices: State frames), since such a guest keeps live values in
// SSE registers, the LAPIC and the PIC that the general registers do not hold.

import { Cap, MemFlag, PAGE_SIZE } from '../constants';
import { IoBus, Serial16550, COM1_PORT, type Device } from '../devices';
import type { Kvm } from '../kvm';
import type { GuestMemory } from '../memory';
import type { Vcpu } from '../vcpu';
import type { Vm } from '../vm';
import { Workload } from '../workload';
import type { ReplicaImage } from './image';
import type { MachineLayout, SlotLayout, VcpuRegs } from './records';
import type { MachineState } from './state-frame';
import type { Sregs } from '../backend';

/**
 * How dirty pages are collected:
 * - 'ring': per-vCPU dirty rings (KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]), harvest + KVM_RESET_DIRTY_RINGS
 * - 'bitmap': KVM_GET_DIRTY_LOG, which returns and re-arms in one call
 * - 'bitmap-clear': KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG of what it returned
 */
export type DirtyMode = 'ring' | 'bitmap' | 'bitmap-clear';

export const HARNESS_SLOT = 0;
export const DATA_SLOT = 1;
export const DATA_GFN = 512;
/** The local APIC's page (gpa 0xfee00000): guest writes there exit as MMIO. */
export const APIC_GFN = 0xfee00;
/** Where data goes when it would reach APIC_GFN from DATA_GFN: 4 GiB, above the PC's MMIO hole. */
export const HIGH_DATA_GFN = 0x100000;
/** The largest data slot: guests with more data get several, contiguous in guest-physical memory. */
export const DATA_SLOT_MAX_BYTES = 2 ** 31;
export const HARNESS_BYTES = DATA_GFN * PAGE_SIZE;

export interface MachineSlot {
  layout: SlotLayout;
  memory: GuestMemory;
  /** the slot's bytes (zero-copy view of the guest memory) */
  bytes: Buffer;
}

export interface Machine {
  kvm: Kvm;
  vm: Vm;
  vcpus: Vcpu[];
  slots: MachineSlot[];
  mode: DirtyMode;
  /** ring bytes per vCPU ('ring' mode), else 0 */
  ringBytes: number;
  /**
   * 'ring' mode with KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP (arm64): writes made without a vCPU
   * (a VMM saving device state into guest memory) go to each slot's bitmap, read last
   */
  ringWithBitmap: boolean;
  /** s390: KVM_S390_VM_MEM_ENABLE_CMMA is on, so the storage attributes migrate with the pages */
  cmma: boolean;
  /**
   * Each vCPU's special registers as the harness set them (or a restore did): the workloads
   * never change them, so the stream's Header carries these, also while the guest runs
   */
  sregs: Sregs[];
  /** the workload loaded on each vCPU (same order as vcpus), null if none */
  workloads: (Workload | null)[];
  /** KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 were made (a guest image's machine) */
  irqchip: boolean;
  /** the VMM's devices: the run loops hand them the exits they claim; null: none */
  devices: IoBus | null;
  /** each epoch records the full state (vCPUs, VM, devices; stream extension 3), not only the registers */
  fullState: boolean;
  /** the port whose OUT ends the guest (its value is the result), or null */
  exitPort: number | null;
  /**
   * Receives what the devices output (a serial byte: COM1's port, size 1, the byte): an engine
   * running the machine sets it, to hold the output until its epoch commits. Default: dropped.
   */
  deviceOutput: DeviceOutput;
  close(): void;
}

/** A device's output, as a guest OUT would record it. */
export type DeviceOutput = (port: number, size: number, value: number) => void;

/** The port a guest image writes its result to (QEMU's isa-debug-exit convention). */
export const GUEST_EXIT_PORT = 0xf4;
/** A guest image's memory by default: the harness's 2 MiB and 6 MiB for the image, its data and stack. */
export const IMAGE_MEMORY_BYTES = 8 << 20;

/** How a guest image's machine gets its VMM devices, and when its guest has ended. */
export interface ImageGuestOptions {
  /** the devices, each time a machine is built (default standardDevices) */
  devices?: (output: DeviceOutput) => Device[];
  /** default GUEST_EXIT_PORT */
  exitPort?: number;
}

/** The default devices of a guest image's machine: a 16550 at COM1 named 'serial', whose bytes are output. */
export function standardDevices(output: DeviceOutput): Device[] {
  return [new Serial16550({ onByte: (b) => output(COM1_PORT, 1, b) })];
}

/**
 * Bytes to compare or copy: a machine slot (its memory says where it may hold data), a
 * replica image's slot (it knows the pages epochs wrote: ReplicaImage.slot), or a plain buffer.
 */
export type Contents = MachineSlot | { bytes: Buffer; written: Uint8Array } | Buffer;

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/**
 * Page indexes where `c` may hold data, as a bit per page (1 = may). A machine slot answers
 * from GuestMemory.dataRanges() without reading its memory: reading an untouched page of
 * shared memory would allocate it, so a full copy of a 64 GiB guest would cost 64 GiB. A
 * replica image's slot lists the pages epochs wrote. A plain buffer (calloc'd: reading it
 * allocates nothing, but it takes time) may hold data anywhere.
 */
function mayHold(c: Contents, pages: number): Uint8Array {
  if ('written' in c) return c.written;
  const out = new Uint8Array(pages);
  if (Buffer.isBuffer(c)) return out.fill(1);
  const ranges = c.memory.dataRanges();
  for (let i = 0; i < ranges.length; i += 2) out.fill(1, ranges[i] / PAGE_SIZE, Math.min(pages, ranges[i + 1] / PAGE_SIZE));
  return out;
}

const bytesOf = (c: Contents): Buffer => (Buffer.isBuffer(c) ? c : c.bytes);

/** Calls fn(page) for every page of `c` that may hold data (without reading any: a page outside them is zero). */
export function forEachPageThatMayHoldData(c: Contents, fn: (page: number) => void): void {
  const pages = bytesOf(c).length / PAGE_SIZE;
  const may = mayHold(c, pages);
  for (let p = 0; p < pages; p++) if (may[p]) fn(p);
}

/** Calls fn(page) for every page of `c` that is not all zeros, reading only pages that may hold data. */
export function forEachNonZeroPage(c: Contents, fn: (page: number) => void): void {
  const bytes = bytesOf(c);
  const pages = bytes.length / PAGE_SIZE;
  const may = mayHold(c, pages);
  for (let p = 0; p < pages; p++) {
    // Buffer#compare with ranges: memcmp against a zero page, no per-page allocation.
    if (may[p] && ZERO_PAGE.compare(bytes, p * PAGE_SIZE, (p + 1) * PAGE_SIZE) !== 0) fn(p);
  }
}

/** Copies the non-zero pages of `from` into `to` (zero-filled, as new guest memory is); returns how many. */
export function copyNonZeroPages(from: Contents, to: Buffer): number {
  const src = bytesOf(from);
  let n = 0;
  forEachNonZeroPage(from, (p) => {
    src.copy(to, p * PAGE_SIZE, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    n++;
  });
  return n;
}

/**
 * Whether `a` and `b` hold the same bytes, reading each only where it may hold data: a page
 * both may hold is compared, a page only one may hold must be zero there.
 */
export function sameContents(a: Contents, b: Contents): boolean {
  const x = bytesOf(a);
  const y = bytesOf(b);
  if (x.length !== y.length) return false;
  const pages = x.length / PAGE_SIZE;
  const inA = mayHold(a, pages);
  const inB = mayHold(b, pages);
  for (let p = 0; p < pages; p++) {
    const start = p * PAGE_SIZE;
    const end = start + PAGE_SIZE;
    if (inA[p] && inB[p]) {
      if (x.compare(y, start, end, start, end) !== 0) return false;
    } else if (inA[p] || inB[p]) {
      if (ZERO_PAGE.compare(inA[p] ? x : y, start, end) !== 0) return false;
    }
  }
  return true;
}

/** The kernel has s390 storage-attribute migration (KVM_CAP_S390_CMMA_MIGRATION). */
export function hasCmmaMigration(kvm: Kvm): boolean {
  return kvm.checkExtension(Cap.S390CmmaMigration) > 0;
}

/** The kernel offers a dirty ring (either flavour). */
export function hasDirtyRing(kvm: Kvm): boolean {
  return kvm.checkExtension(Cap.DirtyLogRingAcqRel) > 0 || kvm.checkExtension(Cap.DirtyLogRing) > 0;
}

/**
 * The mode to use: 'auto' takes the ring where the kernel offers it, else the bitmap. A mode
 * the kernel cannot do throws a RangeError that says why.
 */
export function chooseMode(kvm: Kvm, requested: DirtyMode | 'auto' = 'auto'): DirtyMode {
  const ring = hasDirtyRing(kvm);
  if (requested === 'auto') return ring ? 'ring' : 'bitmap';
  if (requested === 'ring' && !ring) throw new RangeError('this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING is 0); use --mode bitmap');
  if (requested === 'bitmap-clear' && kvm.checkExtension(Cap.ManualDirtyLogProtect2) === 0) {
    throw new RangeError('this KVM has no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2; use --mode bitmap');
  }
  if (!['ring', 'bitmap', 'bitmap-clear'].includes(requested)) throw new RangeError(`mode must be 'ring', 'bitmap' or 'bitmap-clear', got ${JSON.stringify(requested)}`);
  return requested;
}

/**
 * Ring bytes for vCPUs that write at most `writesPerRun` entries in one KVM_RUN: the host's
 * smallest ring whose soft limit holds twice that (kvm.dirtyRingLimits(): 64 reserved entries
 * here, 576 on an Intel host with PML), doubled because a host such as this PVM one logs a
 * page once per write, not once per protect cycle (DESIGN §5). RangeError if even the largest
 * ring the kernel offers is too small: one run must never overfill a ring.
 */
export function ringBytesFor(kvm: Kvm, writesPerRun: number): number {
  const limits = kvm.dirtyRingLimits();
  try {
    return limits.bytesFor(2 * writesPerRun);
  } catch {
    if (limits.supported && limits.softLimit(limits.maxBytes) >= writesPerRun) return limits.maxBytes;
    throw new RangeError(`one run writes up to ${writesPerRun} pages, more than the largest dirty ring here holds below its soft limit (${limits.maxBytes / 16} entries, ${limits.reservedEntries} reserved); use a bitmap mode`);
  }
}

/** The lowest and highest gfn a workload writes (null if it writes none). */
function workloadPages(w: Workload | null): { first: number; last: number } | null {
  const s = w?.spec;
  if (!s) return null;
  switch (s.kind) {
    case 'stride': return { first: s.firstPage, last: s.firstPage + (s.pages - 1) * s.stridePages };
    case 'random': return { first: s.firstPage, last: s.firstPage + s.spanPages - 1 };
    case 'counter': return { first: s.page, last: s.page };
    case 'spin': return null;
  }
}

/** Guest writes one run of this workload can make (the bound for the ring's size). */
export function writesPerRun(w: Workload | null): number {
  const s = w?.spec;
  if (!s) return 0;
  switch (s.kind) {
    case 'stride': return s.pages;
    case 'random': return s.pagesPerEpoch;
    case 'counter': return 1;
    case 'spin': return 0;
  }
}

/** The first data gfn for `dataPages` of data: DATA_GFN, or HIGH_DATA_GFN when the data would reach the APIC page. */
export function dataGfnFor(dataPages: number): number {
  return DATA_GFN + dataPages <= APIC_GFN ? DATA_GFN : HIGH_DATA_GFN;
}

export interface MachineOptions {
  /** pages of logged data (slot 1, and 2, 3, ... above DATA_SLOT_MAX_BYTES) */
  dataPages: number;
  /** the first data gfn (default dataGfnFor(dataPages)); workloads address pages from here */
  dataGfn?: number;
  vcpus?: number;
  mode?: DirtyMode | 'auto';
  /** ring bytes per vCPU (ring mode); default: sized for `workloads` with ringBytesFor */
  ringBytes?: number;
  /** the workload of each vCPU (one for all, or one per vCPU) */
  workloads?: Workload | (Workload | null)[];
}

/** Builds the standard layout: harness slot 0 (unlogged) and data slots 1, 2, ... (logged), vCPUs with their workloads loaded. */
export function createMachine(kvm: Kvm, options: MachineOptions): Machine {
  const n = options.vcpus ?? 1;
  const workloads = Array.isArray(options.workloads) ? options.workloads : new Array<Workload | null>(n).fill(options.workloads ?? null);
  if (workloads.length !== n) throw new RangeError(`${workloads.length} workloads for ${n} vCPUs`);
  if (!Number.isSafeInteger(options.dataPages) || options.dataPages < 1) throw new RangeError(`dataPages must be a positive integer, got ${options.dataPages}`);
  // s390 migration mode needs dirty logging on every memslot (VMRST §5): there the harness is logged too (the guest never writes it).
  const slots: SlotLayout[] = [{ slot: HARNESS_SLOT, guestPhysAddr: 0, size: HARNESS_BYTES, logged: hasCmmaMigration(kvm) }];
  const dataGfn = options.dataGfn ?? dataGfnFor(options.dataPages);
  if (dataGfn < DATA_GFN) throw new RangeError(`dataGfn must be at least ${DATA_GFN} (below is the harness), got ${dataGfn}`);
  for (let done = 0; done < options.dataPages * PAGE_SIZE; done += DATA_SLOT_MAX_BYTES) {
    const size = Math.min(DATA_SLOT_MAX_BYTES, options.dataPages * PAGE_SIZE - done);
    slots.push({ slot: DATA_SLOT + slots.length - 1, guestPhysAddr: dataGfn * PAGE_SIZE + done, size, logged: true });
  }
  // A workload page outside the data would be written to no slot (an MMIO exit) or to the harness.
  workloads.forEach((w, i) => {
    const pages = workloadPages(w);
    if (pages && (pages.first < dataGfn || pages.last >= dataGfn + options.dataPages)) {
      throw new RangeError(`vCPU ${i}: its workload writes gfns ${pages.first}..${pages.last}; the data is gfns ${dataGfn}..${dataGfn + options.dataPages - 1}`);
    }
  });
  return buildMachine(kvm, slots, workloads.map((w, id) => ({ id, workload: w })), options.mode, options.ringBytes);
}

export interface ImageMachineOptions extends ImageGuestOptions {
  /** a flat binary or an ELF64 (vcpu.loadImage()) */
  image: Uint8Array;
  /** where a flat binary goes (default 2 MiB) */
  gpa?: number;
  /** where the guest starts (default: the ELF's entry, a flat binary's first byte) */
  entry?: number;
  /** guest memory from gpa 0, a multiple of 2 MiB (default IMAGE_MEMORY_BYTES) */
  memoryBytes?: number;
  /** default 'auto': a bitmap mode (see imageMode) */
  mode?: DirtyMode | 'auto';
  /** ring bytes per vCPU in ring mode (default the largest the host takes) */
  ringBytes?: number;
}

/** A guest image's machine: irqchip, PIT, one logged slot from 0, one vCPU started at the image's entry, the devices. */
export function createImageMachine(kvm: Kvm, options: ImageMachineOptions): Machine {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object with an image');
  if (!(options.image instanceof Uint8Array)) throw new TypeError('options.image must be a Uint8Array (a flat binary or an ELF64 file)');
  const bytes = options.memoryBytes ?? IMAGE_MEMORY_BYTES;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % (2 << 20) !== 0) throw new RangeError(`memoryBytes must be a positive multiple of 2 MiB, got ${bytes}`);
  const slots: SlotLayout[] = [{ slot: 0, guestPhysAddr: 0, size: bytes, logged: true }];
  const m = buildMachine(kvm, slots, [{ id: 0, workload: null }], options.mode, options.ringBytes, { ...options, irqchip: true });
  try {
    m.vcpus[0].loadImage({ image: options.image, gpa: options.gpa, entry: options.entry });
    m.sregs[0] = m.vcpus[0].getSregs();
    return m;
  } catch (e) {
    m.close();
    throw e;
  }
}

/**
 * Builds a machine with the layout of a checkpoint stream's Header (vCPUs loaded with their
 * workloads; a guest image's machine with its irqchip and devices, its memory still zero).
 */
export function machineFromLayout(kvm: Kvm, layout: MachineLayout, mode: DirtyMode | 'auto' = 'auto', ringBytes?: number, guest: ImageGuestOptions = {}): Machine {
  if (layout.pageSize !== PAGE_SIZE) throw new RangeError(`the stream's page size is ${layout.pageSize}; this machine's is ${PAGE_SIZE}`);
  if (layout.arch !== kvm.arch) throw new RangeError(`the stream is of an ${layout.arch} machine; this KVM runs ${kvm.arch}`);
  const vcpus = layout.vcpus.map((v) => ({ id: v.id, workload: v.workload ? workloadOf(v.workload) : null }));
  return buildMachine(kvm, layout.slots, vcpus, mode, ringBytes, { ...guest, irqchip: layout.irqchip ?? false });
}

function workloadOf(spec: NonNullable<MachineLayout['vcpus'][number]['workload']>): Workload {
  switch (spec.kind) {
    case 'stride': return Workload.stride(spec);
    case 'random': return Workload.random(spec);
    case 'counter': return Workload.counter(spec);
    case 'spin': return Workload.spin();
  }
}

/**
 * The dirty-tracking mode of a guest image's machine. 'auto' is a bitmap mode: a guest image
 * writes any number of pages in one KVM_RUN, and a ring must never overfill. 'ring' is
 * refused on a kvm_pvm host, which logs every emulated write and does not stop a run at the
 * soft limit (DESIGN §5), so a ring there would overfill.
 */
export function imageMode(kvm: Kvm, requested: DirtyMode | 'auto' = 'auto'): DirtyMode {
  if (requested === 'auto') return kvm.checkExtension(Cap.ManualDirtyLogProtect2) > 0 ? 'bitmap-clear' : 'bitmap';
  if (requested === 'ring' && kvm.hostInfo.flavour === 'kvm_pvm') {
    throw new RangeError('a guest image on kvm_pvm cannot use the dirty ring: one run writes pages without bound, and this host does not stop a run at the soft limit; use --mode bitmap');
  }
  return chooseMode(kvm, requested);
}

function buildMachine(
  kvm: Kvm, slots: SlotLayout[], vcpus: { id: number; workload: Workload | null }[],
  requested: DirtyMode | 'auto' = 'auto', ringBytes?: number, guest: ImageGuestOptions & { irqchip?: boolean } = {},
): Machine {
  const irqchip = guest.irqchip ?? false;
  const mode = irqchip ? imageMode(kvm, requested) : chooseMode(kvm, requested);
  const vm = kvm.createVm();
  try {
    let ring = 0;
    let withBitmap = false;
    if (mode === 'ring') {
      ring = ringBytes ?? (irqchip ? kvm.dirtyRingLimits().maxBytes : ringBytesFor(kvm, Math.max(0, ...vcpus.map((v) => writesPerRun(v.workload)))));
      vm.enableDirtyRing(ring);
      // Where the kernel needs it (arm64), the bitmap that backs the ring up: before any slot.
      if (vm.checkExtension(Cap.DirtyLogRingWithBitmap) > 0) {
        vm.enableDirtyRingWithBitmap();
        withBitmap = true;
      }
    } else if (mode === 'bitmap-clear') {
      vm.enableManualDirtyLogProtect(1);
    }
    const cmma = hasCmmaMigration(kvm);
    if (cmma) vm.enableCmma(); // before any vCPU
    if (irqchip) {
      vm.createIrqchip(); // the PIC pair, IOAPIC and each vCPU's LAPIC in the kernel: before the vCPUs
      vm.createPit2();
    }
    const machineSlots: MachineSlot[] = slots.map((s) => {
      const memory = vm.createMemory(s.size);
      vm.setUserMemoryRegion({ slot: s.slot, guestPhysAddr: s.guestPhysAddr, memory, flags: s.logged ? MemFlag.LogDirtyPages : 0 });
      return { layout: { ...s }, memory, bytes: Buffer.from(memory.buffer) };
    });
    const cpus = vcpus.map((v) => vm.createVcpu(v.id));
    vcpus.forEach((v, i) => v.workload && cpus[i].load(v.workload));
    const m: Machine = {
      kvm, vm, vcpus: cpus, slots: machineSlots, mode, ringBytes: ring, ringWithBitmap: withBitmap, cmma, sregs: cpus.map((c) => c.getSregs()),
      workloads: vcpus.map((v) => v.workload),
      irqchip, devices: null, fullState: irqchip, exitPort: irqchip ? guest.exitPort ?? GUEST_EXIT_PORT : null,
      deviceOutput: () => undefined,
      close: () => vm.close(),
    };
    if (irqchip) m.devices = new IoBus((guest.devices ?? standardDevices)((port, size, value) => m.deviceOutput(port, size, value)));
    return m;
  } catch (e) {
    vm.close();
    throw e;
  }
}

/** The machine's Header: layout, workloads and each vCPU's special registers now. */
export function describeMachine(m: Machine): MachineLayout {
  return {
    pageSize: PAGE_SIZE,
    arch: m.kvm.arch,
    slots: m.slots.map((s) => ({ ...s.layout })),
    vcpus: m.vcpus.map((v, i) => ({ id: v.id, workload: m.workloads[i]?.spec ?? null, sregs: m.sregs[i] })),
    ...(m.irqchip ? { irqchip: true } : {}),
    ...(m.fullState ? { fullState: true } : {}),
  };
}

/** The machine's full state now (its vCPUs stopped): every vCPU's, the VM's where it has in-kernel devices, each device's. */
export function captureState(m: Machine): MachineState {
  return {
    vcpus: m.vcpus.map((v) => ({ id: v.id, state: v.getState() })),
    vm: m.irqchip ? m.vm.getState() : null,
    devices: m.devices ? m.devices.save() : {},
  };
}

/**
 * Sets a full state (before the vCPUs run): the VM's devices and clock, then each vCPU's
 * (vcpu.setState: CPUID, sregs, regs, xsave, ..., in QEMU's order), then the VMM devices'.
 * A device the state names and the machine lacks is a RangeError.
 */
export function applyState(m: Machine, s: MachineState): void {
  if (s.vcpus.length !== m.vcpus.length) throw new RangeError(`a state of ${s.vcpus.length} vCPUs for a machine of ${m.vcpus.length}`);
  const names = Object.keys(s.devices);
  const missing = names.filter((n) => !m.devices?.devices.some((d) => d.name === n));
  if (missing.length) throw new RangeError(`the state has devices this machine lacks: ${missing.join(', ')}`);
  if (s.vm) m.vm.setState(s.vm);
  m.vcpus.forEach((v, i) => {
    v.setState(s.vcpus[i].state);
    m.sregs[i] = s.vcpus[i].state.sregs;
  });
  m.devices?.restore(s.devices); // RangeError for a device of the machine the state lacks
}


/**
 * Rebuilds the machine of a replica image, as of its last committed epoch: a new VM of the
 * Header's layout, the workloads loaded (the emulator runs them as models), then the image's
 * memory copied into guest memory (host writes: never logged) and the saved state set (the
 * full state where the stream carries it, else the special and general registers), so the
 * guest resumes exactly where the checkpoint left it.
 */
export function restoreMachine(kvm: Kvm, image: ReplicaImage, mode: DirtyMode | 'auto' = 'auto', ringBytes?: number, guest: ImageGuestOptions = {}): Machine {
  const layout = image.layout;
  if (!layout || !image.restorable) throw new RangeError('the replica has no committed epoch with registers to restore');
  const m = machineFromLayout(kvm, layout, mode, ringBytes, guest);
  try {
    // Only the image's non-zero pages: the new guest memory is zero, and writing every page would allocate all of it.
    image.memory.forEach((_, i) => copyNonZeroPages(image.slot(i), m.slots[i].bytes));
    if (image.state) applyState(m, image.state);
    else setRegisters(m, layout, image.regs);
    return m;
  } catch (e) {
    m.close();
    throw e;
  }
}

/** Sets each vCPU's special registers (from the Header) and general registers (from an epoch). */
export function setRegisters(m: Machine, layout: MachineLayout, regs: readonly VcpuRegs[]): void {
  m.vcpus.forEach((v, i) => {
    v.setSregs(layout.vcpus[i].sregs);
    m.sregs[i] = layout.vcpus[i].sregs;
    v.setRegs(regs[i].regs);
  });
}
