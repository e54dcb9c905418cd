#!/usr/bin/env node
// `npm run bench`: kvm-dirty against its in-tree C reference (bench/reference.c), on this
// machine, in one run. Node and C runs of each configuration alternate (C first, then Node
// first, ...) so both see the same machine; every figure is the median of several runs.
// Prints a table (or, with --json, only the results object), writes bench/results.json and
// draws docs/harvest-vs-guest-size.svg.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Command } from 'commander';

import { cpuInfo } from '../lib/cpu';
import { openKvm } from '../lib/index';
import { chartPoints, harvestChartSpec, renderSvg } from './chart';
import { defaultRingEntries, emulatorEvents, epochLoop, fullRingEntries, GIB, strideWritesGpa, harvestHeapGrowth, harvestPerEntry, HARNESS_BYTES, RING_MAX_ENTRIES, ringLimits, vcpuLatency, type HarvestMode } from './loops';
import { DIRTYRATE_FULL, DIRTYRATE_QUICK, benchDirtyRate, formatDirtyRate, type DirtyRateBench } from './dirtyrate';
import { MIGRATION_FULL, MIGRATION_QUICK, benchMigration, formatMigration, type MigrationBench } from './migration';
import { FULL_STATE_FULL, FULL_STATE_QUICK, benchFullState, formatFullState, type FullStateBench } from './full-state';
import { Reference, packageRoot, type ReferenceResult } from './reference';
import { efficiencyOf, evaluateTargets, formatReport, type BenchError, type BenchResults, type CheckpointFigures, type CheckpointProfileFigures, type SizeModes, type VcpuCountFigures } from './report';
import { median, ratio } from './stats';

interface Plan {
  /** Node/C pairs per configuration */
  repeats: number;
  /** seconds per epoch-loop run */
  loopSeconds: number;
  /** pairs and seconds per run for the harvest-vs-guest-size sweep */
  sizeRepeats: number;
  sizeSeconds: number;
  /** pairs, and ring fills per run, for harvest per entry */
  entryRepeats: number;
  entryFills: number;
  emulatorSeconds: number;
  emulatorRuns: number;
  checkpointSeconds: number;
  /** KVM_RUN round trips per runAsync() measurement */
  latencyRuns: number;
}

const FULL: Plan = {
  // many short pairs rather than a few long ones: the two sides then share the machine's moods
  repeats: 9,
  loopSeconds: 1,
  sizeRepeats: 3,
  sizeSeconds: 1,
  entryRepeats: 5,
  entryFills: 9,
  emulatorSeconds: 2,
  emulatorRuns: 3,
  checkpointSeconds: 2,
  latencyRuns: 20_000,
};
const QUICK: Plan = {
  repeats: 3,
  loopSeconds: 0.5,
  sizeRepeats: 1,
  sizeSeconds: 0.3,
  entryRepeats: 2,
  entryFills: 5,
  emulatorSeconds: 1,
  emulatorRuns: 1,
  checkpointSeconds: 0.5,
  latencyRuns: 2_000,
};

const GUEST_SIZES = [1, 4, 16, 64];
const SIZE_K = 256;
const LOOP_GIB = 16;
const LOOP_KS = [16, 256, 4096];
const CHECKPOINT_KS = [16, 64, 256, 1024];
const CHECKPOINT_SIZES = [1, 16, 64];
const CHECKPOINT_SIZE_K = 64;
/** K of the profiled runs (where an epoch's time goes) */
const PROFILE_KS = [16, 64, 256];
const CHECKPOINT_VCPUS = [1, 2, 4];
const VCPUS_K = 64;
/** The local APIC's MMIO page: guest RAM written there exits to userspace instead (ExitReason.Mmio). */
const APIC_GPA = 0xfee0_0000;
/** Guest RAM at 4 GiB, above the PC's MMIO hole, for the configurations whose stride would write the APIC page. */
const HIGH_RAM_GPA = 4 * GIB;

type CheckpointBench = typeof import('../lib/checkpoint/bench');

class Runner {
  readonly errors: BenchError[] = [];
  readonly #log: (line: string) => void;
  readonly #reference: Reference;
  #referenceTakesRamGpa = false;
  #referenceMissing = false;

  constructor(log: (line: string) => void, reference: Reference) {
    this.#log = log;
    this.#reference = reference;
  }

