// A per-vCPU dirty limit (QEMU's set-vcpu-dirty-limit): a quota in MB/s of distinct pages
// dirtied, held by keeping the vCPU out of KVM_RUN.
//
// The controller is a token bucket on what the vCPU really dirtied: every page it dirties is
// charged once per period (the ring may log it many times, DESIGN §5), the balance refills at
// the quota, and a vCPU in debt waits until it is paid (beforeRun). That is an integral
// controller: whatever a run overshot is waited off before the next one, so the rate over a
// period is the quota from the first period on, within one run's pages (and the 2 % of
// credit a vCPU may save up, BURST_SHARE). Runs are bounded two
// ways, whichever comes first: by the ring (a full ring exits, and the loop asks again), and
// by a time slice (sliceMs: the loop kicks a run that would write past the balance, at the
// speed the vCPU was seen to dirty at; 1 ms at the finest, Node's timer resolution).
// QEMU instead sleeps a fixed time after each ring-full exit and adjusts it once a second,
// so its finest step is a ring's worth of pages.
//
// The limit is a RunPolicy: a GuestRunner applies it; any other loop can too, with
// beforeRun(), sliceMs(), account() (or onDirty() with the harvested entries) and afterRun().

import type { DirtyPages } from '../dirty-pages';
import type { Machine } from '../checkpoint/machine';
import type { Exit } from '../vcpu';
import { DistinctPages, slotIndexTable } from './pages';
import type { RunPolicy } from './runner';
import { checkMBps, mbpsToPagesPerSec, pagesPerSecToMBps } from './units';

/**
 * Credit a vCPU may save while it dirties less than its quota (a timer that fired late, a
 * host that was busy): 2 % of a period's quota, so a period never gets more than that above
 * the limit from catching up.
 */
const BURST_SHARE = 0.02;
/** The finest time slice (Node's timers resolve 1 ms). */
export const MIN_SLICE_MS = 1;
const MAX_SLICE_MS = 1000;
/** Periods remembered per vCPU. */
const HISTORY = 256;

export interface DirtyLimitOptions {
  /** ms of one accounting period: a page is charged once per period (default 1000, QEMU's) */
  periodMs?: number;
  /** the clock (default performance.now) */
  clock?: () => number;
}

/** One finished period of a vCPU. */
export interface DirtyLimitPeriod {
  vcpuId: number;
  startedAt: number;
  endedAt: number;
  /** the quota when the period ended (null: no limit) */
  limitMBps: number | null;
  /** distinct pages dirtied in the period */
  pages: number;
  MBps: number;
}

interface VcpuState {
  id: number;
  quota: number; // pages/s; 0: no limit
  balance: number; // pages
  refilled: number;
  /** distinct pages per ms in KVM_RUN, as last seen (0: unknown) */
  speed: number;
  runPages: number;
  periodStart: number;
  periodPages: number;
  seen: DistinctPages;
  history: DirtyLimitPeriod[];
}

export class DirtyLimit implements RunPolicy {
  readonly periodMs: number;
  readonly #clock: () => number;
  readonly #table: Int32Array;
  readonly #vcpus = new Map<number, VcpuState>();
  readonly #wakers = new Set<() => void>();

