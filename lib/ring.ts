import { DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET, DIRTY_GFN_SIZE } from './constants';
import { DirtyPages } from './dirty-pages';
import { fail } from './errors';
import { checkInstance, checkUint } from './validate';

/** A native batch harvester (lib/backend.ts BackendVcpu.harvestRing). */
export type BatchHarvest = (fetch: number, max: number, slots: Uint32Array, offsets: Float64Array, start: number) => number;

const U32_PER_ENTRY = DIRTY_GFN_SIZE / 4;
/** Harvests of fewer ready entries than this stay in JS (measured break-even: ~40). */
const BATCH_MIN = 48;

/**
 * The ring protocol in JavaScript, as native/ring.cc's HarvestDirtyGfns: from free-running
 * index `fetch` of the struct kvm_dirty_gfn array `u32` (as u32 words), collects up to `max`
 * entries while their flags are exactly DIRTY into slots[start + i] / offsets[start + i], each
 * read with an acquire load of its flags and handed back with a release store of RESET.
 * Returns the count. (The emulator's batch harvest runs it on its rings.)
 */
export function harvestGfns(u32: Uint32Array, fetch: number, max: number, slots: Uint32Array, offsets: Float64Array, start: number): number {
  const mask = u32.length / U32_PER_ENTRY - 1;
  let at = start;
  let n = 0;
  while (n < max) {
    const e = ((fetch + n) & mask) * U32_PER_ENTRY;
    // Acquire: slot and offset are valid once the kernel's flags store is seen (it wrote them before, smp_wmb()).
    if (Atomics.load(u32, e) !== DIRTY_GFN_F_DIRTY) break;
    slots[at] = u32[e + 1];
    offsets[at] = u32[e + 2] + u32[e + 3] * 0x1_0000_0000;
    // Release: the kernel may reuse the entry only after our reads of it.
    Atomics.store(u32, e, DIRTY_GFN_F_RESET);
    at++;
    n++;
  }
  return n;
}

/**
 * One vCPU's dirty ring: struct kvm_dirty_gfn { u32 flags; u32 slot; u64 offset }[entries],
 * shared with the kernel (or the emulator). Entries go 0 -> DIRTY (the kernel pushed a page)
 * -> RESET (we collected it) -> 0 (KVM_RESET_DIRTY_RINGS re-protected the page).
 *
 * The kernel's indexes are private, so the ring keeps its own free-running fetch index, as
 * the selftests and QEMU do. harvest() reads each entry's flags with an acquire load and,
 * after copying slot and offset, hands the entry back with a release store of RESET
 * (KVM_CAP_DIRTY_LOG_RING_ACQ_REL's contract; Atomics in JS are sequentially consistent,
 * which is stronger). It allocates nothing per entry.
 */
export class DirtyRing {
  readonly entries: number;
  #buffer: ArrayBuffer;
  #u32: Uint32Array;
  #fetch = 0;
  #closed = false;
  readonly #batch: BatchHarvest | undefined;

  /** @internal built by Vcpu; `batch` is the native backend's one-call harvest, when it has one. */
  constructor(buffer: ArrayBuffer, batch?: BatchHarvest) {
    this.#buffer = buffer;
    this.#u32 = new Uint32Array(buffer);
    this.entries = buffer.byteLength / DIRTY_GFN_SIZE;
    this.#batch = batch;
  }

  /** The mapped ring, in the kernel's layout; detached (zero length) once the vCPU is closed. */
  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  /** The free-running index of the next entry to collect. */
  get fetchIndex(): number {
    return this.#fetch;
  }