  /** Builds the C reference if needed and asks whether it can move guest RAM (--ram-gpa). */
  prepare(): void {
    try {
      this.#reference.ensureBuilt(this.#log);
      this.#referenceTakesRamGpa = this.#reference.supportsOption('--ram-gpa');
    } catch (e) {
      // Without the reference the Node figures still stand; this one error says why every C figure is missing.
      this.#referenceMissing = true;
      this.error('C reference', e);
    }
  }

  /**
   * Where guest RAM goes for a stride of K pages over `guestGiB`, the same for Node and C:
   * right after the harness (2 MiB), unless a stride page would be the local APIC's MMIO page
   * (0xfee00000: the write exits to userspace as ExitReason.Mmio), then at 4 GiB. Only there,
   * since the reference sets no CPUID and its guest then reaches only 64 GiB of physical address.
   */
  ramGpaFor(guestGiB: number, k: number): number {
    return strideWritesGpa({ ramGpa: HARNESS_BYTES, guestBytes: guestGiB * GIB, k }, APIC_GPA) ? HIGH_RAM_GPA : HARNESS_BYTES;
  }

  error(what: string, e: unknown): void {
    const reason = e instanceof Error ? e.message : String(e);
    if (!this.errors.some((x) => x.what === what)) this.errors.push({ what, reason });
    this.#log(`  ${what}: ${reason}`);
  }

  /**
   * Runs `c` and `node` `repeats` times each, alternating which goes first; a side that fails
   * is not retried. Without a built reference only Node runs (its one error says why).
   */
  interleave<C, N>(what: string, repeats: number, c: () => C, node: () => N): { c: C[]; node: N[] } {
    const out = { c: [] as C[], node: [] as N[] };
    let cOk = !this.#referenceMissing;
    let nodeOk = true;
    const runC = () => {
      if (!cOk) return;
      try {
        out.c.push(c());
      } catch (e) {
        cOk = false;
        this.error(`${what} (C)`, e);
      }
    };
    const runNode = () => {
      if (!nodeOk) return;
      try {
        out.node.push(node());
      } catch (e) {
        nodeOk = false;
        this.error(`${what} (Node)`, e);
      }
    };
    for (let r = 0; r < repeats; r++) {
      if (r % 2 === 0) {
        runC();
        runNode();
      } else {
        runNode();
        runC();
      }
    }
    return out;
  }

  /**
   * One C reference run. Its ring is sized as the Node side's, from the host's limits
   * (kvm.dirtyRingLimits(): 64 reserved entries here, 576 on an Intel host with PML).
   */
  reference(args: Parameters<Reference['run']>[0]): ReferenceResult {
    if (args.ramGpa !== undefined && args.ramGpa !== HARNESS_BYTES && !this.#referenceTakesRamGpa) {
      throw new Error(`this build of the C reference has no --ram-gpa to place RAM at ${args.ramGpa} (its stride would write the APIC page at 0xfee00000)`);
    }
    const run = { ...args, ramGpa: args.ramGpa === HARNESS_BYTES ? undefined : args.ramGpa };
    if (run.mode === 'ring' || run.mode === 'harvest-per-entry') {
      const limits = ringLimits('native');
      run.ringReserved = limits.reservedEntries;
      if (run.mode === 'ring') run.ringEntries ??= defaultRingEntries(run.k ?? 16, limits);
    }
    return this.#reference.run(run);
  }

