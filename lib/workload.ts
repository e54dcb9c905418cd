import type { WorkloadSpec } from './backend';
import { MAX_MAP_BYTES } from './guest/x86';
import { checkObject, checkU64, checkUint } from './validate';

/** Guest pages below this belong to the harness (page tables and code, lib/guest/). */
export const FIRST_WORKLOAD_PAGE = 512;
/** The harness identity-maps guest-physical memory up to here: workloads address pages below it. */
export const WORKLOAD_PAGE_LIMIT = MAX_MAP_BYTES / 4096;

/**
 * A program for the guest harness, loaded with vcpu.load(). The same writes, in the same
 * order, come from x86-64 machine code on the native backend and from a model on the
 * emulator. Page numbers are guest-physical (gfn), identity-mapped, and at least 512.
 */
export class Workload {
  readonly spec: WorkloadSpec;

  private constructor(spec: WorkloadSpec) {
    this.spec = Object.freeze(spec) as WorkloadSpec;
  }

  /**
   * Every epoch (1, 2, ...): write the epoch number (u64) to the first 8 bytes of pages
   * firstPage + i * stridePages for i < pages, then OUT port 0x10 with the epoch's low byte
   * (an ExitReason.Io exit ends the epoch).
   */
  static stride(options: { firstPage: number; pages: number; stridePages?: number }): Workload {
    const o = checkObject('options', options);
    const firstPage = workloadPage('firstPage', o.firstPage);
    const pages = checkUint('pages', o.pages, 2 ** 32 - 1);
    const stridePages = checkUint('stridePages', o.stridePages ?? 1, 2 ** 32 - 1);
    if (pages > 0) lastPage('the last page written', firstPage + (pages - 1) * stridePages);
    return new Workload({ kind: 'stride', firstPage, pages, stridePages });
  }

  /**
   * As stride, but each of pagesPerEpoch writes goes to page firstPage + (x mod spanPages),
   * x the next xorshift64 value (x ^= x << 13; x ^= x >> 7; x ^= x << 17; seed 0 taken as 1).
   * Pages may repeat within an epoch; the sequence continues across epochs.
   */
  static random(options: { firstPage: number; spanPages: number; pagesPerEpoch: number; seed?: number | bigint }): Workload {
    const o = checkObject('options', options);
    const firstPage = workloadPage('firstPage', o.firstPage);
    const spanPages = checkUint('spanPages', o.spanPages, 2 ** 32 - 1);
    if (spanPages === 0) throw new RangeError('spanPages must be at least 1');
    lastPage('firstPage + spanPages - 1', firstPage + spanPages - 1);
    const pagesPerEpoch = checkUint('pagesPerEpoch', o.pagesPerEpoch, 2 ** 32 - 1);
    let seed = checkU64('seed', o.seed ?? 1);
    if (seed === 0n) seed = 1n;
    return new Workload({ kind: 'random', firstPage, spanPages, pagesPerEpoch, seed });
  }

  /** Forever: increment the u64 at bytes 0-7 of `page`, then OUT port 0x11 with its low 32 bits (4 bytes). */
  static counter(options: { page: number }): Workload {
    const o = checkObject('options', options);
    return new Workload({ kind: 'counter', page: workloadPage('page', o.page) });
  }

  /** Loops forever without writing; stop it with vcpu.kick(). */
  static spin(): Workload {
    return new Workload({ kind: 'spin' });
  }
}

function lastPage(what: string, page: number): void {
  if (page >= WORKLOAD_PAGE_LIMIT) throw new RangeError(`${what} (${page}) is beyond the harness's identity map (pages below ${WORKLOAD_PAGE_LIMIT})`);
}

function workloadPage(name: string, value: unknown): number {
  const page = checkUint(name, value, WORKLOAD_PAGE_LIMIT - 1);
  if (page < FIRST_WORKLOAD_PAGE) throw new RangeError(`${name} must be >= ${FIRST_WORKLOAD_PAGE} (pages 0..511 belong to the guest harness), got ${page}`);
  return page;
}