  /**
   * Collects DIRTY entries in ring order into `out`, marking each RESET, and returns how
   * many it took: at most `max` (default: the room left in `out`), never past `out`'s
   * capacity. Stops at the first entry that is not DIRTY. Call vm.resetDirtyRings()
   * afterwards to re-protect the pages, and read their contents only after that.
   */
  harvest(out: DirtyPages, max?: number): number {
    if (this.#closed) fail('EBADF', undefined, 'the vCPU of this dirty ring is closed');
    checkInstance('out', out, DirtyPages, 'a DirtyPages');
    let limit = out.capacity - out.length;
    if (max !== undefined) limit = Math.min(limit, checkUint('max', max));
    if (limit === 0) return 0;
    // The native batch costs one call (~0.8 µs here) and ~3 ns per entry; the Atomics loop
    // ~18 ns per entry. So the batch serves large harvests only: those with at least
    // BATCH_MIN entries ready, seen by one acquire load of the BATCH_MIN-th entry's flags.
    const n =
      this.#batch && limit >= BATCH_MIN && this.#isDirty(this.#fetch + BATCH_MIN - 1)
        ? this.#batch(this.#fetch, limit, out.slots, out.offsets, out.length)
        : this.#harvestAtomics(out, limit);
    this.#fetch = (this.#fetch + n) >>> 0;
    out.length += n;
    return n;
  }

  /**
   * Collects every ring's DIRTY entries into `out`, ring after ring, in JavaScript (this
   * class's Atomics loop): what vm.harvestDirtyRings() does in one backend call, and the
   * reference that call is tested against. counts[i] = entries taken from rings[i] (at most
   * one lap of it, never past `out`'s capacity). Returns the total.
   */
  static harvestAll(rings: readonly DirtyRing[], out: DirtyPages, counts: Uint32Array): number {
    checkInstance('out', out, DirtyPages, 'a DirtyPages');
    checkInstance('counts', counts, Uint32Array, 'a Uint32Array');
    if (counts.length < rings.length) throw new RangeError(`counts has ${counts.length} elements for ${rings.length} rings`);
    rings.forEach((r, i) => {
      checkInstance(`rings[${i}]`, r, DirtyRing, 'a DirtyRing');
      if (r.#closed) fail('EBADF', undefined, `the vCPU of rings[${i}] is closed`);
    });
    let total = 0;
    rings.forEach((r, i) => {
      const n = harvestGfns(r.#u32, r.#fetch, Math.min(r.entries, out.capacity - out.length), out.slots, out.offsets, out.length);
      r.#fetch = (r.#fetch + n) >>> 0;
      out.length += n;
      counts[i] = n;
      total += n;
    });
    return total;
  }

  /** @internal a batch of the VM's harvest (vm.harvestDirtyRings) took `n` entries from the fetch index on. */
  _advance(n: number): void {
    this.#fetch = (this.#fetch + n) >>> 0;
  }

  /** Entries ready to collect from the fetch index on, without collecting them. */
  pending(): number {
    if (this.#closed) fail('EBADF', undefined, 'the vCPU of this dirty ring is closed');
    let n = 0;
    while (n < this.entries && this.#isDirty(this.#fetch + n)) n++;
    return n;
  }

  /**
   * After an overfill (the kernel pushed past the ring's size and overwrote entries, DESIGN
   * §5): the kernel counts the lost pushes as entries still in use, so it now pushes `gap`
   * entries beyond the fetch index. Finds that gap (the first DIRTY entry from the fetch
   * index on), marks the gap's entries RESET so that the next KVM_RESET_DIRTY_RINGS consumes
   * them too (the kernel looks only at the RESET bit, kernel-semantics rule 36) and moves the
   * fetch index to the first new entry. Returns the gap (0: in step), or -1 when no entry is
   * DIRTY yet (nothing pushed since: call again later).
   */
  resync(): number {
    if (this.#closed) fail('EBADF', undefined, 'the vCPU of this dirty ring is closed');
    let gap = 0;
    while (gap < this.entries && !this.#isDirty(this.#fetch + gap)) gap++;
    if (gap === this.entries) return -1;
    for (let i = 0; i < gap; i++) Atomics.store(this.#u32, ((this.#fetch + i) & (this.entries - 1)) * U32_PER_ENTRY, DIRTY_GFN_F_RESET);
    this.#fetch = (this.#fetch + gap) >>> 0;
    return gap;
  }

  /** Acquire load of entry `index`'s flags (free-running index), compared exactly to DIRTY. */
  #isDirty(index: number): boolean {
    return Atomics.load(this.#u32, (index & (this.entries - 1)) * U32_PER_ENTRY) === DIRTY_GFN_F_DIRTY;
  }

  #harvestAtomics(out: DirtyPages, limit: number): number {
    return harvestGfns(this.#u32, this.#fetch, limit, out.slots, out.offsets, out.length);
  }

  /** @internal the vCPU closed (its backend detached the buffer): every later call is EBADF. */
  _close(): void {
    this.#closed = true;
    this.#u32 = new Uint32Array(0);
  }
}