  epochLoops(plan: Plan): BenchResults['epochLoop'] {
    const result: BenchResults['epochLoop'] = {};
    for (const k of LOOP_KS) {
      // K = 4096 runs on the 1 MiB ring; one run writes K distinct pages, far below its soft limit.
      const ringEntries = k === 4096 ? RING_MAX_ENTRIES : defaultRingEntries(k, ringLimits('native'));
      const what = `epoch loop K=${k}`;
      this.#log(`${what}, ${LOOP_GIB} GiB, ring: ${plan.repeats} x ${plan.loopSeconds} s per side`);
      const ramGpa = this.ramGpaFor(LOOP_GIB, k);
      const c = () => this.reference({ mode: 'ring', guestGiB: LOOP_GIB, k, seconds: plan.loopSeconds, ringEntries, ramGpa });
      const runs = this.interleave(what, plan.repeats, c, () =>
        epochLoop({ backend: 'native', mode: 'ring', guestBytes: LOOP_GIB * GIB, k, seconds: plan.loopSeconds, ringEntries, ramGpa }),
      );
      const node = medianOf(runs.node.map((r) => r.epochsPerSec));
      const cRate = medianOf(runs.c.map((r) => r.epochsPerSec));
      result[`k${k}`] = {
        node,
        c: cRate,
        ratio: ratio(node, cRate),
        guestGiB: LOOP_GIB,
        ringEntries: runs.node[0]?.ringEntries ?? runs.c[0]?.ringEntries ?? 0,
        ramGpa,
        // where an epoch's time goes (medians of the per-run medians): KVM_RUN to the epoch's exit, then harvest + reset
        runNs: { node: medianOf(runs.node.map((r) => r.runNsPerEpoch)), c: medianOf(runs.c.map((r) => r.runNsPerEpoch ?? NaN)) },
        harvestNs: { node: medianOf(runs.node.map((r) => r.harvestNsPerEpoch)), c: medianOf(runs.c.map((r) => r.harvestNsPerEpoch)) },
      };
      this.#log(`  node ${fmtRate(node)}  c ${fmtRate(cRate)} epochs/s`);
    }
    return result;
  }

  harvestPerEntry(plan: Plan): BenchResults['harvestPerEntryNs'] {
    this.#log(`harvest per entry, full ${RING_MAX_ENTRIES}-entry ring: ${plan.entryRepeats} x ${plan.entryFills} fills per side`);
    const entries = fullRingEntries(ringLimits('native'));
    const runs = this.interleave('harvest per entry', plan.entryRepeats, () => this.reference({ mode: 'harvest-per-entry', k: entries, epochs: plan.entryFills }), () =>
      harvestPerEntry({ backend: 'native', entries, repeats: plan.entryFills, path: 'library' }),
    );
    const atomics: number[] = [];
    for (let r = 0; r < plan.entryRepeats; r++) {
      try {
        atomics.push(harvestPerEntry({ backend: 'native', entries, repeats: plan.entryFills, path: 'atomics' }).harvestNsPerEntry);
      } catch (e) {
        this.error('harvest per entry (Node, TypeScript Atomics)', e);
        break;
      }
    }
    const node = medianOf(runs.node.map((r) => r.harvestNsPerEntry));
    const c = medianOf(runs.c.map((r) => r.harvestNsPerEntry ?? NaN));
    const nodeAtomics = medianOf(atomics);
    this.#log(`  node ${fmtNum(node)}  atomics ${fmtNum(nodeAtomics)}  c ${fmtNum(c)} ns/entry`);
    return { node, c, ratio: ratio(node, c), nodeAtomics, nodeAtomicsRatio: ratio(nodeAtomics, c), entries, batch: runs.node[0]?.batch ?? null };
  }

  harvestVsSize(plan: Plan): BenchResults['harvestPerEpochNs'] {
    const result: BenchResults['harvestPerEpochNs'] = {};
    for (const g of GUEST_SIZES) {
      const modes = {} as SizeModes;
      for (const mode of ['ring', 'bitmap', 'bitmap-clear'] as HarvestMode[]) {
        const what = `harvest per epoch, ${g} GiB, ${mode}`;
        this.#log(`${what}: ${plan.sizeRepeats} x ${plan.sizeSeconds} s per side`);
        const ramGpa = this.ramGpaFor(g, SIZE_K);
        const runs = this.interleave(what, plan.sizeRepeats, () => this.reference({ mode, guestGiB: g, k: SIZE_K, seconds: plan.sizeSeconds, ramGpa }), () =>
          epochLoop({ backend: 'native', mode, guestBytes: g * GIB, k: SIZE_K, seconds: plan.sizeSeconds, ramGpa }),
        );
        modes[mode] = { node: medianOf(runs.node.map((r) => r.harvestNsPerEpoch)), c: medianOf(runs.c.map((r) => r.harvestNsPerEpoch)) };
        this.#log(`  node ${fmtNum(modes[mode].node)}  c ${fmtNum(modes[mode].c)} ns`);
      }
      result[String(g)] = modes;
    }
    return result;
  }

