// The dirty-rate section of `npm run bench` (bench/run.ts calls benchDirtyRate and prints
// formatDirtyRate): on the native backend,
//   (a) overhead: the guest's speed while 'dirty-ring' mode measures, against the same guest
//       with no dirty logging at all, and against the ring harvested with no one measuring;
//   (b) true against measured, per mode and rate (the truth from the pacer's log, same window);
//   (c) a dirty limit against what the held vCPU achieved, and the unthrottled vCPU's speed.
// Speeds are compared only as ratios of the same run, phases interleaved.

import { openKvm, Workload, type Kvm } from '../lib/index';
import { createMachine } from '../lib/checkpoint/machine';
import {
  DirtyLimit, DirtyRateMeter, GuestRunner, PacedWorkload, createPacedMachine, dirtyRingBytes, measureDirtyRate,
  stopDirtyLogging, type DirtyRateMode,
} from '../lib/dirtyrate';
import { fmt, table, type ReportStyle } from './report';
import { median, ratio } from './stats';

export interface DirtyRateBenchPlan {
  /** rounds of the overhead comparison's three 50 ms turns */
  rounds: number;
  /** seconds of a measurement window and of a limit period */
  windowSeconds: number;
  periodSeconds: number;
  /** rounds of the three 50 ms phases of the unthrottled vCPU's speed */
  alternations: number;
}

export const DIRTYRATE_FULL: DirtyRateBenchPlan = { rounds: 60, windowSeconds: 1, periodSeconds: 0.5, alternations: 30 };
export const DIRTYRATE_QUICK: DirtyRateBenchPlan = { rounds: 10, windowSeconds: 0.5, periodSeconds: 0.3, alternations: 6 };

export interface AccuracyRow {
  mode: DirtyRateMode;
  /** the pacer's target in MB/s (null: full speed) */
  rateMBps: number | null;
  trueMBps: number;
  MBps: number;
  errorPct: number;
  /** dirty-ring: the rate the ring's entries alone give (each write on a PVM host: QEMU's figure) */
  entriesMBps?: number;
  samplePagesPerGiB?: number;
  stdErrMBps?: number;
}

export interface LimitRow {
  limitMBps: number;
  /** mean and worst period of the held vCPU from the 4th period on (meter: dirty-ring) */
  achievedMBps: number;
  worstMBps: number;
  /** the unthrottled vCPU's speed while the other is held, against the same run with no limit */
  unthrottledRatio: number | null;
  /** the same against the other vCPU kept out of KVM_RUN altogether */
  unthrottledVsParked: number | null;
}

export interface DirtyRateBench {
  overhead: {
    /** epochs per second of Workload.stride (64 pages) */
    plain: number; ring: number; measuring: number;
    /** measuring / plain (the target) and measuring / ring */
    ratio: number | null; ratioVsRing: number | null;
  } | null;
  accuracy: AccuracyRow[];
  limit: LimitRow[];
  target: { what: string; value: number | null; bound: number; met: boolean | null };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RATES = [1, 10, 100, Infinity];
const LIMITS = [1, 10, 100];
const SETTLE_PERIODS = 3;
const CHECKED_PERIODS = 3;

function errPct(measured: number, truth: number): number {
  return truth > 0 ? (measured / truth - 1) * 100 : NaN;
}

/** Runs each part; a part that fails is reported through `error` and leaves the others standing. */
export async function benchDirtyRate(plan: DirtyRateBenchPlan, log: (line: string) => void, error: (what: string, e: unknown) => void): Promise<DirtyRateBench> {
  const out: DirtyRateBench = { overhead: null, accuracy: [], limit: [], target: { what: 'guest speed measuring (dirty-ring) / no dirty logging', value: null, bound: 0.95, met: null } };
  let kvm: Kvm;
  try {
    kvm = openKvm({ backend: 'native' });
  } catch (e) {
    error('dirty rate', e);
    return out;
  }
  try {
    const part = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (e) {
        error(what, e);
      }
    };
    await part('dirty rate: overhead', async () => {
      log(`dirty rate: guest speed measuring vs not, ${plan.rounds} rounds of three 50 ms turns`);
      out.overhead = await overhead(kvm, plan);
      out.target.value = out.overhead.ratio;
      out.target.met = out.overhead.ratio === null ? null : out.overhead.ratio >= out.target.bound;
      log(`  measuring / plain ${out.overhead.ratio?.toFixed(3)}, / ring ${out.overhead.ratioVsRing?.toFixed(3)}`);
    });
    await part('dirty rate: accuracy', async () => {
      log(`dirty rate: true vs measured, ${plan.windowSeconds} s windows`);
      out.accuracy = await accuracy(kvm, plan);
      for (const r of out.accuracy) log(`  ${r.mode} ${r.rateMBps ?? 'full'}${r.samplePagesPerGiB ? ` (${r.samplePagesPerGiB}/GiB)` : ''}: true ${r.trueMBps.toFixed(2)} measured ${r.MBps.toFixed(2)} (${r.errorPct.toFixed(2)} %)`);
    });
    await part('dirty rate: limit', async () => {
      log(`dirty rate: limits ${LIMITS.join(', ')} MB/s, ${SETTLE_PERIODS + CHECKED_PERIODS} periods of ${plan.periodSeconds} s`);
      out.limit = await limits(kvm, plan);
      for (const r of out.limit) log(`  limit ${r.limitMBps}: achieved ${r.achievedMBps.toFixed(2)} (worst ${r.worstMBps.toFixed(2)}), unthrottled ${r.unthrottledRatio?.toFixed(3)} / parked ${r.unthrottledVsParked?.toFixed(3)}`);
    });
  } finally {
    kvm.close();
  }
  return out;
}

