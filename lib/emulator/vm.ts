// The emulated VM fd: KVM_ENABLE_CAP, KVM_SET_USER_MEMORY_REGION, KVM_CREATE_VCPU,
// KVM_GET/CLEAR_DIRTY_LOG, KVM_RESET_DIRTY_RINGS and (s390x) the CMMA ioctls, with the
// checks in the kernel's order and the kernel's errnos (kernel-semantics.md rule numbers in
// the comments; sources: virt/kvm/kvm_main.c, virt/kvm/dirty_ring.c).

import type { BackendMemory, BackendVcpu, BackendVm, EmulatorHooks, MemoryRegion } from '../backend';
import {
  Cap,
  DIRTY_GFN_SIZE,
  DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  DIRTY_RING_MAX_ENTRIES,
  MemFlag,
  PAGE_SIZE,
} from '../constants';
import { fail } from '../errors';
import { EmulatedCmma, type CmmaSlot } from './cmma';
import { EmulatedMemory, Memslot, bitmapWords32 } from './memory';
import { checkExtension, type Profile } from './profiles';
import { harvestGfns } from '../ring';
import { fls64, type Reprotector } from './ring';
import { EmulatedVmState } from './state';
import { EmulatedVcpu } from './vcpu';

/** KVM_MEM_MAX_NR_PAGES on 64-bit hosts. */
const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;
/** KVM_SET_USER_MEMORY_REGION_V1_FLAGS */
const V1_FLAGS = MemFlag.LogDirtyPages | MemFlag.ReadOnly;

export class EmulatedVm implements BackendVm, Reprotector {
  readonly profile: Profile;
  /** kvm->dirty_ring_size in bytes; 0: no ring */
  dirtyRingSize = 0;
  /** kvm->dirty_ring_with_bitmap */
  dirtyRingWithBitmap = false;
  /** kvm->manual_dirty_log_protect (the last accepted args[0]) */
  manualDirtyLogProtect = 0;
  /** kvm->created_vcpus */
  createdVcpus = 0;
  readonly vcpus = new Map<number, EmulatedVcpu>();
  /** Memslots by (as_id << 16) | id. */
  readonly #slots = new Map<number, Memslot>();
  /** Address space 0's memslots sorted by base_gfn, for gfn lookups (the guest runs in as 0). */
  #sorted: Memslot[] = [];
  readonly #cmma: EmulatedCmma | null;
  readonly emulator: EmulatorHooks;
  #warnedNoVcpu = false;
  readonly #state = new EmulatedVmState();

