// The emulated vCPU fd: KVM_RUN over the workload model (lib/guest/model.ts), the kvm_run
// page, the dirty ring, KVM_GET/SET_REGS and _SREGS.
//
// KVM_RUN, as vcpu_run()/vcpu_enter_guest() order it:
//   1. finish a load from MMIO that exited to userspace, with kvm_run.mmio.data;
//   2. a pending kick (or kvm_run.immediate_exit) -> EINTR, reported as ExitReason.Intr;
//   3. KVM_REQ_DIRTY_RING_SOFT_FULL with the ring still soft-full -> KVM_EXIT_DIRTY_RING_FULL
//      at once, nothing pushed (rules 47-48);
//   4. the guest runs until its next exit; a store that leaves the ring soft-full retires,
//      then the vCPU exits with KVM_EXIT_DIRTY_RING_FULL (rule 49).
//
// The emulator executes only the guest harness's 64-bit workload code (vcpu.load()). Any
// other state, such as a fresh vCPU at the real-mode reset vector, ends KVM_RUN with
// KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION, what KVM reports when it has to
// emulate code it cannot (e.g. instructions fetched from outside guest RAM).
//
// run() is synchronous; runAsync() runs the model in slices on the event loop (setImmediate)
// so kick() can land between slices. A synchronous run() of Workload.spin() cannot be kicked
// from the one JS thread, so after SYNC_SPIN_MS it returns ExitReason.Intr, standing in for
// the signal another thread would have sent.

import type { BackendVcpu, ExitInfo, Regs, Segment, Sregs, WorkloadSpec } from '../backend';
import { EXIT_IO_OUT, ExitReason, PAGE_SIZE, RUN_DIRTY_REGS, RUN_SYNC_REGS, RUN_VALID_REGS, SyncRegs } from '../constants';
import { REGS_SIZE, decodeRegs, encodeRegs } from '../kvm-structs';
import { Errno, KvmError, fail } from '../errors';
import { Access, ModelCpu, R, REG_NAMES, Stop, runModel, type GuestBus } from '../guest/model';
import { HARNESS_SIZE, MAX_MAP_BYTES, SPIN_CODE, SPIN_GPA, installHarness, longModeSregs, workloadRegs } from '../guest/x86';
import type { Memslot } from './memory';
import { EmulatedRing } from './ring';
import { EmulatedVcpuState, emulatedMsrIo } from './state';
import type { EmulatedVm } from './vm';

/** Loop iterations (writes or spins) per slice of runAsync() between looks at kick(). */
const ASYNC_SLICE = 1 << 14;
/** Loop iterations per model call in run() (only spin ever needs a second call). */
const SYNC_SLICE = 1 << 30;
/** How long a synchronous run() of spin spins before returning ExitReason.Intr. */
export const SYNC_SPIN_MS = 50;

/** struct kvm_run offsets (include/uapi/linux/kvm.h, x86-64). */
const RUN_IMMEDIATE_EXIT = 1;
const RUN_EXIT_REASON = 8;
const RUN_UNION = 32;
/** KVM_PIO_PAGE_OFFSET: the OUT data sits on the page after kvm_run. */
const PIO_DATA_OFFSET = PAGE_SIZE;
/** KVM_INTERNAL_ERROR_EMULATION */
const INTERNAL_ERROR_EMULATION = 1;

const GIB = 2 ** 30;
const TWO_32 = 0x1_0000_0000;
const PAGE_ADDR_MASK = 0x000f_ffff_ffff_f000n;

export class EmulatedVcpu implements BackendVcpu, GuestBus {
  readonly id: number;
  readonly ring: EmulatedRing | null;
  readonly #vm: EmulatedVm;
  #runBuffer: ArrayBuffer;
  #run: DataView;
  readonly #cpu = new ModelCpu();
  #sregs: Sregs = resetSregs();
  readonly #state = new EmulatedVcpuState();
  #kicked = false;
  #running = false;
  #closed = false;
  #runWatchNs = 200_000;
  /** Recompute #mapLimit (sregs, page tables or memslots changed). */
  #layoutStale = true;
  /** Guest-physical bytes the harness page tables identity-map; writes above take a #PF. */
  #mapLimit = 0;
  #longMode = false;
  /** gfn_to_memslot() cache of the last page written. */
  #slot: Memslot | null = null;
  readLo = 0;
  readHi = 0;