/**
 * (a): Workload.stride (64 fixed pages) on three machines: no dirty logging, the ring not
 * measured, the ring measured by a 'dirty-ring' meter (1 s periods, as calc-dirty-rate). All
 * three run under their GuestRunner throughout, and a policy lets one of them run at a time,
 * in 50 ms turns for `rounds` rounds (the order rotating), so the host's other load, which
 * moves a few hundred ms' speed by tens of %, falls on all alike. Exported for a look at its
 * spread (node -e).
 */
export async function overhead(kvm: Kvm, plan: Pick<DirtyRateBenchPlan, 'rounds'>): Promise<NonNullable<DirtyRateBench['overhead']>> {
  const K = 64;
  const data = 16384;
  const names = ['plain', 'ring', 'measuring'] as const;
  let turn: (typeof names)[number] = 'plain';
  const machines = names.map((name) => {
    const m = createMachine(kvm, {
      dataPages: data, mode: name === 'plain' ? 'bitmap' : 'ring', ringBytes: name === 'plain' ? undefined : dirtyRingBytes(kvm, K),
      workloads: Workload.stride({ firstPage: 512, pages: K, stridePages: data / K }),
    });
    if (name === 'plain') stopDirtyLogging(m);
    return m;
  });
  const runners = machines.map((m, i) => new GuestRunner(m, [{ beforeRun: () => (turn === names[i] ? 0 : Infinity) }]));
  const meter = new DirtyRateMeter(runners[2], 'dirty-ring');
  // Blocks of 10 rounds; the figures are the medians of the blocks' (a block the host's other load hit counts once).
  const blocks: { plain: number; ring: number; measuring: number }[] = [];
  let laps: NodeJS.Timeout | null = null;
  try {
    for (const r of runners) r.start();
    meter.start();
    laps = setInterval(() => meter.lap(), 1000);
    for (let b = 0; b < Math.max(1, Math.round(plan.rounds / 10)); b++) {
      const sum = names.map(() => ({ epochs: 0, ms: 0 }));
      for (let r = 0; r < 10; r++) {
        for (let i = 0; i < names.length; i++) {
          turn = names[(r + i) % names.length];
          const k = names.indexOf(turn);
          for (const x of runners) x.wake();
          await sleep(5); // the machine whose turn ended finishes its epoch
          const e0 = runners[k].stats[0].epochs;
          const t0 = performance.now();
          await sleep(50);
          sum[k].epochs += runners[k].stats[0].epochs - e0;
          sum[k].ms += performance.now() - t0;
        }
      }
      const [plain, ring, measuring] = sum.map((x) => (x.epochs * 1000) / x.ms);
      blocks.push({ plain, ring, measuring });
    }
    meter.stop();
  } finally {
    if (laps) clearInterval(laps);
    for (const r of runners) await r.stop();
    for (const m of machines) m.close();
  }
  const med = (f: (b: (typeof blocks)[number]) => number) => median(blocks.map(f));
  return {
    plain: med((b) => b.plain), ring: med((b) => b.ring), measuring: med((b) => b.measuring),
    ratio: med((b) => b.measuring / b.plain), ratioVsRing: med((b) => b.measuring / b.ring),
  };
}

