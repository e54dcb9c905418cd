// One vCPU's dirty ring (virt/kvm/dirty_ring.c): struct kvm_dirty_gfn { u32 flags; u32 slot;
// u64 offset }[size] in an ArrayBuffer that userspace reads exactly as it reads the kernel's
// mapping (lib/ring.ts). dirty_index, reset_index and soft_limit are private, as in the kernel
// (rule 32); the entry array is the only shared state.

import { DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET, DIRTY_GFN_SIZE } from '../constants';

const U32_PER_ENTRY = DIRTY_GFN_SIZE / 4;
const TWO_32 = 0x1_0000_0000;

/** Re-protects one harvested page; `slot` and `offset` are the entry's, possibly stale (rule 56). */
export interface Reprotector {
  reprotect(slot: number, offset: number): void;
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
   * kvm_dirty_ring_push() (rule 33): slot and offset first, then flags = DIRTY, then
   * dirty_index++. Returns true if the ring is soft-full afterwards (the caller raises
   * KVM_REQ_DIRTY_RING_SOFT_FULL, rule 46).
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
    return ((this.#dirtyIndex - this.#resetIndex) >>> 0) >= this.softLimit;
  }

  /**
   * kvm_dirty_ring_reset() (rules 54-56): from reset_index, while the entry has the RESET bit
   * (the DIRTY bit is not looked at), re-protect its page, zero its flags and count it.
   * Stops at the first entry without RESET; like the kernel, it does not compare with
   * dirty_index, so RESET written on an entry the kernel never pushed is consumed too.
   * Returns the count.
   */
  reset(target: Reprotector): number {
    const u32 = this.#u32;
    let count = 0;
    for (;;) {
      const e = (this.#resetIndex & this.#mask) * U32_PER_ENTRY;
      if ((u32[e] & DIRTY_GFN_F_RESET) === 0) break; // same thread as the harvester: no fence needed
      target.reprotect(u32[e + 1], u32[e + 2] + u32[e + 3] * TWO_32);
      u32[e] = 0; // kvm_dirty_gfn_set_invalid()
      this.#resetIndex = (this.#resetIndex + 1) >>> 0;
      count++;
    }
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
