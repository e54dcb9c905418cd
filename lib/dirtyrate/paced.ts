// A workload whose dirty rate is known without measuring it: the host paces the epochs of
// Workload.stride / Workload.random so each vCPU writes pages at a given rate, and keeps a log
// of every epoch it let run (when it ended, which pages it wrote). truth(t0, t1) then says how
// many distinct pages the guest dirtied in any window from that log alone, by the same clock
// a meter uses, so a measurement can be compared with what the guest really did even on a
// loaded machine (a late timer lowers the rate achieved, and the log says so).
//
// Both workloads keep their state in registers and exit at every epoch's end (OUT 0x10), so
// the host decides, between epochs, when the next one runs and how many pages it writes (r8):
//   stride  sweeps the vCPU's span: each epoch writes the next K pages (rdi moved forward),
//           so every page of a window is distinct until the sweep wraps around the span;
//   random  leaves rdi and the xorshift state (r9) alone: pages repeat by chance, and the
//           log replays the sequence to count them exactly.
// An epoch of K pages runs once a token bucket filled at the rate holds K; K is the rate x
// 2.5 ms (at least 1, at most maxPagesPerEpoch), so an epoch straddling a window's edge moves
// its count by 0.25 % of a second's pages at most. rateMBps Infinity runs the epochs back to
// back (the guest's full speed), still logged.

import { PAGE_SIZE } from '../constants';
import { xorshift64Pair } from '../guest/model';
import type { Exit } from '../vcpu';
import { Workload } from '../workload';
import type { Kvm } from '../kvm';
import { DATA_GFN, chooseMode, createMachine, dataGfnFor, type DirtyMode, type Machine } from '../checkpoint/machine';
import { EPOCH_PORT, type RunPolicy } from './runner';
import { checkMBps, mbpsToPagesPerSec, pagesPerSecToMBps } from './units';

/** An epoch lasts about this long at the paced rate (K = rate x EPOCH_SECONDS). */
const EPOCH_SECONDS = 0.0025;
/** How much of a late start the bucket makes up for. */
const CATCH_UP_SECONDS = 0.05;
/** Epochs kept per vCPU for truth(): at 400 epochs/s, about 10 minutes. */
const LOG_EPOCHS = 1 << 18;

export interface PacedWorkloadOptions {
  /** 'stride' (default): a sweep, every page distinct until it wraps; 'random': uniform over the span */
  kind?: 'stride' | 'random';
  /** MB/s of page writes per vCPU (Infinity: full speed): one for every vCPU, or one each */
  rateMBps: number | number[];
  /** vCPUs (default: the length of rateMBps, or 1) */
  vcpus?: number;
  /** pages of each vCPU's own region (vCPU i writes [firstPage + i * spanPages, + spanPages)) */
  spanPages: number;
  /** first gfn of vCPU 0's region (default DATA_GFN, the standard layout's first data page) */
  firstPage?: number;
  /** the most pages one epoch writes, i.e. one run's ring entries (default 64) */
  maxPagesPerEpoch?: number;
  /** random: xorshift seed of vCPU 0 (vCPU i gets seed + i); default 1 */
  seed?: number;
}

/** What the guest did in a window, from the pacer's log. */
export interface TrueRate {
  startedAt: number;
  endedAt: number;
  seconds: number;
  /** distinct pages written in the window (over all vCPUs; their regions are disjoint) */
  pages: number;
  /** page writes, repeats included */
  writes: number;
  MBps: number;
  pagesPerSec: number;
  vcpus: { id: number; pages: number; writes: number; MBps: number; writesPerSec: number }[];
}

interface Pace {
  region: number;
  rate: number; // pages/s, Infinity at full speed
  tokens: number;
  refilled: number;
  /** pages of the epoch in progress (set by prepareRun, 0 between epochs) */
  current: number;
  /** r8 as the guest has it */
  r8: number;
  /** stride: next position in the span; random: xorshift state before the next epoch */
  pos: number;
  xLo: number;
  xHi: number;
  /** epoch in progress: where it started (stride position, or state) */
  startA: number;
  startB: number;
  // the log, a circular buffer
  times: Float64Array;
  counts: Uint32Array;
  a: Uint32Array;
  b: Uint32Array;
  logged: number;
  writes: number;
  stamps: Uint32Array | null;
  generation: number;
}

