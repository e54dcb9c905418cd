// The native backend: lib/backend.ts implemented over the addon (native/*.cc) on a real
// /dev/kvm. The addon issues the ioctls and owns fds, mappings and vCPU threads; this adapter
// adds what needs no kernel: the ring size the VM took, the memory slots load() needs, the
// guest harness, and readable open errors.
import type {
  BackendMemory,
  BackendOptions,
  BackendSystem,
  BackendVcpu,
  BackendVm,
  ExitInfo,
  HostInfo,
  MemoryRegion,
  Regs,
  Sregs,
  WorkloadSpec,
} from '../backend';
import { Cap, DIRTY_RING_RSVD_ENTRIES, EXIT_IO_OUT, ExitReason, type Arch } from '../constants';
import { fail, isKvmError, KvmError } from '../errors';
import { HARNESS_SIZE, installHarness, longModeSregs, MAX_MAP_BYTES, workloadRegs } from '../guest/x86';
import { decodeRegs, decodeSregs, encodeRegs, encodeSregs, REGS_SIZE, SREGS_SIZE } from '../kvm-structs';
import { hostArch } from '../open';
import { loadBinding, type NativeExitFields, type NativeMemory, type NativeSystem, type NativeVcpu, type NativeVm } from './binding';
import { cpuDirtyLogSize, hostInfo } from './host';

const GIB = 2 ** 30;

/** Opens the KVM device through the addon. Throws NativeLoadError if the addon is not built. */
export function openNativeBackend(options: BackendOptions = {}): BackendSystem {
  const device = options.device ?? '/dev/kvm';
  const arch = hostArch();
  if (arch === undefined || (options.arch !== undefined && options.arch !== arch)) {
    throw new RangeError(`the native backend runs the host's architecture (${arch ?? process.arch}), not ${options.arch ?? process.arch}`);
  }
  const addon = loadBinding();
  let system: NativeSystem;
  try {
    system = new addon.System(device);
  } catch (e) {
    throw openError(e, device);
  }
  return new NativeSystemBackend(system, arch, hostInfo(), exitDecoder(addon.layout.exitFields));
}

/** The kernel's open() error with what to do about it, as the selftests' open_path_or_exit says it. */
function openError(e: unknown, device: string): unknown {
  if (!isKvmError(e)) return e;
  const hint =
    e.code === 'ENOENT' ? `${device}: Is KVM loaded and enabled?`
    : e.code === 'EACCES' ? `no access to ${device} (kvm group?)`
    : device;
  const err = new KvmError(e.errno, undefined, hint, 'open');
  Object.defineProperty(err, 'path', { value: device, enumerable: true });
  return err;
}

class NativeSystemBackend implements BackendSystem {
  readonly backend = 'native' as const;
  readonly ringReservedEntries: number;

  constructor(
    private readonly system: NativeSystem,
    readonly arch: Arch,
    readonly hostInfo: HostInfo,
    private readonly decodeExit: ExitDecoder,
  ) {
    this.ringReservedEntries = DIRTY_RING_RSVD_ENTRIES + (arch === 'x86_64' ? cpuDirtyLogSize(hostInfo.flavour) : 0);
  }

  getApiVersion(): number {
    return this.system.getApiVersion();
  }

  checkExtension(cap: number): number {
    return this.system.checkExtension(cap);
  }

  getVcpuMmapSize(): number {
    return this.system.getVcpuMmapSize();
  }

  createVm(type: number): BackendVm {
    return new NativeVmBackend(this.system.createVm(type), this.decodeExit);
  }

  getSupportedCpuid(): Uint8Array {
    return this.system.getSupportedCpuid();
  }

  getMsrIndexList(): Uint32Array {
    return this.system.getMsrIndexList();
  }

  close(): void {
    this.system.close();
  }
}

class NativeVmBackend implements BackendVm {
  /** Bytes of each later vCPU's ring: what a successful KVM_ENABLE_CAP of a ring cap took. */
  #ringBytes = 0;
  /** The memory slots as the kernel has them (for load()). */
  readonly #slots = new Map<number, MemoryRegion>();

  constructor(
    private readonly vm: NativeVm,
    private readonly decodeExit: ExitDecoder,
  ) {}

  checkExtension(cap: number): number {
    return this.vm.checkExtension(cap);
  }

  enableCap(cap: number, args: readonly [bigint, bigint, bigint, bigint], flags: number): number {
    const r = this.vm.enableCap(cap, args, flags);
    // The kernel truncates the size to u32 before checking it (kernel-semantics rule 17).
    if (cap === Cap.DirtyLogRing || cap === Cap.DirtyLogRingAcqRel) this.#ringBytes = Number(BigInt.asUintN(32, args[0]));
    return r;
  }

  createMemory(size: number): BackendMemory {
    return this.vm.createMemory(size);
  }

  setUserMemoryRegion(region: MemoryRegion): void {
    const memory = region.memory === null ? null : (region.memory as NativeMemory);
    this.vm.setUserMemoryRegion(region.slot, region.flags, region.guestPhysAddr, region.memorySize, memory, region.memoryOffset);
    if (region.memorySize === 0) this.#slots.delete(region.slot);
    else this.#slots.set(region.slot, { ...region });
  }

