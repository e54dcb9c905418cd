// Collecting the pages dirtied since the last collection, the same way for the three modes,
// into one deduplicated page set.
//
// Order (kernel-semantics rule 61, KVM api.rst §7.36): first COLLECT the dirty pages (harvest
// the rings / KVM_GET_DIRTY_LOG), then RE-ARM them (KVM_RESET_DIRTY_RINGS /
// KVM_CLEAR_DIRTY_LOG; plain KVM_GET_DIRTY_LOG re-arms as it collects), and only THEN read
// their contents. A guest write that lands after the read is then logged again and goes into
// the next epoch. Read first and re-arm after, and a write between the two is in neither the
// copy nor the next log: the replica would silently miss it. With the vCPUs stopped the order
// makes no difference; during live migration's pre-copy rounds the guest keeps running and
// it is what makes the copy correct.

import { DirtyBitmap } from '../bitmap';
import { MemFlag } from '../constants';
import { DirtyPages } from '../dirty-pages';
import type { DirtyRing } from '../ring';
import { forEachPageThatMayHoldData, type Machine } from './machine';

/**
 * A set of guest pages without duplicates, in the order they were added, allocated once:
 * entry i is page `pages[i]` of machine slot `slotIndex[i]` (index into machine.slots).
 */
export class PageSet {
  count = 0;
  slotIndex: Uint32Array;
  pages: Uint32Array;
  /** stamps[s][p] === generation: page p of slot s is in the set */
  readonly #stamps: Uint32Array[];
  #generation = 1;

  constructor(slotPages: readonly number[], initialCapacity = 1024) {
    this.#stamps = slotPages.map((n) => new Uint32Array(n));
    this.slotIndex = new Uint32Array(initialCapacity);
    this.pages = new Uint32Array(initialCapacity);
  }

  /** Adds page `page` of slot `slot` unless it is in already (the ring may repeat a page, DESIGN §5). */
  add(slot: number, page: number): void {
    const stamps = this.#stamps[slot];
    if (stamps[page] === this.#generation) return;
    stamps[page] = this.#generation;
    if (this.count === this.pages.length) this.#grow();
    this.slotIndex[this.count] = slot;
    this.pages[this.count] = page;
    this.count++;
  }

  /** Adds every page of `other` (a set of the same machine). */
  addAll(other: PageSet): void {
    for (let i = 0; i < other.count; i++) this.add(other.slotIndex[i], other.pages[i]);
  }

  clear(): void {
    this.count = 0;
    if (++this.#generation === 0xffff_ffff) {
      for (const s of this.#stamps) s.fill(0);
      this.#generation = 1;
    }
  }

  #grow(): void {
    const n = this.pages.length * 2;
    const s = new Uint32Array(n);
    s.set(this.slotIndex);
    const p = new Uint32Array(n);
    p.set(this.pages);
    this.slotIndex = s;
    this.pages = p;
  }
}

export class DirtyTracker {
  readonly #m: Machine;
  readonly #rings: DirtyRing[];
  readonly #batch: DirtyPages | null;
  /** entries each ring gave in the last collection */
  readonly #counts: Uint32Array;
  /** kernel slot number -> index into machine.slots */
  readonly #slotIndex = new Map<number, number>();
  readonly #logged: { index: number; slot: number; pages: number; bitmap: DirtyBitmap }[];
  /** ring entries collected by the last collect() (duplicates included) */
  lastRingEntries = 0;
  /** the last collect() found a ring completely full: it may have lost entries, so it took every logged page */
  lastOverfilled = false;
  /** collections that found a ring completely full (each a full copy of the logged slots) */
  overfills = 0;
  /** rings whose fetch index lost step with the kernel's in an overfill, until resync() finds it */
  readonly #desynced = new Set<DirtyRing>();
  /** per machine slot: the VMM dirty bitmap taken from its memory (made on the first VMM write) */
  readonly #vmm: (DirtyBitmap | undefined)[] = [];

  constructor(machine: Machine) {
    this.#m = machine;
    machine.slots.forEach((s, i) => this.#slotIndex.set(s.layout.slot, i));
    this.#logged = machine.slots
      .map((s, index) => ({ index, slot: s.layout.slot, pages: s.layout.size / 4096, logged: s.layout.logged }))
      .filter((s) => s.logged)
      .map((s) => ({ index: s.index, slot: s.slot, pages: s.pages, bitmap: new DirtyBitmap(s.pages) }));
    this.#counts = new Uint32Array(machine.vcpus.length);
    if (machine.mode === 'ring') {
      this.#rings = machine.vcpus.map((v) => {
        if (!v.dirtyRing) throw new RangeError(`vCPU ${v.id} has no dirty ring (the ring must be enabled before the vCPUs are created)`);
        return v.dirtyRing;
      });
      this.#batch = new DirtyPages(this.#rings.reduce((n, r) => n + r.entries, 0));
    } else {
      this.#rings = [];
      this.#batch = null;
    }
  }

