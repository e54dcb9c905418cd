import { checkInstance, checkUint } from './validate';

/**
 * A dirty-page bitmap in the kernel's format: little-endian u64 words, bit i = page i of
 * the slot. `buffer` is what KVM_GET_DIRTY_LOG writes and KVM_CLEAR_DIRTY_LOG reads.
 */
export class DirtyBitmap {
  readonly pages: number;
  readonly buffer: ArrayBuffer;
  readonly #bytes: Uint8Array;
  readonly #words: Uint32Array;

  constructor(pages: number) {
    checkUint('pages', pages, 2 ** 40);
    this.pages = pages;
    // Whole u64 words, as the kernel copies ALIGN(npages, 64) / 8 bytes.
    this.buffer = new ArrayBuffer(Math.ceil(pages / 64) * 8);
    this.#bytes = new Uint8Array(this.buffer);
    this.#words = new Uint32Array(this.buffer);
  }

  /** Bytes the kernel reads or writes for `pages` pages: ALIGN(pages, 64) / 8. */
  static byteLength(pages: number): number {
    return Math.ceil(pages / 64) * 8;
  }

  has(page: number): boolean {
    this.#check(page);
    return (this.#bytes[page >>> 3] & (1 << (page & 7))) !== 0;
  }

  set(page: number): this {
    this.#check(page);
    this.#bytes[page >>> 3] |= 1 << (page & 7);
    return this;
  }

  clear(page: number): this {
    this.#check(page);
    this.#bytes[page >>> 3] &= ~(1 << (page & 7));
    return this;
  }

  /** Clears every bit. */
  reset(): this {
    this.#bytes.fill(0);
    return this;
  }

  /** Number of set bits among the first `pages` (bits beyond are ignored). */
  count(): number {
    let n = 0;
    this.forEach(() => n++);
    return n;
  }

  /** Calls fn(page) for each set bit below `pages`, in increasing order. */
  forEach(fn: (page: number) => void): void {
    const words = this.#words;
    const bytes = this.#bytes;
    const n = words.length;
    const pages = this.pages;
    let w = 0;
    while (w < n) {
      // Skip clean pages 128 at a time (the scan dominates a large, sparse bitmap).
      if (w + 4 <= n && (words[w] | words[w + 1] | words[w + 2] | words[w + 3]) === 0) {
        w += 4;
        continue;
      }
      if (words[w] !== 0) {
        for (let b = w * 4; b < w * 4 + 4; b++) {
          let v = bytes[b];
          while (v !== 0) {
            const page = b * 8 + (31 - Math.clz32(v & -v));
            if (page >= pages) return;
            fn(page);
            v &= v - 1;
          }
        }
      }
      w++;
    }
  }

  /** The set pages as an array (for tests and small bitmaps). */
  toArray(): number[] {
    const out: number[] = [];
    this.forEach((p) => out.push(p));
    return out;
  }

  /** A bitmap with these pages set. */
  static of(pages: number, set: Iterable<number>): DirtyBitmap {
    const b = new DirtyBitmap(pages);
    for (const p of set) b.set(p);
    return b;
  }

  static check(name: string, value: unknown): DirtyBitmap {
    return checkInstance(name, value, DirtyBitmap, 'a DirtyBitmap');
  }

  #check(page: number): void {
    if (!Number.isInteger(page) || page < 0 || page >= this.pages) {
      if (typeof page !== 'number') throw new TypeError(`page must be a number, got ${typeof page}`);
      throw new RangeError(`page ${page} is outside the bitmap's ${this.pages} pages`);
    }
  }
}