export class PacedWorkload implements RunPolicy {
  readonly kind: 'stride' | 'random';
  readonly spanPages: number;
  readonly firstPage: number;
  readonly maxPagesPerEpoch: number;
  /** the workload of each vCPU, to load (createMachine({ workloads })) */
  readonly workloads: Workload[];
  readonly #paces: Pace[];
  #machine: Machine | null = null;
  readonly #x = new Uint32Array(2);

  constructor(options: PacedWorkloadOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    const kind = options.kind ?? 'stride';
    if (kind !== 'stride' && kind !== 'random') throw new RangeError(`kind must be 'stride' or 'random', got ${JSON.stringify(kind)}`);
    const rates = Array.isArray(options.rateMBps) ? options.rateMBps : null;
    const n = options.vcpus ?? rates?.length ?? 1;
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`vcpus must be a positive integer, got ${n}`);
    if (rates && rates.length !== n) throw new RangeError(`${rates.length} rates for ${n} vCPUs`);
    const span = options.spanPages;
    if (typeof span !== 'number') throw new TypeError('spanPages must be a number');
    if (!Number.isSafeInteger(span) || span < 1) throw new RangeError(`spanPages must be a positive integer, got ${span}`);
    const maxK = options.maxPagesPerEpoch ?? 64;
    if (!Number.isSafeInteger(maxK) || maxK < 1 || maxK > span) throw new RangeError(`maxPagesPerEpoch must be an integer in [1, spanPages = ${span}], got ${maxK}`);
    const seed = options.seed ?? 1;
    if (!Number.isSafeInteger(seed) || seed < 0 || seed + n > 2 ** 32) throw new RangeError(`seed must be an integer in [0, 2^32 - vcpus], got ${seed}`);
    this.kind = kind;
    this.spanPages = span;
    this.firstPage = options.firstPage ?? DATA_GFN;
    this.maxPagesPerEpoch = maxK;
    this.#paces = [];
    this.workloads = [];
    for (let i = 0; i < n; i++) {
      const rate = mbpsToPagesPerSec(checkMBps(rates ? `rateMBps[${i}]` : 'rateMBps', rates ? rates[i] : options.rateMBps, true));
      const region = this.firstPage + i * span;
      // Loaded with the largest epoch: writesPerRun() sizes the ring for it.
      this.workloads.push(kind === 'stride'
        ? Workload.stride({ firstPage: region, pages: maxK, stridePages: 1 })
        : Workload.random({ firstPage: region, spanPages: span, pagesPerEpoch: maxK, seed: seed + i }));
      this.#paces.push({
        region, rate, tokens: 0, refilled: NaN, current: 0, r8: maxK, pos: 0,
        xLo: (seed + i) || 1, xHi: 0, startA: 0, startB: 0,
        times: new Float64Array(LOG_EPOCHS), counts: new Uint32Array(LOG_EPOCHS), a: new Uint32Array(LOG_EPOCHS), b: new Uint32Array(LOG_EPOCHS),
        logged: 0, writes: 0, stamps: null, generation: 0,
      });
    }
  }

  /** Data pages the regions take: vcpus x spanPages from firstPage. */
  get dataPages(): number {
    return this.#paces.length * this.spanPages;
  }

  /** The machine whose vCPUs run these workloads (machine.vcpus[i] runs workloads[i]). */
  attach(machine: Machine): this {
    if (machine.vcpus.length < this.#paces.length) throw new RangeError(`the machine has ${machine.vcpus.length} vCPUs; the pacer has ${this.#paces.length}`);
    this.#paces.forEach((_, i) => {
      if (machine.vcpus[i].id !== i) throw new RangeError(`machine.vcpus[${i}] has id ${machine.vcpus[i].id}; the pacer's vCPU i must have id i`);
      if (machine.workloads[i] !== this.workloads[i]) throw new RangeError(`vCPU ${machine.vcpus[i].id} does not run the pacer's workload ${i}`);
    });
    this.#machine = machine;
    return this;
  }

  /** MB/s of writes vCPU `id` is paced at (Infinity: full speed). */
  rate(id: number): number {
    return pagesPerSecToMBps(this.#pace(id).rate);
  }

  /** Changes vCPU `id`'s rate from its next epoch. */
  setRate(id: number, mbps: number): void {
    const p = this.#pace(id);
    p.rate = mbpsToPagesPerSec(checkMBps('mbps', mbps, true));
    p.tokens = Math.min(p.tokens, this.#cap(p));
  }

  /** Page writes vCPU `id`'s finished epochs made. */
  writes(id: number): number {
    return this.#pace(id).writes;
  }

  /** K for the pace: the rate x 2.5 ms, in [1, maxPagesPerEpoch]. */
  #k(p: Pace): number {
    if (p.rate === Infinity) return this.maxPagesPerEpoch;
    return Math.max(1, Math.min(this.maxPagesPerEpoch, Math.round(p.rate * EPOCH_SECONDS)));
  }

  /**
   * Tokens saved while waiting, at most: 50 ms of the rate (two epochs at least), so timers
   * that fire late on a loaded host cost no rate, and a long stall is not made up at once.
   */
  #cap(p: Pace): number {
    return Math.max(2 * this.#k(p), p.rate * CATCH_UP_SECONDS);
  }

  #refill(p: Pace, now: number): void {
    if (!Number.isNaN(p.refilled)) p.tokens = Math.min(this.#cap(p), p.tokens + (p.rate * (now - p.refilled)) / 1000);
    p.refilled = now;
  }

  beforeRun(id: number, now: number): number {
    const p = this.#paces[id];
    if (!p || p.current > 0 || p.rate === Infinity) return 0; // an epoch in progress finishes unpaced
    this.#refill(p, now);
    const k = this.#k(p);
    return p.tokens >= k ? 0 : ((k - p.tokens) / p.rate) * 1000;
  }

  prepareRun(id: number, now: number): void {
    const p = this.#paces[id];
    if (!p || p.current > 0) return;
    const m = this.#machine;
    if (!m) throw new Error('PacedWorkload: attach(machine) before running it');
    const k = this.#k(p);
    if (p.rate !== Infinity) {
      this.#refill(p, now);
      p.tokens -= k;
    }
    const vcpu = m.vcpus[id];
    if (this.kind === 'stride') {
      if (p.pos + k > this.spanPages) p.pos = 0;
      p.startA = p.pos;
      vcpu.setRegs(p.r8 === k ? { rdi: BigInt((p.region + p.pos) * PAGE_SIZE) } : { rdi: BigInt((p.region + p.pos) * PAGE_SIZE), r8: BigInt(k) });
      p.pos += k;
    } else {
      p.startA = p.xLo;
      p.startB = p.xHi;
      if (p.r8 !== k) vcpu.setRegs({ r8: BigInt(k) });
    }
    p.r8 = k;
    p.current = k;
  }

  afterRun(id: number, exit: Exit, _ranMs: number, now: number): void {
    const p = this.#paces[id];
    if (!p || p.current === 0 || exit.io?.port !== EPOCH_PORT) return; // mid-epoch (a kick, a full ring): it goes on
    const at = p.logged % LOG_EPOCHS;
    p.times[at] = now;
    p.counts[at] = p.current;
    p.a[at] = p.startA;
    p.b[at] = p.startB;
    p.logged++;
    p.writes += p.current;
    if (this.kind === 'random') {
      const x = this.#x;
      x[0] = p.xLo;
      x[1] = p.xHi;
      for (let i = 0; i < p.current; i++) xorshift64Pair(x[0], x[1], x);
      p.xLo = x[0];
      p.xHi = x[1];
    }
    p.current = 0;
  }

  /**
   * The guest's true dirty rate in (t0, t1] (performance.now() ms): the distinct pages of
   * the epochs that ended in it, per vCPU and in all. An epoch is counted where it ended.
   */
  truth(t0: number, t1: number): TrueRate {
    if (typeof t0 !== 'number' || typeof t1 !== 'number') throw new TypeError('t0 and t1 must be numbers (performance.now() ms)');
    if (!(t1 > t0)) throw new RangeError(`the window must end after it starts (t0 ${t0}, t1 ${t1})`);
    const seconds = (t1 - t0) / 1000;
    let pages = 0;
    let writes = 0;
    const vcpus = this.#paces.map((p, id) => {
      const r = this.#window(p, t0, t1);
      pages += r.pages;
      writes += r.writes;
      return { id, pages: r.pages, writes: r.writes, MBps: pagesPerSecToMBps(r.pages / seconds), writesPerSec: r.writes / seconds };
    });
    return { startedAt: t0, endedAt: t1, seconds, pages, writes, MBps: pagesPerSecToMBps(pages / seconds), pagesPerSec: pages / seconds, vcpus };
  }

  #window(p: Pace, t0: number, t1: number): { pages: number; writes: number } {
    const first = Math.max(0, p.logged - LOG_EPOCHS);
    if (first > 0 && p.times[first % LOG_EPOCHS] > t0) throw new RangeError('the window starts before the oldest epoch the pacer still logs');
    // The times are increasing: find the first epoch that ended after t0.
    let lo = first;
    let hi = p.logged;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (p.times[mid % LOG_EPOCHS] <= t0) lo = mid + 1;
      else hi = mid;
    }
    p.stamps ??= new Uint32Array(this.spanPages);
    if (++p.generation === 0xffff_ffff) {
      p.stamps.fill(0);
      p.generation = 1;
    }
    const stamps = p.stamps;
    const g = p.generation;
    const span = this.spanPages;
    const x = this.#x;
    let pages = 0;
    let writes = 0;
    for (let e = lo; e < p.logged; e++) {
      const at = e % LOG_EPOCHS;
      if (p.times[at] > t1) break;
      const k = p.counts[at];
      writes += k;
      if (this.kind === 'stride') {
        for (let i = 0, page = p.a[at]; i < k; i++, page++) {
          if (stamps[page] !== g) {
            stamps[page] = g;
            pages++;
          }
        }
      } else {
        x[0] = p.a[at];
        x[1] = p.b[at];
        for (let i = 0; i < k; i++) {
          xorshift64Pair(x[0], x[1], x);
          const page = mod64(x[0], x[1], span);
          if (stamps[page] !== g) {
            stamps[page] = g;
            pages++;
          }
        }
      }
    }
    return { pages, writes };
  }

  #pace(id: number): Pace {
    const p = this.#paces[id];
    if (!p) throw new RangeError(`vCPU ${id} is not paced here (vCPUs 0..${this.#paces.length - 1})`);
    return p;
  }
}