async function accuracy(kvm: Kvm, plan: DirtyRateBenchPlan): Promise<AccuracyRow[]> {
  const rows: AccuracyRow[] = [];
  const rateOf = (r: number) => (r === Infinity ? null : r);
  {
    // dirty-ring: the four rates on four vCPUs of one VM, one window
    const { machine, paced } = createPacedMachine(kvm, { rateMBps: RATES, spanPages: 32768, mode: 'ring' });
    const r = await measureDirtyRate(machine, { seconds: plan.windowSeconds, mode: 'dirty-ring', policies: [paced] });
    const t = paced.truth(r.startedAt, r.endedAt);
    RATES.forEach((rate, i) => rows.push({
      mode: 'dirty-ring', rateMBps: rateOf(rate), trueMBps: t.vcpus[i].MBps, MBps: r.vcpus![i].MBps,
      errorPct: errPct(r.vcpus![i].MBps, t.vcpus[i].MBps), entriesMBps: r.vcpus![i].entries / 256 / r.seconds,
    }));
    machine.close();
  }
  for (const [mode, machineMode, kind, span, perGiB] of [
    ['dirty-bitmap', 'bitmap', 'stride', 32768, undefined],
    ['page-sampling', 'none', 'random', 262144, 512],
    ['page-sampling', 'none', 'random', 262144, 4096],
  ] as const) {
    const { machine, paced } = createPacedMachine(kvm, { kind, rateMBps: 1, spanPages: span, mode: machineMode });
    const runner = new GuestRunner(machine, [paced]);
    runner.start();
    try {
      for (const rate of RATES) {
        paced.setRate(0, rate);
        await sleep(100);
        const r = await measureDirtyRate(runner, { seconds: plan.windowSeconds, mode, samplePagesPerGiB: perGiB, seed: rows.length + 1 });
        const t = paced.truth(r.startedAt, r.endedAt);
        rows.push({
          mode, rateMBps: rateOf(rate), trueMBps: t.MBps, MBps: r.MBps, errorPct: errPct(r.MBps, t.MBps),
          ...(perGiB ? { samplePagesPerGiB: perGiB, stdErrMBps: r.stdErrMBps } : {}),
        });
      }
    } finally {
      await runner.stop();
      machine.close();
    }
  }
  return rows;
}

async function limits(kvm: Kvm, plan: DirtyRateBenchPlan): Promise<LimitRow[]> {
  const SPAN = 32768;
  const UNTHROTTLED = 256;
  const paced = new PacedWorkload({ rateMBps: Infinity, spanPages: SPAN, maxPagesPerEpoch: 32 });
  const machine = createMachine(kvm, {
    dataPages: SPAN + UNTHROTTLED, vcpus: 2, mode: 'ring', ringBytes: dirtyRingBytes(kvm, UNTHROTTLED),
    workloads: [paced.workloads[0], Workload.stride({ firstPage: paced.firstPage + SPAN, pages: UNTHROTTLED })],
  });
  paced.attach(machine);
  const periodMs = plan.periodSeconds * 1000;
  const limit = new DirtyLimit(machine, { periodMs });
  let parked = false;
  const park = { beforeRun: (id: number) => (parked && id === 0 ? Infinity : 0) };
  const runner = new GuestRunner(machine, [paced, limit, park]);
  const meter = new DirtyRateMeter(runner, 'dirty-ring');
  const rows: LimitRow[] = [];
  /** vCPU 1's pages/ms with vCPU 0 held at L, unlimited, parked: 50 ms phases in turn, so the host's load falls on all alike. */
  const unthrottled = async (L: number) => {
    const pages = { held: 0, free: 0, parked: 0 };
    const ms = { held: 0, free: 0, parked: 0 };
    for (let i = 0; i < plan.alternations; i++) {
      for (const phase of ['held', 'free', 'parked'] as const) {
        parked = phase === 'parked';
        if (phase === 'held') limit.set(0, L);
        else limit.clear(0);
        runner.wake();
        const e0 = runner.stats[1].epochs;
        const t0 = performance.now();
        await sleep(50);
        pages[phase] += runner.stats[1].epochs - e0;
        ms[phase] += performance.now() - t0;
      }
    }
    parked = false;
    const speed = (k: keyof typeof pages) => pages[k] / ms[k];
    return { vsFree: ratio(speed('held'), speed('free')), vsParked: ratio(speed('held'), speed('parked')) };
  };
  runner.start();
  try {
    meter.start();
    for (const L of LIMITS) {
      limit.set(0, L);
      meter.lap();
      const achieved: number[] = [];
      for (let p = 0; p < SETTLE_PERIODS + CHECKED_PERIODS; p++) {
        await sleep(periodMs);
        const r = meter.lap();
        if (p >= SETTLE_PERIODS) achieved.push(r.vcpus![0].MBps);
      }
      const u = await unthrottled(L);
      rows.push({
        limitMBps: L,
        achievedMBps: achieved.reduce((a, b) => a + b, 0) / achieved.length,
        worstMBps: achieved.reduce((w, x) => (Math.abs(x - L) > Math.abs(w - L) ? x : w), achieved[0]),
        unthrottledRatio: u.vsFree,
        unthrottledVsParked: u.vsParked,
      });
    }
    meter.stop();
  } finally {
    await runner.stop();
    machine.close();
  }
  return rows;
}