  constructor(profile: Profile) {
    this.profile = profile;
    this.#cmma = profile.cmma ? new EmulatedCmma(() => [...this.#slots.values()].map(cmmaSlot)) : null;
    this.emulator = {
      guestWrite: (vcpuId, gpa, length = 1) => this.#guestWrite(vcpuId, gpa, length),
      overfillRing: (vcpuId, gpa, pages, value = 1n) => this.#overfillRing(vcpuId, gpa, pages, value),
      essa: (gfn, orc) => {
        if (this.#cmma === null) fail('ENOTTY', undefined, `ESSA is an s390 instruction; this VM emulates ${profile.arch}`);
        return this.#cmma.essa(gfn, orc);
      },
    };
  }

  /** kvm_use_dirty_bitmap() (rule 26) */
  get useDirtyBitmap(): boolean {
    return this.dirtyRingSize === 0 || this.dirtyRingWithBitmap;
  }

  checkExtension(cap: number): number {
    return checkExtension(this.profile, cap);
  }

  enableCap(cap: number, args: readonly [bigint, bigint, bigint, bigint], flags: number): number {
    const ioctl = 'KVM_ENABLE_CAP';
    switch (cap) {
      case Cap.ManualDirtyLogProtect2: {
        // Only where the arch has CONFIG_KVM_GENERIC_DIRTYLOG_READ_PROTECT; else the arch
        // handler's default, EINVAL.
        if (this.profile.manualDirtyLogCaps === 0) fail('EINVAL', ioctl, 'KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is not offered');
        // rule 80: without MANUAL_PROTECT_ENABLE only 0 is allowed
        const allowed = (args[0] & BigInt(DIRTY_LOG_MANUAL_PROTECT_ENABLE)) !== 0n
          ? BigInt(this.profile.manualDirtyLogCaps) : BigInt(DIRTY_LOG_MANUAL_PROTECT_ENABLE);
        if (flags !== 0 || (args[0] & ~allowed) !== 0n) fail('EINVAL', ioctl, 'bad KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 arguments');
        this.manualDirtyLogProtect = Number(args[0]); // rule 81: any time, also 0 to disable
        return 0;
      }
      case Cap.DirtyLogRing:
      case Cap.DirtyLogRingAcqRel:
        // rule 16: a cap the kernel does not offer; rule 18: flags are not looked at
        if (this.checkExtension(cap) === 0) fail('EINVAL', ioctl, 'dirty ring capability not offered');
        this.#enableDirtyLogRing(Number(args[0] & 0xffff_ffffn)); // rule 17: u32 size
        return 0;
      case Cap.DirtyLogRingWithBitmap:
        // rule 25
        if (!this.profile.ringWithBitmap || this.dirtyRingSize === 0 || flags !== 0) {
          fail('EINVAL', ioctl, 'WITH_BITMAP needs an arch that has it, the ring enabled first, and flags 0');
        }
        if (this.#slots.size !== 0) fail('EINVAL', ioctl, 'WITH_BITMAP must come before any memslot');
        this.dirtyRingWithBitmap = true;
        return 0;
      default:
        // kvm_vm_ioctl_enable_cap() of the arch: unknown caps are EINVAL
        fail('EINVAL', ioctl, `capability ${cap} cannot be enabled on the emulated ${this.profile.arch} VM`);
    }
  }

  /** kvm_vm_ioctl_enable_dirty_log_ring() (rule 19, checks in order). */
  #enableDirtyLogRing(size: number): void {
    const ioctl = 'KVM_ENABLE_CAP';
    if (this.profile.dirtyLogPageOffset === 0) fail('EINVAL', ioctl, 'no dirty ring on this arch');
    if (size === 0 || (size & (size - 1)) !== 0) fail('EINVAL', ioctl, `ring size ${size} is not a power of two`);
    if (size < this.profile.ringReservedEntries * DIRTY_GFN_SIZE || size < PAGE_SIZE) fail('EINVAL', ioctl, `ring size ${size} is below the minimum`);
    if (size > DIRTY_RING_MAX_ENTRIES * DIRTY_GFN_SIZE) fail('E2BIG', ioctl, `ring size ${size} is above 1 MiB`);
    if (this.dirtyRingSize !== 0) fail('EINVAL', ioctl, 'the dirty ring is already enabled');
    if (this.createdVcpus !== 0) fail('EINVAL', ioctl, 'a vCPU already exists');
    this.dirtyRingSize = size;
  }

  createMemory(size: number): BackendMemory {
    return new EmulatedMemory(size);
  }

  /** kvm_vm_ioctl_set_memory_region() + __kvm_set_memory_region(), checks in the kernel's order. */
  setUserMemoryRegion(region: MemoryRegion): void {
    const ioctl = 'KVM_SET_USER_MEMORY_REGION';
    const p = this.profile;
    const { slot, flags, guestPhysAddr, memorySize, memoryOffset } = region;
    const asId = slot >>> 16;
    const id = slot & 0xffff;
    if (id >= p.userMemSlots) fail('EINVAL', ioctl, `slot id ${id} >= KVM_USER_MEM_SLOTS (${p.userMemSlots})`);
    // KVM_SET_USER_MEMORY_REGION_V1_FLAGS, then check_memory_region_flags() (rule 66)
    if ((flags & ~V1_FLAGS) !== 0) fail('EINVAL', ioctl, `unknown memslot flags 0x${flags.toString(16)}`);
    if ((flags & MemFlag.ReadOnly) !== 0 && !p.readonlyMem) fail('EINVAL', ioctl, `KVM_MEM_READONLY is not supported on ${p.arch}`);
    if (memorySize % PAGE_SIZE !== 0) fail('EINVAL', ioctl, 'memory_size is not page aligned');
    if (guestPhysAddr % PAGE_SIZE !== 0) fail('EINVAL', ioctl, 'guest_phys_addr is not page aligned');
    if (memoryOffset % PAGE_SIZE !== 0) fail('EINVAL', ioctl, 'userspace_addr is not page aligned');
    if (asId >= p.addressSpaces) fail('EINVAL', ioctl, `address space ${asId} does not exist`);
    const npages = memorySize / PAGE_SIZE;
    if (npages > KVM_MEM_MAX_NR_PAGES) fail('EINVAL', ioctl, 'more than KVM_MEM_MAX_NR_PAGES pages');

    const old = this.#slots.get(slot) ?? null;
    if (memorySize === 0) {
      if (old === null) fail('EINVAL', ioctl, `slot ${slot} does not exist`);
      this.#deleteSlot(old);
      return;
    }
    const memory = region.memory as EmulatedMemory | null;
    if (memory === null) fail('EINVAL', ioctl, 'no memory for a non-empty slot');
    const baseGfn = guestPhysAddr / PAGE_SIZE;
    if (old !== null) {
      // Modify: only the base (KVM_MR_MOVE) or the flags (KVM_MR_FLAGS_ONLY) may change.
      if (memory !== old.memory || memoryOffset !== old.memoryOffset || npages !== old.npages ||
          ((flags ^ old.flags) & MemFlag.ReadOnly) !== 0) {
        fail('EINVAL', ioctl, 'an existing slot may change only its guest address or flags');
      }
      if (baseGfn !== old.baseGfn) {
        this.#checkOverlap(slot, asId, baseGfn, npages);
        this.#moveSlot(old, baseGfn, flags);
      } else if (flags !== old.flags) {
        this.#changeFlags(old, flags);
      }
      return;
    }
    this.#checkOverlap(slot, asId, baseGfn, npages);
    const s = new Memslot(slot, baseGfn, npages, flags, memory, memoryOffset);
    this.#prepareDirtyLog(s, null);
    this.#slots.set(slot, s);
    this.#slotsChanged();
    this.#cmma?.slotChanged(null, cmmaSlot(s));
  }

  /** kvm_check_memslot_overlap(): EEXIST if [base, base + npages) meets another slot of the address space. */
  #checkOverlap(slot: number, asId: number, baseGfn: number, npages: number): void {
    for (const s of this.#slots.values()) {
      if (s.slot === slot || s.asId !== asId) continue;
      if (baseGfn < s.baseGfn + s.npages && s.baseGfn < baseGfn + npages) {
        fail('EEXIST', 'KVM_SET_USER_MEMORY_REGION', `overlaps slot ${s.slot}`);
      }
    }
  }

