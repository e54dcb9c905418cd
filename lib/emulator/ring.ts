// One vCPU's dirty ring (virt/kvm/dirty_ring.c): struct kvm_dirty_gfn { u32 flags; u32 slot;
// u64 offset }[size] in an ArrayBuffer that userspace reads exactly as it reads the kernel's
// mapping (lib/ring.ts). dirty_index, reset_index and soft_limit are private, as in the kernel
// (rule 32); the entry array is the only shared state.

import { DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET, DIRTY_GFN_SIZE } from '../constants';

const U32_PER_ENTRY = DIRTY_GFN_SIZE / 4;
const TWO_32 = 0x1_0000_0000;

/**
 * kvm_reset_dirty_gfn(): re-protects pages offset + i of `slot` for each bit i of the 64-bit
 * mask (maskLo = bits 0-31, maskHi = bits 32-63). `slot` and `offset` come from the entries,
 * possibly stale (rule 56).
 */
export interface Reprotector {
  reprotect(slot: number, offset: number, maskLo: number, maskHi: number): void;
}

export class EmulatedRing {
  /** Entries (bytes / 16), a power of two. */
  readonly size: number;
  /** size - reserved entries: used >= softLimit is "soft full" (rule 45). */
  readonly softLimit: number;
  #buffer: ArrayBuffer;
  #u32: Uint32Array;
  readonly #mask: number;
  /** Free-running u32 indexes, as the kernel's; used = (dirtyIndex - resetIndex) mod 2^32. */
  #dirtyIndex = 0;
  #resetIndex = 0;
  #warnedFull = false;
  /** KVM_REQ_DIRTY_RING_SOFT_FULL, raised by a push that left the ring soft-full (rule 46). */
  softFullRequest = false;

