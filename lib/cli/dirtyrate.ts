// kvm-dirty dirtyrate and kvm-dirty dirtylimit: a guest whose dirty rate the host knows (a
// PacedWorkload), measured the three ways of measureDirtyRate() beside the true rate, and a
// full-speed guest held to a per-vCPU dirty limit beside an unthrottled vCPU.

import { InvalidArgumentError, Option, type Command } from 'commander';
import { SingleBar } from 'cli-progress';
import type { Kvm } from '../kvm';
import { DirtyLimit } from '../dirtyrate/limit';
import { DirtyRateMeter, measureDirtyRate, DIRTY_RATE_MODES, type DirtyRateMode, type DirtyRateResult } from '../dirtyrate/measure';
import { createPacedMachine, type PacedWorkload, type TrueRate } from '../dirtyrate/paced';
import { GuestRunner } from '../dirtyrate/runner';
import { DEFAULT_SAMPLE_PAGES_PER_GIB } from '../dirtyrate/sampling';
import { PAGES_PER_MB } from '../dirtyrate/units';
import { open, positiveInt, positiveNumber, type BackendFlags } from './common';

interface RateFlags extends BackendFlags {
  mode: DirtyRateMode;
  seconds?: number;
  rateMbps?: number[];
  vcpus?: number;
  workload: 'stride' | 'random';
  spanMib: number;
  periodMs: number;
  samplePages: number;
  json?: boolean;
  watch?: boolean;
}

interface LimitFlags extends BackendFlags {
  limitMbps: number;
  seconds: number;
  periodMs: number;
  vcpus: number;
  spanMib: number;
  json?: boolean;
}

/** Machine tracking for each measurement mode: page-sampling runs with no dirty logging at all. */
const MACHINE_MODE = { 'dirty-ring': 'ring', 'dirty-bitmap': 'bitmap', 'page-sampling': 'none' } as const;
/** The limited vCPU's epochs: 32 pages, so one run moves a period's count by little even at 1 MB/s. */
const LIMIT_EPOCH_PAGES = 32;
/** Periods a limit takes to settle before its figures count (the issue's "steady after 3 periods"). */
export const SETTLE_PERIODS = 3;

function rates(v: string): number[] {
  const out = v.split(',').map((x) => Number(x));
  if (out.some((x) => !Number.isFinite(x) || x <= 0)) throw new InvalidArgumentError('--rate-mbps takes positive numbers of MB/s, comma-separated (one per vCPU, or one for all)');
  return out;
}


export function registerDirtyRateCommands(program: Command, backendOptions: (cmd: Command) => Command): void {
  backendOptions(program.command('dirtyrate'))
    .description('measure the dirty rate of a guest whose true rate is known (MB = MiB, as QEMU)')
    .addOption(new Option('--mode <mode>', 'how to measure').choices([...DIRTY_RATE_MODES]).default('dirty-ring'))
    .option('--seconds <S>', 'measurement window (default 1; 10 with --watch)', positiveNumber('--seconds'))
    .option('--rate-mbps <R>', 'MB/s of page writes per vCPU, paced by the host (comma-separated: one per vCPU); default: full speed', rates)
    .option('--vcpus <N>', 'vCPUs (default: as many as rates, else 1)', positiveInt('--vcpus'))
    .addOption(new Option('--workload <kind>', 'stride sweeps each vCPU\'s span (every page distinct until it wraps); random writes uniformly in it').choices(['stride', 'random']).default('stride'))
    .option('--span-mib <M>', 'MiB each vCPU writes over', positiveInt('--span-mib'), 64)
    .option('--period-ms <ms>', 'period of --watch lines', positiveNumber('--period-ms'), 1000)
    .option('--sample-pages <N>', 'page-sampling: samples per GiB', positiveInt('--sample-pages'), DEFAULT_SAMPLE_PAGES_PER_GIB)
    .option('--watch', 'a line per period')
    .option('--json', 'machine-readable output')
    .action(dirtyRateCommand);

  backendOptions(program.command('dirtylimit'))
    .description('hold vCPU 0 of a full-speed guest to a dirty limit; the other vCPUs run unthrottled')
    .requiredOption('--limit-mbps <L>', 'MB/s of distinct pages vCPU 0 may dirty', positiveNumber('--limit-mbps'))
    .option('--seconds <S>', 'run time (whole periods)', positiveNumber('--seconds'), 10)
    .option('--period-ms <ms>', 'accounting and report period', positiveNumber('--period-ms'), 1000)
    .option('--vcpus <N>', 'vCPUs: vCPU 0 limited, the others not', positiveInt('--vcpus'), 2)
    .option('--span-mib <M>', 'MiB each vCPU sweeps', positiveInt('--span-mib'), 256)
    .option('--json', 'machine-readable output')
    .action(dirtyLimitCommand);
}