  heap(): BenchResults['harvestHeap'] {
    const result: BenchResults['harvestHeap'] = {};
    for (const p of ['library', 'atomics'] as const) {
      this.#log(`heap growth over 1,000,000 harvested entries (${p})`);
      try {
        const h = harvestHeapGrowth({ backend: 'native', path: p, totalEntries: 1_000_000 });
        result[p] = { entries: h.entries, allocatedBytes: h.allocatedBytes, retainedBytes: h.retainedBytes, batch: h.batch };
        this.#log(`  allocated ${h.allocatedBytes} B, retained ${h.retainedBytes} B over ${h.entries} entries`);
      } catch (e) {
        result[p] = null;
        this.error(`heap growth (${p})`, e);
      }
    }
    return result;
  }

  /**
   * KVM_RUN round trips: one page written, then the epoch's OUT, on a 1 GiB guest. run() against
   * C (the epoch loops' time in KVM_RUN, K = 1, interleaved), then runAsync() and kick().
   */
  async vcpu(plan: Plan): Promise<BenchResults['vcpu']> {
    this.#log(`KVM_RUN round trip, K=1, 1 GiB: ${plan.repeats} x ${plan.loopSeconds / 2} s per side; runAsync and kick`);
    const loops = this.interleave('KVM_RUN round trip', plan.repeats, () => this.reference({ mode: 'ring', guestGiB: 1, k: 1, seconds: plan.loopSeconds / 2 }), () =>
      epochLoop({ backend: 'native', mode: 'ring', guestBytes: GIB, k: 1, seconds: plan.loopSeconds / 2 }),
    );
    const node = medianOf(loops.node.map((r) => r.runNsPerEpoch));
    const c = medianOf(loops.c.map((r) => r.runNsPerEpoch ?? NaN));
    let latency: Awaited<ReturnType<typeof vcpuLatency>> | null = null;
    try {
      latency = await vcpuLatency({ backend: 'native', runs: plan.latencyRuns });
    } catch (e) {
      this.error('runAsync and kick latency', e);
    }
    const r = {
      runNs: { node, c, ratio: ratio(node, c) },
      runAsyncNs: latency?.runAsyncNs ?? null,
      runAsyncBusyNs: latency?.runAsyncBusyNs ?? null,
      kickNsP50: latency?.kickNsP50 ?? null,
      kickNsP90: latency?.kickNsP90 ?? null,
    };
    this.#log(`  run ${fmtNum(node)} ns (C ${fmtNum(c)}), runAsync ${fmtNum(r.runAsyncNs)} ns (busy loop ${fmtNum(r.runAsyncBusyNs)}), kick p50 ${fmtNum(r.kickNsP50)} ns`);
    return r;
  }

  emulator(plan: Plan): number | null {
    this.#log(`emulator events: ${plan.emulatorRuns} x ${plan.emulatorSeconds} s`);
    const rates: number[] = [];
    for (let r = 0; r < plan.emulatorRuns; r++) {
      try {
        rates.push(emulatorEvents({ seconds: plan.emulatorSeconds }).eventsPerSec);
      } catch (e) {
        this.error('emulator events', e);
        return null;
      }
    }
    const rate = medianOf(rates);
    this.#log(`  ${fmtRate(rate)} events/s`);
    return rate;
  }

  /** Committed epochs/s and pauses, ring and bitmap, for K = 16 ... 1024 on a 1 GiB guest. */
  async checkpoint(plan: Plan): Promise<Record<string, CheckpointFigures> | null> {
    return this.#checkpoints(plan, CHECKPOINT_KS.map((k) => ({ key: `k${k}`, k, guestGiB: 1 })));
  }

  /** The same at K = 64 on guests of 1, 16 and 64 GiB: the bitmap's pause grows with the guest, the ring's does not. */
  async checkpointBySize(plan: Plan): Promise<Record<string, CheckpointFigures> | null> {
    return this.#checkpoints(plan, CHECKPOINT_SIZES.map((g) => ({ key: String(g), k: CHECKPOINT_SIZE_K, guestGiB: g })));
  }

