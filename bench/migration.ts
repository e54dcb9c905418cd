// The live-migration section of `npm run bench`: a source here, a destination in a
// long-lived child process (bench/migration-peer.ts), loopback TCP, native backend.
//   (a) a 1 GiB guest rewriting 64 pages per epoch at full speed, 10 migrations: downtime
//       p50 and p90, total time, bytes against what a copy of every changed page would take;
//   (b) a guest rewriting 1,024 pages per epoch, downtime limit 10 and 300 ms, ring and bitmap;
//   (c) a guest sweeping 64 MiB with random writes at full speed, pages sent whole (as QEMU
//       without XBZRLE), downtime limit 10 and 300 ms: converged or not, with each throttle.
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

import { openKvm, Workload } from '../lib/index';
import { createMachine, DATA_GFN, type DirtyMode } from '../lib/checkpoint/machine';
import { migrateTo, type MigrationStats, type ThrottleMode } from '../lib/checkpoint/migration';
import { GuestRunner } from '../lib/dirtyrate/runner';
import { fmt, table, type ReportStyle } from './report';
import { median, quantile } from './stats';

export interface MigrationBenchPlan {
  /** migrations of configuration (a) */
  repeats: number;
  /** migrations of each (b) and (c) configuration */
  others: number;
  /** ms the guest runs before each migration */
  warmMs: number;
}

export const MIGRATION_FULL: MigrationBenchPlan = { repeats: 10, others: 3, warmMs: 200 };
export const MIGRATION_QUICK: MigrationBenchPlan = { repeats: 4, others: 1, warmMs: 100 };

export interface MigrationRow {
  name: string;
  mode: DirtyMode;
  pages: number;
  downtimeLimitMs: number;
  throttle: ThrottleMode;
  delta: boolean;
  migrations: number;
  completed: number;
  /** medians over the migrations (downtime also p90) */
  downtimeMsP50: number | null;
  downtimeMsP90: number | null;
  /** the first migration of the processes (code not yet JIT-compiled) */
  firstDowntimeMs: number | null;
  totalTimeMs: number | null;
  rounds: number | null;
  bytes: number | null;
  /** bytes sent / (non-zero memory at the start + pages found dirty in the rounds × 4 KiB) */
  bytesRatio: number | null;
  converged: string;
  maxThrottlePercent: number;
  dirtyLimitMBps: number | null;
}

export interface MigrationBench {
  rows: MigrationRow[];
}

class Destination {
  readonly child: ChildProcess;
  readonly #queue: Array<{ ev: string; [k: string]: unknown }> = [];
  readonly #waiters: Array<{ resolve: (e: { ev: string; [k: string]: unknown }) => void; reject: (e: Error) => void }> = [];
  #exited = false;

