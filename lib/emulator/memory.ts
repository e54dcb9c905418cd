// Guest RAM and memory slots (struct kvm_memory_slot). Guest RAM is a plain ArrayBuffer
// standing in for the anonymous shared mapping; a slot maps a page-aligned window of it at
// base_gfn. Each logged slot carries the two pieces of state upstream KVM keeps for dirty
// tracking: the dirty bitmap (when kvm_use_dirty_bitmap(), rule 67) and the page protection
// that decides when a guest write is logged (rule 43): a page is logged by the first write
// after it was (re)protected, then stays writable until KVM_RESET_DIRTY_RINGS,
// KVM_GET_DIRTY_LOG or KVM_CLEAR_DIRTY_LOG re-protects it.

import type { BackendMemory } from '../backend';
import { MemFlag } from '../constants';

export class EmulatedMemory implements BackendMemory {
  readonly size: number;
  #buffer: ArrayBuffer;
  /** Views the guest model reads and writes through (empty once closed: KVM_RUN gets EFAULT). */
  u32: Uint32Array;
  u8: Uint8Array;

  constructor(size: number) {
    this.size = size;
    this.#buffer = new ArrayBuffer(size);
    this.u32 = new Uint32Array(this.#buffer);
    this.u8 = new Uint8Array(this.#buffer);
  }

  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  view(offset: number, length: number): Uint8Array {
    return this.#buffer.byteLength === 0 ? new Uint8Array(0) : new Uint8Array(this.#buffer, offset, length);
  }

  /** An ArrayBuffer gives no account of which pages were written: all of it may hold data. */
  dataRanges(): Float64Array {
    return Float64Array.of(0, this.size);
  }

  /** Detaches the buffer ("unmaps" it): old views read as empty, slots still naming it fault. */
  close(): void {
    if (this.#buffer.byteLength === 0) return;
    structuredClone(this.#buffer, { transfer: [this.#buffer] });
    this.u32 = new Uint32Array(0);
    this.u8 = new Uint8Array(0);
  }
}

/** Words of 32 bits for `npages` bits, rounded up to whole u64 words as the kernel allocates. */
export function bitmapWords32(npages: number): number {
  return Math.ceil(npages / 64) * 2;
}

export class Memslot {
  /** The kernel's slot number: (as_id << 16) | id, as ring entries carry it (rule 4). */
  readonly slot: number;
  readonly asId: number;
  readonly id: number;
  baseGfn: number;
  readonly npages: number;
  flags: number;
  readonly memory: EmulatedMemory;
  /** Byte offset of the slot's first page in `memory` (the userspace_addr stand-in). */
  readonly memoryOffset: number;
  /** The dirty bitmap, little-endian u64 words as u32 pairs; null when the slot has none. */
  dirtyBitmap: Uint32Array | null = null;
  /** Protection state: bit set = logged since last (re)protected, i.e. writable without a fault. */
  logged: Uint32Array | null = null;

  constructor(slot: number, baseGfn: number, npages: number, flags: number, memory: EmulatedMemory, memoryOffset: number) {
    this.slot = slot;
    this.asId = slot >>> 16;
    this.id = slot & 0xffff;
    this.baseGfn = baseGfn;
    this.npages = npages;
    this.flags = flags;
    this.memory = memory;
    this.memoryOffset = memoryOffset;
  }

  get logDirty(): boolean {
    return (this.flags & MemFlag.LogDirtyPages) !== 0;
  }

  get readonly(): boolean {
    return (this.flags & MemFlag.ReadOnly) !== 0;
  }

  /** Write-protects every page (logging just turned on, or the slot moved: no page is mapped writable). */
  protectAll(): void {
    this.logged = new Uint32Array(bitmapWords32(this.npages));
  }

  /** Re-protects page `rel`: the next guest write to it is logged again. */
  reprotect(rel: number): void {
    const logged = this.logged;
    if (logged !== null) logged[rel >>> 5] &= ~(1 << (rel & 31));
  }
}
