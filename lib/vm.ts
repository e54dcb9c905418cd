import './dispose';
import type { BackendVm, EmulatorHooks } from './backend';
import { DirtyBitmap } from './bitmap';
import {
  Cap,
  PAGE_SIZE,
  S390_CMMA_PEEK,
  S390_CMMA_SIZE_MAX,
  S390_VM_MEM_CTRL,
  S390_VM_MEM_ENABLE_CMMA,
  S390_VM_MIGRATION,
  S390_VM_MIGRATION_START,
  S390_VM_MIGRATION_STATUS,
  S390_VM_MIGRATION_STOP,
} from './constants';
import { fail } from './errors';
import type { ImageSlot } from './guest/image';
import {
  CLOCK_DATA_SIZE,
  decodeClockData,
  decodeIoapic,
  decodePic,
  decodePitState2,
  encodeClockData,
  encodeIoapic,
  encodePic,
  encodePitState2,
  irqchipFor,
  IrqchipId,
  PIT_STATE2_SIZE,
  type ClockData,
  type IoapicState,
  type PicState,
  type PitState2,
} from './kvm-structs';
import { DirtyPages } from './dirty-pages';
import { GuestMemory } from './memory';
import { checkBool, checkInstance, checkObject, checkU64, checkUint } from './validate';
import { Vcpu, type VcpuHost } from './vcpu';

const U32_MAX = 0xffff_ffff;

export interface MemoryRegionOptions {
  /** (address space << 16) | slot id */
  slot: number;
  guestPhysAddr?: number;
  /** the slot's memory; null deletes the slot */
  memory: GuestMemory | null;
  /** MemFlag.LogDirtyPages | MemFlag.ReadOnly */
  flags?: number;
  /** bytes of `memory` the slot covers (default: all of it from memoryOffset) */
  memorySize?: number;
  /** where in `memory` the slot starts (default 0) */
  memoryOffset?: number;
}

export interface CmmaBits {
  startGfn: number;
  count: number;
  remaining: number;
  values: Uint8Array;
}

interface SlotInfo {
  pages: number;
  guestPhysAddr: number;
  memory: GuestMemory | null;
  memoryOffset: number;
  memorySize: number;
}

/** The VM's in-kernel devices and clock, each the kernel struct of the same name. Absent pieces: vm.stateSkipped(). */
export interface VmState {
  /** KVM_GET_IRQCHIP of the three chips */
  irqchip?: { picMaster: PicState; picSlave: PicState; ioapic: IoapicState };
  /** KVM_GET_PIT2 */
  pit2?: PitState2;
  /** KVM_GET_CLOCK */
  clock?: ClockData;
}

export const VM_STATE_PIECES = ['irqchip', 'pit2', 'clock'] as const;
export type VmStatePiece = (typeof VM_STATE_PIECES)[number];

/** What a VM asks of its KVM handle. @internal */
export interface VmHost {
  msrIndexList(): Uint32Array;
}

/** A virtual machine (the VM fd). Made by kvm.createVm(); owns its vCPUs and guest memory. */
export class Vm {
  /** @internal */
  readonly _handle: BackendVm;
  readonly #vcpus = new Set<Vcpu>();
  /** harvestDirtyRings(): the rings' fetch indexes, handed to the backend */
  #fetch = new Float64Array(0);
  readonly #memories = new Set<GuestMemory>();
  readonly #slots = new Map<number, SlotInfo>();
  readonly #onClose: (vm: Vm) => void;
  #closed = false;
  #emulator: EmulatorHooks | undefined;
  readonly #vcpuHost: VcpuHost;
  /** KVM_CREATE_IRQCHIP / KVM_CREATE_PIT2 succeeded */
  #irqchip = false;
  #pit = false;
  /** KVM_CHECK_EXTENSION(KVM_CAP_ADJUST_CLOCK), asked once */
  #adjustClock: number | undefined;

