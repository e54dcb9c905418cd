// Page sampling, as QEMU's calc-dirty-rate mode page-sampling does it: no dirty logging at
// all; a fixed number of pages per GiB of guest data, chosen at random, is hashed at the start
// and again at the end, and the share of samples whose hash changed, times the data's pages,
// estimates the pages dirtied. It sees a page whose contents changed, not a page written with
// the bytes it held, and its error is the sampling's: the estimate of a fraction p from n
// samples has a standard error of sqrt(p (1 - p) / n) (less the finite-population share),
// which the result reports (stdErrMBps). QEMU's default of 512 samples per GiB is loose for
// small rates: where 1 % of a 1 GiB guest is dirtied, 512 samples see about 5 dirty ones.
//
// Reading a page of guest memory allocates it (a memfd is sparse): the sampler never reads a
// page outside memory.dataRanges(). Such a page is all zeros; its hash is the zero page's.
// At the end it reads it only if it holds data by then (the guest wrote it, which allocated it
// already).

import { PAGE_SIZE } from '../constants';
import { crc32c } from '../checkpoint/crc32c';
import type { Machine, MachineSlot } from '../checkpoint/machine';

/** QEMU's default (DIRTYRATE_DEFAULT_SAMPLE_PAGES): 512 pages per GiB. */
export const DEFAULT_SAMPLE_PAGES_PER_GIB = 512;
const GIB = 2 ** 30;
const ZERO_HASH = crc32c(new Uint8Array(PAGE_SIZE));

/** mulberry32: a small seeded generator; the sample only needs to be uniform, not secret. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

/** `n` distinct integers of [0, total), uniformly (Floyd's algorithm), in increasing order. */
export function samplePages(total: number, n: number, random: () => number): Float64Array {
  const chosen = new Set<number>();
  const out = new Float64Array(n);
  let k = 0;
  for (let j = total - n; j < total; j++) {
    const t = Math.floor(random() * (j + 1));
    const pick = chosen.has(t) ? j : t;
    chosen.add(pick);
    out[k++] = pick;
  }
  return out.sort();
}

export class PageSampler {
  /** pages sampled */
  readonly samplePages: number;
  /** data pages the sample stands for */
  readonly totalPages: number;
  readonly #slots: MachineSlot[];
  /** per sample: index into #slots and page of that slot */
  readonly #slot: Uint32Array;
  readonly #page: Float64Array;
  readonly #hash: Uint32Array;

  constructor(machine: Machine, pagesPerGiB = DEFAULT_SAMPLE_PAGES_PER_GIB, seed = 1) {
    if (typeof pagesPerGiB !== 'number') throw new TypeError('samplePagesPerGiB must be a number');
    if (!Number.isSafeInteger(pagesPerGiB) || pagesPerGiB < 1 || pagesPerGiB > GIB / PAGE_SIZE) {
      throw new RangeError(`samplePagesPerGiB must be an integer in [1, ${GIB / PAGE_SIZE}], got ${pagesPerGiB}`);
    }
    // The data slots: the pages the guest writes, as the ring and bitmap modes see them.
    this.#slots = machine.slots.filter((s) => s.layout.logged);
    const pages = this.#slots.map((s) => s.layout.size / PAGE_SIZE);
    this.totalPages = pages.reduce((a, b) => a + b, 0);
    const n = Math.min(this.totalPages, Math.max(1, Math.round((this.totalPages * PAGE_SIZE * pagesPerGiB) / GIB)));
    this.samplePages = n;
    const picks = samplePages(this.totalPages, n, mulberry32(seed));
    this.#slot = new Uint32Array(n);
    this.#page = new Float64Array(n);
    let s = 0;
    let base = 0;
    for (let i = 0; i < n; i++) {
      while (picks[i] >= base + pages[s]) base += pages[s++];
      this.#slot[i] = s;
      this.#page[i] = picks[i] - base;
    }
    this.#hash = new Uint32Array(n);
  }

  /** Hashes every sampled page now, into `into` (one u32 per sample). */
  hash(into: Uint32Array = this.#hash): Uint32Array {
    let i = 0;
    const n = this.samplePages;
    while (i < n) {
      const s = this.#slot[i];
      const slot = this.#slots[s];
      const ranges = slot.memory.dataRanges();
      let r = 0;
      for (; i < n && this.#slot[i] === s; i++) {
        const at = this.#page[i] * PAGE_SIZE;
        while (r < ranges.length && ranges[r + 1] <= at) r += 2;
        const held = r < ranges.length && ranges[r] <= at;
        into[i] = held ? crc32c(slot.bytes.subarray(at, at + PAGE_SIZE)) : ZERO_HASH;
      }
    }
    return into;
  }

  /** Samples whose hash in `now` differs from `before`. */
  static changed(before: Uint32Array, now: Uint32Array): number {
    let d = 0;
    for (let i = 0; i < now.length; i++) if (before[i] !== now[i]) d++;
    return d;
  }

  /**
   * Estimated dirty pages from `dirty` changed samples, and its standard error: the total
   * pages times the sampled fraction, sqrt(p (1 - p) / n) x (N - n) / (N - 1) for the error.
   */
  estimate(dirty: number): { pages: number; stdErrPages: number } {
    const n = this.samplePages;
    const total = this.totalPages;
    const p = dirty / n;
    const fpc = total > 1 ? (total - n) / (total - 1) : 0;
    return { pages: p * total, stdErrPages: total * Math.sqrt(((p * (1 - p)) / n) * fpc) };
  }
}
