import './dispose';
import type { BackendVcpu, DTable, ExitInfo, Regs, Segment, Sregs } from './backend';
import { Cap, ExitReason, RUN_SYNC_REGS, RUN_VALID_REGS, SyncRegs } from './constants';
import { fail, KvmError, Errno } from './errors';
import { placeImage, type ImageOptions, type ImageSlot, type LoadedImage } from './guest/image';
import { HARNESS_SIZE, IMAGE_MIN_MAP_BYTES, imageSregs, installGdt, installHarness, MAX_MAP_BYTES } from './guest/x86';
import {
  cpuidRoom,
  decodeCpuid,
  decodeDebugregs,
  decodeFpu,
  decodeLapic,
  decodeMsrs,
  decodeRegs,
  decodeVcpuEvents,
  decodeXcrs,
  decodeXsave,
  DEBUGREGS_SIZE,
  encodeCpuid,
  encodeDebugregs,
  encodeFpu,
  encodeLapic,
  encodeMsrs,
  encodeVcpuEvents,
  encodeXcrs,
  encodeXsave,
  FPU_SIZE,
  LAPIC_SIZE,
  MAX_CPUID_ENTRIES,
  MAX_IO_MSRS,
  REGS_SIZE,
  msrsFor,
  VCPU_EVENTS_SIZE,
  XCRS_SIZE,
  type CpuidEntry,
  type Debugregs,
  type Fpu,
  type Lapic,
  type MsrEntry,
  type VcpuEvents,
  type Xcrs,
  type Xsave,
} from './kvm-structs';
import { DirtyRing } from './ring';
import { checkInstance, checkObject, checkU64, checkUint, describe } from './validate';
import { Workload } from './workload';

/** What vcpu.run() returned: the exit reason and, for I/O and MMIO exits, their data. */
export type Exit = ExitInfo;

const REG_NAMES = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SEGMENT_BITS = { limit: 0xffff_ffff, selector: 0xffff, type: 15, present: 1, dpl: 3, db: 1, s: 1, l: 1, g: 1, avl: 1, unusable: 1 } as const;

/** MSR indices for KVM_GET_MSRS: u32s, fewer than MAX_IO_MSRS. */
function checkIndices(indices: ArrayLike<number>): number[] {
  if (!(indices instanceof Uint32Array) && !Array.isArray(indices)) throw new TypeError(`indices must be an array or Uint32Array of MSR numbers, got ${describe(indices)}`);
  if (indices.length >= MAX_IO_MSRS) throw new RangeError(`KVM_GET_MSRS takes fewer than ${MAX_IO_MSRS} MSRs, got ${indices.length}`);
  return Array.from(indices, (x, i) => checkUint(`indices[${i}]`, x, 0xffff_ffff));
}

/** struct kvm_sregs from JS, every field checked (TypeError / RangeError naming it), u64s as bigints. */
function checkSregs(value: unknown): Sregs {
  const o = checkObject('sregs', value);
  const segment = (name: string): Segment => {
    const g = checkObject(`sregs.${name}`, o[name]);
    const seg = { base: checkU64(`sregs.${name}.base`, g.base) } as Segment;
    for (const [field, max] of Object.entries(SEGMENT_BITS)) (seg as unknown as Record<string, number>)[field] = checkUint(`sregs.${name}.${field}`, g[field], max);
    return seg;
  };
  const dtable = (name: string): DTable => {
    const t = checkObject(`sregs.${name}`, o[name]);
    return { base: checkU64(`sregs.${name}.base`, t.base), limit: checkUint(`sregs.${name}.limit`, t.limit, 0xffff) };
  };
  const bitmap = o.interruptBitmap;
  if (!Array.isArray(bitmap) || bitmap.length !== 4) throw new TypeError('sregs.interruptBitmap must be an array of 4 u64 words');
  const out = {} as Sregs;
  for (const name of SEGMENTS) out[name] = segment(name);
  out.gdt = dtable('gdt');
  out.idt = dtable('idt');
  for (const name of ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const) out[name] = checkU64(`sregs.${name}`, o[name]);
  out.interruptBitmap = bitmap.map((w, i) => checkU64(`sregs.interruptBitmap[${i}]`, w));
  return out;
}