  /** @internal made by kvm.createVm() */
  constructor(handle: BackendVm, onClose: (vm: Vm) => void, host: VmHost) {
    this._handle = handle;
    this.#onClose = onClose;
    if (handle.emulator) this.#emulator = this.#wrapHooks(handle.emulator);
    this.#vcpuHost = {
      checkExtension: (cap) => handle.checkExtension(cap),
      hasIrqchip: () => this.#irqchip,
      imageSlots: () => this.#imageSlots(),
      msrIndexList: () => host.msrIndexList(),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** KVM_CHECK_EXTENSION on the VM fd: 0 if absent, else the capability's value. */
  checkExtension(cap: Cap | number): number {
    this.#live('KVM_CHECK_EXTENSION');
    return this._handle.checkExtension(checkUint('cap', cap, U32_MAX));
  }

  /**
   * KVM_ENABLE_CAP, raw: `args` (up to 4, numbers or bigints) are passed as u64. A dirty-ring
   * cap that succeeds makes later vCPUs map a ring of (u32)args[0] bytes, as the kernel does.
   */
  enableCap(cap: Cap | number, args: ReadonlyArray<number | bigint> = [], flags = 0): number {
    this.#live('KVM_ENABLE_CAP');
    checkUint('cap', cap, U32_MAX);
    if (!Array.isArray(args)) throw new TypeError('args must be an array of up to 4 numbers or bigints');
    if (args.length > 4) throw new RangeError(`struct kvm_enable_cap has 4 args, got ${args.length}`);
    const a: [bigint, bigint, bigint, bigint] = [0n, 0n, 0n, 0n];
    args.forEach((v, i) => (a[i] = checkU64(`args[${i}]`, v)));
    return this._handle.enableCap(cap, a, checkUint('flags', flags, U32_MAX));
  }

  /**
   * Enables the dirty ring with `bytes` per vCPU (a power of two, 4 KiB .. 1 MiB here),
   * through KVM_CAP_DIRTY_LOG_RING_ACQ_REL where the kernel offers it (as QEMU and the
   * selftests do), else KVM_CAP_DIRTY_LOG_RING. Must come before the first vCPU.
   * Returns the capability used.
   */
  enableDirtyRing(bytes: number): Cap {
    this.#live('KVM_ENABLE_CAP');
    checkUint('bytes', bytes, U32_MAX);
    const cap = this._handle.checkExtension(Cap.DirtyLogRingAcqRel) > 0 ? Cap.DirtyLogRingAcqRel : Cap.DirtyLogRing;
    this.enableCap(cap, [bytes]);
    return cap;
  }

  /** KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP (arm64): after the ring, before any memory slot. */
  enableDirtyRingWithBitmap(): void {
    this.enableCap(Cap.DirtyLogRingWithBitmap);
  }

  /**
   * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: getDirtyLog() stops clearing; clearDirtyLog() re-arms.
   * flags: 1 = enable, 3 = enable with KVM_DIRTY_LOG_INITIALLY_SET, 0 = disable.
   */
  enableManualDirtyLogProtect(flags = 1): void {
    this.enableCap(Cap.ManualDirtyLogProtect2, [checkUint('flags', flags, U32_MAX)]);
  }

  /** Guest RAM of `size` bytes (a multiple of 4096): anonymous shared memory (a memfd), zero-copy in `memory.buffer`. */
  createMemory(size: number): GuestMemory {
    this.#live(undefined);
    checkUint('size', size);
    if (size === 0 || size % PAGE_SIZE !== 0) throw new RangeError(`size must be a positive multiple of ${PAGE_SIZE}, got ${size}`);
    const mem = new GuestMemory(this._handle.createMemory(size), this);
    this.#memories.add(mem);
    return mem;
  }

  /** KVM_SET_USER_MEMORY_REGION: creates, changes (flags) or, with memory null, deletes a slot. */
  setUserMemoryRegion(region: MemoryRegionOptions): void {
    this.#live('KVM_SET_USER_MEMORY_REGION');
    const r = checkObject('region', region);
    const slot = checkUint('slot', r.slot, U32_MAX);
    const flags = checkUint('flags', r.flags ?? 0, U32_MAX);
    const guestPhysAddr = checkUint('guestPhysAddr', r.guestPhysAddr ?? 0);
    let memorySize = 0;
    let memoryOffset = 0;
    let memory: GuestMemory | null = null;
    if (r.memory !== null && r.memory !== undefined) {
      memory = checkInstance('memory', r.memory, GuestMemory, 'a GuestMemory from vm.createMemory(), or null to delete the slot');
      if (memory._owner !== this) throw new TypeError('memory belongs to another VM');
      if (memory.closed) fail('EBADF', 'KVM_SET_USER_MEMORY_REGION', 'the guest memory is closed');
      memoryOffset = checkUint('memoryOffset', r.memoryOffset ?? 0, memory.size);
      memorySize = checkUint('memorySize', r.memorySize ?? memory.size - memoryOffset, memory.size - memoryOffset);
    } else if (r.memory === undefined) {
      throw new TypeError('region.memory must be a GuestMemory, or null to delete the slot');
    }
    this._handle.setUserMemoryRegion({ slot, flags, guestPhysAddr, memorySize, memoryOffset, memory: memory?._handle ?? null });
    if (memorySize === 0) this.#slots.delete(slot);
    else this.#slots.set(slot, { pages: Math.floor(memorySize / PAGE_SIZE), guestPhysAddr, memory, memoryOffset, memorySize });
  }

  /** KVM_CREATE_VCPU (and, with the ring on, the vCPU's ring mapping). */
  createVcpu(id = 0): Vcpu {
    this.#live('KVM_CREATE_VCPU');
    checkUint('id', id, U32_MAX);
    const vcpu = new Vcpu(this._handle.createVcpu(id), (v) => this.#vcpus.delete(v), this.#vcpuHost);
    this.#vcpus.add(vcpu);
    return vcpu;
  }

  /** The vCPUs made by this VM and not closed. */
  get vcpus(): readonly Vcpu[] {
    return [...this.#vcpus];
  }

  /**
   * KVM_GET_DIRTY_LOG: the slot's dirty pages since the last call (cleared and re-armed by
   * the call, unless manual protect is on). Overwrites the first ALIGN(pages, 64) bits of
   * `into` (RangeError if it is smaller than the slot) and returns it.
   */
  getDirtyLog(slot: number, into?: DirtyBitmap): DirtyBitmap {
    this.#live('KVM_GET_DIRTY_LOG');
    checkUint('slot', slot, U32_MAX);
    const pages = this.#slots.get(slot)?.pages ?? 0;
    let bitmap: DirtyBitmap;
    if (into === undefined) bitmap = new DirtyBitmap(pages);
    else {
      bitmap = DirtyBitmap.check('into', into);
      if (bitmap.pages < pages) throw new RangeError(`into has ${bitmap.pages} pages; slot ${slot} has ${pages}`);
    }
    // A slot this VM never registered still reaches the kernel, for its errno (ENOENT, EINVAL, ENXIO).
    this._handle.getDirtyLog(slot, new Uint8Array(bitmap.buffer));
    return bitmap;
  }

  /**
   * KVM_CLEAR_DIRTY_LOG: clears (and re-arms) the pages firstPage + i whose bit i is set in
   * `mask`, i < numPages. firstPage must be a multiple of 64; numPages too unless the range
   * ends at the slot's end.
   */
  clearDirtyLog(slot: number, firstPage: number, numPages: number, mask: DirtyBitmap): void {
    this.#live('KVM_CLEAR_DIRTY_LOG');
    checkUint('slot', slot, U32_MAX);
    checkUint('firstPage', firstPage);
    checkUint('numPages', numPages, U32_MAX);
    DirtyBitmap.check('mask', mask);
    if (mask.pages < numPages) throw new RangeError(`mask has ${mask.pages} bits; numPages is ${numPages}`);
    this._handle.clearDirtyLog(slot, firstPage, numPages, new Uint8Array(mask.buffer));
  }

  /** KVM_RESET_DIRTY_RINGS: re-arms every harvested (RESET) entry of every vCPU's ring; returns their number. */
  resetDirtyRings(): number {
    this.#live('KVM_RESET_DIRTY_RINGS');
    return this._handle.resetDirtyRings();
  }

  /**
   * Collects the dirty rings of `vcpus` (this VM's, each with a ring) in one backend call: as
   * DirtyRing.harvestAll(vcpus' rings, out, counts), with the native backend's acquire/release
   * loop over all the rings in C++ (a checkpoint's collection is then one call per epoch,
   * whatever the number of vCPUs). Each ring's fetch index advances by what it gave;
   * counts[i] = entries taken from vcpus[i]'s ring. Returns the total. Call resetDirtyRings()
   * afterwards, as after harvest().
   */
  harvestDirtyRings(vcpus: readonly Vcpu[], out: DirtyPages, counts: Uint32Array): number {
    this.#live(undefined);
    if (!Array.isArray(vcpus)) throw new TypeError('vcpus must be an array of this VM\'s vCPUs');
    checkInstance('out', out, DirtyPages, 'a DirtyPages');
    checkInstance('counts', counts, Uint32Array, 'a Uint32Array');
    if (counts.length < vcpus.length) throw new RangeError(`counts has ${counts.length} elements for ${vcpus.length} vCPUs`);
    if (this.#fetch.length < vcpus.length) this.#fetch = new Float64Array(vcpus.length);
    const rings = vcpus.map((v, i) => {
      if (v instanceof Vcpu && v.closed) fail('EBADF', undefined, `vcpus[${i}] is closed`);
      if (!this.#vcpus.has(v)) throw new TypeError(`vcpus[${i}] is not a vCPU of this VM`);
      const ring = v.dirtyRing;
      if (!ring) throw new TypeError(`vcpus[${i}] has no dirty ring (enable it before creating the vCPUs)`);
      this.#fetch[i] = ring.fetchIndex;
      return ring;
    });
    const total = this._handle.harvestRings(vcpus.map((v) => v._handle), this.#fetch, out.slots, out.offsets, out.length, counts);
    rings.forEach((r, i) => r._advance(counts[i]));
    out.length += total;
    return total;
  }

  /** s390: KVM_S390_VM_MEM_ENABLE_CMMA (before any vCPU). */
  enableCmma(): void {
    this.#live('KVM_SET_DEVICE_ATTR');
    this._handle.setDeviceAttr(S390_VM_MEM_CTRL, S390_VM_MEM_ENABLE_CMMA);
  }

  /** s390: KVM_S390_VM_MIGRATION_START / _STOP. */
  setMigrationMode(on: boolean): void {
    this.#live('KVM_SET_DEVICE_ATTR');
    checkBool('on', on);
    this._handle.setDeviceAttr(S390_VM_MIGRATION, on ? S390_VM_MIGRATION_START : S390_VM_MIGRATION_STOP);
  }

  /** s390: KVM_S390_VM_MIGRATION_STATUS. */
  getMigrationMode(): boolean {
    this.#live('KVM_GET_DEVICE_ATTR');
    return this._handle.getDeviceAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STATUS) !== 0n;
  }

  /** KVM_SET_DEVICE_ATTR on the VM fd (raw). */
  setDeviceAttr(group: number, attr: number, value?: number | bigint): void {
    this.#live('KVM_SET_DEVICE_ATTR');
    this._handle.setDeviceAttr(checkUint('group', group, U32_MAX), checkUint('attr', attr), value === undefined ? undefined : checkU64('value', value));
  }

  /** KVM_GET_DEVICE_ATTR on the VM fd (raw), reading a u64. */
  getDeviceAttr(group: number, attr: number): bigint {
    this.#live('KVM_GET_DEVICE_ATTR');
    return this._handle.getDeviceAttr(checkUint('group', group, U32_MAX), checkUint('attr', attr));
  }

  /** KVM_HAS_DEVICE_ATTR on the VM fd (raw): true if the kernel knows the attribute. */
  hasDeviceAttr(group: number, attr: number): boolean {
    this.#live('KVM_HAS_DEVICE_ATTR');
    return this._handle.hasDeviceAttr(checkUint('group', group, U32_MAX), checkUint('attr', attr));
  }

  /**
   * KVM_S390_GET_CMMA_BITS. Without `peek`, needs migration mode and returns the next dirty
   * values (clean pages skipped, the kernel's 16-clean-values rule); with `peek`, reads
   * `count` values from startGfn without touching dirty state. `values`, when given, is
   * written as the kernel writes it and returned; else a new array of the returned count.
   */
  getCmmaBits(options: { startGfn: number; count: number; peek?: boolean; flags?: number; values?: Uint8Array }): CmmaBits {
    this.#live('KVM_S390_GET_CMMA_BITS');
    const o = checkObject('options', options);
    const startGfn = checkUint('startGfn', o.startGfn);
    const count = checkUint('count', o.count, U32_MAX);
    let flags = checkUint('flags', o.flags ?? 0, U32_MAX);
    if (o.peek !== undefined && checkBool('peek', o.peek)) flags |= S390_CMMA_PEEK;
    let values: Uint8Array;
    if (o.values !== undefined) {
      values = checkInstance('values', o.values, Uint8Array, 'a Uint8Array');
      if (values.length < count) throw new RangeError(`values has ${values.length} bytes; count is ${count}`);
    } else values = new Uint8Array(Math.min(count, S390_CMMA_SIZE_MAX));
    const r = this._handle.getCmmaBits({ startGfn, count, flags }, values);
    const out = o.values !== undefined || values.length === r.count ? values : values.slice(0, r.count);
    return { startGfn: r.startGfn, count: r.count, remaining: r.remaining, values: out };
  }

  /**
   * KVM_S390_SET_CMMA_BITS: values[i] goes to page startGfn + i, bits chosen by `mask` in
   * PGSTE positions (0x43000000 = usage state + NODAT; -1 or 0xffff_ffff_ffff_ffffn = all).
   */
  setCmmaBits(options: { startGfn: number; values: Uint8Array; mask: number | bigint; flags?: number }): void {
    this.#live('KVM_S390_SET_CMMA_BITS');
    const o = checkObject('options', options);
    const startGfn = checkUint('startGfn', o.startGfn);
    const values = checkInstance('values', o.values, Uint8Array, 'a Uint8Array');
    const mask = checkU64('mask', o.mask);
    const flags = checkUint('flags', o.flags ?? 0, U32_MAX);
    this._handle.setCmmaBits({ startGfn, count: values.length, flags, mask }, values);
  }

  // ---- x86 in-kernel devices and the VM clock -------------------------------------------------

  /**
   * KVM_CREATE_IRQCHIP: the in-kernel PIC pair, IOAPIC and a local APIC for every vCPU created
   * after it (the kernel refuses it once a vCPU exists: EINVAL). PIC and IOAPIC ports and the
   * LAPIC page are then handled in the kernel, without exits.
   */
  createIrqchip(): void {
    this.#live('KVM_CREATE_IRQCHIP');
    this._handle.createIrqchip();
    this.#irqchip = true;
  }

  /** KVM_CREATE_PIT2: the in-kernel i8254 on IRQ 0 (needs the irqchip first: ENOENT). flags: KVM_PIT_SPEAKER_DUMMY (1). */
  createPit2(flags = 0): void {
    this.#live('KVM_CREATE_PIT2');
    this._handle.createPit2(checkUint('flags', flags, U32_MAX));
    this.#pit = true;
  }

  /** KVM_SET_TSS_ADDR: three guest pages, below 4 GiB, that Intel VMX needs for real-mode guests. */
  setTssAddr(addr: number): void {
    this.#live('KVM_SET_TSS_ADDR');
    this._handle.setTssAddr(checkUint('addr', addr));
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: the guest page VMX uses for an identity page table (before any vCPU). */
  setIdentityMapAddr(addr: number): void {
    this.#live('KVM_SET_IDENTITY_MAP_ADDR');
    this._handle.setIdentityMapAddr(checkUint('addr', addr));
  }

  /** KVM_IRQ_LINE: sets input line `irq` (a GSI) of the in-kernel PIC/IOAPIC to `level` (0 or 1). */
  irqLine(irq: number, level: number): void {
    this.#live('KVM_IRQ_LINE');
    this._handle.irqLine(checkUint('irq', irq, U32_MAX), checkUint('level', level, U32_MAX));
  }

  /** KVM_GET_IRQCHIP: one chip of the in-kernel irqchip (IrqchipId.PicMaster, .PicSlave, .Ioapic). */
  getIrqchip(chip: IrqchipId.PicMaster | IrqchipId.PicSlave): PicState;
  getIrqchip(chip: IrqchipId.Ioapic): IoapicState;
  getIrqchip(chip: IrqchipId): PicState | IoapicState;
  getIrqchip(chip: IrqchipId): PicState | IoapicState {
    this.#live('KVM_GET_IRQCHIP');
    const id = checkUint('chip', chip, U32_MAX);
    const b = irqchipFor(id);
    this._handle.getIrqchip(b); // an unknown chip id reaches the kernel, for its EINVAL
    return id === IrqchipId.Ioapic ? decodeIoapic(b) : decodePic(b);
  }

  /** KVM_SET_IRQCHIP */
  setIrqchip(chip: IrqchipId.PicMaster | IrqchipId.PicSlave, state: PicState): void;
  setIrqchip(chip: IrqchipId.Ioapic, state: IoapicState): void;
  setIrqchip(chip: IrqchipId, state: PicState | IoapicState): void;
  setIrqchip(chip: IrqchipId, state: PicState | IoapicState): void {
    this.#live('KVM_SET_IRQCHIP');
    const id = checkUint('chip', chip, 2);
    this._handle.setIrqchip(id === IrqchipId.Ioapic ? encodeIoapic(state as IoapicState) : encodePic(id, state as PicState));
  }

  /** KVM_GET_PIT2 */
  getPit2(): PitState2 {
    this.#live('KVM_GET_PIT2');
    const b = new Uint8Array(PIT_STATE2_SIZE);
    this._handle.getPit2(b);
    return decodePitState2(b);
  }

  /** KVM_SET_PIT2 (each channel's count is reloaded as of now) */
  setPit2(pit: PitState2): void {
    this.#live('KVM_SET_PIT2');
    this._handle.setPit2(encodePitState2(pit));
  }

  /** KVM_GET_CLOCK: kvmclock (ns); flags say whether realtime and hostTsc are valid. */
  getClock(): ClockData {
    this.#live('KVM_GET_CLOCK');
    const b = new Uint8Array(CLOCK_DATA_SIZE);
    this._handle.getClock(b);
    return decodeClockData(b);
  }

  /**
   * KVM_SET_CLOCK. With CLOCK_REALTIME in flags (as KVM_GET_CLOCK sets it on hosts with a stable
   * clock) the kernel adds the real time elapsed since `realtime`: a restored guest's clock
   * then keeps up with the time it was away.
   */
  setClock(clock: ClockData): void {
    this.#live('KVM_SET_CLOCK');
    this._handle.setClock(encodeClockData(clock));
  }

  /** The pieces getState() leaves out, each with the reason. */
  stateSkipped(): Partial<Record<VmStatePiece, string>> {
    this.#live('KVM_CHECK_EXTENSION');
    const skipped: Partial<Record<VmStatePiece, string>> = {};
    if (!this.#irqchip) skipped.irqchip = 'no in-kernel irqchip (vm.createIrqchip())';
    if (!this.#pit) skipped.pit2 = 'no in-kernel PIT (vm.createPit2())';
    this.#adjustClock ??= this._handle.checkExtension(Cap.AdjustClock);
    if (this.#adjustClock <= 0) skipped.clock = 'KVM_CHECK_EXTENSION(KVM_CAP_ADJUST_CLOCK) is 0';
    return skipped;
  }

  /** The VM's device state: PIC master, slave and IOAPIC, PIT, kvmclock, where the VM has them. */
  getState(): VmState {
    this.#live('KVM_GET_IRQCHIP');
    const skipped = this.stateSkipped();
    const state: VmState = {};
    if (!skipped.irqchip) {
      state.irqchip = {
        picMaster: this.getIrqchip(IrqchipId.PicMaster),
        picSlave: this.getIrqchip(IrqchipId.PicSlave),
        ioapic: this.getIrqchip(IrqchipId.Ioapic),
      };
    }
    if (!skipped.pit2) state.pit2 = this.getPit2();
    if (!skipped.clock) state.clock = this.getClock();
    return state;
  }

  /**
   * Restores a VmState: the irqchip's three chips, the PIT, the clock. The VM must have the
   * devices (createIrqchip(), createPit2()) the state has, else the kernel's ENXIO. Every piece
   * is checked before the first request; absent pieces are left alone.
   */
  setState(state: VmState): void {
    this.#live('KVM_SET_IRQCHIP');
    const s = checkObject('state', state);
    for (const key of Object.keys(s)) {
      if (!(VM_STATE_PIECES as readonly string[]).includes(key)) throw new TypeError(`state.${key} is not a piece of the VM state (${VM_STATE_PIECES.join(', ')})`);
    }
    let chips: Uint8Array[] = [];
    if (s.irqchip !== undefined) {
      const c = checkObject('state.irqchip', s.irqchip);
      chips = [
        encodePic(IrqchipId.PicMaster, c.picMaster as PicState, 'state.irqchip.picMaster'),
        encodePic(IrqchipId.PicSlave, c.picSlave as PicState, 'state.irqchip.picSlave'),
        encodeIoapic(c.ioapic as IoapicState, 'state.irqchip.ioapic'),
      ];
    }
    const pit = s.pit2 !== undefined ? encodePitState2(s.pit2 as PitState2) : null;
    const clock = s.clock !== undefined ? encodeClockData(s.clock as ClockData) : null;
    for (const chip of chips) this._handle.setIrqchip(chip);
    if (pit !== null) this._handle.setPit2(pit);
    if (clock !== null) this._handle.setClock(clock);
  }

  /** Address space 0's slots with open memory, as loadImage() writes them. */
  #imageSlots(): ImageSlot[] {
    const out: ImageSlot[] = [];
    for (const [slot, info] of this.#slots) {
      const memory = info.memory;
      if (slot >>> 16 !== 0 || memory === null || memory.closed) continue;
      out.push({ gpa: info.guestPhysAddr, size: info.memorySize, view: (offset, length) => memory.view(info.memoryOffset + offset, length) });
    }
    return out;
  }

  /** Emulator backend only (undefined on native): guest actions a test or example can perform. */
  get emulator(): EmulatorHooks | undefined {
    return this.#emulator;
  }

  /** Closes the vCPUs (kicking and joining running ones), the guest memory, then the VM fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const v of [...this.#vcpus]) v.close();
    for (const m of this.#memories) m.close();
    this.#memories.clear();
    this._handle.close();
    this.#onClose(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(ioctl: string | undefined): void {
    if (this.#closed) fail('EBADF', ioctl, 'the VM is closed');
  }

  #wrapHooks(hooks: EmulatorHooks): EmulatorHooks {
    return {
      guestWrite: (vcpuId, gpa, length = 1) => {
        this.#live(undefined);
        if (vcpuId !== null) checkUint('vcpuId', vcpuId, U32_MAX);
        hooks.guestWrite(vcpuId, checkUint('gpa', gpa), checkUint('length', length, 1 << 30));
      },
      overfillRing: (vcpuId, gpa, pages, value = 1n) => {
        this.#live(undefined);
        hooks.overfillRing(checkUint('vcpuId', vcpuId, U32_MAX), checkUint('gpa', gpa), checkUint('pages', pages, 1 << 24), checkU64('value', value));
      },
      essa: (gfn, orc) => {
        this.#live(undefined);
        checkUint('gfn', gfn);
        checkUint('orc', orc);
        if (orc > 7) throw new RangeError(`orc must be an ESSA operation request code 0..7, got ${orc}`);
        return hooks.essa(gfn, orc);
      },
    };
  }
}
