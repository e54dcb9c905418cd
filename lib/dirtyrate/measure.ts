// measureDirtyRate(): how fast a running guest dirties memory, in the three ways QEMU's
// calc-dirty-rate offers:
//   'dirty-ring'     per vCPU, from the pages each vCPU's ring logged; a page is counted once
//                    per period however often the host logged it (a PVM host logs every
//                    write, so the entries alone give the write rate, not the dirty rate)
//   'dirty-bitmap'   per VM, from KVM_GET_DIRTY_LOG (and KVM_CLEAR_DIRTY_LOG with manual
//                    protect) at the start and the end of each period
//   'page-sampling'  no dirty log at all: a sample of pages hashed at the start and the end
// A rate is distinct pages dirtied in the window / the window's seconds, in MB/s (MiB/s, as
// QEMU: units.ts). The window runs from the first collection to the last; a period's figure
// counts a page once in that period, the window's once in the whole window.

import { DirtyBitmap } from '../bitmap';
import type { DirtyPages } from '../dirty-pages';
import type { Machine } from '../checkpoint/machine';
import { DistinctPages, slotIndexTable } from './pages';
import { GuestRunner, type RunPolicy } from './runner';
import { DEFAULT_SAMPLE_PAGES_PER_GIB, PageSampler } from './sampling';
import { pagesPerSecToMBps } from './units';

export type DirtyRateMode = 'dirty-ring' | 'dirty-bitmap' | 'page-sampling';
export const DIRTY_RATE_MODES: readonly DirtyRateMode[] = ['dirty-ring', 'dirty-bitmap', 'page-sampling'];

export interface VcpuDirtyRate {
  id: number;
  MBps: number;
  pagesPerSec: number;
  /** distinct pages this vCPU dirtied */
  pages: number;
  /** ring entries it pushed (every write on a PVM host: the write rate) */
  entries: number;
}

export interface DirtyRateResult {
  mode: DirtyRateMode;
  /** the window's length: from the first collection to the last */
  seconds: number;
  MBps: number;
  pagesPerSec: number;
  /** distinct pages dirtied (page-sampling: the estimate) */
  pages: number;
  /** performance.now() at the first and the last collection */
  startedAt: number;
  endedAt: number;
  /** 'dirty-ring': one per vCPU (the VM's figure is their union: a page two vCPUs wrote counts once) */
  vcpus?: VcpuDirtyRate[];
  /** 'page-sampling': pages hashed, how many changed, and the estimate's standard error */
  samplePages?: number;
  sampleDirty?: number;
  stdErrMBps?: number;
  /** with periodMs: each period's figures, in order */
  periods?: DirtyRateResult[];
}

export interface DirtyRateMeterOptions {
  /** page-sampling: samples per GiB of guest data (default 512, QEMU's) */
  samplePagesPerGiB?: number;
  /** page-sampling: seed of the choice of pages (default: a random one) */
  seed?: number;
}

export interface MeasureDirtyRateOptions extends DirtyRateMeterOptions {
  seconds: number;
  mode: DirtyRateMode;
  /** also close a period every periodMs (result.periods, onPeriod) */
  periodMs?: number;
  onPeriod?: (period: DirtyRateResult) => void;
  /** ends the window early (the result covers the time until then) */
  signal?: AbortSignal;
  /** when nothing runs the machine: the policies of the GuestRunner made for the window (a pacer, a limit) */
  policies?: RunPolicy[];
}

interface Counts {
  pages: number;
  vcpus?: { pages: number; entries: number }[];
  samplePages?: number;
  sampleDirty?: number;
  stdErrPages?: number;
}

/** One way of counting dirty pages: armed by begin(), read (and re-armed) by lap(). */
interface Counter {
  begin(): void;
  /** the period since the last lap (or begin) and the window since begin */
  lap(): { period: Counts; window: Counts };
  end(): void;
}

/**
 * A dirty-rate meter on a running machine: start(), then lap() at each period's end (the
 * period since the last lap), then stop() (the whole window). 'dirty-ring' needs the machine
 * to run under a GuestRunner (it receives each vCPU's harvested entries from it); the other
 * modes only need the guest to run. 'dirty-bitmap' takes the bitmap's pages for itself: no
 * other bitmap user (a checkpointer) may share the machine while it measures.
 */
