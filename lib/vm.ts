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
import { GuestMemory } from './memory';
import { checkBool, checkInstance, checkObject, checkU64, checkUint } from './validate';
import { Vcpu } from './vcpu';

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
}

/** A virtual machine (the VM fd). Made by kvm.createVm(); owns its vCPUs and guest memory. */
export class Vm {
  /** @internal */
  readonly _handle: BackendVm;
  readonly #vcpus = new Set<Vcpu>();
  readonly #memories = new Set<GuestMemory>();
  readonly #slots = new Map<number, SlotInfo>();
  readonly #onClose: (vm: Vm) => void;
  #closed = false;
  #emulator: EmulatorHooks | undefined;

  /** @internal made by kvm.createVm() */
  constructor(handle: BackendVm, onClose: (vm: Vm) => void) {
    this._handle = handle;
    this.#onClose = onClose;
    if (handle.emulator) this.#emulator = this.#wrapHooks(handle.emulator);
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
    else this.#slots.set(slot, { pages: Math.floor(memorySize / PAGE_SIZE) });
  }

  /** KVM_CREATE_VCPU (and, with the ring on, the vCPU's ring mapping). */
  createVcpu(id = 0): Vcpu {
    this.#live('KVM_CREATE_VCPU');
    checkUint('id', id, U32_MAX);
    const vcpu = new Vcpu(this._handle.createVcpu(id), (v) => this.#vcpus.delete(v));
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