  /** kvm_dirty_ring_alloc(): a zeroed array of `bytes / 16` entries (rule 28). */
  constructor(bytes: number, reservedEntries: number) {
    this.#buffer = new ArrayBuffer(bytes);
    this.#u32 = new Uint32Array(this.#buffer);
    this.size = bytes / DIRTY_GFN_SIZE;
    this.#mask = this.size - 1;
    this.softLimit = this.size - reservedEntries;
  }

  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  /** kvm_dirty_ring_used() */
  get used(): number {
    return (this.#dirtyIndex - this.#resetIndex) >>> 0;
  }

  /** kvm_dirty_ring_soft_full() */
  softFull(): boolean {
    return ((this.#dirtyIndex - this.#resetIndex) >>> 0) >= this.softLimit;
  }

  /**
   * kvm_dirty_ring_check_request() (rule 47), before each guest entry: with the request
   * pending and the ring still soft-full, true (KVM_EXIT_DIRTY_RING_FULL; the request stays);
   * with the ring no longer soft-full, the request is dropped (rule 60).
   */
  checkRequest(): boolean {
    if (!this.softFullRequest) return false;
    if (this.softFull()) return true;
    this.softFullRequest = false;
    return false;
  }

  /**
   * kvm_dirty_ring_push() (rule 33): slot and offset first, then flags = DIRTY, then
   * dirty_index++. If the ring is soft-full afterwards, raises KVM_REQ_DIRTY_RING_SOFT_FULL
   * (rule 46) and returns true: the vCPU exits before its next instruction.
   */
  push(slot: number, offset: number): boolean {
    if (((this.#dirtyIndex - this.#resetIndex) >>> 0) >= this.size && !this.#warnedFull) {
      // WARN_ON_ONCE(kvm_dirty_ring_full(ring)): "It should never get full"; the push proceeds (rule 37).
      this.#warnedFull = true;
      process.emitWarning('kvm_dirty_ring_push: It should never get full (emulated WARN_ON_ONCE); the oldest entry is overwritten', 'KvmWarning');
    }
    const u32 = this.#u32;
    const e = (this.#dirtyIndex & this.#mask) * U32_PER_ENTRY;
    u32[e + 1] = slot;
    u32[e + 2] = offset >>> 0;
    u32[e + 3] = (offset / TWO_32) >>> 0;
    // The kernel's smp_wmb() + store of flags: the harvester (lib/ring.ts) runs on this same
    // JS thread, so program order already publishes slot and offset before flags.
    u32[e] = DIRTY_GFN_F_DIRTY;
    this.#dirtyIndex = (this.#dirtyIndex + 1) >>> 0;
    if (((this.#dirtyIndex - this.#resetIndex) >>> 0) < this.softLimit) return false;
    this.softFullRequest = true;
    return true;
  }

  /**
   * kvm_dirty_ring_reset() (rules 54-56, 58): from reset_index, while the entry has the RESET
   * bit (the DIRTY bit is not looked at), zero its flags and count it. Stops at the first
   * entry without RESET; like the kernel, it does not compare with dirty_index, so RESET
   * written on an entry the kernel never pushed is consumed too. The pages are re-protected
   * in the kernel's batches: consecutive entries of one slot within a 64-page window, the
   * window sliding down for an entry up to 63 pages below it while no bit falls out; a batch
   * whose highest page lies beyond its slot is skipped whole (kvm_reset_dirty_gfn()).
   * Returns the count.
   */
  reset(target: Reprotector): number {
    const u32 = this.#u32;
    let count = 0;
    let curSlot = 0;
    let curOffset = 0;
    let maskLo = 0; // mask == 0: no batch yet
    let maskHi = 0;
    for (;;) {
      const e = (this.#resetIndex & this.#mask) * U32_PER_ENTRY;
      if ((u32[e] & DIRTY_GFN_F_RESET) === 0) break; // same thread as the harvester: no fence needed
      const nextSlot = u32[e + 1];
      const nextOffset = u32[e + 2] + u32[e + 3] * TWO_32;
      u32[e] = 0; // kvm_dirty_gfn_set_invalid()
      this.#resetIndex = (this.#resetIndex + 1) >>> 0;
      count++;
      if ((maskLo | maskHi) !== 0) {
        if (nextSlot === curSlot) {
          const delta = nextOffset - curOffset;
          if (delta >= 0 && delta < 64) {
            if (delta < 32) maskLo = (maskLo | (1 << delta)) >>> 0;
            else maskHi = (maskHi | (1 << (delta - 32))) >>> 0;
            continue;
          }
          // Backwards visit: shift the window down if no set bit falls out of it
          if (delta > -64 && delta < 0 && fls64(maskLo, maskHi) - delta < 64) {
            const sh = -delta;
            if (sh >= 32) {
              maskHi = (maskLo << (sh - 32)) >>> 0;
              maskLo = 0;
            } else {
              maskHi = ((maskHi << sh) | (maskLo >>> (32 - sh))) >>> 0;
              maskLo = (maskLo << sh) >>> 0;
            }
            maskLo = (maskLo | 1) >>> 0;
            curOffset = nextOffset;
            continue;
          }
        }
        target.reprotect(curSlot, curOffset, maskLo, maskHi);
      }
      curSlot = nextSlot;
      curOffset = nextOffset;
      maskLo = 1;
      maskHi = 0;
    }
    if ((maskLo | maskHi) !== 0) target.reprotect(curSlot, curOffset, maskLo, maskHi);
    return count;
  }

  /**
   * The vCPU fd closed: userspace's mapping goes (its buffer is detached, stale views read as
   * empty), while the kernel's ring lives on with the vCPU until the VM is destroyed, so a
   * later KVM_RESET_DIRTY_RINGS still walks it.
   */
  unmap(): void {
    if (this.#buffer.byteLength === 0) return;
    const kernelCopy = this.#buffer.slice(0);
    structuredClone(this.#buffer, { transfer: [this.#buffer] });
    this.#u32 = new Uint32Array(kernelCopy);
  }
}

/** __fls() of a non-zero 64-bit mask given as two u32 halves: the index of its highest set bit. */
export function fls64(lo: number, hi: number): number {
  return hi !== 0 ? 63 - Math.clz32(hi) : 31 - Math.clz32(lo);
}