export class DirtyRateMeter {
  readonly mode: DirtyRateMode;
  readonly #counter: Counter;
  #startedAt = NaN;
  #lapAt = NaN;
  #stopped = false;
  readonly #periods: DirtyRateResult[] = [];

  constructor(target: Machine | GuestRunner, mode: DirtyRateMode, options: DirtyRateMeterOptions = {}) {
    if (!DIRTY_RATE_MODES.includes(mode)) throw new RangeError(`mode must be one of ${DIRTY_RATE_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
    const runner = target instanceof GuestRunner ? target : GuestRunner.of(target as Machine);
    const machine = target instanceof GuestRunner ? target.machine : (target as Machine);
    if (typeof machine !== 'object' || machine === null || !Array.isArray(machine.slots)) throw new TypeError('target must be a Machine or a GuestRunner');
    this.mode = mode;
    switch (mode) {
      case 'dirty-ring':
        if (machine.mode !== 'ring') throw new RangeError(`'dirty-ring' needs a machine with the dirty ring (this one tracks with '${machine.mode}'); use 'dirty-bitmap'`);
        if (!runner) throw new RangeError("'dirty-ring' measures a machine run by a GuestRunner (it harvests the rings); start one, or use measureDirtyRate(), which does");
        this.#counter = new RingCounter(runner);
        break;
      case 'dirty-bitmap':
        if (machine.mode === 'ring') throw new RangeError("'dirty-bitmap' needs a machine without the dirty ring (KVM_GET_DIRTY_LOG is refused once the ring is on); use 'dirty-ring'");
        this.#counter = new BitmapCounter(machine);
        break;
      default:
        this.#counter = new SampleCounter(new PageSampler(machine, options.samplePagesPerGiB ?? DEFAULT_SAMPLE_PAGES_PER_GIB, options.seed ?? randomSeed()));
    }
  }

  start(): void {
    if (!Number.isNaN(this.#startedAt)) throw new Error('the meter is started already');
    this.#counter.begin();
    this.#startedAt = this.#lapAt = performance.now();
  }

  /** Closes the period since start() or the last lap(); the next one begins. */
  lap(): DirtyRateResult {
    const { period } = this.#lap();
    this.#periods.push(period);
    return period;
  }

  /**
   * Ends the window and returns its figures since start(). If lap() was called, the time
   * since the last lap is a last period, and `periods` lists them all.
   */
  stop(): DirtyRateResult {
    const { period, window } = this.#lap();
    this.#stopped = true;
    this.#counter.end();
    if (this.#periods.length > 0) {
      this.#periods.push(period);
      window.periods = this.#periods;
    }
    return window;
  }

  #lap(): { period: DirtyRateResult; window: DirtyRateResult } {
    if (Number.isNaN(this.#startedAt)) throw new Error('start() the meter first');
    if (this.#stopped) throw new Error('the meter is stopped (a meter measures one window)');
    const c = this.#counter.lap();
    const now = performance.now();
    const period = this.#result(c.period, this.#lapAt, now);
    this.#lapAt = now;
    return { period, window: this.#result(c.window, this.#startedAt, now) };
  }

  #result(c: Counts, from: number, to: number): DirtyRateResult {
    const seconds = (to - from) / 1000;
    const perSec = (pages: number) => (seconds > 0 ? pages / seconds : 0);
    const r: DirtyRateResult = {
      mode: this.mode, seconds, MBps: pagesPerSecToMBps(perSec(c.pages)), pagesPerSec: perSec(c.pages), pages: c.pages,
      startedAt: from, endedAt: to,
    };
    if (c.vcpus) {
      const ids = (this.#counter as RingCounter).ids;
      r.vcpus = c.vcpus.map((v, i) => ({ id: ids[i], MBps: pagesPerSecToMBps(perSec(v.pages)), pagesPerSec: perSec(v.pages), pages: v.pages, entries: v.entries }));
    }
    if (c.samplePages !== undefined) {
      r.samplePages = c.samplePages;
      r.sampleDirty = c.sampleDirty;
      r.stdErrMBps = pagesPerSecToMBps(perSec(c.stdErrPages ?? 0));
    }
    return r;
  }
}

/** Per-vCPU and whole-VM distinct pages from the entries the runner harvests. */
class RingCounter implements Counter, RunPolicy {
  readonly ids: number[];
  readonly #runner: GuestRunner;
  readonly #table: Int32Array;
  readonly #index = new Map<number, number>();
  /** per vCPU, then the VM: [period, window] */
  readonly #sets: [DistinctPages, DistinctPages][];
  readonly #entries: { period: number; window: number }[];
  #remove: (() => void) | null = null;

  constructor(runner: GuestRunner) {
    const m = runner.machine;
    this.#runner = runner;
    this.ids = m.vcpus.map((v) => v.id);
    this.ids.forEach((id, i) => this.#index.set(id, i));
    this.#table = slotIndexTable(m);
    this.#sets = [...this.ids, -1].map(() => [DistinctPages.forMachine(m), DistinctPages.forMachine(m)]);
    this.#entries = this.ids.map(() => ({ period: 0, window: 0 }));
  }

  begin(): void {
    // What the rings hold now was written before the window: collect it for the runner's
    // other policies, then start counting.
    this.#runner.harvestAll();
    this.#remove = this.#runner.addPolicy(this);
  }

  onDirty(vcpuId: number, batch: DirtyPages): void {
    const i = this.#index.get(vcpuId);
    if (i === undefined) return;
    const [vp, vw] = this.#sets[i];
    const [mp, mw] = this.#sets[this.#sets.length - 1];
    const table = this.#table;
    for (let e = 0; e < batch.length; e++) {
      const s = batch.slots[e];
      const k = s < table.length ? table[s] : -1;
      if (k < 0) continue; // a slot the machine no longer has
      const page = batch.offsets[e];
      // Counted in the window once per page: a page new to the vCPU's window may still be known to the VM's.
      if (vp.add(k, page)) mp.add(k, page);
      if (vw.add(k, page)) mw.add(k, page);
    }
    this.#entries[i].period += batch.length;
    this.#entries[i].window += batch.length;
  }

  lap(): { period: Counts; window: Counts } {
    // Everything logged up to now, also by vCPUs still in KVM_RUN.
    this.#runner.harvestAll();
    const vm = this.#sets[this.#sets.length - 1];
    const period: Counts = { pages: vm[0].count, vcpus: this.ids.map((_, i) => ({ pages: this.#sets[i][0].count, entries: this.#entries[i].period })) };
    const window: Counts = { pages: vm[1].count, vcpus: this.ids.map((_, i) => ({ pages: this.#sets[i][1].count, entries: this.#entries[i].window })) };
    for (const [p] of this.#sets) p.clear();
    for (const e of this.#entries) e.period = 0;
    return { period, window };
  }

  end(): void {
    this.#remove?.();
    this.#remove = null;
  }
}

/** The VM's logged slots: KVM_GET_DIRTY_LOG (+ KVM_CLEAR_DIRTY_LOG) per period, ORed into the window. */
class BitmapCounter implements Counter {
  readonly #m: Machine;
  readonly #slots: { slot: number; pages: number; bitmap: DirtyBitmap; words: Uint32Array; window: Uint32Array }[];

  constructor(m: Machine) {
    this.#m = m;
    this.#slots = m.slots.filter((s) => s.layout.logged).map((s) => {
      const pages = s.layout.size / 4096;
      const bitmap = new DirtyBitmap(pages);
      return { slot: s.layout.slot, pages, bitmap, words: new Uint32Array(bitmap.buffer), window: new Uint32Array(bitmap.buffer.byteLength / 4) };
    });
  }

  /** Fetches (and re-arms) every slot's bitmap. */
  #fetch(): void {
    const clear = this.#m.mode === 'bitmap-clear';
    for (const s of this.#slots) {
      this.#m.vm.getDirtyLog(s.slot, s.bitmap);
      // With manual protect GET only copies; CLEAR re-arms exactly what it returned.
      if (clear) this.#m.vm.clearDirtyLog(s.slot, 0, s.pages, s.bitmap);
    }
  }

  begin(): void {
    this.#fetch(); // dropped: dirtied before the window
    for (const s of this.#slots) s.window.fill(0);
  }

  lap(): { period: Counts; window: Counts } {
    this.#fetch();
    let period = 0;
    let window = 0;
    for (const s of this.#slots) {
      const w = s.words;
      const acc = s.window;
      for (let i = 0; i < w.length; i++) {
        const v = w[i];
        if (v !== 0) {
          period += popcount(v);
          acc[i] |= v;
        }
        if (acc[i] !== 0) window += popcount(acc[i]);
      }
    }
    return { period: { pages: period }, window: { pages: window } };
  }

  end(): void {}
}

class SampleCounter implements Counter {
  readonly #s: PageSampler;
  readonly #start: Uint32Array;
  readonly #lap: Uint32Array;
  readonly #now: Uint32Array;

  constructor(s: PageSampler) {
    this.#s = s;
    this.#start = new Uint32Array(s.samplePages);
    this.#lap = new Uint32Array(s.samplePages);
    this.#now = new Uint32Array(s.samplePages);
  }

  begin(): void {
    this.#s.hash(this.#start);
    this.#lap.set(this.#start);
  }

  lap(): { period: Counts; window: Counts } {
    const s = this.#s;
    s.hash(this.#now);
    const counts = (before: Uint32Array): Counts => {
      const dirty = PageSampler.changed(before, this.#now);
      const e = s.estimate(dirty);
      return { pages: e.pages, samplePages: s.samplePages, sampleDirty: dirty, stdErrPages: e.stdErrPages };
    };
    const period = counts(this.#lap);
    const window = counts(this.#start);
    this.#lap.set(this.#now);
    return { period, window };
  }

  end(): void {}
}

function popcount(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

function randomSeed(): number {
  return Math.floor(Math.random() * 0x1_0000_0000);
}

/**
 * Measures the dirty rate of `target` for `seconds`: a machine (run for the measurement by a
 * GuestRunner of its own with options.policies, unless one runs it already, which the meter
 * then joins) or a GuestRunner. With periodMs, every period's figures too (onPeriod as each
 * ends).
 */
export async function measureDirtyRate(target: Machine | GuestRunner, options: MeasureDirtyRateOptions): Promise<DirtyRateResult> {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object ({ seconds, mode })');
  const { seconds, periodMs, onPeriod, signal } = options;
  if (typeof seconds !== 'number') throw new TypeError('seconds must be a number');
  if (!(seconds > 0) || !Number.isFinite(seconds)) throw new RangeError(`seconds must be a positive finite number, got ${seconds}`);
  if (periodMs !== undefined && (typeof periodMs !== 'number' || !(periodMs > 0) || !Number.isFinite(periodMs))) {
    throw new RangeError(`periodMs must be a positive finite number, got ${periodMs}`);
  }
  if (onPeriod !== undefined && typeof onPeriod !== 'function') throw new TypeError('onPeriod must be a function');
  let runner = target instanceof GuestRunner ? target : GuestRunner.of(target);
  const own = runner === undefined;
  if (!runner) {
    runner = new GuestRunner(target as Machine, options.policies);
    runner.start();
  }
  try {
    const meter = new DirtyRateMeter(runner, options.mode, options);
    meter.start();
    const end = performance.now() + seconds * 1000;
    let next = periodMs === undefined ? end : Math.min(end, performance.now() + periodMs);
    const stopped = runner.done();
    for (;;) {
      const aborted = await sleepUntil(next, stopped, signal);
      if (runner.error !== null) throw runner.error;
      if (!runner.running) throw new Error('the machine\'s GuestRunner stopped during the measurement');
      const now = performance.now();
      if (aborted || now >= end) break;
      if (periodMs !== undefined && now >= next) {
        onPeriod?.(meter.lap());
        next = Math.min(end, next + periodMs);
      }
    }
    const window = meter.stop();
    // The last period ends with the window.
    if (window.periods) onPeriod?.(window.periods[window.periods.length - 1]);
    else if (periodMs !== undefined) {
      window.periods = [{ ...window }];
      onPeriod?.(window.periods[0]);
    }
    return window;
  } finally {
    if (own) await runner.stop();
  }
}

/** Resolves at `at` (performance.now() ms), or early when the runner stops or the signal aborts; true if aborted. */
function sleepUntil(at: number, stopped: Promise<void>, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const finish = (aborted: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(aborted);
    };
    const onAbort = () => finish(true);
    const timer = setTimeout(() => finish(false), Math.max(0, at - performance.now()));
    signal?.addEventListener('abort', onAbort);
    void stopped.then(() => finish(false));
  });
}
