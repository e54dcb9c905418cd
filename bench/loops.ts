// The Node side of the benchmark: the same loops as bench/reference.c, written against the
// public API (openKvm, Workload, DirtyRing, DirtyPages, DirtyBitmap), so the figures are the
// library's as a VMM would see them. Each loop checks what it measures (every epoch's exit
// and page count; at the end, the last epoch's pages and their contents) and throws on any
// surprise, as the C does.
//
// Guest layout, as in the C reference: slot 0 = the harness [0, 2 MiB), not logged; slot 1 =
// the guest RAM, logged, at 2 MiB (or at `ramGpa`, as the reference's --ram-gpa). Workload.stride
// writes the epoch number to K pages of slot 1 spread evenly over it (stride = pages / K), then
// exits with OUT 0x10.
import * as v8 from 'node:v8';
import * as vmModule from 'node:vm';

import { DirtyBitmap, DirtyPages, DirtyRing, ExitReason, MemFlag, openKvm, PAGE_SIZE, Workload, type DirtyRingLimits, type Exit, type GuestMemory, type Kvm, type Vcpu, type Vm } from '../lib/index';
import { median, quantile, Samples } from './stats';

export type HarvestMode = 'ring' | 'bitmap' | 'bitmap-clear';
export type BackendChoice = 'native' | 'emulator';

/** The guest-physical size of the harness slot (lib/guest: page tables and code). */
export const HARNESS_BYTES = 2 * 1024 * 1024;
export const GUEST_SLOT = 1;
const EPOCH_PORT = 0x10;
/** KVM_DIRTY_RING_MAX_ENTRIES: a 1 MiB ring, the largest any kernel takes. */
export const RING_MAX_ENTRIES = 65536;
export const GIB = 2 ** 30;

/**
 * The C reference's default ring size for K pages per epoch, on a host with these limits:
 * the smallest ring the kernel takes whose soft limit holds 2K entries (the largest where none
 * does). 64 reserved entries: the next power of two >= 2K + 64, at least 256; with PML (576),
 * at least 1024.
 */
export function defaultRingEntries(k: number, limits: DirtyRingLimits): number {
  try {
    return limits.bytesFor(2 * k) / 16;
  } catch {
    return limits.maxBytes / 16;
  }
}

const limitsByBackend = new Map<BackendChoice, DirtyRingLimits>();

/** The ring limits of a backend's KVM (asked once). */
export function ringLimits(backend: BackendChoice): DirtyRingLimits {
  let limits = limitsByBackend.get(backend);
  if (!limits) {
    const kvm = openKvm({ backend });
    try {
      limits = kvm.dirtyRingLimits();
    } finally {
      kvm.close();
    }
    limitsByBackend.set(backend, limits);
  }
  return limits;
}

/** Whether Workload.stride with K pages spread over RAM at `ramGpa` (as epochLoop spreads them) writes the page at `gpa`. */
export function strideWritesGpa(o: { ramGpa: number; guestBytes: number; k: number }, gpa: number): boolean {
  const pages = o.guestBytes / PAGE_SIZE;
  const stride = Math.floor(pages / o.k);
  const page = (gpa - o.ramGpa) / PAGE_SIZE;
  return Number.isInteger(page) && page >= 0 && page < pages && page % stride === 0 && page / stride < o.k;
}

export interface GuestOptions {
  backend: BackendChoice;
  mode: HarvestMode;
  guestBytes: number;
  /** ring mode: entries per vCPU ring (a power of two) */
  ringEntries?: number;
  /** guest-physical address of the RAM slot (default: right after the harness, as the C reference) */
  ramGpa?: number;
}

/** One VM with the harness slot, a logged RAM slot and one vCPU, set up for a harvest mode. */
export class BenchGuest {
  readonly kvm: Kvm;
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  readonly ram: GuestMemory;
  readonly ring: DirtyRing | null;
  readonly bitmap: DirtyBitmap | null;
  readonly guestPages: number;
  readonly mode: HarvestMode;
  readonly ramGpa: number;

