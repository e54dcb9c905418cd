// Distinct pages of a machine: one bit per page of every slot, and a running count. The dirty
// ring of a PVM host logs a page once per write (DESIGN §5), upstream KVM once per protect
// cycle; a rate counts each page once per period whatever the host logged.

import type { Machine } from '../checkpoint/machine';
import { PAGE_SIZE } from '../constants';

export class DistinctPages {
  /** distinct pages added since the last clear() */
  count = 0;
  readonly #words: Uint32Array[];

  /** `slotPages[i]`: pages of slot index i (machine.slots order). */
  constructor(slotPages: readonly number[]) {
    this.#words = slotPages.map((n) => new Uint32Array(Math.ceil(n / 32)));
  }

  static forMachine(m: Machine): DistinctPages {
    return new DistinctPages(m.slots.map((s) => s.layout.size / PAGE_SIZE));
  }

  /** Adds page `page` of slot index `slot`; true if it was not in the set. */
  add(slot: number, page: number): boolean {
    const w = this.#words[slot];
    const i = page >>> 5;
    const bit = 1 << (page & 31);
    if ((w[i] & bit) !== 0) return false;
    w[i] |= bit;
    this.count++;
    return true;
  }

  has(slot: number, page: number): boolean {
    return (this.#words[slot][page >>> 5] & (1 << (page & 31))) !== 0;
  }

  clear(): void {
    if (this.count === 0) return;
    for (const w of this.#words) w.fill(0);
    this.count = 0;
  }
}

/**
 * Kernel slot number (as_id << 16 | id, what a ring entry carries) -> index into
 * machine.slots, as a dense array (-1: not a slot of this machine). The slots of the
 * standard layout are numbered 0, 1, 2, ...
 */
export function slotIndexTable(m: Machine): Int32Array {
  const max = Math.max(...m.slots.map((s) => s.layout.slot));
  const t = new Int32Array(max + 1).fill(-1);
  m.slots.forEach((s, i) => (t[s.layout.slot] = i));
  return t;
}