/**
 * The whole state of an x86 vCPU, each piece the kernel struct of the same name (typed as in
 * lib/kvm-structs.ts). Pieces the host does not offer are absent (vcpu.stateSkipped() says why).
 */
export interface VcpuState {
  regs: Regs;
  sregs: Sregs;
  /** KVM_GET_CPUID2: the CPUID the guest sees (restored first: the rest may depend on it) */
  cpuid?: CpuidEntry[];
  /** only where there is no xsave (which holds the same registers and is what a restore needs) */
  fpu?: Fpu;
  xsave?: Xsave;
  xcrs?: Xcrs;
  /** every MSR of KVM_GET_MSR_INDEX_LIST this vCPU accepts */
  msrs?: MsrEntry[];
  lapic?: Lapic;
  vcpuEvents?: VcpuEvents;
  debugregs?: Debugregs;
  /** KVM_MP_STATE_* (MpState) */
  mpState?: number;
}

/** The pieces of VcpuState beyond regs and sregs, in the order setState() restores them. */
export const VCPU_STATE_PIECES = ['cpuid', 'fpu', 'xsave', 'xcrs', 'msrs', 'vcpuEvents', 'lapic', 'debugregs', 'mpState'] as const;
export type VcpuStatePiece = (typeof VCPU_STATE_PIECES)[number];

/** @internal what a vCPU asks of its VM and KVM handle */
export interface VcpuHost {
  checkExtension(cap: number): number;
  /** the VM has an in-kernel irqchip (so each vCPU an in-kernel local APIC) */
  hasIrqchip(): boolean;
  /** the VM's address-space-0 memory slots, for loadImage() */
  imageSlots(): ImageSlot[];
  /** KVM_GET_MSR_INDEX_LIST, asked once per KVM handle */
  msrIndexList(): Uint32Array;
}

/**
 * A virtual CPU (the vCPU fd, its kvm_run page and, with the ring on, its dirty ring).
 * Made by vm.createVcpu(); closed by close() or with its VM.
 */
export class Vcpu {
  readonly id: number;
  /** @internal */
  readonly _handle: BackendVcpu;
  readonly #ring: DirtyRing | null;
  #closed = false;
  readonly #onClose: (v: Vcpu) => void;
  readonly #host: VcpuHost;
  /** KVM_GET_XSAVE2 where KVM_CAP_XSAVE2 is offered (the native backend asks it that way) */
  readonly #xsaveGet: string;
  /** runAsync() promises not settled yet */
  #inFlight = 0;
  /** a KVM_RUN returned since setSyncRegs(): kvm_run.s.regs holds what it stored */
  #syncedSince = false;
  /** What getState() collects, found on first use (the MSR filter asks the kernel). */
  #plan: { skipped: Partial<Record<VcpuStatePiece, string>>; msrIndices: Uint32Array } | undefined;

  /** @internal made by vm.createVcpu() */
  constructor(handle: BackendVcpu, onClose: (v: Vcpu) => void, host: VcpuHost) {
    this._handle = handle;
    this.id = handle.id;
    this.#onClose = onClose;
    this.#host = host;
    this.#xsaveGet = host.checkExtension(Cap.Xsave2) > 0 ? 'KVM_GET_XSAVE2' : 'KVM_GET_XSAVE';
    const ring = handle.ringBuffer;
    this.#ring = ring ? new DirtyRing(ring, handle.harvestRing?.bind(handle)) : null;
  }

  /** This vCPU's dirty ring, or null when the VM has no ring. */
  get dirtyRing(): DirtyRing | null {
    return this.#ring;
  }