  constructor(count: number, mode: DirtyMode) {
    this.child = fork(join(__dirname, 'migration-peer.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (e: { ev: string }) => {
      const w = this.#waiters.shift();
      if (w) w.resolve(e);
      else this.#queue.push(e);
    });
    // one listener for the process's life (not one per wait: a long run would pile them up)
    this.child.once('exit', () => {
      this.#exited = true;
      for (const w of this.#waiters.splice(0)) w.reject(new Error('the destination process exited'));
    });
    this.child.send({ backend: 'native', mode, count });
  }

  next(): Promise<{ ev: string; [k: string]: unknown }> {
    const e = this.#queue.shift();
    if (e) return Promise.resolve(e);
    if (this.#exited) return Promise.reject(new Error('the destination process exited'));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }
}

async function runConfig(name: string, o: { workload: Workload; mode: DirtyMode; downtimeLimitMs: number; throttle: ThrottleMode; delta: boolean; migrations: number; warmMs: number }): Promise<MigrationRow> {
  const dst = new Destination(o.migrations, o.mode);
  const kvm = openKvm({ backend: 'native' });
  const all: MigrationStats[] = [];
  const bounds: number[] = [];
  try {
    for (let i = 0; i < o.migrations; i++) {
      const hello = await dst.next();
      if (hello.ev !== 'listening') throw new Error(`destination: ${String(hello.message ?? hello.ev)}`);
      const m = createMachine(kvm, { dataPages: 262_144 - DATA_GFN, mode: o.mode, workloads: o.workload });
      const runner = new GuestRunner(m);
      runner.start();
      await new Promise((r) => setTimeout(r, o.warmMs));
      const s = await migrateTo(m, hello.port as number, { runner, downtimeLimitMs: o.downtimeLimitMs, throttle: o.throttle, delta: o.delta ? undefined : false, maxRounds: 30 });
      if (s.status !== 'completed') {
        await runner.stop().catch(() => undefined);
        m.close();
        throw new Error(`migration ${i + 1}: ${s.status}: ${s.error}`);
      }
      const done = await dst.next();
      if (done.ev !== 'done' || !done.ok) throw new Error(`destination: ${JSON.stringify(done)}`);
      all.push(s);
      bounds.push(s.rounds.reduce((n, r) => n + r.pages, 0) * 4096);
    }
  } finally {
    kvm.close();
    dst.child.kill();
  }
  const downtimes = all.map((s) => s.downtimeMs!);
  const last = all[all.length - 1];
  return {
    name, mode: o.mode, pages: writesOf(o.workload), downtimeLimitMs: o.downtimeLimitMs, throttle: o.throttle, delta: o.delta,
    migrations: o.migrations, completed: all.length,
    downtimeMsP50: median(downtimes), downtimeMsP90: quantile(downtimes, 0.9), firstDowntimeMs: downtimes[0] ?? null,
    totalTimeMs: median(all.map((s) => s.totalTimeMs)), rounds: median(all.map((s) => s.rounds.length)),
    bytes: median(all.map((s) => s.transferredBytes)), bytesRatio: median(all.map((s, i) => s.transferredBytes / bounds[i])),
    converged: [...new Set(all.map((s) => s.converged))].join(', '), maxThrottlePercent: Math.max(...all.map((s) => s.maxThrottlePercent)),
    dirtyLimitMBps: last?.dirtyLimitMBps ?? null,
  };
}

function writesOf(w: Workload): number {
  const s = w.spec;
  return s.kind === 'stride' ? s.pages : s.kind === 'random' ? s.pagesPerEpoch : 1;
}

export async function benchMigration(plan: MigrationBenchPlan, log: (line: string) => void, error: (what: string, e: unknown) => void): Promise<MigrationBench> {
  const rows: MigrationRow[] = [];
  const data = 262_144 - DATA_GFN;
  const configs: Array<[string, Parameters<typeof runConfig>[1]]> = [
    ['64 pages/epoch', { workload: Workload.stride({ firstPage: DATA_GFN, pages: 64, stridePages: Math.floor(data / 64) }), mode: 'ring', downtimeLimitMs: 300, throttle: 'auto-converge', delta: true, migrations: plan.repeats, warmMs: plan.warmMs }],
  ];
  for (const limit of [10, 300]) {
    for (const mode of ['ring', 'bitmap'] as const) {
      configs.push([`1,024 pages/epoch, limit ${limit} ms`, { workload: Workload.stride({ firstPage: DATA_GFN, pages: 1024, stridePages: Math.floor(data / 1024) }), mode, downtimeLimitMs: limit, throttle: 'auto-converge', delta: true, migrations: plan.others, warmMs: plan.warmMs }]);
    }
  }
  for (const limit of [10, 300]) {
    for (const throttle of ['none', 'auto-converge', 'dirty-limit'] as const) {
      configs.push([`64 MiB sweep, limit ${limit} ms`, { workload: Workload.random({ firstPage: DATA_GFN, spanPages: 16_384, pagesPerEpoch: 256, seed: 3 }), mode: 'ring', downtimeLimitMs: limit, throttle, delta: false, migrations: plan.others, warmMs: plan.warmMs }]);
    }
  }
  for (const [name, c] of configs) {
    log(`migration: ${name}, ${c.mode}, ${c.throttle}${c.delta ? '' : ', pages whole'}: ${c.migrations} x`);
    try {
      const r = await runConfig(name, c);
      rows.push(r);
      log(`  downtime p50 ${fmt(r.downtimeMsP50)} ms (first ${fmt(r.firstDowntimeMs)}), total ${fmt(r.totalTimeMs)} ms, ${fmt(r.rounds)} rounds, ${fmt(r.bytes)} bytes, converged: ${r.converged}`);
    } catch (e) {
      error(`migration ${name} (${c.mode}, ${c.throttle})`, e);
    }
  }
  return { rows };
}

export function formatMigration(b: MigrationBench, style: ReportStyle = 'text'): string {
  const title = (t: string) => (style === 'markdown' ? `**${t}**\n` : t);
  return [
    title('Live migration between processes, 1 GiB guest, loopback (source here, destination a long-lived process; medians)'),
    table(style,
      ['guest', 'tracking', 'throttle', 'pages', 'runs', 'downtime p50 / p90 ms', 'first ms', 'total ms', 'rounds', 'MiB sent', 'sent / changed', 'converged', 'throttle max'],
      b.rows.map((r) => [
        r.name, r.mode, r.throttle, r.delta ? 'delta' : 'whole', `${r.completed}/${r.migrations}`,
        `${fmt(r.downtimeMsP50)} / ${fmt(r.downtimeMsP90)}`, fmt(r.firstDowntimeMs), fmt(r.totalTimeMs), fmt(r.rounds),
        fmt(r.bytes === null ? null : r.bytes / 2 ** 20), fmt(r.bytesRatio), r.converged,
        r.throttle === 'dirty-limit' ? (r.dirtyLimitMBps === null ? '-' : `${fmt(r.dirtyLimitMBps)} MiB/s`) : `${r.maxThrottlePercent}%`,
      ])),
  ].join('\n');
}

if (require.main === module) {
  const quick = process.argv.includes('--quick');
  benchMigration(quick ? MIGRATION_QUICK : MIGRATION_FULL, (l) => process.stderr.write(`${l}\n`), (w, e) => process.stderr.write(`${w}: ${e instanceof Error ? e.message : String(e)}\n`))
    .then((b) => process.stdout.write(`${process.argv.includes('--json') ? JSON.stringify(b) : formatMigration(b, process.argv.includes('--markdown') ? 'markdown' : 'text')}\n`));
}
