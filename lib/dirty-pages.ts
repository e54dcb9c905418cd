import { checkUint } from './validate';

/**
 * A caller-owned batch of dirty-ring entries, filled by DirtyRing.harvest() without
 * allocating: entry i is page `offsets[i]` of memory slot `slots[i]` (slot = as_id << 16 | id,
 * offset = gfn - the slot's first gfn, exactly as struct kvm_dirty_gfn carries them).
 */
export class DirtyPages {
  readonly capacity: number;
  readonly slots: Uint32Array;
  readonly offsets: Float64Array;
  /** Entries filled so far. */
  length = 0;

  constructor(capacity: number) {
    checkUint('capacity', capacity, 1 << 26);
    this.capacity = capacity;
    this.slots = new Uint32Array(capacity);
    this.offsets = new Float64Array(capacity);
  }

  /** Room left before harvest() stops. */
  get room(): number {
    return this.capacity - this.length;
  }

  /** Forgets the entries (the arrays keep their memory). */
  clear(): void {
    this.length = 0;
  }
}