/** (hi * 2^32 + lo) mod d for d <= 2^32, exactly: in 16-bit steps so every product stays below 2^53. */
export function mod64(lo: number, hi: number, d: number): number {
  let r = hi % d;
  r = (r * 0x10000 + (lo >>> 16)) % d;
  return (r * 0x10000 + (lo & 0xffff)) % d;
}

/**
 * Ring bytes for vCPUs whose runs write at most `writesPerRun` pages: the host's smallest ring
 * whose soft limit holds them (kvm.dirtyRingLimits(): 64 entries in reserve, 576 on an Intel
 * host with PML). The GuestRunner empties the ring after every run, so that is enough.
 */
export function dirtyRingBytes(kvm: Kvm, writesPerRun: number): number {
  return kvm.dirtyRingLimits().bytesFor(writesPerRun);
}

/**
 * A machine of the standard layout whose vCPUs run a PacedWorkload (one region of spanPages
 * each), its rings sized for one epoch; returns both, the pacer attached. mode 'none': no
 * dirty logging at all (a 'bitmap' machine whose data slots have KVM_MEM_LOG_DIRTY_PAGES
 * off), for page sampling as QEMU does it, or as a baseline.
 */
export function createPacedMachine(kvm: Kvm, options: PacedWorkloadOptions & { mode?: DirtyMode | 'auto' | 'none' }): { machine: Machine; paced: PacedWorkload } {
  const probe = new PacedWorkload(options);
  const dataPages = probe.dataPages;
  const dataGfn = dataGfnFor(dataPages);
  const paced = dataGfn === probe.firstPage ? probe : new PacedWorkload({ ...options, firstPage: dataGfn });
  const mode = options.mode === 'none' ? 'bitmap' : chooseMode(kvm, options.mode ?? 'auto');
  const machine = createMachine(kvm, {
    dataPages, dataGfn, vcpus: paced.workloads.length, mode, workloads: paced.workloads,
    ringBytes: mode === 'ring' ? dirtyRingBytes(kvm, paced.maxPagesPerEpoch) : undefined,
  });
  if (options.mode === 'none') stopDirtyLogging(machine);
  return { machine, paced: paced.attach(machine) };
}

/** Turns KVM_MEM_LOG_DIRTY_PAGES off on the machine's data slots (a flags-only KVM_SET_USER_MEMORY_REGION). */
export function stopDirtyLogging(machine: Machine): void {
  for (const s of machine.slots) {
    if (s.layout.logged) machine.vm.setUserMemoryRegion({ slot: s.layout.slot, guestPhysAddr: s.layout.guestPhysAddr, memory: s.memory, flags: 0 });
  }
}