  createVcpu(id: number): BackendVcpu {
    return new NativeVcpuBackend(this.vm.createVcpu(id, this.#ringBytes), this.#slots, this.decodeExit);
  }

  getDirtyLog(slot: number, bitmap: Uint8Array): void {
    this.vm.getDirtyLog(slot, bitmap);
  }

  clearDirtyLog(slot: number, firstPage: number, numPages: number, bitmap: Uint8Array): void {
    this.vm.clearDirtyLog(slot, firstPage, numPages, bitmap);
  }

  resetDirtyRings(): number {
    return this.vm.resetDirtyRings();
  }

  harvestRings(vcpus: readonly BackendVcpu[], fetch: Float64Array, slots: Uint32Array, offsets: Float64Array, start: number, counts: Uint32Array): number {
    return this.vm.harvestRings(vcpus.map((v) => (v as NativeVcpuBackend).native), fetch, slots, offsets, start, counts);
  }

  setDeviceAttr(group: number, attr: number, value?: bigint): void {
    if (value === undefined) this.vm.setDeviceAttr(group, attr);
    else this.vm.setDeviceAttr(group, attr, value);
  }

  getDeviceAttr(group: number, attr: number): bigint {
    return this.vm.getDeviceAttr(group, attr);
  }

  hasDeviceAttr(group: number, attr: number): boolean {
    return this.vm.hasDeviceAttr(group, attr);
  }

  getCmmaBits(
    args: { startGfn: number; count: number; flags: number },
    values: Uint8Array,
  ): { startGfn: number; count: number; flags: number; remaining: number } {
    return this.vm.getCmmaBits(args.startGfn, args.count, args.flags, values);
  }

  setCmmaBits(args: { startGfn: number; count: number; flags: number; mask: bigint }, values: Uint8Array): void {
    this.vm.setCmmaBits(args.startGfn, args.count, args.flags, args.mask, values);
  }

  createIrqchip(): void {
    this.vm.createIrqchip();
  }

  createPit2(flags: number): void {
    this.vm.createPit2(flags);
  }

  setTssAddr(addr: number): void {
    this.vm.setTssAddr(addr);
  }

  setIdentityMapAddr(addr: number): void {
    this.vm.setIdentityMapAddr(addr);
  }

  irqLine(irq: number, level: number): void {
    this.vm.irqLine(irq, level);
  }

  getIrqchip(chip: Uint8Array): void {
    this.vm.getIrqchip(chip);
  }

  setIrqchip(chip: Uint8Array): void {
    this.vm.setIrqchip(chip);
  }

  getPit2(pit: Uint8Array): void {
    this.vm.getPit2(pit);
  }

  setPit2(pit: Uint8Array): void {
    this.vm.setPit2(pit);
  }

  getClock(clock: Uint8Array): void {
    this.vm.getClock(clock);
  }

  setClock(clock: Uint8Array): void {
    this.vm.setClock(clock);
  }

  close(): void {
    this.vm.close();
    this.#slots.clear();
  }
}

type ExitDecoder = (state: Float64Array) => ExitInfo;

/** Decodes the exits the addon encodes, at the indexes it reports (layout.exitFields). */
function exitDecoder(f: NativeExitFields): ExitDecoder {
  const { reason: R, ioDirection, ioSize, ioPort, ioCount, ioValue, mmioPhysAddr, mmioLen, mmioIsWrite, mmioData, hasDetail, detailHigh, detailLow } = f;
  return (e) => {
    const reason = e[R];
    const exit: ExitInfo = { reason };
    if (reason === ExitReason.Io) {
      exit.io = {
        port: e[ioPort],
        direction: e[ioDirection] === EXIT_IO_OUT ? 'out' : 'in',
        size: e[ioSize],
        count: e[ioCount],
        value: e[ioValue],
      };
    } else if (reason === ExitReason.Mmio) {
      const len = e[mmioLen];
      const isWrite = e[mmioIsWrite] !== 0;
      exit.mmio = { physAddr: e[mmioPhysAddr], len, isWrite, data: isWrite ? Array.from(e.subarray(mmioData, mmioData + Math.min(len, 8))) : [] };
    }
    if (e[hasDetail]) exit.detail = (BigInt(e[detailHigh]) << 32n) | BigInt(e[detailLow]);
    return exit;
  };
}

class NativeVcpuBackend implements BackendVcpu {
  readonly id: number;
  /** the addon's vCPU (NativeVmBackend.harvestRings hands it back to the addon) */
  readonly native: NativeVcpu;
  readonly harvestRing?: (fetch: number, max: number, slots: Uint32Array, offsets: Float64Array, start: number) => number;
  /** Where the addon leaves each run()'s exit. */
  private readonly exitState: Float64Array;
  /** struct kvm_regs and kvm_sregs, reused by every call (decoding copies out of them) */
  readonly #regs = new Uint8Array(REGS_SIZE);
  readonly #sregs = new Uint8Array(SREGS_SIZE);

  constructor(
    private readonly vcpu: NativeVcpu,
    private readonly slots: ReadonlyMap<number, MemoryRegion>,
    private readonly decodeExit: ExitDecoder,
  ) {
    this.id = vcpu.id;
    this.native = vcpu;
    this.exitState = vcpu.exitState;
    if (vcpu.ringBuffer !== null) this.harvestRing = (fetch, max, s, o, start) => vcpu.harvestRing(fetch, max, s, o, start);
  }

  get runBuffer(): ArrayBuffer {
    return this.vcpu.runBuffer;
  }

  get ringBuffer(): ArrayBuffer | null {
    return this.vcpu.ringBuffer;
  }

  run(): ExitInfo {
    this.vcpu.run();
    return this.decodeExit(this.exitState);
  }

  runAsync(): Promise<ExitInfo> {
    return this.vcpu.runAsync().then(this.decodeExit);
  }

  spinForExit(ns: number): boolean {
    return this.vcpu.spinForExit(ns);
  }

  setRunWatch(ns: number): number {
    return this.vcpu.setRunWatch(ns);
  }

  kick(): void {
    this.vcpu.kick();
  }

  getRegs(): Regs {
    this.vcpu.getRegs(this.#regs);
    return decodeRegs(this.#regs);
  }

  setRegs(regs: Regs): void {
    this.vcpu.setRegs(encodeRegs(regs, this.#regs));
  }

  getSregs(): Sregs {
    this.vcpu.getSregs(this.#sregs);
    return decodeSregs(this.#sregs);
  }

  setSregs(sregs: Sregs): void {
    this.vcpu.setSregs(encodeSregs(sregs, this.#sregs));
  }

  get xsaveSize(): number {
    return this.vcpu.xsaveSize;
  }

  getFpu(fpu: Uint8Array): void {
    this.vcpu.getFpu(fpu);
  }

  setFpu(fpu: Uint8Array): void {
    this.vcpu.setFpu(fpu);
  }

  getXsave(xsave: Uint8Array): void {
    this.vcpu.getXsave(xsave);
  }

  setXsave(xsave: Uint8Array): void {
    this.vcpu.setXsave(xsave);
  }

  getXcrs(xcrs: Uint8Array): void {
    this.vcpu.getXcrs(xcrs);
  }

  setXcrs(xcrs: Uint8Array): void {
    this.vcpu.setXcrs(xcrs);
  }

  getMsrs(msrs: Uint8Array): number {
    return this.vcpu.getMsrs(msrs);
  }

  setMsrs(msrs: Uint8Array): number {
    return this.vcpu.setMsrs(msrs);
  }

  getLapic(lapic: Uint8Array): void {
    this.vcpu.getLapic(lapic);
  }

  setLapic(lapic: Uint8Array): void {
    this.vcpu.setLapic(lapic);
  }

  getVcpuEvents(events: Uint8Array): void {
    this.vcpu.getVcpuEvents(events);
  }

  setVcpuEvents(events: Uint8Array): void {
    this.vcpu.setVcpuEvents(events);
  }

  getDebugregs(regs: Uint8Array): void {
    this.vcpu.getDebugregs(regs);
  }

  setDebugregs(regs: Uint8Array): void {
    this.vcpu.setDebugregs(regs);
  }

  getMpState(): number {
    return this.vcpu.getMpState();
  }

  setMpState(state: number): void {
    this.vcpu.setMpState(state);
  }

  getCpuid2(cpuid: Uint8Array): number {
    return this.vcpu.getCpuid2(cpuid);
  }

  setCpuid2(cpuid: Uint8Array): void {
    this.vcpu.setCpuid2(cpuid);
  }

  /**
   * Writes the harness (page tables identity-mapping every slot, workload code) into the
   * slot that holds guest-physical [0, 2 MiB), then long-mode sregs and the workload's registers.
   */
  load(spec: WorkloadSpec): void {
    const regs = workloadRegs(spec); // RangeError for a bad spec before anything changes
    let harness: MemoryRegion | undefined;
    let top = 0;
    for (const r of this.slots.values()) {
      if (r.memory === null) continue;
      if (r.guestPhysAddr === 0 && r.memorySize >= HARNESS_SIZE) harness = r;
      top = Math.max(top, r.guestPhysAddr + r.memorySize);
    }
    if (harness === undefined || harness.memory === null) {
      throw new RangeError(
        'load() needs a memory slot covering guest-physical [0, 2 MiB): the guest harness keeps its page tables and code there ' +
          '(e.g. vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory }) with memory of at least 2 MiB)',
      );
    }
    // A view of the first 2 MiB only: the whole memory may exceed the largest ArrayBuffer.
    const view = harness.memory.view(harness.memoryOffset, HARNESS_SIZE);
    if (view.length === 0) fail('EBADF', undefined, 'the memory of the slot at guest-physical 0 is closed');
    const mapBytes = Math.min(Math.ceil(top / GIB) * GIB, MAX_MAP_BYTES);
    installHarness(view, mapBytes);
    this.setSregs(longModeSregs(this.getSregs()));
    this.setRegs(regs);
  }

  close(): void {
    this.vcpu.close();
  }
}