  constructor(o: GuestOptions) {
    this.mode = o.mode;
    this.ramGpa = o.ramGpa ?? HARNESS_BYTES;
    this.guestPages = o.guestBytes / PAGE_SIZE;
    this.kvm = openKvm({ backend: o.backend });
    try {
      this.vm = this.kvm.createVm();
      if (o.mode === 'ring') {
        // Sized above what one run writes: on PVM an overfilled ring loses entries (DESIGN §5).
        this.vm.enableDirtyRing((o.ringEntries ?? 256) * 16);
      } else if (o.mode === 'bitmap-clear') {
        this.vm.enableManualDirtyLogProtect(1); // GET no longer re-arms; CLEAR re-arms what we processed
      }
      const harness = this.vm.createMemory(HARNESS_BYTES);
      this.ram = this.vm.createMemory(o.guestBytes);
      this.vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: harness });
      this.vm.setUserMemoryRegion({ slot: GUEST_SLOT, guestPhysAddr: this.ramGpa, memory: this.ram, flags: MemFlag.LogDirtyPages });
      this.vcpu = this.vm.createVcpu(0);
      this.ring = this.vcpu.dirtyRing;
      if (o.mode === 'ring' && this.ring === null) throw new Error('the vCPU has no dirty ring');
      this.bitmap = o.mode === 'ring' ? null : new DirtyBitmap(this.guestPages);
    } catch (e) {
      this.kvm.close();
      throw e;
    }
  }

  /** Loads Workload.stride over slot 1: K pages per epoch, `stridePages` apart from its first page. */
  loadStride(k: number, stridePages: number): void {
    this.vcpu.load(Workload.stride({ firstPage: this.ramGpa / PAGE_SIZE, pages: k, stridePages }));
  }

  /** The u64 the guest wrote at the start of slot page `page` (an epoch number), -1 if it does not fit 32 bits. */
  epochAt(page: number): number {
    const v = this.ram.view(page * PAGE_SIZE, 8); // a view: RAM over 4 GiB has no single buffer on Node 20
    const word = new DataView(v.buffer, v.byteOffset, 8);
    return word.getUint32(4, true) === 0 ? word.getUint32(0, true) : -1;
  }

  /** Throws unless `out` holds exactly the slot pages i * stride, i < k (in any order). */
  checkStridePages(out: DirtyPages, k: number, stride: number): void {
    const seen = new Uint8Array(k);
    for (let i = 0; i < out.length; i++) {
      const page = out.offsets[i];
      const index = page / stride;
      if (out.slots[i] !== GUEST_SLOT || !Number.isInteger(index) || index >= k || seen[index]) {
        throw new Error(`harvested slot ${out.slots[i]} page ${page}: not one of the ${k} pages the guest wrote`);
      }
      seen[index] = 1;
    }
  }

  close(): void {
    this.kvm.close();
  }
}

/**
 * KVM_RUN until the epoch's OUT 0x10; a full ring on the way is harvested into `out` and
 * reset, as the C reference does. Throws on any other exit.
 */
export function runEpoch(g: BenchGuest, epoch: number, out: DirtyPages): void {
  for (;;) {
    const exit: Exit = g.vcpu.run();
    if (exit.reason === ExitReason.Io) {
      const io = exit.io;
      if (io === undefined || io.direction !== 'out' || io.port !== EPOCH_PORT || io.size !== 1 || io.value !== (epoch & 0xff)) {
        throw new Error(`unexpected I/O exit in epoch ${epoch}: ${JSON.stringify(io)}`);
      }
      return;
    }
    if (exit.reason === ExitReason.DirtyRingFull && g.ring !== null) {
      harvestRing(g, out);
      continue;
    }
    throw new Error(`unexpected exit reason ${exit.reason} in epoch ${epoch}${exit.mmio ? ` (MMIO at ${exit.mmio.physAddr.toString(16)})` : ''}`);
  }
}