  /** The kvm_run mapping (detached once closed). */
  get runBuffer(): ArrayBuffer {
    return this._handle.runBuffer;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Loads a guest-harness workload: page tables and code go into guest-physical
   * [0, 2 MiB) (which a memory slot must cover) and the registers start it at epoch 1.
   * Other vCPUs' workloads are left alone.
   */
  load(workload: Workload): this {
    this.#live(undefined);
    checkInstance('workload', workload, Workload, 'a Workload (Workload.stride(), .random(), .counter(), .spin())');
    this._handle.load(workload.spec);
    return this;
  }

  /** KVM_RUN, synchronously: returns at the guest's next exit. A kick makes it return ExitReason.Intr. */
  run(): Exit {
    this.#live('KVM_RUN');
    const exit = this._handle.run();
    this.#syncedSince = true;
    return exit;
  }

  /** KVM_RUN on the vCPU's own thread; the event loop keeps running meanwhile. */
  async runAsync(): Promise<Exit> {
    this.#live('KVM_RUN');
    const run = this._handle.runAsync();
    this.#inFlight++;
    try {
      const exit = await run;
      this.#syncedSince = true;
      return exit;
    } finally {
      this.#inFlight--;
    }
  }

  /**
   * Watches up to `maxUs` µs on this thread, without sleeping, for the pending runAsync() to
   * end; true if it has (its promise then settles as soon as the event loop runs). The event
   * loop, asleep, wakes about 100 µs late on a nested host: a loop that expects the exit soon
   * (a checkpoint epoch) watches for it instead. The event loop is blocked meanwhile. false at
   * once when no run is pending, and on the emulator (its runs are slices of the event loop).
   */
  spinForExit(maxUs: number): boolean {
    this.#live(undefined);
    if (typeof maxUs !== 'number' || !(maxUs >= 0) || maxUs > 1e6) throw new RangeError(`maxUs must be a number of µs from 0 to 1e6, got ${String(maxUs)}`);
    return this.#inFlight > 0 && this._handle.spinForExit(maxUs * 1000);
  }

  /**
   * How long, in µs, the vCPU's thread watches for the next runAsync() after an exit before it
   * sleeps (default 200); returns the previous value. The watch saves a thread wake-up to a
   * loop that runs the guest again at once, and holds a core meanwhile: where no core is spare
   * (a checkpoint's replica on the same two cores) 0 leaves that core to the other threads.
   */
  setRunWatch(us: number): number {
    this.#live(undefined);
    if (typeof us !== 'number' || !(us >= 0) || us > 1e6) throw new RangeError(`us must be a number of µs from 0 to 1e6, got ${String(us)}`);
    return this._handle.setRunWatch(us * 1000) / 1000;
  }

  /**
   * KVM_CAP_SYNC_REGS: sets kvm_run.kvm_valid_regs, the registers (SyncRegs bits) the kernel
   * stores into kvm_run at the end of every KVM_RUN, so that reading them costs no ioctl
   * (getSyncedRegs()). 0 turns it off. RangeError for a bit that this VM's
   * KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS) does not offer (KVM_RUN would fail with EINVAL).
   */
  setSyncRegs(fields: number): void {
    this.#live(undefined);
    if (this.#inFlight > 0) fail('EBUSY', 'KVM_RUN', 'runAsync() is in flight');
    checkUint('fields', fields, 0xffff_ffff);
    const offered = this.#host.checkExtension(Cap.SyncRegs);
    if ((fields & ~offered) !== 0) throw new RangeError(`sync regs 0x${fields.toString(16)}: KVM_CAP_SYNC_REGS offers 0x${offered.toString(16)}`);
    const run = new DataView(this._handle.runBuffer);
    run.setUint32(RUN_VALID_REGS, fields, true);
    run.setUint32(RUN_VALID_REGS + 4, 0, true);
    this.#syncedSince = false;
  }

  /**
   * The general registers as KVM stored them in kvm_run.s.regs when the last KVM_RUN ended
   * (KVM_GET_REGS's answer at that moment, without the ioctl). Needs SyncRegs.X86Regs set
   * (setSyncRegs) and a KVM_RUN returned since: RangeError otherwise; EBUSY while runAsync()
   * is in flight (the kernel may be writing them).
   */
  getSyncedRegs(): Regs {
    this.#live(undefined);
    if (this.#inFlight > 0) fail('EBUSY', 'KVM_RUN', 'runAsync() is in flight');
    const buf = this._handle.runBuffer;
    if ((new DataView(buf).getUint32(RUN_VALID_REGS, true) & SyncRegs.X86Regs) === 0) throw new RangeError('kvm_run.kvm_valid_regs lacks SyncRegs.X86Regs (setSyncRegs)');
    if (!this.#syncedSince) throw new RangeError('no KVM_RUN has returned since setSyncRegs(): kvm_run.s.regs holds nothing yet');
    return decodeRegs(new Uint8Array(buf, RUN_SYNC_REGS, REGS_SIZE));
  }

  /** Makes a running vCPU return promptly with ExitReason.Intr (or the next run, if none is running). */
  kick(): void {
    this.#live(undefined);
    this._handle.kick();
  }

  /** KVM_GET_REGS */
  getRegs(): Regs {
    this.#live('KVM_GET_REGS');
    return this._handle.getRegs();
  }

  /** KVM_SET_REGS; registers left out keep their values. */
  setRegs(regs: Partial<Regs>): void {
    this.#live('KVM_SET_REGS');
    const o = checkObject('regs', regs);
    const next = this._handle.getRegs();
    for (const name of REG_NAMES) if (o[name] !== undefined) next[name] = checkU64(`regs.${name}`, o[name]);
    this._handle.setRegs(next);
  }

  /** KVM_GET_SREGS */
  getSregs(): Sregs {
    this.#live('KVM_GET_SREGS');
    return this._handle.getSregs();
  }

  /** KVM_SET_SREGS (a full struct, as getSregs() returns it). */
  setSregs(sregs: Sregs): void {
    this.#live('KVM_SET_SREGS');
    this._handle.setSregs(checkSregs(sregs));
  }

  /**
   * Completes an I/O or MMIO read that exited to userspace, without running guest code: KVM_RUN
   * with kvm_run.immediate_exit set (api.rst: the guest's state is consistent only after
   * userspace re-entered KVM_RUN, which is what QEMU does before saving). Fill the IN or MMIO
   * data into kvm_run first (an IoBus does). Harmless after any other exit.
   */
  completeIo(): void {
    this.#live('KVM_RUN');
    // the kick below must not reach a guest that runAsync() is running
    if (this.#inFlight > 0) fail('EBUSY', 'KVM_RUN', 'runAsync() is in flight');
    this._handle.kick();
    const exit = this._handle.run();
    // immediate_exit makes KVM_RUN return EINTR once the pending operation is done
    if (exit.reason !== ExitReason.Intr) throw new KvmError(Errno.EIO, 'KVM_RUN', `completeIo() expected an immediate exit, got exit reason ${exit.reason}`);
  }

  /**
   * Loads a guest image (a flat binary or a static ELF64, x86-64) into guest memory and starts
   * it in 64-bit long mode with the guest harness: identity page tables in gpa [0, 2 MiB)
   * mapping every slot and at least 4 GiB (so the LAPIC at 0xfee00000 and the IOAPIC are
   * reachable), a GDT there with a 64-bit code segment (selector 0x08) and a data segment
   * (0x10) so the guest may install an IDT whose gates name 0x08 (or load its own GDT), SSE
   * enabled (CR0.MP|NE, CR4.OSFXSR|OSXMMEXCPT), the IDT empty (limit 0) until the guest loads
   * one, interrupts off; rip = entry, rsp = stackTop, every other register 0.
   *
   * Needs a memory slot covering gpa [0, 2 MiB) like load(). RangeError, before anything is
   * written, for a malformed ELF, a segment outside one slot, in the harness or overlapping
   * another, an entry outside memory, or a stackTop without a free page below it.
   */
  loadImage(options: ImageOptions): LoadedImage {
    this.#live(undefined);
    const o = checkObject('options', options);
    const image = checkInstance('image', o.image, Uint8Array, 'a Uint8Array (a flat binary or an ELF64 file)');
    const opts: ImageOptions = { image };
    for (const name of ['gpa', 'entry', 'stackTop'] as const) if (o[name] !== undefined) opts[name] = checkUint(name, o[name]);
    const slots = this.#host.imageSlots();
    const harness = slots.find((s) => s.gpa === 0 && s.size >= HARNESS_SIZE);
    if (harness === undefined) {
      throw new RangeError('loadImage() needs a memory slot covering guest-physical [0, 2 MiB) for the guest harness (page tables, GDT)');
    }
    const sregs = this._handle.getSregs(); // EBUSY while running, before any byte is written
    const loaded = placeImage(opts, slots);
    const top = Math.max(...slots.map((s) => s.gpa + s.size));
    const view = harness.view(0, HARNESS_SIZE);
    installHarness(view, Math.min(Math.max(IMAGE_MIN_MAP_BYTES, Math.ceil(top / 2 ** 30) * 2 ** 30), MAX_MAP_BYTES));
    installGdt(view);
    this._handle.setSregs(imageSregs(sregs));
    const regs = {} as Regs;
    for (const name of REG_NAMES) regs[name] = 0n;
    regs.rip = BigInt(loaded.entry);
    regs.rsp = BigInt(loaded.stackTop);
    regs.rflags = 2n; // bit 1 is always set; IF clear
    this._handle.setRegs(regs);
    return loaded;
  }

  // ---- the rest of the x86 state, one kernel struct each --------------------------------------

  /** Bytes of this vCPU's XSAVE image (KVM_CAP_XSAVE2's answer, at least 4096). */
  get xsaveSize(): number {
    this.#live(undefined);
    return this._handle.xsaveSize;
  }

  /** KVM_GET_FPU. Note: the kernel never reports MXCSR here (it reads 0); xsave has it. */
  getFpu(): Fpu {
    this.#live('KVM_GET_FPU');
    const b = new Uint8Array(FPU_SIZE);
    this._handle.getFpu(b);
    return decodeFpu(b);
  }

  /**
   * KVM_SET_FPU. It writes the legacy FXSAVE area without marking the x87/SSE components in
   * use (XSTATE_BV), so on a vCPU that has not run them a guest sees the registers as reset:
   * restore with setXsave() where the host has it (setState() does).
   */
  setFpu(fpu: Fpu): void {
    this.#live('KVM_SET_FPU');
    this._handle.setFpu(encodeFpu(fpu));
  }

  /** KVM_GET_XSAVE (KVM_GET_XSAVE2 where KVM_CAP_XSAVE2 is offered): xsaveSize bytes. */
  getXsave(): Xsave {
    this.#live(this.#xsaveGet);
    const b = new Uint8Array(this._handle.xsaveSize);
    this._handle.getXsave(b);
    return decodeXsave(b);
  }

  /** KVM_SET_XSAVE; region must be xsaveSize bytes. */
  setXsave(xsave: Xsave): void {
    this.#live('KVM_SET_XSAVE');
    this._handle.setXsave(encodeXsave(xsave, this._handle.xsaveSize));
  }

  /** KVM_GET_XCRS */
  getXcrs(): Xcrs {
    this.#live('KVM_GET_XCRS');
    const b = new Uint8Array(XCRS_SIZE);
    this._handle.getXcrs(b);
    return decodeXcrs(b);
  }

  /** KVM_SET_XCRS */
  setXcrs(xcrs: Xcrs): void {
    this.#live('KVM_SET_XCRS');
    this._handle.setXcrs(encodeXcrs(xcrs));
  }

  /**
   * KVM_GET_MSRS: the entries the kernel read, in order. It stops at the first MSR it refuses,
   * so the result may be shorter than `indices` (fewer than 256 per call).
   */
  getMsrs(indices: ArrayLike<number>): MsrEntry[] {
    this.#live('KVM_GET_MSRS');
    const list = checkIndices(indices);
    const b = msrsFor(list);
    return decodeMsrs(b, this._handle.getMsrs(b));
  }

  /** KVM_SET_MSRS: returns how many entries the kernel wrote (it stops at the first it refuses). */
  setMsrs(entries: MsrEntry[]): number {
    this.#live('KVM_SET_MSRS');
    return this._handle.setMsrs(encodeMsrs(entries));
  }

  /** KVM_GET_LAPIC: the in-kernel local APIC's register page (the VM needs vm.createIrqchip()). */
  getLapic(): Lapic {
    this.#live('KVM_GET_LAPIC');
    const b = new Uint8Array(LAPIC_SIZE);
    this._handle.getLapic(b);
    return decodeLapic(b);
  }

  /** KVM_SET_LAPIC (the timer restarts from the saved current count). */
  setLapic(lapic: Lapic): void {
    this.#live('KVM_SET_LAPIC');
    this._handle.setLapic(encodeLapic(lapic));
  }

  /** KVM_GET_VCPU_EVENTS */
  getVcpuEvents(): VcpuEvents {
    this.#live('KVM_GET_VCPU_EVENTS');
    const b = new Uint8Array(VCPU_EVENTS_SIZE);
    this._handle.getVcpuEvents(b);
    return decodeVcpuEvents(b);
  }

  /** KVM_SET_VCPU_EVENTS: `flags` says which optional parts to take (as GET returned it, it restores what GET read). */
  setVcpuEvents(events: VcpuEvents): void {
    this.#live('KVM_SET_VCPU_EVENTS');
    this._handle.setVcpuEvents(encodeVcpuEvents(events));
  }

  /** KVM_GET_DEBUGREGS */
  getDebugregs(): Debugregs {
    this.#live('KVM_GET_DEBUGREGS');
    const b = new Uint8Array(DEBUGREGS_SIZE);
    this._handle.getDebugregs(b);
    return decodeDebugregs(b);
  }

  /** KVM_SET_DEBUGREGS */
  setDebugregs(regs: Debugregs): void {
    this.#live('KVM_SET_DEBUGREGS');
    this._handle.setDebugregs(encodeDebugregs(regs));
  }

  /** KVM_GET_MP_STATE: MpState.Runnable, .Halted (in hlt with an in-kernel LAPIC), ... */
  getMpState(): number {
    this.#live('KVM_GET_MP_STATE');
    return this._handle.getMpState();
  }

  /** KVM_SET_MP_STATE */
  setMpState(state: number): void {
    this.#live('KVM_SET_MP_STATE');
    this._handle.setMpState(checkUint('mpState', state, 0xffff_ffff));
  }

  /** KVM_GET_CPUID2: the CPUID entries this vCPU shows its guest. */
  getCpuid2(): CpuidEntry[] {
    this.#live('KVM_GET_CPUID2');
    const b = cpuidRoom(MAX_CPUID_ENTRIES);
    return decodeCpuid(b, this._handle.getCpuid2(b));
  }

  /** KVM_SET_CPUID2 (after the vCPU has run, the kernel takes only the table it has). */
  setCpuid2(entries: CpuidEntry[]): void {
    this.#live('KVM_SET_CPUID2');
    this._handle.setCpuid2(encodeCpuid(entries));
    this.#plan = undefined; // which MSRs the vCPU accepts depends on its CPUID
  }

  // ---- the whole state -----------------------------------------------------------------------

  /**
   * The pieces getState() leaves out on this host, each with the reason (a capability the
   * kernel does not offer, no in-kernel irqchip, FPU covered by XSAVE, ...).
   */
  stateSkipped(): Partial<Record<VcpuStatePiece, string>> {
    this.#live('KVM_CHECK_EXTENSION');
    return { ...this.#statePlan().skipped };
  }

  /**
   * The vCPU's whole state, every piece the host offers (KVM_GET_REGS, _SREGS, _CPUID2, _XSAVE
   * or else _FPU, _XCRS, _MSRS, _VCPU_EVENTS, _LAPIC, _DEBUGREGS, _MP_STATE). Take it at an exit,
   * after completeIo() if that exit was an IN or an MMIO read.
   */
  getState(): VcpuState {
    this.#live('KVM_GET_REGS');
    const { skipped, msrIndices } = this.#statePlan();
    const state: VcpuState = { regs: this.getRegs(), sregs: this.getSregs() };
    if (!skipped.cpuid) state.cpuid = this.getCpuid2();
    if (!skipped.fpu) state.fpu = this.getFpu();
    if (!skipped.xsave) state.xsave = this.getXsave();
    if (!skipped.xcrs) state.xcrs = this.getXcrs();
    if (!skipped.msrs) {
      const b = msrsFor(msrIndices);
      const n = this._handle.getMsrs(b);
      if (n !== msrIndices.length) {
        throw new KvmError(Errno.EIO, 'KVM_GET_MSRS', `MSR 0x${msrIndices[n].toString(16)} was readable when first asked and is refused now`);
      }
      state.msrs = decodeMsrs(b, n);
    }
    if (!skipped.vcpuEvents) state.vcpuEvents = this.getVcpuEvents();
    if (!skipped.lapic) state.lapic = this.getLapic();
    if (!skipped.debugregs) state.debugregs = this.getDebugregs();
    if (!skipped.mpState) state.mpState = this.getMpState();
    return state;
  }

  /**
   * Restores a VcpuState in QEMU's order: CPUID, sregs, regs, xsave (fpu only where the state
   * has no xsave), xcrs, msrs, vcpu events, LAPIC, debug registers, MP state. Every piece is
   * checked (TypeError/RangeError) before the first request; pieces absent from `state` are
   * left as they are. A fresh vCPU on a VM made like the source one (same irqchip) takes every
   * piece its own getState() has. An MSR the kernel refuses is a KvmError EINVAL naming it.
   */
  setState(state: VcpuState): void {
    this.#live('KVM_SET_REGS');
    const s = checkObject('state', state);
    for (const key of Object.keys(s)) {
      if (key !== 'regs' && key !== 'sregs' && !(VCPU_STATE_PIECES as readonly string[]).includes(key)) {
        throw new TypeError(`state.${key} is not a piece of the vCPU state (regs, sregs, ${VCPU_STATE_PIECES.join(', ')})`);
      }
    }
    const regs = checkObject('state.regs', s.regs);
    const full = {} as Regs;
    for (const name of REG_NAMES) full[name] = checkU64(`regs.${name}`, regs[name]);
    const sregs = checkSregs(s.sregs);
    const has = (k: VcpuStatePiece): boolean => s[k] !== undefined;
    const cpuid = has('cpuid') ? encodeCpuid(s.cpuid as CpuidEntry[]) : null;
    const xsave = has('xsave') ? encodeXsave(s.xsave as Xsave, this._handle.xsaveSize) : null;
    const fpu = has('fpu') ? encodeFpu(s.fpu as Fpu) : null; // checked even where xsave supersedes it
    const xcrs = has('xcrs') ? encodeXcrs(s.xcrs as Xcrs) : null;
    const msrList = has('msrs') ? (s.msrs as MsrEntry[]) : null;
    const msrs = msrList !== null ? encodeMsrs(msrList) : null;
    const events = has('vcpuEvents') ? encodeVcpuEvents(s.vcpuEvents as VcpuEvents) : null;
    const lapic = has('lapic') ? encodeLapic(s.lapic as Lapic) : null;
    const debugregs = has('debugregs') ? encodeDebugregs(s.debugregs as Debugregs) : null;
    const mpState = has('mpState') ? checkUint('state.mpState', s.mpState, 0xffff_ffff) : null;

    const h = this._handle;
    if (cpuid !== null) {
      h.setCpuid2(cpuid);
      this.#plan = undefined;
    }
    h.setSregs(sregs);
    h.setRegs(full);
    if (xsave !== null) h.setXsave(xsave);
    if (fpu !== null && xsave === null) h.setFpu(fpu);
    if (xcrs !== null) h.setXcrs(xcrs);
    if (msrs !== null) this.#restoreMsrs(msrList!, msrs);
    if (events !== null) h.setVcpuEvents(events);
    if (lapic !== null) h.setLapic(lapic);
    if (debugregs !== null) h.setDebugregs(debugregs);
    if (mpState !== null) h.setMpState(mpState);
  }

  /**
   * KVM_SET_MSRS of `list` (encoded as `bytes`). The kernel stops at an MSR it refuses: some
   * it reads but never takes from the host in some configurations (MSR_KVM_ASYNC_PF_INT
   * without an in-kernel LAPIC). A refused MSR that already holds the value is skipped and the
   * rest written; one that differs is a KvmError EINVAL naming it.
   */
  #restoreMsrs(list: MsrEntry[], bytes: Uint8Array): void {
    let rest = list;
    let n = this._handle.setMsrs(bytes);
    while (n < rest.length) {
      const refused = rest[n];
      const now = this.getMsrs([refused.index]);
      if (now.length !== 1 || now[0].data !== refused.data) {
        throw new KvmError(Errno.EINVAL, 'KVM_SET_MSRS', `the kernel refused MSR 0x${refused.index.toString(16)} = 0x${refused.data.toString(16)}`);
      }
      rest = rest.slice(n + 1);
      n = rest.length === 0 ? 0 : this._handle.setMsrs(encodeMsrs(rest));
    }
  }

  /** Which pieces this host offers, asked once (and again after setCpuid2()). */
  #statePlan(): { skipped: Partial<Record<VcpuStatePiece, string>>; msrIndices: Uint32Array } {
    if (this.#plan !== undefined) return this.#plan;
    const host = this.#host;
    const skipped: Partial<Record<VcpuStatePiece, string>> = {};
    const cap = (c: Cap, name: string, piece: VcpuStatePiece): void => {
      if (host.checkExtension(c) <= 0) skipped[piece] = `KVM_CHECK_EXTENSION(${name}) is 0`;
    };
    cap(Cap.Xsave, 'KVM_CAP_XSAVE', 'xsave');
    if (!skipped.xsave) {
      skipped.fpu = 'the x87 and SSE registers are in xsave (KVM_SET_FPU does not set XSTATE_BV: a restored guest would see them reset; QEMU restores XSAVE too)';
    }
    cap(Cap.Xcrs, 'KVM_CAP_XCRS', 'xcrs');
    cap(Cap.VcpuEvents, 'KVM_CAP_VCPU_EVENTS', 'vcpuEvents');
    cap(Cap.Debugregs, 'KVM_CAP_DEBUGREGS', 'debugregs');
    cap(Cap.MpState, 'KVM_CAP_MP_STATE', 'mpState');
    if (!host.hasIrqchip()) skipped.lapic = 'no in-kernel local APIC: the VM has no irqchip (vm.createIrqchip() before the vCPUs)';
    const msrIndices = this.#acceptedMsrs(host.msrIndexList());
    if (msrIndices.length === 0) skipped.msrs = 'KVM_GET_MSR_INDEX_LIST names no MSR this vCPU accepts';
    this.#plan = { skipped, msrIndices };
    return this.#plan;
  }

  /** The MSRs of `list` KVM_GET_MSRS reads on this vCPU (it stops at each refused one: skip it, go on). */
  #acceptedMsrs(list: Uint32Array): Uint32Array {
    const accepted: number[] = [];
    let pending = Array.from(list);
    while (pending.length > 0) {
      const batch = pending.slice(0, MAX_IO_MSRS - 1);
      const n = this._handle.getMsrs(msrsFor(batch));
      accepted.push(...batch.slice(0, n));
      pending = pending.slice(n < batch.length ? n + 1 : n);
    }
    return Uint32Array.from(accepted);
  }

  /** Kicks and joins a running vCPU, then unmaps its ring and kvm_run and closes the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this._handle.close();
    this.#ring?._close();
    this.#onClose(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(ioctl: string | undefined): void {
    if (this.#closed) fail('EBADF', ioctl, 'the vCPU is closed');
  }
}