  /** A limit for the vCPUs of `machine`, which must track with the dirty ring (per-vCPU accounting). */
  constructor(machine: Machine, options: DirtyLimitOptions = {}) {
    if (typeof machine !== 'object' || machine === null || !Array.isArray(machine.vcpus)) throw new TypeError('machine must be a Machine');
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    if (machine.mode !== 'ring') throw new RangeError(`a dirty limit needs the dirty ring, which says which vCPU dirtied a page (this machine tracks with '${machine.mode}')`);
    const periodMs = options.periodMs ?? 1000;
    if (typeof periodMs !== 'number' || !(periodMs > 0) || !Number.isFinite(periodMs)) throw new RangeError(`periodMs must be a positive finite number, got ${periodMs}`);
    if (options.clock !== undefined && typeof options.clock !== 'function') throw new TypeError('clock must be a function');
    this.periodMs = periodMs;
    this.#clock = options.clock ?? (() => performance.now());
    this.#table = slotIndexTable(machine);
    const now = this.#clock();
    for (const v of machine.vcpus) {
      this.#vcpus.set(v.id, {
        id: v.id, quota: 0, balance: 0, refilled: now, speed: 0, runPages: 0,
        periodStart: now, periodPages: 0, seen: DistinctPages.forMachine(machine), history: [],
      });
    }
  }

  /** Holds vCPU `vcpuId` to `mbps` MB/s from now (also while it runs; a new quota replaces the old). */
  set(vcpuId: number, mbps: number): void {
    const v = this.#state(vcpuId);
    const quota = mbpsToPagesPerSec(checkMBps('mbps', mbps));
    const now = this.#clock();
    if (v.quota === 0) {
      // A new limit starts its own period: pages dirtied before it do not make later writes to them free.
      this.#roll(v, now);
      this.#close(v, now);
      v.balance = 0;
      v.refilled = now;
    } else {
      this.#refill(v, now);
    }
    v.quota = quota;
    v.balance = Math.min(v.balance, this.#burst(v));
    this.#wake();
  }

  /** Lifts the limit of `vcpuId` (of every vCPU without an argument). */
  clear(vcpuId?: number): void {
    const all = vcpuId === undefined ? [...this.#vcpus.values()] : [this.#state(vcpuId)];
    for (const v of all) v.quota = 0;
    this.#wake();
  }

  /** The quota of `vcpuId` in MB/s, or null when it has none. */
  get(vcpuId: number): number | null {
    const v = this.#state(vcpuId);
    return v.quota === 0 ? null : pagesPerSecToMBps(v.quota);
  }

  /** The periods of `vcpuId` that ended, oldest first (the last 256). */
  periods(vcpuId: number): DirtyLimitPeriod[] {
    const v = this.#state(vcpuId);
    this.#roll(v, this.#clock());
    return v.history.slice();
  }

  /** Distinct pages `vcpuId` dirtied in the period under way. */
  currentPages(vcpuId: number): number {
    const v = this.#state(vcpuId);
    this.#roll(v, this.#clock());
    return v.periodPages;
  }

  subscribe(wake: () => void): () => void {
    this.#wakers.add(wake);
    return () => this.#wakers.delete(wake);
  }

  /** ms `vcpuId` must stay out of KVM_RUN: until its debt is paid at its quota (0: it may run). */
  beforeRun(vcpuId: number, now = this.#clock()): number {
    const v = this.#vcpus.get(vcpuId);
    if (!v) return 0;
    this.#roll(v, now);
    if (v.quota === 0) return 0;
    this.#refill(v, now);
    return v.balance < 0 ? (-v.balance / v.quota) * 1000 : 0;
  }

  prepareRun(vcpuId: number): void {
    const v = this.#vcpus.get(vcpuId);
    if (v) v.runPages = 0;
  }

  /** The longest the next run may last: the time to dirty the balance at the vCPU's speed (at least 1 ms). */
  sliceMs(vcpuId: number, now = this.#clock()): number {
    const v = this.#vcpus.get(vcpuId);
    if (!v || v.quota === 0) return Infinity;
    if (v.speed === 0) return MIN_SLICE_MS; // unknown yet: the first run teaches it
    this.#refill(v, now);
    const ms = Math.max(0, v.balance) / v.speed;
    return Math.min(MAX_SLICE_MS, Math.max(MIN_SLICE_MS, ms));
  }

  /** Charges `pages` distinct pages to `vcpuId` (a loop that counts its own pages). */
  account(vcpuId: number, pages: number, now = this.#clock()): void {
    const v = this.#state(vcpuId);
    if (typeof pages !== 'number' || !Number.isSafeInteger(pages) || pages < 0) throw new RangeError(`pages must be a non-negative integer, got ${pages}`);
    this.#roll(v, now);
    this.#charge(v, pages, now);
  }

  /** Charges the entries harvested from `vcpuId`'s ring, each page once per period. */
  onDirty(vcpuId: number, batch: DirtyPages, now = this.#clock()): void {
    const v = this.#vcpus.get(vcpuId);
    if (!v) return;
    this.#roll(v, now);
    const table = this.#table;
    let fresh = 0;
    for (let i = 0; i < batch.length; i++) {
      const s = batch.slots[i];
      const k = s < table.length ? table[s] : -1;
      if (k >= 0 && v.seen.add(k, batch.offsets[i])) fresh++;
    }
    this.#charge(v, fresh, now);
  }

  afterRun(vcpuId: number, _exit: Exit, ranMs: number): void {
    const v = this.#vcpus.get(vcpuId);
    // A run that dirtied nothing (a kick consumed at once) says nothing of the speed.
    if (!v || v.runPages === 0 || !(ranMs > 0)) return;
    const seen = v.runPages / ranMs;
    v.speed = v.speed === 0 ? seen : 0.7 * v.speed + 0.3 * seen;
  }

  #charge(v: VcpuState, pages: number, now: number): void {
    if (pages === 0) return;
    v.periodPages += pages;
    v.runPages += pages;
    if (v.quota === 0) return;
    this.#refill(v, now);
    v.balance -= pages;
  }

  #refill(v: VcpuState, now: number): void {
    const dt = now - v.refilled;
    if (dt > 0) {
      v.balance = Math.min(this.#burst(v), v.balance + (v.quota * dt) / 1000);
      v.refilled = now;
    }
  }

  /** Pages of credit `v` may hold. */
  #burst(v: VcpuState): number {
    return (v.quota * BURST_SHARE * this.periodMs) / 1000;
  }

  /** Closes the periods that ended by `now`. */
  #roll(v: VcpuState, now: number): void {
    const p = this.periodMs;
    while (now >= v.periodStart + p) {
      const end = v.periodStart + p;
      this.#close(v, end);
      // Periods that passed with no call at all dirtied nothing: the one record above stands for them.
      if (now >= end + p) v.periodStart = now - ((now - end) % p);
    }
  }

  /** Ends the period under way at `end`: its figures go to the history, the page set empties. */
  #close(v: VcpuState, end: number): void {
    const ms = end - v.periodStart;
    if (ms > 0) {
      v.history.push({
        vcpuId: v.id, startedAt: v.periodStart, endedAt: end, limitMBps: v.quota === 0 ? null : pagesPerSecToMBps(v.quota),
        pages: v.periodPages, MBps: pagesPerSecToMBps((v.periodPages * 1000) / ms),
      });
      if (v.history.length > HISTORY) v.history.shift();
    }
    v.periodPages = 0;
    v.seen.clear();
    v.periodStart = end;
  }

  #state(vcpuId: number): VcpuState {
    if (typeof vcpuId !== 'number') throw new TypeError(`vcpuId must be a number, got ${typeof vcpuId}`);
    const v = this.#vcpus.get(vcpuId);
    if (!v) throw new RangeError(`no vCPU ${vcpuId} in this machine (ids ${[...this.#vcpus.keys()].join(', ')})`);
    return v;
  }

  #wake(): void {
    for (const w of this.#wakers) w();
  }
}