  constructor(vm: EmulatedVm, id: number, mmapSize: number, ringBytes: number) {
    this.#vm = vm;
    this.id = id;
    this.#runBuffer = new ArrayBuffer(mmapSize);
    this.#run = new DataView(this.#runBuffer);
    this.ring = ringBytes !== 0 ? new EmulatedRing(ringBytes, vm.profile.ringReservedEntries) : null;
    // kvm_vcpu_reset(): rip 0xfff0 in real mode, rflags bit 1, rdx = the CPU signature
    this.#cpu.set('rip', 0xfff0n);
    this.#cpu.set('rflags', 2n);
    this.#cpu.set('rdx', 0x600n);
    if (id !== 0) this.#sregs.apicBase = 0xfee00800n; // not the bootstrap processor
  }

  get runBuffer(): ArrayBuffer {
    return this.#runBuffer;
  }

  get ringBuffer(): ArrayBuffer | null {
    return this.ring?.buffer ?? null; // detached once the vCPU is closed (EmulatedRing.unmap)
  }

  /** The VM's memslots changed: drop the slot cache and re-read the page tables before the next run. */
  memslotsChanged(): void {
    this.#slot = null;
    this.#layoutStale = true;
  }

  run(): ExitInfo {
    if (this.#running) fail('EBUSY', 'KVM_RUN', 'runAsync() is in progress on this vCPU');
    const pre = this.#enter();
    if (pre !== null) return pre;
    for (;;) {
      const stop = runModel(this.#cpu, this, SYNC_SLICE);
      if (stop !== Stop.Budget) return this.#exit(stop);
      if (this.#spinning()) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, SYNC_SPIN_MS);
        return this.#intr();
      }
    }
  }

  /** The model runs in slices of this event loop: nothing to watch for from inside it. */
  spinForExit(): boolean {
    return false;
  }

  /** Kept and returned as the kernel-backed vCPU does; the model has no thread to watch with. */
  setRunWatch(ns: number): number {
    const previous = this.#runWatchNs;
    this.#runWatchNs = ns;
    return previous;
  }

  runAsync(): Promise<ExitInfo> {
    if (this.#running) return Promise.reject(new KvmError(Errno.EBUSY, 'KVM_RUN', 'runAsync() is already in progress'));
    this.#running = true;
    return new Promise<ExitInfo>((resolve, reject) => {
      let entered = false;
      const step = (): void => {
        try {
          let exit: ExitInfo | null;
          if (this.#closed) exit = { reason: ExitReason.Intr };
          else if (!entered) {
            entered = true;
            exit = this.#enter();
          } else if (this.#kicked) exit = this.#intr();
          else {
            const stop = runModel(this.#cpu, this, ASYNC_SLICE);
            exit = stop === Stop.Budget ? null : this.#exit(stop);
          }
          if (exit !== null) {
            this.#running = false;
            resolve(exit);
          } else if (this.#spinning()) setTimeout(step, 1); // a spinning guest need not hog the core
          else setImmediate(step);
        } catch (e) {
          this.#running = false;
          reject(e);
        }
      };
      setImmediate(step);
    });
  }

  kick(): void {
    this.#kicked = true;
  }

  /** KVM_RUN steps 1-3 (see the top of the file); null when the guest may run. */
  #enter(): ExitInfo | null {
    const cpu = this.#cpu;
    this.#syncRegsIn();
    this.#state.hasRun = true;
    cpu.completeUserspaceIo(this.#run.getUint32(RUN_UNION + 8, true), this.#run.getUint32(RUN_UNION + 12, true));
    if (this.#kicked || this.#run.getUint8(RUN_IMMEDIATE_EXIT) !== 0) return this.#intr();
    if (this.ring !== null && this.ring.checkRequest()) return this.#reason(ExitReason.DirtyRingFull);
    if (this.#layoutStale) this.#readLayout();
    if (!this.#longMode) return this.#exit(Stop.Unknown);
    return null;
  }

  #spinning(): boolean {
    const r = this.#cpu.regs;
    return r[R.rip + 1] === 0 && r[R.rip] >= SPIN_GPA && r[R.rip] < SPIN_GPA + SPIN_CODE.length;
  }

  #intr(): ExitInfo {
    this.#kicked = false;
    return this.#reason(ExitReason.Intr);
  }

  #reason(reason: ExitReason): ExitInfo {
    this.#run.setUint32(RUN_EXIT_REASON, reason, true);
    // store_regs() on the way out of every KVM_RUN that got past its checks
    if (this.#run.getUint8(RUN_VALID_REGS) & SyncRegs.X86Regs) {
      encodeRegs(this.getRegs(), new Uint8Array(this.#runBuffer, RUN_SYNC_REGS, REGS_SIZE));
    }
    return { reason };
  }

  /**
   * KVM_RUN's kvm_valid_regs / kvm_dirty_regs checks (EINVAL for a bit the kernel does not
   * offer: here KVM_SYNC_X86_REGS only), then sync_regs(): registers userspace marked dirty
   * in kvm_run.s.regs are loaded, and the mark cleared.
   */
  #syncRegsIn(): void {
    const run = this.#run;
    const offered = this.#vm.profile.arch === 'x86_64' ? SyncRegs.X86Regs : 0;
    const valid = run.getUint32(RUN_VALID_REGS, true);
    const dirty = run.getUint32(RUN_DIRTY_REGS, true);
    const high = run.getUint32(RUN_VALID_REGS + 4, true) | run.getUint32(RUN_DIRTY_REGS + 4, true);
    if (high !== 0 || (valid | dirty) & ~offered) fail('EINVAL', 'KVM_RUN', `kvm_valid_regs 0x${valid.toString(16)} / kvm_dirty_regs 0x${dirty.toString(16)} name registers KVM_CAP_SYNC_REGS does not offer`);
    if (dirty & SyncRegs.X86Regs) {
      this.setRegs(decodeRegs(new Uint8Array(this.#runBuffer, RUN_SYNC_REGS, REGS_SIZE)));
      run.setUint32(RUN_DIRTY_REGS, 0, true);
    }
  }

  /** Fills kvm_run for the model's stop and returns the exit. */
  #exit(stop: Stop): ExitInfo {
    const run = this.#run;
    const e = this.#cpu.exit;
    switch (stop) {
      case Stop.Io: {
        run.setUint8(RUN_UNION, EXIT_IO_OUT);
        run.setUint8(RUN_UNION + 1, e.size);
        run.setUint16(RUN_UNION + 2, e.port, true);
        run.setUint32(RUN_UNION + 4, 1, true);
        run.setUint32(RUN_UNION + 8, PIO_DATA_OFFSET, true); // data_offset (u64)
        run.setUint32(RUN_UNION + 12, 0, true);
        // the data page exists on x86 only; elsewhere the OUT is the x86 harness's stand-in exit
        if (this.#vm.profile.arch === 'x86_64') run.setUint32(PIO_DATA_OFFSET, e.value, true);
        this.#reason(ExitReason.Io);
        return { reason: ExitReason.Io, io: { port: e.port, direction: 'out', size: e.size, count: 1, value: e.value } };
      }
      case Stop.Mmio: {
        run.setUint32(RUN_UNION, e.gpa % TWO_32, true);
        run.setUint32(RUN_UNION + 4, Math.floor(e.gpa / TWO_32), true);
        if (e.isWrite) {
          run.setUint32(RUN_UNION + 8, e.lo, true); // a load leaves mmio.data for userspace to fill
          run.setUint32(RUN_UNION + 12, e.hi, true);
        }
        run.setUint32(RUN_UNION + 16, e.len, true);
        run.setUint8(RUN_UNION + 20, e.isWrite ? 1 : 0);
        this.#reason(ExitReason.Mmio);
        const data: number[] = []; // the bytes written; a load has none yet
        if (e.isWrite) for (let i = 0; i < e.len; i++) data.push(run.getUint8(RUN_UNION + 8 + i));
        return { reason: ExitReason.Mmio, mmio: { physAddr: e.gpa, len: e.len, isWrite: e.isWrite, data } };
      }
      case Stop.RingFull:
        return this.#reason(ExitReason.DirtyRingFull);
      case Stop.Shutdown:
        return this.#reason(ExitReason.Shutdown);
      case Stop.Efault:
        return fail('EFAULT', 'KVM_RUN', 'the memory of a memslot the guest touched is closed or shorter than the slot');
      default:
        run.setUint32(RUN_UNION, INTERNAL_ERROR_EMULATION, true);
        run.setUint32(RUN_UNION + 4, 0, true);
        this.#reason(ExitReason.InternalError);
        return { reason: ExitReason.InternalError, detail: BigInt(INTERNAL_ERROR_EMULATION) };
    }
  }

  // ---- guest memory as this vCPU sees it (GuestBus) ----

  /** The memslot of `gfn`, through the one-entry cache. */
  #slotOf(gfn: number): Memslot | null {
    const c = this.#slot;
    if (c !== null && gfn >= c.baseGfn && gfn - c.baseGfn < c.npages) return c;
    const s = this.#vm.findSlot(gfn);
    if (s !== null) this.#slot = s;
    return s;
  }

  write64(gpa: number, lo: number, hi: number): Access {
    if (gpa >= this.#mapLimit) return Access.Fault;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const s = this.#slotOf(gfn);
    if (s === null || s.readonly) return Access.Mmio; // KVM_MEM_READONLY: stores exit as MMIO
    const rel = gfn - s.baseGfn;
    const byte = s.memoryOffset + rel * PAGE_SIZE + (gpa - gfn * PAGE_SIZE);
    const u32 = s.memory.u32;
    if (byte + 8 > u32.length * 4) return Access.Efault;
    if ((byte & 3) === 0 && gpa - gfn * PAGE_SIZE <= PAGE_SIZE - 8) {
      u32[byte / 4] = lo; // not >>> 2: guest memory may exceed 4 GiB
      u32[byte / 4 + 1] = hi;
    } else {
      return this.#writeSplit(gpa, lo, hi);
    }
    const logged = s.logged;
    if (logged !== null) {
      const w = rel >>> 5;
      const bit = 1 << (rel & 31);
      // Rule 43: the first write after (re)protection faults and is logged; later ones are not.
      if ((logged[w] & bit) === 0) {
        logged[w] |= bit;
        if (this.#vm.markPageDirty(this, s, rel)) return Access.RingFull;
      }
    }
    return Access.Ok;
  }

  /** An 8-byte store that is not 4-byte aligned or crosses a page: byte by byte, each page logged once. */
  #writeSplit(gpa: number, lo: number, hi: number): Access {
    let full = false;
    for (let i = 0; i < 8; i++) {
      const a = gpa + i;
      const gfn = Math.floor(a / PAGE_SIZE);
      if (a >= this.#mapLimit) return Access.Fault;
      const s = this.#slotOf(gfn);
      if (s === null || s.readonly) return Access.Mmio;
      const rel = gfn - s.baseGfn;
      const byte = s.memoryOffset + rel * PAGE_SIZE + (a - gfn * PAGE_SIZE);
      const u8 = s.memory.u8;
      if (byte >= u8.length) return Access.Efault;
      u8[byte] = (i < 4 ? lo >>> (i * 8) : hi >>> ((i - 4) * 8)) & 0xff;
      const logged = s.logged;
      if (logged !== null && (logged[rel >>> 5] & (1 << (rel & 31))) === 0) {
        logged[rel >>> 5] |= 1 << (rel & 31);
        if (this.#vm.markPageDirty(this, s, rel)) full = true;
      }
    }
    return full ? Access.RingFull : Access.Ok;
  }

  read64(gpa: number): Access {
    if (gpa >= this.#mapLimit) return Access.Fault;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 8; i++) {
      const a = gpa + i;
      const gfn = Math.floor(a / PAGE_SIZE);
      const s = this.#slotOf(gfn);
      if (s === null) return Access.Mmio;
      const byte = s.memoryOffset + (gfn - s.baseGfn) * PAGE_SIZE + (a - gfn * PAGE_SIZE);
      const u8 = s.memory.u8;
      if (byte >= u8.length) return Access.Efault;
      if (i < 4) lo |= u8[byte] << (i * 8);
      else hi |= u8[byte] << ((i - 4) * 8);
    }
    this.readLo = lo >>> 0;
    this.readHi = hi >>> 0;
    return Access.Ok;
  }

  codeMatches(gpa: number, code: Uint8Array): boolean {
    if (gpa + code.length > this.#mapLimit) return false;
    const s = this.#hostSlot(gpa, code.length);
    if (s === null) return false;
    const u8 = s.memory.u8;
    const at = s.memoryOffset + (gpa - s.baseGfn * PAGE_SIZE);
    for (let i = 0; i < code.length; i++) if (u8[at + i] !== code[i]) return false;
    return true;
  }

  /** The memslot holding all of guest-physical [gpa, gpa + length) in host memory, or null. */
  #hostSlot(gpa: number, length: number): Memslot | null {
    const s = this.#vm.findSlot(Math.floor(gpa / PAGE_SIZE));
    if (s === null || gpa + length > (s.baseGfn + s.npages) * PAGE_SIZE) return null;
    if (s.memoryOffset + (gpa - s.baseGfn * PAGE_SIZE) + length > s.memory.u8.length) return null;
    return s;
  }

  /** A host view of guest-physical [gpa, gpa + length) inside one memslot, or null. */
  #hostView(gpa: number, length: number): Uint8Array | null {
    const s = this.#hostSlot(gpa, length);
    if (s === null) return null;
    const byte = s.memoryOffset + (gpa - s.baseGfn * PAGE_SIZE);
    return s.memory.u8.subarray(byte, byte + length);
  }

  /** Reads the paging mode from SREGS and how far the harness page tables map (PML4[0] -> PDPT). */
  #readLayout(): void {
    this.#layoutStale = false;
    const s = this.#sregs;
    this.#longMode = (s.efer & 0x400n) !== 0n && (s.cr0 & 0x8000_0001n) === 0x8000_0001n && s.cs.l === 1;
    this.#mapLimit = 0;
    if (!this.#longMode) return;
    const pml4e = this.#readHost64(Number(s.cr3 & PAGE_ADDR_MASK));
    if (pml4e === null || (pml4e & 1n) === 0n) return;
    const pdpt = Number(pml4e & PAGE_ADDR_MASK);
    let n = 0;
    while (n < 512) {
      const e = this.#readHost64(pdpt + n * 8);
      if (e === null || (e & 1n) === 0n) break;
      n++;
    }
    this.#mapLimit = n * GIB;
  }

  #readHost64(gpa: number): bigint | null {
    const v = this.#hostView(gpa, 8);
    return v === null ? null : new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true);
  }

  // ---- registers ----

  getRegs(): Regs {
    const regs = {} as Regs;
    for (const name of REG_NAMES) regs[name] = this.#cpu.get(name);
    return regs;
  }

  setRegs(regs: Regs): void {
    for (const name of REG_NAMES) this.#cpu.set(name, regs[name]);
  }

  getSregs(): Sregs {
    return copySregs(this.#sregs);
  }

  setSregs(sregs: Sregs): void {
    this.#sregs = copySregs(sregs);
    this.#layoutStale = true;
  }

  // ---- the rest of the x86 state (state.ts says what is modelled) ----

  /** KVM_CAP_XSAVE2 is 0: the 4096 bytes of struct kvm_xsave (no request reaches it, see getXsave). */
  readonly xsaveSize = 4096;

  getFpu(fpu: Uint8Array): void {
    this.#state.getFpu(fpu);
  }

  setFpu(fpu: Uint8Array): void {
    this.#state.setFpu(fpu);
  }

  // KVM_CAP_XSAVE, _XCRS and _VCPU_EVENTS are 0 here: their requests get x86
  // kvm_arch_vcpu_ioctl()'s default for a request it does not have, EINVAL (as the native host
  // answers an unknown vCPU ioctl).
  getXsave(): void {
    fail('EINVAL', 'KVM_GET_XSAVE', 'the emulated kernel has no KVM_CAP_XSAVE');
  }

  setXsave(): void {
    fail('EINVAL', 'KVM_SET_XSAVE', 'the emulated kernel has no KVM_CAP_XSAVE');
  }

  getXcrs(): void {
    fail('EINVAL', 'KVM_GET_XCRS', 'the emulated kernel has no KVM_CAP_XCRS');
  }

  setXcrs(): void {
    fail('EINVAL', 'KVM_SET_XCRS', 'the emulated kernel has no KVM_CAP_XCRS');
  }

  getVcpuEvents(): void {
    fail('EINVAL', 'KVM_GET_VCPU_EVENTS', 'the emulated kernel has no KVM_CAP_VCPU_EVENTS');
  }

  setVcpuEvents(): void {
    fail('EINVAL', 'KVM_SET_VCPU_EVENTS', 'the emulated kernel has no KVM_CAP_VCPU_EVENTS');
  }

  getMsrs(msrs: Uint8Array): number {
    return emulatedMsrIo(msrs, 'KVM_GET_MSRS');
  }

  setMsrs(msrs: Uint8Array): number {
    return emulatedMsrIo(msrs, 'KVM_SET_MSRS');
  }

  // No in-kernel irqchip can exist (KVM_CREATE_IRQCHIP is ENOTTY), so no local APIC either:
  // kvm_arch_vcpu_ioctl() answers EINVAL when !lapic_in_kernel(vcpu), as the native host does
  // for a VM without KVM_CREATE_IRQCHIP.
  getLapic(): void {
    fail('EINVAL', 'KVM_GET_LAPIC', 'no in-kernel local APIC (the emulator has no irqchip)');
  }

  setLapic(): void {
    fail('EINVAL', 'KVM_SET_LAPIC', 'no in-kernel local APIC (the emulator has no irqchip)');
  }

  getDebugregs(regs: Uint8Array): void {
    this.#state.getDebugregs(regs);
  }

  setDebugregs(regs: Uint8Array): void {
    this.#state.setDebugregs(regs);
  }

  getMpState(): number {
    return this.#state.getMpState();
  }

  setMpState(state: number): void {
    this.#state.setMpState(state);
  }

  getCpuid2(cpuid: Uint8Array): number {
    return this.#state.getCpuid2(cpuid);
  }

  setCpuid2(cpuid: Uint8Array): void {
    this.#state.setCpuid2(cpuid);
  }

  /**
   * Installs the guest harness as the native backend does (page tables identity-mapping every
   * memslot, all workload code; host writes, never logged) and starts `spec` at epoch 1.
   */
  load(spec: WorkloadSpec): void {
    const regs = workloadRegs(spec); // RangeError for a bad spec, before anything changes
    const vm = this.#vm;
    const harness = vm.findSlot(0);
    const view = harness === null ? null : this.#hostView(0, HARNESS_SIZE);
    if (view === null) {
      throw new RangeError('vcpu.load() needs one memory slot covering guest-physical [0, 2 MiB) for the guest harness');
    }
    let end = HARNESS_SIZE;
    for (const s of vm.memslots) end = Math.max(end, (s.baseGfn + s.npages) * PAGE_SIZE);
    installHarness(view, Math.min(end, MAX_MAP_BYTES));
    this.setSregs(longModeSregs(this.#sregs));
    this.setRegs(regs);
    this.#cpu.pendingMmioRead = -1;
    this.#layoutStale = true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#kicked = true; // a runAsync() in progress returns Intr at its next slice
    structuredClone(this.#runBuffer, { transfer: [this.#runBuffer] });
    this.#run = new DataView(new ArrayBuffer(0));
    // The kernel's vCPU (and its ring) lives on until the VM goes; only the mapping goes.
    this.ring?.unmap();
  }
}

/** The SREGS of a vCPU after KVM_CREATE_VCPU (measured on this host, kernel-semantics.md §18). */
function resetSregs(): Sregs {
  const seg = (selector: number, base: bigint, type: number, s: number): Segment => ({
    base, limit: 0xffff, selector, type, present: 1, dpl: 0, db: 0, s, l: 0, g: 0, avl: 0, unusable: 0,
  });
  const data = (): Segment => seg(0, 0n, 3, 1);
  return {
    cs: seg(0xf000, 0xffff0000n, 11, 1),
    ds: data(), es: data(), fs: data(), gs: data(), ss: data(),
    tr: seg(0, 0n, 11, 0),
    ldt: seg(0, 0n, 2, 0),
    gdt: { base: 0n, limit: 0xffff },
    idt: { base: 0n, limit: 0xffff },
    cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n,
    efer: 0n,
    apicBase: 0xfee00900n,
    interruptBitmap: [0n, 0n, 0n, 0n],
  };
}

function copySregs(s: Sregs): Sregs {
  return {
    cs: { ...s.cs }, ds: { ...s.ds }, es: { ...s.es }, fs: { ...s.fs }, gs: { ...s.gs }, ss: { ...s.ss },
    tr: { ...s.tr }, ldt: { ...s.ldt },
    gdt: { ...s.gdt }, idt: { ...s.idt },
    cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4, cr8: s.cr8,
    efer: s.efer, apicBase: s.apicBase,
    interruptBitmap: [...s.interruptBitmap],
  };
}