  /**
   * kvm_prepare_memory_region() (rules 67-69): no LOG_DIRTY_PAGES, no bitmap; the old bitmap
   * is kept when logging stays on; else a new one if kvm_use_dirty_bitmap(), all ones for the
   * slot's pages with INITIALLY_SET. Turning logging on write-protects the slot (rule 71).
   */
  #prepareDirtyLog(s: Memslot, old: { bitmap: Uint32Array | null; logged: Uint32Array | null } | null): void {
    if (!s.logDirty) {
      s.dirtyBitmap = null;
      s.logged = null;
      return;
    }
    if (old !== null && old.logged !== null) {
      s.dirtyBitmap = old.bitmap;
      s.logged = old.logged;
      return;
    }
    s.protectAll();
    s.dirtyBitmap = null;
    if (this.useDirtyBitmap) {
      const bitmap = new Uint32Array(bitmapWords32(s.npages));
      if ((this.manualDirtyLogProtect & 2) !== 0 && (this.manualDirtyLogProtect & DIRTY_LOG_MANUAL_PROTECT_ENABLE) !== 0) {
        setBits(bitmap, s.npages); // KVM_DIRTY_LOG_INITIALLY_SET
      }
      s.dirtyBitmap = bitmap;
    }
  }

  #changeFlags(s: Memslot, flags: number): void {
    const before = cmmaSlot(s);
    const old = { bitmap: s.dirtyBitmap, logged: s.logged };
    s.flags = flags;
    this.#prepareDirtyLog(s, old);
    this.#slotsChanged();
    this.#cmma?.slotChanged(before, cmmaSlot(s));
  }

  #moveSlot(s: Memslot, baseGfn: number, flags: number): void {
    const before = cmmaSlot(s);
    const bitmap = s.dirtyBitmap;
    s.baseGfn = baseGfn;
    s.flags = flags;
    // The bitmap moves with the slot (old->dirty_bitmap is reused); at the new address no
    // page is mapped yet, so every page is write-protected again.
    this.#prepareDirtyLog(s, null);
    if (s.logDirty && bitmap !== null) s.dirtyBitmap = bitmap;
    this.#slotsChanged();
    this.#cmma?.slotChanged(before, cmmaSlot(s));
  }

  #deleteSlot(s: Memslot): void {
    // rule 72: the bitmap goes; ring entries naming the slot stay harmless (rule 56)
    this.#slots.delete(s.slot);
    s.dirtyBitmap = null;
    s.logged = null;
    this.#slotsChanged();
    this.#cmma?.slotChanged(cmmaSlot(s), null);
  }

  #slotsChanged(): void {
    this.#sorted = [...this.#slots.values()].filter((s) => s.asId === 0).sort((a, b) => a.baseGfn - b.baseGfn);
    for (const v of this.vcpus.values()) v.memslotsChanged();
  }

  /** The address-space-0 memslot holding `gfn` (gfn_to_memslot), or null. */
  findSlot(gfn: number): Memslot | null {
    const sorted = this.#sorted;
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const s = sorted[mid];
      if (gfn < s.baseGfn) hi = mid;
      else if (gfn >= s.baseGfn + s.npages) lo = mid + 1;
      else return s;
    }
    return null;
  }

  /** Address space 0's memslots, sorted by guest address. */
  get memslots(): readonly Memslot[] {
    return this.#sorted;
  }

  /** kvm_vm_ioctl_create_vcpu(): id range, vCPU count, then EEXIST for a duplicate id. */
  createVcpu(id: number): BackendVcpu {
    const ioctl = 'KVM_CREATE_VCPU';
    if (id >= this.profile.maxVcpuIds) fail('EINVAL', ioctl, `vCPU id ${id} >= KVM_MAX_VCPU_IDS (${this.profile.maxVcpuIds})`);
    if (this.createdVcpus >= this.profile.maxVcpus) fail('EINVAL', ioctl, `already ${this.createdVcpus} vCPUs (KVM_MAX_VCPUS)`);
    if (this.vcpus.has(id)) fail('EEXIST', ioctl, `vCPU ${id} already exists`);
    const vcpu = new EmulatedVcpu(this, id, this.profile.vcpuMmapSize, this.dirtyRingSize);
    this.createdVcpus++;
    this.vcpus.set(id, vcpu);
    this.#cmma?.vcpuCreated();
    return vcpu;
  }

  /**
   * mark_page_dirty_in_slot() (rules 38-41) for a logged slot: into the running vCPU's ring
   * when the ring is on, else into the slot's bitmap; with the ring on and no bitmap a write
   * without a vCPU is dropped with the kernel's WARN. Returns true if the push left the
   * vCPU's ring soft-full.
   */
  markPageDirty(vcpu: EmulatedVcpu | null, s: Memslot, rel: number): boolean {
    if (this.dirtyRingSize !== 0 && vcpu !== null) return vcpu.ring!.push(s.slot, rel);
    const bitmap = s.dirtyBitmap;
    if (bitmap !== null) bitmap[rel >>> 5] |= 1 << (rel & 31);
    else if (this.dirtyRingSize !== 0 && !this.#warnedNoVcpu) {
      this.#warnedNoVcpu = true;
      process.emitWarning(
        'mark_page_dirty_in_slot: a write without a running vCPU while the dirty ring is on is not recorded (emulated WARN_ON_ONCE)',
        'KvmWarning',
      );
    }
    return false;
  }

  /** EmulatorHooks.overfillRing: PVM's logging of every emulated store, with no soft limit inside the run. */
  #overfillRing(vcpuId: number, gpa: number, pages: number, value: bigint): void {
    const vcpu = this.vcpus.get(vcpuId);
    if (vcpu === undefined) throw new RangeError(`no vCPU ${vcpuId} in this VM`);
    if (vcpu.ring === null) throw new RangeError(`vCPU ${vcpuId} has no dirty ring`);
    const first = Math.floor(gpa / PAGE_SIZE);
    for (let gfn = first; gfn < first + pages; gfn++) {
      const s = this.findSlot(gfn);
      if (s === null || s.readonly || !s.logDirty) continue;
      const rel = gfn - s.baseGfn;
      const at = (s.memoryOffset + rel * PAGE_SIZE) / 4;
      s.memory.u32[at] = Number(value & 0xffff_ffffn);
      s.memory.u32[at + 1] = Number((value >> 32n) & 0xffff_ffffn);
      s.logged![rel >>> 5] |= 1 << (rel & 31);
      vcpu.ring.push(s.slot, rel); // past the soft limit and the size alike: ring.ts warns once, overwrites the oldest
    }
  }

  /** EmulatorHooks.guestWrite: each page of [gpa, gpa + length) written once. */
  #guestWrite(vcpuId: number | null, gpa: number, length: number): void {
    let vcpu: EmulatedVcpu | null = null;
    if (vcpuId !== null) {
      vcpu = this.vcpus.get(vcpuId) ?? null;
      if (vcpu === null) throw new RangeError(`no vCPU ${vcpuId} in this VM`);
    }
    if (length === 0) return;
    const first = Math.floor(gpa / PAGE_SIZE);
    const last = Math.floor((gpa + length - 1) / PAGE_SIZE);
    for (let gfn = first; gfn <= last; gfn++) {
      const s = this.findSlot(gfn);
      // Outside RAM or to a read-only slot the write is MMIO: nothing to log.
      if (s === null || s.readonly || !s.logDirty) continue;
      const rel = gfn - s.baseGfn;
      if (vcpu === null) {
        // KVM writing guest memory itself (kvm_write_guest): logged on every write (rule 43)
        this.markPageDirty(null, s, rel);
      } else {
        // A guest store: logged on the first write after (re)protection (rule 43)
        const logged = s.logged!;
        const bit = 1 << (rel & 31);
        if ((logged[rel >>> 5] & bit) !== 0) continue;
        logged[rel >>> 5] |= bit;
        this.markPageDirty(vcpu, s, rel);
      }
    }
  }

  /**
   * kvm_reset_dirty_gfn() (rules 56, 58): re-protect the batch's pages, unless the slot no
   * longer exists or the batch's highest page lies beyond it (then nothing is re-protected).
   */
  reprotect(slot: number, offset: number, maskLo: number, maskHi: number): void {
    if (slot >>> 16 >= this.profile.addressSpaces || (slot & 0xffff) >= this.profile.userMemSlots) return;
    const s = this.#slots.get(slot);
    if (s === undefined || offset + fls64(maskLo, maskHi) >= s.npages) return;
    for (let m = maskLo; m !== 0; m &= m - 1) s.reprotect(offset + 31 - Math.clz32(m & -m));
    for (let m = maskHi; m !== 0; m &= m - 1) s.reprotect(offset + 32 + 31 - Math.clz32(m & -m));
  }

  /** kvm_vm_ioctl_reset_dirty_pages() (rules 53-62). */
  resetDirtyRings(): number {
    if (this.dirtyRingSize === 0) fail('EINVAL', 'KVM_RESET_DIRTY_RINGS', 'the dirty ring is not enabled');
    let cleared = 0;
    for (const v of this.vcpus.values()) cleared += v.ring!.reset(this);
    return cleared;
  }

  /** The addon's one-call harvest of several rings, here the same protocol in JavaScript (lib/ring.ts). */
  harvestRings(vcpus: readonly BackendVcpu[], fetch: Float64Array, slots: Uint32Array, offsets: Float64Array, start: number, counts: Uint32Array): number {
    let at = start;
    vcpus.forEach((v, i) => {
      const ring = (v as EmulatedVcpu).ring!;
      const n = harvestGfns(new Uint32Array(ring.buffer), fetch[i], Math.min(ring.size, slots.length - at), slots, offsets, at);
      counts[i] = n;
      at += n;
    });
    return at - start;
  }

  /** The memslot a dirty-log ioctl names: ENXIO with the ring alone, EINVAL, ENOENT (rules 63, 73, 85). */
  #dirtyLogSlot(slot: number, ioctl: string, firstPage?: number): Memslot {
    if (this.dirtyRingSize !== 0 && !this.dirtyRingWithBitmap) fail('ENXIO', ioctl, 'the dirty ring is on without a bitmap');
    if (slot >>> 16 >= this.profile.addressSpaces || (slot & 0xffff) >= this.profile.userMemSlots) {
      fail('EINVAL', ioctl, `slot 0x${slot.toString(16)} is not a valid (as_id << 16) | id`);
    }
    if (firstPage !== undefined && firstPage % 64 !== 0) fail('EINVAL', ioctl, 'first_page is not a multiple of 64');
    const s = this.#slots.get(slot);
    if (s === undefined || s.dirtyBitmap === null) fail('ENOENT', ioctl, `slot ${slot} has no dirty bitmap`);
    return s;
  }

  /**
   * KVM_GET_DIRTY_LOG (rules 73-79): without manual protect, a snapshot that clears the log
   * and re-protects the pages it reports; with it, a copy of the live bitmap. s390
   * (kvm-s390.c) always clears.
   */
  getDirtyLog(slot: number, bitmap: Uint8Array): void {
    const ioctl = 'KVM_GET_DIRTY_LOG';
    const s = this.#dirtyLogSlot(slot, ioctl);
    const words = s.dirtyBitmap!;
    const bytes = words.length * 4; // ALIGN(npages, 64) / 8
    if (bitmap.byteLength < bytes) fail('EFAULT', ioctl, `the bitmap has ${bitmap.byteLength} bytes; the slot needs ${bytes}`);
    bitmap.set(new Uint8Array(words.buffer, words.byteOffset, bytes));
    if (this.profile.manualDirtyLogCaps !== 0 && (this.manualDirtyLogProtect & DIRTY_LOG_MANUAL_PROTECT_ENABLE) !== 0) return;
    const logged = s.logged!;
    for (let i = 0; i < words.length; i++) {
      const w = words[i];
      if (w === 0) continue;
      words[i] = 0; // xchg(&dirty_bitmap[i], 0)
      logged[i] &= ~w; // kvm_arch_mmu_enable_log_dirty_pt_masked()
    }
  }

  /** KVM_CLEAR_DIRTY_LOG (rules 84-90). */
  clearDirtyLog(slot: number, firstPage: number, numPages: number, bitmap: Uint8Array): void {
    const ioctl = 'KVM_CLEAR_DIRTY_LOG';
    // No CONFIG_KVM_GENERIC_DIRTYLOG_READ_PROTECT: the arch's kvm_arch_vm_ioctl() does not know it.
    if (this.profile.manualDirtyLogCaps === 0) fail('ENOTTY', ioctl, `no KVM_CLEAR_DIRTY_LOG on ${this.profile.arch}`);
    const s = this.#dirtyLogSlot(slot, ioctl, firstPage);
    const npages = s.npages;
    if (firstPage > npages || numPages > npages - firstPage || (numPages < npages - firstPage && numPages % 64 !== 0)) {
      fail('EINVAL', ioctl, `pages [${firstPage}, ${firstPage + numPages}) do not fit slot ${slot} of ${npages} pages`);
    }
    const n64 = Math.ceil(numPages / 64);
    if (bitmap.byteLength < n64 * 8) fail('EFAULT', ioctl, `the bitmap has ${bitmap.byteLength} bytes; ${n64 * 8} are read`);
    const words = s.dirtyBitmap!;
    const logged = s.logged!;
    const user = new DataView(bitmap.buffer, bitmap.byteOffset, n64 * 8);
    const first = (firstPage / 64) * 2;
    for (let i = 0; i < n64 * 2; i++) {
      const cleared = user.getUint32(i * 4, true) & words[first + i];
      if (cleared === 0) continue;
      words[first + i] &= ~cleared; // atomic_long_fetch_andnot()
      logged[first + i] &= ~cleared; // re-protect the cleared pages
    }
  }

  setDeviceAttr(group: number, attr: number, value?: bigint): void {
    if (this.#cmma !== null) return this.#cmma.setDeviceAttr(group, attr, value);
    return this.#noVmAttrs('KVM_SET_DEVICE_ATTR', group, attr, value);
  }

  getDeviceAttr(group: number, attr: number): bigint {
    if (this.#cmma !== null) return this.#cmma.getDeviceAttr(group, attr);
    // arm64's kvm_arch_vm_ioctl() has no KVM_GET_DEVICE_ATTR: its default is EINVAL
    if (this.profile.arch === 'arm64') fail('EINVAL', 'KVM_GET_DEVICE_ATTR', 'arm64 VMs have no KVM_GET_DEVICE_ATTR');
    fail('ENOTTY', 'KVM_GET_DEVICE_ATTR', 'x86 VMs have no device attributes (rule 99)');
  }

  hasDeviceAttr(group: number, attr: number): boolean {
    if (this.#cmma !== null) return this.#cmma.hasDeviceAttr(group, attr);
    if (this.profile.arch === 'arm64') return group === ARM_VM_SMCCC_CTRL && attr === ARM_VM_SMCCC_FILTER;
    fail('ENOTTY', 'KVM_HAS_DEVICE_ATTR', 'x86 VMs have no device attributes (rule 99)');
  }

  /**
   * VM device attributes where there is no CMMA. x86: kvm_arch_vm_ioctl() knows none (ENOTTY,
   * rule 99). arm64 (arch/arm64/kvm/arm.c kvm_vm_set_attr()): only group
   * KVM_ARM_VM_SMCCC_CTRL, whose one attribute, the SMCCC filter, copies a 24-byte struct
   * kvm_smccc_filter from attr.addr: EFAULT from address 0 (no value), and a u64 is not a
   * valid filter (EINVAL); any other group is ENXIO.
   */
  #noVmAttrs(ioctl: string, group: number, attr: number, value?: bigint): never {
    if (this.profile.arch === 'arm64') {
      if (group === ARM_VM_SMCCC_CTRL && attr === ARM_VM_SMCCC_FILTER) {
        if (value === undefined) fail('EFAULT', ioctl, 'KVM_ARM_VM_SMCCC_FILTER reads a struct kvm_smccc_filter from attr.addr 0');
        fail('EINVAL', ioctl, 'KVM_ARM_VM_SMCCC_FILTER needs a struct kvm_smccc_filter, not a u64');
      }
      fail('ENXIO', ioctl, `arm64 VMs have no attribute group ${group}`);
    }
    fail('ENOTTY', ioctl, 'x86 VMs have no device attributes (rule 99)');
  }

  getCmmaBits(args: { startGfn: number; count: number; flags: number }, values: Uint8Array): { startGfn: number; count: number; flags: number; remaining: number } {
    if (this.#cmma !== null) return this.#cmma.getCmmaBits(args, values);
    return this.#noCmma('KVM_S390_GET_CMMA_BITS');
  }

  setCmmaBits(args: { startGfn: number; count: number; flags: number; mask: bigint }, values: Uint8Array): void {
    if (this.#cmma !== null) return this.#cmma.setCmmaBits(args, values);
    return this.#noCmma('KVM_S390_SET_CMMA_BITS');
  }

  /** The s390 ioctls elsewhere: x86's kvm_arch_vm_ioctl() default is ENOTTY (rule 99), arm64's EINVAL. */
  #noCmma(ioctl: string): never {
    if (this.profile.arch === 'arm64') fail('EINVAL', ioctl, 'arm64 has no CMMA (kvm_arch_vm_ioctl default)');
    fail('ENOTTY', ioctl, 'x86 has no CMMA (rule 99)');
  }

  // ---- x86 in-kernel devices and clock (state.ts says what is modelled) ----

  /**
   * The emulator has no in-kernel PIC, IOAPIC or PIT (KVM_CAP_IRQCHIP and KVM_CAP_PIT2 answer
   * 0): creating them gets kvm_arch_vm_ioctl()'s default for a request the kernel does not
   * have, ENOTTY (as the native host answers an unknown VM ioctl).
   */
  createIrqchip(): void {
    fail('ENOTTY', 'KVM_CREATE_IRQCHIP', 'the emulator has no in-kernel irqchip (KVM_CAP_IRQCHIP is 0)');
  }

  createPit2(): void {
    fail('ENOTTY', 'KVM_CREATE_PIT2', 'the emulator has no in-kernel PIT (KVM_CAP_PIT2 is 0)');
  }

  // With none created, the device requests fail as x86 fails them for a VM without them
  // (measured on the native host): ENXIO for !irqchip_kernel(kvm) and for !kvm->arch.vpit.
  irqLine(): void {
    fail('ENXIO', 'KVM_IRQ_LINE', 'no in-kernel irqchip');
  }

  getIrqchip(): void {
    fail('ENXIO', 'KVM_GET_IRQCHIP', 'no in-kernel irqchip');
  }

  setIrqchip(): void {
    fail('ENXIO', 'KVM_SET_IRQCHIP', 'no in-kernel irqchip');
  }

  getPit2(): void {
    fail('ENXIO', 'KVM_GET_PIT2', 'no in-kernel PIT');
  }

  setPit2(): void {
    fail('ENXIO', 'KVM_SET_PIT2', 'no in-kernel PIT');
  }

  setTssAddr(addr: number): void {
    this.#state.setTssAddr(addr);
  }

  setIdentityMapAddr(addr: number): void {
    this.#state.setIdentityMapAddr(addr, this.createdVcpus);
  }

  getClock(clock: Uint8Array): void {
    this.#state.getClock(clock);
  }

  setClock(clock: Uint8Array): void {
    this.#state.setClock(clock);
  }

  close(): void {
    // The public layer closed the vCPUs and memories; the VM's state simply goes.
  }
}

/** arm64 VM device attribute group KVM_ARM_VM_SMCCC_CTRL and its attribute KVM_ARM_VM_SMCCC_FILTER. */
const ARM_VM_SMCCC_CTRL = 0;
const ARM_VM_SMCCC_FILTER = 0;

function cmmaSlot(s: Memslot): CmmaSlot {
  return { id: s.slot, baseGfn: s.baseGfn, npages: s.npages, flags: s.flags };
}

/** bitmap_set(bitmap, 0, npages) */
function setBits(words: Uint32Array, npages: number): void {
  const full = npages >>> 5;
  words.fill(0xffffffff, 0, full);
  if (npages & 31) words[full] = (1 << (npages & 31)) - 1;
}