/** The first and last page of the stride hold `epoch`. */
function checkEpochWritten(g: BenchGuest, epoch: number, k: number, stride: number): void {
  const first = g.epochAt(0);
  const last = g.epochAt((k - 1) * stride);
  if (first !== epoch || last !== epoch) throw new Error(`pages hold epochs ${first} and ${last}, not ${epoch}`);
}

/** Ring harvest + re-arm: DirtyRing.harvest (acquire/release), then KVM_RESET_DIRTY_RINGS. */
function harvestRing(g: BenchGuest, out: DirtyPages): void {
  const got = g.ring!.harvest(out);
  const reset = g.vm.resetDirtyRings();
  if (reset !== got) throw new Error(`KVM_RESET_DIRTY_RINGS reset ${reset} entries, ${got} collected`);
}

/**
 * A harvester for one guest: collects the epoch's dirty pages into `out` and re-arms them,
 * in the guest's mode. Made once per loop so the per-epoch call allocates nothing.
 */
export function makeHarvester(g: BenchGuest, out: DirtyPages): () => void {
  if (g.mode === 'ring') return () => harvestRing(g, out);
  const bitmap = g.bitmap!;
  const offsets = out.offsets;
  const slots = out.slots;
  const clear = g.mode === 'bitmap-clear';
  const collect = (page: number): void => {
    if (out.length === out.capacity) throw new Error(`the bitmap holds more than ${out.capacity} pages`);
    slots[out.length] = GUEST_SLOT;
    offsets[out.length++] = page;
  };
  return () => {
    g.vm.getDirtyLog(GUEST_SLOT, bitmap); // without manual protect: snapshot and re-protect
    bitmap.forEach(collect);
    if (clear) g.vm.clearDirtyLog(GUEST_SLOT, 0, g.guestPages, bitmap); // re-protect exactly those pages
  };
}

export interface EpochLoopOptions extends GuestOptions {
  /** pages written per epoch */
  k: number;
  /** run this many epochs, or else for `seconds` */
  epochs?: number;
  seconds?: number;
}

/** The fields of the C reference's JSON for one run. */
export interface EpochLoopResult {
  mode: HarvestMode;
  guestGiB: number;
  k: number;
  epochs: number;
  seconds: number;
  epochsPerSec: number;
  harvestNsPerEpoch: number;
  runNsPerEpoch: number;
  ringEntries: number;
}

/** The checkpointing VMM's loop: run an epoch, harvest its K pages, re-arm; timed per epoch. */
export function epochLoop(o: EpochLoopOptions): EpochLoopResult {
  const limits = ringLimits(o.backend);
  const ringEntries = o.mode === 'ring' ? (o.ringEntries ?? defaultRingEntries(o.k, limits)) : 0;
  if (o.mode === 'ring' && o.k > ringEntries - limits.reservedEntries) throw new RangeError(`k ${o.k} exceeds the ring's soft limit`);
  const g = new BenchGuest({ ...o, ringEntries });
  try {
    if (o.k > g.guestPages) throw new RangeError(`k ${o.k} exceeds the guest's ${g.guestPages} pages`);
    const stride = Math.floor(g.guestPages / o.k);
    g.loadStride(o.k, stride);
    const out = new DirtyPages(Math.max(o.k, ringEntries));
    const harvest = makeHarvester(g, out);
    const runNs = new Samples();
    const harvestNs = new Samples();
    const seconds = o.seconds ?? 2;
    const start = performance.now();
    const deadline = start + seconds * 1e3;
    let epoch = 0;
    while (o.epochs !== undefined ? epoch < o.epochs : performance.now() < deadline) {
      out.clear();
      const t = performance.now();
      epoch++;
      runEpoch(g, epoch, out);
      const t0 = performance.now();
      harvest();
      const t1 = performance.now();
      if (out.length !== o.k) throw new Error(`harvested ${out.length} pages in epoch ${epoch}, the guest wrote ${o.k}`);
      runNs.push((t0 - t) * 1e6);
      harvestNs.push((t1 - t0) * 1e6);
    }
    const elapsed = (performance.now() - start) / 1e3;
    // The guest really wrote: the last epoch's pages are the stride's, and hold its number.
    g.checkStridePages(out, o.k, stride);
    checkEpochWritten(g, epoch, o.k, stride);
    return {
      mode: o.mode,
      guestGiB: o.guestBytes / GIB,
      k: o.k,
      epochs: epoch,
      seconds: elapsed,
      epochsPerSec: epoch / elapsed,
      harvestNsPerEpoch: harvestNs.median(),
      runNsPerEpoch: runNs.median(),
      ringEntries,
    };
  } finally {
    g.close();
  }
}