  /** A profiled run per K (ring, 1 GiB): the phases of an epoch and the CPU time of each thread (apart from the figures above: timing costs a little). */
  async checkpointProfile(plan: Plan): Promise<Record<string, CheckpointProfileFigures | null> | null> {
    const bench = this.#checkpointBench();
    if (!bench) return null;
    const result: Record<string, CheckpointProfileFigures | null> = {};
    for (const k of PROFILE_KS) {
      this.#log(`checkpoint profile K=${k} 1 GiB ring: ${plan.checkpointSeconds} s`);
      try {
        const r = await bench.benchCheckpoint({ backend: 'native', pagesPerEpoch: k, mode: 'ring', seconds: plan.checkpointSeconds, profile: true });
        const phasesUs = Object.fromEntries(Object.entries(r.profile ?? {}).map(([phase, f]) => [phase, f!.p50Us]));
        result[`k${k}`] = { committedPerSec: r.committedPerSec, phasesUs, cpuUs: r.cpu ?? null };
        this.#log(`  ${Object.entries(phasesUs).map(([p, us]) => `${p} ${fmtNum(us)}`).join(', ')} µs; CPU/epoch ${JSON.stringify(r.cpu)}`);
      } catch (e) {
        result[`k${k}`] = null;
        this.error(`checkpoint profile K=${k}`, e);
      }
    }
    return result;
  }

  /** 1, 2 and 4 vCPUs, each its own stride of VCPUS_K pages and its own ring, against one vCPU's bare C loop. */
  async checkpointByVcpus(plan: Plan): Promise<Record<string, VcpuCountFigures> | null> {
    const bench = this.#checkpointBench();
    if (!bench) return null;
    let bare: number | null = null;
    try {
      bare = this.reference({ mode: 'ring', guestGiB: 1, k: VCPUS_K, seconds: plan.checkpointSeconds }).epochsPerSec;
    } catch (e) {
      this.error(`checkpoint by vCPUs, bare loop (C)`, e);
    }
    const result: Record<string, VcpuCountFigures> = {};
    for (const vcpus of CHECKPOINT_VCPUS) {
      const what = `checkpoint ${vcpus} vCPUs K=${VCPUS_K} 1 GiB ring`;
      this.#log(`${what}: ${plan.checkpointSeconds} s`);
      const row: VcpuCountFigures = { vcpus, k: VCPUS_K, committed: null, bare, efficiency: null, pauseP50Us: null, pauseP99Us: null, bytesPerEpoch: null };
      try {
        const r = await bench.benchCheckpoint({ backend: 'native', pagesPerEpoch: VCPUS_K, mode: 'ring', seconds: plan.checkpointSeconds, vcpus });
        Object.assign(row, { committed: r.committedPerSec, efficiency: ratio(r.committedPerSec, bare), pauseP50Us: r.pauseP50Us, pauseP99Us: r.pauseP99Us, bytesPerEpoch: r.bytesPerEpoch });
        this.#log(`  ${fmtRate(r.committedPerSec)} committed/s (bare, one vCPU: ${fmtRate(bare)}), pause p50 ${fmtNum(r.pauseP50Us)} µs, p99 ${fmtNum(r.pauseP99Us)} µs`);
      } catch (e) {
        this.error(what, e);
      }
      result[`v${vcpus}`] = row;
    }
    return result;
  }

  #checkpointBench(): CheckpointBench | null {
    try {
      // Loaded only now: the checkpoint engine (its transport, replica process) is a separate
      // part of the library, and a failure to load it leaves the other figures standing.
      return require('../lib/checkpoint/bench') as CheckpointBench;
    } catch (e) {
      this.error('checkpoint', e);
      return null;
    }
  }

  async #checkpoints(plan: Plan, configs: { key: string; k: number; guestGiB: number }[]): Promise<Record<string, CheckpointFigures> | null> {
    const bench = this.#checkpointBench();
    if (!bench) return null;
    const result: Record<string, CheckpointFigures> = {};
    for (const { key, k, guestGiB } of configs) {
      const figures: CheckpointFigures = { ring: null, bitmap: null };
      for (const mode of ['ring', 'bitmap'] as const) {
        const what = `checkpoint K=${k} ${guestGiB} GiB ${mode}`;
        this.#log(`${what}: ${plan.checkpointSeconds} s, and the same guest's bare epoch loop in C`);
        // The rate of the same workload without checkpointing, measured beside it: the C
        // reference's epoch loop, same K, same guest size, same mode. Their quotient is what
        // holds from host to host (an absolute rate does not: KVM_RUN's cost differs by CPU).
        try {
          figures[`${mode}Bare`] = this.reference({ mode, guestGiB, k, seconds: plan.checkpointSeconds, ramGpa: this.ramGpaFor(guestGiB, k) }).epochsPerSec;
        } catch (e) {
          figures[`${mode}Bare`] = null;
          this.error(`${what}, bare loop (C)`, e);
        }
        try {
          const r = await bench.benchCheckpoint({ backend: 'native', pagesPerEpoch: k, mode, seconds: plan.checkpointSeconds, guestBytes: guestGiB * GIB });
          figures[mode] = r.committedPerSec;
          figures[`${mode}PauseP50Us`] = r.pauseP50Us;
          figures[`${mode}PauseP99Us`] = r.pauseP99Us;
          figures[`${mode}Efficiency`] = ratio(r.committedPerSec, figures[`${mode}Bare`] ?? null);
          figures[mode === 'ring' ? 'bytesPerEpoch' : 'bitmapBytesPerEpoch'] = r.bytesPerEpoch;
          this.#log(`  ${fmtRate(r.committedPerSec)} committed/s (bare ${fmtRate(figures[`${mode}Bare`] ?? null)}, ${fmtNum(figures[`${mode}Efficiency`] ?? null)}), pause p50 ${fmtNum(r.pauseP50Us)} µs, p99 ${fmtNum(r.pauseP99Us)} µs`);
        } catch (e) {
          this.error(what, e);
        }
      }
      result[key] = figures;
    }
    return result;
  }
}