function pct(measured: number, truth: number): number | null {
  return truth > 0 ? round((measured / truth - 1) * 100, 2) : null;
}

function signed(p: number | null | undefined): string {
  return p === null || p === undefined ? '-' : `${p >= 0 ? '+' : ''}${p.toFixed(2)} %`;
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function mbps(x: number): string {
  return x >= 100 ? x.toFixed(1) : x.toFixed(2);
}

/** One result beside the truth of its window, as the JSON carries it. */
function compare(r: DirtyRateResult, t: TrueRate, requested: number[]) {
  return {
    seconds: round(r.seconds, 4),
    MBps: round(r.MBps),
    trueMBps: round(t.MBps),
    errorPct: pct(r.MBps, t.MBps),
    pagesPerSec: Math.round(r.pagesPerSec),
    ...(r.samplePages !== undefined ? { samplePages: r.samplePages, sampleDirty: r.sampleDirty, stdErrMBps: round(r.stdErrMBps ?? 0) } : {}),
    vcpus: t.vcpus.map((v, i) => ({
      id: v.id,
      rateMBps: requested[i] === Infinity ? null : requested[i],
      ...(r.vcpus ? { MBps: round(r.vcpus[i].MBps), entriesPerSec: Math.round(r.vcpus[i].entries / r.seconds), errorPct: pct(r.vcpus[i].MBps, v.MBps) } : {}),
      trueMBps: round(v.MBps),
      writeMBps: round(v.writesPerSec / PAGES_PER_MB),
    })),
  };
}

export async function dirtyRateCommand(f: RateFlags): Promise<void> {
  const n = f.vcpus ?? f.rateMbps?.length ?? 1;
  const requested = f.rateMbps ?? [Infinity];
  if (requested.length !== 1 && requested.length !== n) throw new RangeError(`--rate-mbps gives ${requested.length} rates for ${n} vCPUs (give one, or one per vCPU)`);
  const perVcpu = requested.length === 1 ? new Array<number>(n).fill(requested[0]) : requested;
  const seconds = f.seconds ?? (f.watch ? 10 : 1);
  const kvm = open(f);
  try {
    const { machine, paced } = createPacedMachine(kvm, {
      kind: f.workload, rateMBps: perVcpu, spanPages: f.spanMib * PAGES_PER_MB, mode: MACHINE_MODE[f.mode],
    });
    const runner = new GuestRunner(machine, [paced]);
    const controller = new AbortController();
    const onSigint = () => controller.abort();
    process.once('SIGINT', onSigint);
    const bar = f.watch ? null : new SingleBar({ stream: process.stderr, format: '{bar} {value}/{total} s measuring ({mode})', barsize: 20, hideCursor: false, fps: 5 });
    const ticker = bar ? setInterval(() => bar.increment(0.2), 200) : null;
    runner.start();
    let result: DirtyRateResult;
    try {
      if (!f.json) console.log(header(kvm, MACHINE_MODE[f.mode], f, perVcpu));
      bar?.start(seconds, 0, { mode: f.mode });
      result = await measureDirtyRate(runner, {
        mode: f.mode, seconds, samplePagesPerGiB: f.samplePages, signal: controller.signal,
        ...(f.watch ? {
          periodMs: f.periodMs,
          onPeriod: (p: DirtyRateResult) => {
            if (!f.json) console.log(periodLine(p, paced.truth(p.startedAt, p.endedAt)));
          },
        } : {}),
      });
    } finally {
      if (ticker) clearInterval(ticker);
      bar?.stop();
      process.off('SIGINT', onSigint);
      await runner.stop();
    }
    const truth = paced.truth(result.startedAt, result.endedAt);
    const report = {
      backend: kvm.backend, host: kvm.hostInfo.description, mode: f.mode, workload: f.workload, spanMiB: f.spanMib,
      ...compare(result, truth, perVcpu),
      ...(result.periods ? { periods: result.periods.map((p) => compare(p, paced.truth(p.startedAt, p.endedAt), perVcpu)) } : {}),
    };
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else {
      for (const v of report.vcpus) {
        const measured = 'MBps' in v ? `${mbps(v.MBps as number)} MB/s measured, ` : '';
        const error = 'errorPct' in v ? ` (${signed(v.errorPct)})` : '';
        console.log(`  vCPU ${v.id}: ${measured}${mbps(v.trueMBps)} MB/s true${error}; writes ${mbps(v.writeMBps)} MB/s${'entriesPerSec' in v ? `, ${v.entriesPerSec} ring entries/s` : ''}`);
      }
      const sample = result.samplePages !== undefined ? `; ${result.sampleDirty} of ${result.samplePages} sampled pages changed, ± ${mbps(result.stdErrMBps ?? 0)} MB/s (1 s.e.)` : '';
      // Over the whole window a page counts once, so a sweep that wraps within it shows less than its periods did.
      console.log(`  VM: ${mbps(result.MBps)} MB/s measured over ${result.seconds.toFixed(2)} s (each page once), ${mbps(truth.MBps)} MB/s true (${signed(report.errorPct)})${sample}`);
    }
    machine.close();
  } finally {
    kvm.close();
  }
}

function header(kvm: Kvm, machineMode: string, f: RateFlags, rates: number[]): string {
  const r = rates.map((x) => (x === Infinity ? 'full speed' : `${x} MB/s`)).join(', ');
  const tracking = machineMode === 'none' ? 'no dirty logging' : `the dirty ${machineMode}`;
  return `dirty rate on ${kvm.backend} (${kvm.hostInfo.description}), ${f.mode} with ${tracking}; ${rates.length} vCPU(s) ${f.workload} over ${f.spanMib} MiB each, paced at ${r}`;
}

function periodLine(p: DirtyRateResult, t: TrueRate): string {
  const vcpus = p.vcpus ? '  |' + p.vcpus.map((v, i) => ` vCPU ${v.id} ${mbps(v.MBps)} (${mbps(t.vcpus[i].MBps)})`).join('') : '';
  return `  ${(p.seconds).toFixed(2)} s  measured ${mbps(p.MBps)} MB/s  true ${mbps(t.MBps)} MB/s${vcpus}`;
}

export async function dirtyLimitCommand(f: LimitFlags): Promise<void> {
  const kvm = open(f);
  try {
    const { machine, paced } = createPacedMachine(kvm, {
      rateMBps: new Array<number>(f.vcpus).fill(Infinity), spanPages: f.spanMib * PAGES_PER_MB, mode: 'ring', maxPagesPerEpoch: LIMIT_EPOCH_PAGES,
    });
    const limit = new DirtyLimit(machine, { periodMs: f.periodMs });
    const runner = new GuestRunner(machine, [paced, limit]);
    const meter = new DirtyRateMeter(runner, 'dirty-ring');
    const periods: ReturnType<typeof limitPeriod>[] = [];
    let stop = false;
    const onSigint = () => (stop = true);
    process.once('SIGINT', onSigint);
    runner.start();
    try {
      limit.set(0, f.limitMbps);
      meter.start();
      if (!f.json) console.log(`dirty limit ${f.limitMbps} MB/s on vCPU 0 of ${f.vcpus} on ${kvm.backend} (${kvm.hostInfo.description}); full-speed stride over ${f.spanMib} MiB per vCPU, ${f.periodMs} ms periods`);
      // Whole periods only: a sliver at the end would be a rate of a few pages.
      const count = Math.max(1, Math.round((f.seconds * 1000) / f.periodMs));
      const started = performance.now();
      let was = runner.stats[0];
      for (let k = 1; k <= count && !stop && runner.error === null; k++) {
        await new Promise((r) => setTimeout(r, Math.max(0, started + k * f.periodMs - performance.now())));
        const now = runner.stats[0];
        const p = limitPeriod(periods.length, meter.lap(), paced, f.limitMbps, now.heldMs - was.heldMs, now.lateMs - was.lateMs);
        was = now;
        periods.push(p);
        if (!f.json) console.log(`  period ${String(p.period).padStart(3)}  limit ${mbps(p.limitMBps)}  achieved ${mbps(p.achievedMBps)} (true ${mbps(p.trueMBps)}, held ${p.heldPct} %)  unthrottled ${p.unthrottledMBps === null ? '-' : mbps(p.unthrottledMBps)} MB/s (writes ${p.unthrottledWriteMBps === null ? '-' : mbps(p.unthrottledWriteMBps)})`);
      }
      if (runner.error !== null) throw runner.error;
      meter.stop();
    } finally {
      process.off('SIGINT', onSigint);
      await runner.stop();
    }
    // The figures of the steady periods: after the first SETTLE_PERIODS (all of them if the run
    // was shorter), weighted by their lengths (a period cut short by a late timer weighs less).
    const steady = periods.length > SETTLE_PERIODS ? periods.slice(SETTLE_PERIODS) : periods;
    const mean = (pick: (p: (typeof periods)[number]) => number | null) => {
      const v = steady.filter((p) => pick(p) !== null);
      const secs = v.reduce((a, p) => a + p.seconds, 0);
      return secs > 0 ? round(v.reduce((a, p) => a + pick(p)! * p.seconds, 0) / secs) : null;
    };
    const report = {
      backend: kvm.backend, host: kvm.hostInfo.description, vcpus: f.vcpus, periodMs: f.periodMs,
      limitMBps: f.limitMbps,
      achievedMBps: mean((p) => p.achievedMBps),
      trueMBps: mean((p) => p.trueMBps),
      unthrottledMBps: mean((p) => p.unthrottledMBps),
      unthrottledWriteMBps: mean((p) => p.unthrottledWriteMBps),
      steadyFromPeriod: periods.length > SETTLE_PERIODS ? SETTLE_PERIODS : 0,
      periods,
    };
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else console.log(`  steady (periods ${report.steadyFromPeriod}+): limit ${f.limitMbps} MB/s, achieved ${report.achievedMBps} MB/s (true ${report.trueMBps}); unthrottled ${report.unthrottledMBps ?? '-'} MB/s dirtied, ${report.unthrottledWriteMBps ?? '-'} MB/s written`);
    machine.close();
  } finally {
    kvm.close();
  }
}

/**
 * One period of the limit run: vCPU 0 against its limit, the others (their mean) unthrottled;
 * heldPct, the share of the period the limit kept vCPU 0 out of KVM_RUN, and latePct, the
 * share its waits overran (a busy host: a limit cannot be reached then).
 */
function limitPeriod(period: number, r: DirtyRateResult, paced: PacedWorkload, limitMBps: number, heldMs: number, lateMs: number) {
  const t = paced.truth(r.startedAt, r.endedAt);
  const others = r.vcpus!.slice(1);
  const mean = (xs: number[]) => (xs.length ? round(xs.reduce((a, b) => a + b, 0) / xs.length) : null);
  const ms = r.seconds * 1000;
  return {
    period,
    seconds: round(r.seconds, 4),
    limitMBps,
    achievedMBps: round(r.vcpus![0].MBps),
    trueMBps: round(t.vcpus[0].MBps),
    heldPct: round((100 * heldMs) / ms, 1),
    latePct: round((100 * lateMs) / ms, 1),
    unthrottledMBps: mean(others.map((v) => v.MBps)),
    unthrottledWriteMBps: mean(t.vcpus.slice(1).map((v) => v.writesPerSec / PAGES_PER_MB)),
  };
}