/** How the Node side collects a full ring: the library as shipped, or its TypeScript Atomics harvester. */
export type HarvestPath = 'library' | 'atomics';

export interface FullRingOptions {
  backend: BackendChoice;
  /** distinct pages written in the one run that fills the ring (below the 65,472-entry soft limit) */
  entries?: number;
  repeats?: number;
  guestBytes?: number;
  ramGpa?: number;
  path?: HarvestPath;
}

export interface FullRingResult {
  path: HarvestPath;
  batch: boolean;
  entries: number;
  repeats: number;
  harvestNsPerEntry: number;
  resetNsPerEntry: number;
}

/** A guest with a 65,536-entry ring whose one run writes `entries` distinct pages (stride 1). */
function fullRingGuest(o: FullRingOptions): { g: BenchGuest; ring: DirtyRing; entries: number; batch: boolean } {
  const softLimit = ringLimits(o.backend).softLimit(RING_MAX_ENTRIES * 16);
  const entries = o.entries ?? fullRingEntries(ringLimits(o.backend));
  if (entries >= softLimit) throw new RangeError(`entries ${entries} would reach the ring's soft limit (${softLimit})`);
  const g = new BenchGuest({ backend: o.backend, mode: 'ring', guestBytes: o.guestBytes ?? GIB, ringEntries: RING_MAX_ENTRIES, ramGpa: o.ramGpa });
  g.loadStride(entries, 1);
  // 'atomics': a second DirtyRing over the same mapping, without the backend's batch call;
  // it alone collects in this guest, so its fetch index stays in step with the kernel's.
  const path = o.path ?? 'library';
  const ring = path === 'atomics' ? new DirtyRing(g.ring!.buffer) : g.ring!;
  const batch = path === 'library' && g.vcpu._handle.harvestRing !== undefined;
  return { g, ring, entries, batch };
}

/** Entries of the per-entry harvest: 65,000, or just below the 1 MiB ring's soft limit where that is lower (PML: 64,960). */
export function fullRingEntries(limits: DirtyRingLimits): number {
  return Math.min(65000, limits.softLimit(RING_MAX_ENTRIES * 16) - 1);
}

/** Fills the 1 MiB ring in one run, then times the harvest loop alone (and the reset apart). */
export function harvestPerEntry(o: FullRingOptions): FullRingResult {
  const { g, ring, entries, batch } = fullRingGuest(o);
  try {
    const repeats = o.repeats ?? 9;
    const out = new DirtyPages(RING_MAX_ENTRIES);
    const collect = new Samples(repeats);
    const reset = new Samples(repeats);
    for (let epoch = 1; epoch <= repeats; epoch++) {
      out.clear();
      runEpoch(g, epoch, out);
      if (out.length !== 0) throw new Error(`the ring filled up (${out.length} entries harvested early)`);
      const t0 = performance.now();
      const n = ring.harvest(out);
      const t1 = performance.now();
      const r = g.vm.resetDirtyRings();
      const t2 = performance.now();
      if (n !== entries || r !== n) throw new Error(`collected ${n} entries, reset ${r}, the guest wrote ${entries}`);
      collect.push((t1 - t0) * 1e6);
      reset.push((t2 - t1) * 1e6);
    }
    return { path: o.path ?? 'library', batch, entries, repeats, harvestNsPerEntry: collect.median() / entries, resetNsPerEntry: reset.median() / entries };
  } finally {
    g.close();
  }
}

