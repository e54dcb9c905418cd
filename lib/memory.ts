import './dispose';
import type { BackendMemory } from './backend';
import { DirtyBitmap } from './bitmap';
import { PAGE_SIZE } from './constants';
import { fail } from './errors';
import { checkInstance, describe, checkUint } from './validate';

/**
 * Guest RAM: anonymous shared memory (a memfd, mapped MAP_SHARED | MAP_NORESERVE: untouched
 * pages cost nothing).
 * `buffer` is the memory itself, zero-copy: what the guest writes is there, and what the
 * host writes there the guest reads (host writes are never dirty-logged). Closing (or
 * closing its VM) detaches `buffer` and every view before unmapping, so stale views read
 * as empty instead of faulting. On Node 20 `buffer` exists up to 4 GiB; view() works for
 * any size.
 */
export class GuestMemory {
  /** @internal */
  readonly _handle: BackendMemory;
  /** @internal the VM that made it */
  readonly _owner: object;
  #closed = false;
  /**
   * The VMM dirty bitmap: pages written through write()/dmaWrite()/markVmmDirty() since the
   * last takeVmmDirty(), in DirtyBitmap's byte layout (bit i = page i of this memory); made
   * on the first write. #touched lists the bytes that became non-zero, so taking costs what
   * was written, not the memory's size.
   */
  #vmmBits: Uint8Array | null = null;
  #touched: number[] = [];

  /** @internal made by vm.createMemory() */
  constructor(handle: BackendMemory, owner: object) {
    this._handle = handle;
    this._owner = owner;
  }

  get buffer(): ArrayBuffer {
    return this._handle.buffer;
  }

  get size(): number {
    return this._handle.size;
  }

  /**
   * A zero-copy Uint8Array over bytes [offset, offset + length) of the memory (detached once
   * closed). Memory above 4 GiB has no single `buffer` on Node 20 (Node-API's external
   * ArrayBuffer limit); views of it work at any offset.
   */
  view(offset = 0, length = Math.min(this.size - offset, 2 ** 31)): Uint8Array {
    checkUint('offset', offset, this.size);
    checkUint('length', length, this.size - offset);
    if (this.#closed) fail('EBADF', undefined, 'the guest memory is closed');
    return this._handle.view(offset, length);
  }

  /**
   * Where the memory may hold data, found without reading it: byte ranges
   * `[start, end, start, end, ...]` (page-aligned, ascending), every byte outside them zero.
   * Native: the pages the kernel holds for the memory (written or read at some point; reading
   * an untouched page of shared memory allocates it, so a full copy should visit only these).
   * Emulator: the whole memory.
   */
  dataRanges(): Float64Array {
    if (this.#closed) fail('EBADF', undefined, 'the guest memory is closed');
    return this._handle.dataRanges();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Pages of the memory (size / 4096): the bits of its VMM dirty bitmap. */
  get pages(): number {
    return this.size / PAGE_SIZE;
  }

  /**
   * A VMM-side write (a device model, a loader): copies `bytes` to [offset, offset + length)
   * and marks the pages in the VMM dirty bitmap, which KVM's dirty log never sees (the kernel
   * logs guest writes only). Writes through `buffer` or view() are not tracked: use this, or
   * markVmmDirty() after them.
   */
  write(offset: number, bytes: Uint8Array): void {
    checkInstance('bytes', bytes, Uint8Array, 'a Uint8Array');
    this.#range(offset, bytes.length);
    if (bytes.length === 0) return;
    this.markVmmDirty(offset, bytes.length);
    this._handle.view(offset, bytes.length).set(bytes);
  }

  /**
   * A DMA-style VMM write: `fill` gets a zero-copy view of [offset, offset + length) to write
   * into (a device filling a receive buffer, say). The pages are marked dirty before `fill`
   * runs, so they are marked even if it throws halfway.
   */
  dmaWrite(offset: number, length: number, fill: (view: Uint8Array) => void): void {
    if (typeof fill !== 'function') throw new TypeError(`fill must be a function, got ${describe(fill)}`);
    this.#range(offset, length);
    if (length === 0) return;
    this.markVmmDirty(offset, length);
    fill(this._handle.view(offset, length));
  }

  /** Marks the pages of [offset, offset + length) in the VMM dirty bitmap (after a write through `buffer`). */
  markVmmDirty(offset: number, length: number): void {
    this.#range(offset, length);
    if (length === 0) return;
    const bits = (this.#vmmBits ??= new Uint8Array(DirtyBitmap.byteLength(this.pages)));
    const last = Math.floor((offset + length - 1) / PAGE_SIZE);
    for (let page = Math.floor(offset / PAGE_SIZE); page <= last; page++) {
      const byte = page >>> 3;
      if (bits[byte] === 0) this.#touched.push(byte);
      bits[byte] |= 1 << (page & 7);
    }
  }

  /**
   * Collects and clears the VMM dirty bitmap: ORs the pages written by the VMM since the last
   * call into `into` (a DirtyBitmap of at least `pages` bits; without one, a new one) and
   * returns it. Bit i is page i of this memory (for a slot starting memoryOffset bytes in, the
   * slot's page i - memoryOffset / 4096). ORing lets a consumer merge it straight into an
   * epoch's dirty set from KVM_GET_DIRTY_LOG or the ring, as Firecracker and Cloud Hypervisor do.
   * Costs what was written since the last call.
   */
  /** Pages were written through write(), dmaWrite() or markVmmDirty() since the last takeVmmDirty() (a check that costs nothing). */
  get vmmDirtyPending(): boolean {
    return this.#touched.length > 0;
  }

  takeVmmDirty(into?: DirtyBitmap): DirtyBitmap {
    if (this.#closed) fail('EBADF', undefined, 'the guest memory is closed');
    let out: DirtyBitmap;
    if (into === undefined) out = new DirtyBitmap(this.pages);
    else {
      out = DirtyBitmap.check('into', into);
      if (out.pages < this.pages) throw new RangeError(`into has ${out.pages} pages; the memory has ${this.pages}`);
    }
    const bits = this.#vmmBits;
    if (bits !== null && this.#touched.length > 0) {
      const dst = new Uint8Array(out.buffer);
      for (const byte of this.#touched) {
        dst[byte] |= bits[byte];
        bits[byte] = 0;
      }
      this.#touched = [];
    }
    return out;
  }

  #range(offset: number, length: number): void {
    checkUint('offset', offset, this.size);
    checkUint('length', length, this.size - offset);
    if (this.#closed) fail('EBADF', undefined, 'the guest memory is closed');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this._handle.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