function medianOf(xs: number[]): number | null {
  const finite = xs.filter(Number.isFinite);
  return finite.length === 0 ? null : median(finite);
}

function fmtNum(x: number | null): string {
  return x === null ? '-' : x.toFixed(2);
}

function fmtRate(x: number | null): string {
  return x === null ? '-' : Math.round(x).toLocaleString('en-US');
}

function firstLine(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n')[0].trim() : null;
}

/** The machine the figures come from. */
function hostDescription(plan: 'full' | 'quick'): Record<string, unknown> {
  let kvm: Record<string, unknown> | null = null;
  try {
    const k = openKvm({ backend: 'native' });
    kvm = { ...k.hostInfo };
    k.close();
  } catch (e) {
    kvm = { error: e instanceof Error ? e.message : String(e) };
  }
  const cpus = os.cpus();
  const cpu = cpuInfo();
  return {
    cpu: cpu.model,
    cpuVendor: cpu.vendor,
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / GIB),
    kernel: os.release(),
    kvm,
    node: process.version,
    v8: process.versions.v8,
    cc: firstLine('cc', ['--version']),
    date: new Date().toISOString(),
    plan,
  };
}

async function main(): Promise<void> {
  const program = new Command()
    .name('bench')
    .description('kvm-dirty against its C reference: ring vs bitmap, Node vs C, emulator and checkpoint rates')
    .option('--quick', 'a short run (fewer, shorter repeats)')
    .option('--json', 'print only the results object (progress still goes to stderr)')
    .option('--markdown', 'print the tables as Markdown (for the README)')
    .option('--out <file>', 'results file (default bench/results.json; with --only, none unless given)')
    .option('--chart <file>', 'SVG chart file', 'docs/harvest-vs-guest-size.svg')
    .option('--quiet', 'no progress on stderr')
    .option('--report <file>', 'measure nothing: print the report of a results file written before')
    .option('--only <section>', 'measure one section: checkpoint (the checkpoint engine\'s tables alone, a short look while developing)')
    .parse();
  const opts = program.opts<{ quick?: boolean; json?: boolean; markdown?: boolean; out?: string; chart: string; quiet?: boolean; report?: string; only?: string }>();
  if (opts.only !== undefined && opts.only !== 'checkpoint') throw new Error(`--only takes 'checkpoint', got ${JSON.stringify(opts.only)}`);
  const all = opts.only === undefined;
  const root = packageRoot();
  type Results = BenchResults & { dirtyRate?: DirtyRateBench; migration?: MigrationBench; fullState?: FullStateBench };
  const print = (results: Results): void => {
    const style = opts.markdown ? 'markdown' : 'text';
    const dirtyRate = results.dirtyRate ? `\n\n${formatDirtyRate(results.dirtyRate, style)}` : '';
    const migration = results.migration ? `\n\n${formatMigration(results.migration, style)}` : '';
    const fullState = results.fullState ? `\n\n${formatFullState(results.fullState, style)}` : '';
    process.stdout.write(opts.json ? `${JSON.stringify(results)}\n` : `${formatReport(results, style)}${dirtyRate}${migration}${fullState}\n`);
  };
  if (opts.report !== undefined) {
    print(JSON.parse(fs.readFileSync(path.resolve(opts.report), 'utf8')) as Results);
    return;
  }
  const plan = opts.quick ? QUICK : FULL;
  const started = Date.now();
  const log = opts.quiet ? () => {} : (line: string) => process.stderr.write(`[${((Date.now() - started) / 1e3).toFixed(0).padStart(3)} s] ${line}\n`);

  const runner = new Runner(log, new Reference(root));
  runner.prepare();
  const epochLoopResults = all ? runner.epochLoops(plan) : {};
  const harvestPerEntryNs = all ? runner.harvestPerEntry(plan) : { node: null, c: null, ratio: null, nodeAtomics: null, nodeAtomicsRatio: null, entries: 0, batch: null };
  const harvestPerEpochNs = all ? runner.harvestVsSize(plan) : {};
  const harvestHeap = all ? runner.heap() : {};
  const vcpu = all ? await runner.vcpu(plan) : undefined;
  const emulatorEventsPerSec = all ? runner.emulator(plan) : null;
  const checkpoint = await runner.checkpoint(plan);
  const checkpointBySize = await runner.checkpointBySize(plan);
  const checkpointByVcpus = await runner.checkpointByVcpus(plan);
  const checkpointProfile = await runner.checkpointProfile(plan);
  const dirtyRate = all ? await benchDirtyRate(opts.quick ? DIRTYRATE_QUICK : DIRTYRATE_FULL, log, (what, e) => runner.error(what, e)) : undefined;
  const migration = all ? await benchMigration(opts.quick ? MIGRATION_QUICK : MIGRATION_FULL, log, (what, e) => runner.error(what, e)) : undefined;
  const fullState = all ? await benchFullState(opts.quick ? FULL_STATE_QUICK : FULL_STATE_FULL, log, (what, e) => runner.error(what, e)) : undefined;

  const ringVsBitmap: Record<string, number | null> = {};
  const ringVsBitmapC: Record<string, number | null> = {};
  for (const [g, m] of Object.entries(harvestPerEpochNs)) {
    ringVsBitmap[g] = ratio(m.bitmap.node, m.ring.node);
    ringVsBitmapC[g] = ratio(m.bitmap.c, m.ring.c);
  }
  const partial: Omit<BenchResults, 'targets'> = {
    epochLoop: epochLoopResults,
    harvestPerEntryNs,
    harvestPerEpochNs,
    ringVsBitmap,
    ringVsBitmapC,
    harvestHeapGrowthBytes: harvestHeap.library?.allocatedBytes ?? null,
    harvestHeap,
    vcpu,
    emulatorEventsPerSec,
    checkpoint,
    checkpointBySize,
    checkpointEfficiency: efficiencyOf(checkpoint),
    checkpointEfficiencyBySize: efficiencyOf(checkpointBySize),
    checkpointByVcpus,
    checkpointProfile,
    errors: runner.errors,
    host: { ...hostDescription(opts.quick ? 'quick' : 'full'), seconds: (Date.now() - started) / 1e3 },
  };
  const results = { ...partial, targets: evaluateTargets(partial), dirtyRate, migration, fullState };

  // a partial run (--only) leaves the full run's results file alone
  const out = opts.out ?? (all ? 'bench/results.json' : undefined);
  if (out !== undefined) {
    const outFile = path.resolve(root, out);
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    fs.writeFileSync(outFile, `${JSON.stringify(results, null, 2)}\n`);
    log(`wrote ${path.relative(root, outFile)}`);
  }
  const points = chartPoints(harvestPerEpochNs);
  if (points.length > 0) {
    const host = results.host as { cpu: string | null; cores: number; kvm: { description?: string } | null; node: string; kernel: string };
    const machine = [`${host.cores} cores, ${host.cpu ?? 'unknown CPU'}, Linux ${host.kernel}, Node ${host.node}`, host.kvm?.description ?? 'KVM'];
    const chartFile = path.resolve(root, opts.chart);
    fs.mkdirSync(path.dirname(chartFile), { recursive: true });
    fs.writeFileSync(chartFile, await renderSvg(harvestChartSpec(points, { pagesPerEpoch: SIZE_K, machine })));
    log(`wrote ${path.relative(root, chartFile)}`);
  }
  print(results);
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`bench: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  });
}