/** global.gc, exposed at run time when node was not started with --expose-gc. */
export function exposeGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  v8.setFlagsFromString('--expose-gc');
  return vmModule.runInNewContext('gc') as () => void;
}

/** Ring fills harvested before the heap is measured (V8 optimizes a function after a few hot calls). */
const WARMUP_FILLS = 8;

export interface HeapGrowthResult {
  path: HarvestPath;
  batch: boolean;
  entries: number;
  /** bytes the harvest calls allocated over all entries (heap used after - before each call, less the measuring's own cost) */
  allocatedBytes: number;
  /** heap still in use after a full GC at the end, against before the first run */
  retainedBytes: number;
}

/**
 * Zero allocation in the harvest path: harvests at least `totalEntries` entries through full
 * runs of the ring and adds up the heap growth across each harvest() call, a GC before each
 * so that no collection falls inside the measured window.
 */
export function harvestHeapGrowth(o: FullRingOptions & { totalEntries?: number }): HeapGrowthResult {
  const gc = exposeGc();
  const { g, ring, entries, batch } = fullRingGuest(o);
  try {
    const total = o.totalEntries ?? 1_000_000;
    const out = new DirtyPages(RING_MAX_ENTRIES);
    const heapUsed = (): number => process.memoryUsage().heapUsed;
    // What reading heapUsed twice costs by itself (the result object of the first read).
    const idle: number[] = [];
    for (let i = 0; i < 7; i++) {
      gc();
      const a = heapUsed();
      const b = heapUsed();
      idle.push(b - a);
    }
    const overhead = median(idle);
    // Warm-up runs: until V8 optimizes harvest(), the interpreter boxes numbers on the heap
    // (about 32 bytes per entry on the TypeScript path); the steady state is what a VMM lives in.
    let epoch = 0;
    while (epoch < WARMUP_FILLS) {
      out.clear();
      runEpoch(g, ++epoch, out);
      ring.harvest(out);
      g.vm.resetDirtyRings();
    }
    gc();
    const before = heapUsed();
    let harvested = 0;
    let allocated = 0;
    while (harvested < total) {
      out.clear();
      runEpoch(g, ++epoch, out);
      gc();
      const h0 = heapUsed();
      const n = ring.harvest(out);
      const h1 = heapUsed();
      if (n !== entries || g.vm.resetDirtyRings() !== n) throw new Error(`collected ${n} entries, the guest wrote ${entries}`);
      allocated += h1 - h0 - overhead;
      harvested += n;
    }
    gc();
    return { path: o.path ?? 'library', batch, entries: harvested, allocatedBytes: Math.max(0, allocated), retainedBytes: heapUsed() - before };
  } finally {
    g.close();
  }
}

export interface EmulatorEventsOptions {
  seconds?: number;
  /** pages written per run (each a ring push), below the 1 MiB ring's soft limit */
  k?: number;
  guestBytes?: number;
}

export interface EmulatorEventsResult {
  events: number;
  epochs: number;
  seconds: number;
  eventsPerSec: number;
}

/**
 * The emulator's full cycle per dirty page: the guest model writes the page (a protection
 * fault, a push into the vCPU's ring), the library harvests it, KVM_RESET_DIRTY_RINGS re-protects it.
 */
export function emulatorEvents(o: EmulatorEventsOptions = {}): EmulatorEventsResult {
  const k = o.k ?? 16384;
  const g = new BenchGuest({ backend: 'emulator', mode: 'ring', guestBytes: o.guestBytes ?? 256 * 1024 * 1024, ringEntries: RING_MAX_ENTRIES });
  try {
    if (k > g.guestPages || k >= g.kvm.dirtyRingLimits().softLimit(RING_MAX_ENTRIES * 16)) throw new RangeError(`k ${k} is too large`);
    const stride = Math.floor(g.guestPages / k);
    g.loadStride(k, stride);
    const out = new DirtyPages(RING_MAX_ENTRIES);
    const harvest = makeHarvester(g, out);
    const seconds = o.seconds ?? 2;
    let events = 0;
    let epoch = 0;
    const start = performance.now();
    const deadline = start + seconds * 1e3;
    while (performance.now() < deadline) {
      out.clear();
      epoch++;
      runEpoch(g, epoch, out);
      harvest();
      if (out.length !== k) throw new Error(`harvested ${out.length} pages in epoch ${epoch}, the model wrote ${k}`);
      events += out.length;
    }
    const elapsed = (performance.now() - start) / 1e3;
    g.checkStridePages(out, k, stride);
    checkEpochWritten(g, epoch, k, stride);
    return { events, epochs: epoch, seconds: elapsed, eventsPerSec: events / elapsed };
  } finally {
    g.close();
  }
}