/** The section's tables, in the style of bench/report.ts. */
export function formatDirtyRate(r: DirtyRateBench, style: ReportStyle): string {
  const out: string[] = [];
  const title = (text: string) => (style === 'markdown' ? `**${text}**\n` : text);
  const rate = (x: number | null) => (x === null ? 'full speed' : `${x} MB/s`);
  const fixed = (x: number | null | undefined, digits: number) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));
  if (r.overhead) {
    out.push(title('Dirty rate: guest speed while dirty-ring mode measures (Workload.stride, 64 pages an epoch; epochs/s)'));
    out.push(table(style, ['no dirty logging', 'ring, not measured', 'ring, measuring', 'measuring / no logging', 'measuring / ring'], [
      [fmt(r.overhead.plain), fmt(r.overhead.ring), fmt(r.overhead.measuring), fixed(r.overhead.ratio, 3), fixed(r.overhead.ratioVsRing, 3)],
    ]));
  }
  if (r.accuracy.length) {
    out.push('', title('Dirty rate: true against measured (MB/s = MiB/s; the truth from the pacer\'s log of the same window)'));
    out.push(table(style, ['mode', 'paced at', 'true', 'measured', 'error %', 'ring entries alone', 'samples/GiB', 'std err'], r.accuracy.map((a) => [
      a.mode, rate(a.rateMBps), fmt(a.trueMBps), fmt(a.MBps), fixed(a.errorPct, 2), fmt(a.entriesMBps), a.samplePagesPerGiB ? String(a.samplePagesPerGiB) : '-', fmt(a.stdErrMBps),
    ])));
  }
  if (r.limit.length) {
    out.push('', title('Dirty limit on a full-speed vCPU: achieved from the 4th period on (MB/s); the unthrottled vCPU\'s speed while it is held, against the other unlimited and parked'));
    out.push(table(style, ['limit', 'achieved (mean)', 'worst period', 'unthrottled / other unlimited', 'unthrottled / other parked'], r.limit.map((l) => [
      fmt(l.limitMBps), fmt(l.achievedMBps), fmt(l.worstMBps), fixed(l.unthrottledRatio, 3), fixed(l.unthrottledVsParked, 3),
    ])));
  }
  const t = r.target;
  out.push('', `${style === 'markdown' ? '**Dirty-rate target:**' : 'Dirty-rate target:'} ${t.what} = ${fixed(t.value, 3)} (>= ${t.bound}: ${t.met === null ? 'not measured' : t.met ? 'met' : 'NOT met'})`);
  return out.join('\n');
}

// `node dist/bench/dirtyrate.js [--quick] [--markdown] [--json]`: this section alone.
if (require.main === module) {
  const args = new Set(process.argv.slice(2));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  benchDirtyRate(args.has('--quick') ? DIRTYRATE_QUICK : DIRTYRATE_FULL, log, (what, e) => log(`  ${what}: ${e instanceof Error ? e.message : String(e)}`))
    .then((r) => process.stdout.write(`${args.has('--json') ? JSON.stringify(r, null, 2) : formatDirtyRate(r, args.has('--markdown') ? 'markdown' : 'text')}\n`))
    .catch((e: Error) => {
      process.stderr.write(`bench: ${e.stack ?? e.message}\n`);
      process.exitCode = 1;
    });
}
