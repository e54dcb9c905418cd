// Small statistics for the benchmark: medians of repeated runs, and a growable sample buffer
// that the timed loops fill without allocating per sample.

/** The median of `xs` (the upper one for an even count, as the C reference takes it); NaN if empty. */
export function median(xs: ArrayLike<number>): number {
  const n = xs.length;
  if (n === 0) return NaN;
  const sorted = Float64Array.from(xs).sort();
  return sorted[n >> 1];
}

/** The q-quantile of `xs` (0 <= q <= 1; nearest rank, q = 0.5 is median()); NaN if empty. */
export function quantile(xs: ArrayLike<number>, q: number): number {
  const n = xs.length;
  if (n === 0) return NaN;
  const sorted = Float64Array.from(xs).sort();
  return sorted[Math.min(n - 1, Math.floor(q * n))];
}

/**
 * Samples recorded in a timed loop: a Float64Array that doubles when full, so recording a
 * sample allocates nothing except at the (rare, logarithmic) growth steps.
 */
export class Samples {
  #values: Float64Array;
  length = 0;

  constructor(initialCapacity = 4096) {
    this.#values = new Float64Array(Math.max(1, initialCapacity));
  }

  push(value: number): void {
    if (this.length === this.#values.length) {
      const grown = new Float64Array(this.#values.length * 2);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.length++] = value;
  }

  /** The recorded samples (a view, valid until the next push). */
  values(): Float64Array {
    return this.#values.subarray(0, this.length);
  }

  median(): number {
    return median(this.values());
  }
}

/** a / b, or null when either is missing or b is 0 (a ratio of absent measurements is absent). */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}