export interface VcpuLatencyResult {
  /** median ns of KVM_RUN to the epoch's exit for a stride of one page, through run() and through runAsync() */
  runNs: number;
  runAsyncNs: number;
  /**
   * runAsync() while the event loop has other work (a setImmediate chain): the difference to
   * runAsyncNs is the host waking Node's sleeping main thread (tens of µs in a nested VM).
   */
  runAsyncBusyNs: number;
  /** ns from kick() to the settled runAsync() of a spinning guest: median and 90th percentile */
  kickNsP50: number;
  kickNsP90: number;
  runs: number;
  kicks: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * What running a vCPU costs from Node: one KVM_RUN round trip (one page written, then the
 * epoch's OUT) synchronously and on the vCPU's thread, and how long a kick takes to end a run.
 * The ring is harvested and reset every 64 epochs, outside the timed calls.
 */
export async function vcpuLatency(o: { backend: BackendChoice; runs?: number; kicks?: number }): Promise<VcpuLatencyResult> {
  const runs = o.runs ?? 20_000;
  const kicks = o.kicks ?? 200;
  const g = new BenchGuest({ backend: o.backend, mode: 'ring', guestBytes: 64 << 20, ringEntries: 256 });
  try {
    g.loadStride(1, 1);
    const out = new DirtyPages(256);
    const rearm = () => {
      out.clear();
      g.ring!.harvest(out);
      g.vm.resetDirtyRings();
    };
    const expectOut = (exit: Exit) => {
      if (exit.reason !== ExitReason.Io) throw new Error(`KVM_RUN returned ${ExitReason[exit.reason] ?? exit.reason}, expected the epoch's OUT`);
    };
    /** `runs` KVM_RUN round trips through `run`, each timed; the ring re-armed every 64, untimed. */
    const timeRuns = async (run: () => Exit | Promise<Exit>): Promise<Samples> => {
      const ns = new Samples(runs);
      for (let i = 0; i < runs; i++) {
        if (i % 64 === 0) rearm();
        const t = performance.now();
        const exit = await run();
        ns.push((performance.now() - t) * 1e6);
        expectOut(exit);
      }
      return ns;
    };
    const sync = await timeRuns(() => g.vcpu.run());
    const async = await timeRuns(() => g.vcpu.runAsync());
    let busy = true;
    const spin = () => {
      if (busy) setImmediate(spin);
    };
    spin();
    const asyncBusy = await timeRuns(() => g.vcpu.runAsync()).finally(() => (busy = false));
    g.vcpu.load(Workload.spin());
    const kick = new Samples(kicks);
    for (let i = 0; i < kicks; i++) {
      const running = g.vcpu.runAsync();
      await sleep(1); // the vCPU is inside the guest, spinning
      const t = performance.now();
      g.vcpu.kick();
      const exit = await running;
      kick.push((performance.now() - t) * 1e6);
      if (exit.reason !== ExitReason.Intr) throw new Error(`a kicked run returned ${ExitReason[exit.reason] ?? exit.reason}, expected Intr`);
    }
    return {
      runNs: sync.median(),
      runAsyncNs: async.median(),
      runAsyncBusyNs: asyncBusy.median(),
      kickNsP50: quantile(kick.values(), 0.5),
      kickNsP90: quantile(kick.values(), 0.9),
      runs,
      kicks,
    };
  } finally {
    g.close();
  }
}