  /** A PageSet sized for this machine's slots. */
  newPageSet(): PageSet {
    return new PageSet(this.#m.slots.map((s) => s.layout.size / 4096));
  }

  /**
   * Adds every page dirtied since the last call to `into` and re-arms those pages (collect,
   * then re-arm: see the top of this file). Read the pages' contents only after this returns.
   */
  collect(into: PageSet): void {
    if (this.#batch) this.#collectRings(into, this.#batch);
    else this.#collectBitmaps(into);
    this.collectVmmDirty(into);
  }

  /**
   * The pages the VMM wrote through the library (memory.write(), dmaWrite(), markVmmDirty():
   * a device's DMA), which KVM's log never sees, merged in as Firecracker and Cloud Hypervisor
   * merge theirs. Any slot, logged or not. Costs nothing when the VMM wrote nothing.
   */
  collectVmmDirty(into: PageSet): void {
    this.#m.slots.forEach((s, k) => {
      if (!s.memory.vmmDirtyPending) return;
      const bits = (this.#vmm[k] ??= new DirtyBitmap(s.layout.size / 4096));
      s.memory.takeVmmDirty(bits).forEach((p) => into.add(k, p));
      bits.reset();
    });
  }

  /**
   * The rings that lost step in an overfill and have had no push since (resync() found no
   * DIRTY entry). A vCPU whose ring overfilled by more than its soft limit can never run on:
   * the kernel counts the lost entries as in use; a caller whose vCPU keeps exiting
   * DirtyRingFull while its ring is listed here has met that.
   */
  get desynced(): readonly DirtyRing[] {
    return [...this.#desynced];
  }

  #collectRings(into: PageSet, batch: DirtyPages): void {
    let vcpus = this.#m.vcpus;
    let rings = this.#rings;
    if (this.#desynced.size > 0) {
      // Nothing pushed since the overfill: with every page re-protected then, nothing was written.
      for (const ring of this.#desynced) if (ring.resync() >= 0) this.#desynced.delete(ring);
      vcpus = vcpus.filter((_, i) => !this.#desynced.has(this.#rings[i]));
      rings = rings.filter((r) => !this.#desynced.has(r));
    }
    // Every ring in one call (the batch holds a full lap of each: one call always suffices).
    batch.clear();
    const entries = this.#m.vm.harvestDirtyRings(vcpus, batch, this.#counts);
    let overfilled = false;
    rings.forEach((ring, i) => {
      // Every entry DIRTY: the kernel may have pushed past the ring's size and overwritten
      // entries we never saw (a PVM host does when one run writes more pages than the ring
      // holds: DESIGN §5). Nothing says which pages those were.
      if (this.#counts[i] === ring.entries) {
        overfilled = true;
        this.#desynced.add(ring);
      }
    });
    for (let i = 0; i < entries; i++) {
      const k = this.#slotIndex.get(batch.slots[i]);
      // An entry of a slot this machine does not know (deleted since) has nothing to copy.
      if (k !== undefined) into.add(k, batch.offsets[i]);
    }
    this.lastRingEntries = entries;
    this.lastOverfilled = overfilled;
    if (overfilled) this.takeAllLogged(into);
    // Re-arm what was harvested: KVM_RESET_DIRTY_RINGS re-protects the pages and frees the entries.
    if (entries > 0) this.#m.vm.resetDirtyRings();
  }

  /**
   * After a ring overfilled (entries lost, nothing says which): every logged page that may
   * hold data is taken as dirty, a full copy, never an incomplete epoch. The pages of the lost
   * entries were never re-protected and would take later writes unlogged: logging off and on
   * again write-protects each slot whole. Counted in `overfills`.
   */
  takeAllLogged(into: PageSet): void {
    this.overfills++;
    for (const s of this.#logged) {
      const slot = this.#m.slots[s.index];
      const region = { slot: s.slot, guestPhysAddr: slot.layout.guestPhysAddr, memory: slot.memory };
      this.#m.vm.setUserMemoryRegion({ ...region, flags: 0 });
      this.#m.vm.setUserMemoryRegion({ ...region, flags: MemFlag.LogDirtyPages });
      forEachPageThatMayHoldData(slot, (p) => into.add(s.index, p));
    }
  }

  /** The machine.slots index of a kernel slot number (ring entries carry those), or undefined. */
  slotIndexOf(slot: number): number | undefined {
    return this.#slotIndex.get(slot);
  }

  /**
   * 'ring' mode with WITH_BITMAP (arm64): the pages written without a vCPU, from each logged
   * slot's bitmap (KVM_GET_DIRTY_LOG). The kernel's advice (api.rst): read it as the very last
   * step, after the vCPUs stopped and the VMM saved its device state.
   */
  collectBackupBitmap(into: PageSet): void {
    if (!this.#m.ringWithBitmap) return;
    for (const s of this.#logged) {
      this.#m.vm.getDirtyLog(s.slot, s.bitmap);
      const k = s.index;
      s.bitmap.forEach((p) => into.add(k, p));
    }
  }

  #collectBitmaps(into: PageSet): void {
    const vm = this.#m.vm;
    const clear = this.#m.mode === 'bitmap-clear';
    for (const s of this.#logged) {
      // Without manual protect, KVM_GET_DIRTY_LOG returns the bits and re-arms those pages atomically.
      vm.getDirtyLog(s.slot, s.bitmap);
      // With manual protect, GET only reads; KVM_CLEAR_DIRTY_LOG re-arms exactly the pages it returned.
      if (clear) vm.clearDirtyLog(s.slot, 0, s.pages, s.bitmap);
      const k = s.index;
      s.bitmap.forEach((p) => into.add(k, p));
    }
  }
}
