// The full-state section of `npm run bench` (a guest of your own: State frames in every epoch):
//   (a) what saving and restoring the whole state costs per vCPU and per VM (bench/state.ts);
//   (b) the checkpoint engine with the whole state in each epoch against the registers only,
//       same guest (Workload.stride, K = 64, 1 GiB, ring), pairs alternating in one run;
//   (c) the C guest of examples/own-guest (1000 timer steps of 1 ms) run to its result alone,
//       then under checkpointing every ~1 ms with its full state to a replica over loopback TCP.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { buildGuest, guestBuildSkipReason } from '../examples/own-guest/build';
import { openKvm } from '../lib/index';
import { benchCheckpoint } from '../lib/checkpoint/bench';
import { Checkpointer } from '../lib/checkpoint/checkpointer';
import { createImageMachine, GUEST_EXIT_PORT } from '../lib/checkpoint/machine';
import { OutputTap } from '../lib/checkpoint/migration-link';
import { OutputCommit } from '../lib/checkpoint/output';
import { ReplicaServer, TcpSink } from '../lib/checkpoint/transport';
import { GuestRunner } from '../lib/dirtyrate/runner';
import { measureStateCosts, type StateCosts } from './state';
import { fmt, table, type ReportStyle } from './report';
import { median } from './stats';

export interface FullStatePlan {
  /** pairs (regs only, full state) of checkpoint runs */
  pairs: number;
  seconds: number;
  /** runs of the C guest each way */
  guestRuns: number;
  stateIterations: number;
}

export const FULL_STATE_FULL: FullStatePlan = { pairs: 3, seconds: 2, guestRuns: 3, stateIterations: 2000 };
export const FULL_STATE_QUICK: FullStatePlan = { pairs: 1, seconds: 0.5, guestRuns: 1, stateIterations: 300 };

const K = 64;
const TICKS = 1000;

export interface CheckpointStateRow {
  state: 'regs' | 'full';
  committedPerSec: number | null;
  pauseP50Us: number | null;
  pauseP99Us: number | null;
  bytesPerEpoch: number | null;
}

export interface FullStateBench {
  costs: StateCosts | null;
  /** (b): the registers only, and the whole state; `fullOverRegs` = committed/s with full state / with the registers only */
  checkpoint: { k: number; rows: CheckpointStateRow[]; fullOverRegs: number | null };
  /** (c): ms to the guest's result alone and under checkpointing (medians), their quotient, and the checkpointed run's figures */
  ownGuest: {
    ticks: number; aloneMs: number | null; checkpointedMs: number | null; aloneOverCheckpointed: number | null;
    epochs: number | null; pauseP50Us: number | null; pauseP99Us: number | null; bytesPerEpoch: number | null; skipped?: string;
  };
}

export async function benchFullState(plan: FullStatePlan, log: (line: string) => void, error: (what: string, e: unknown) => void): Promise<FullStateBench> {
  const out: FullStateBench = {
    costs: null,
    checkpoint: { k: K, rows: [], fullOverRegs: null },
    ownGuest: { ticks: TICKS, aloneMs: null, checkpointedMs: null, aloneOverCheckpointed: null, epochs: null, pauseP50Us: null, pauseP99Us: null, bytesPerEpoch: null },
  };
  try {
    const kvm = openKvm({ backend: 'native' });
    try {
      log(`full state: get/set costs, ${plan.stateIterations} calls each`);
      out.costs = measureStateCosts(kvm, plan.stateIterations);
    } finally {
      kvm.close();
    }
  } catch (e) {
    error('full state: costs', e);
  }

  const runs: Record<'regs' | 'full', { c: number[]; p50: number[]; p99: number[]; b: number[] }> = { regs: { c: [], p50: [], p99: [], b: [] }, full: { c: [], p50: [], p99: [], b: [] } };
  for (let i = 0; i < plan.pairs; i++) {
    // alternate which goes first, so both see the same machine
    const order: ('regs' | 'full')[] = i % 2 ? ['full', 'regs'] : ['regs', 'full'];
    for (const state of order) {
      log(`full state: checkpoint K=${K} 1 GiB ring, ${state === 'full' ? 'whole state' : 'registers only'}, ${plan.seconds} s`);
      try {
        const r = await benchCheckpoint({ backend: 'native', pagesPerEpoch: K, mode: 'ring', seconds: plan.seconds, fullState: state === 'full' });
        runs[state].c.push(r.committedPerSec);
        runs[state].p50.push(r.pauseP50Us);
        runs[state].p99.push(r.pauseP99Us);
        runs[state].b.push(r.bytesPerEpoch);
      } catch (e) {
        error(`full state: checkpoint (${state})`, e);
      }
    }
  }
  const med = (xs: number[]): number | null => (xs.length ? median(xs) : null);
  out.checkpoint.rows = (['regs', 'full'] as const).map((state) => ({
    state, committedPerSec: med(runs[state].c), pauseP50Us: med(runs[state].p50), pauseP99Us: med(runs[state].p99), bytesPerEpoch: med(runs[state].b),
  }));
  const [regs, full] = out.checkpoint.rows;
  out.checkpoint.fullOverRegs = regs.committedPerSec && full.committedPerSec !== null ? full.committedPerSec / regs.committedPerSec : null;

  const skip = guestBuildSkipReason();
  if (skip !== undefined) out.ownGuest.skipped = skip;
  else {
    try {
      await ownGuest(plan, out.ownGuest, log);
    } catch (e) {
      error('full state: the own-guest C program', e);
    }
  }
  return out;
}

async function ownGuest(plan: FullStatePlan, o: FullStateBench['ownGuest'], log: (line: string) => void): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-bench-guest-'));
  try {
    const image = new Uint8Array(fs.readFileSync(buildGuest(dir, { ticks: TICKS }).bin));
    const kvm = openKvm({ backend: 'native' });
    const alone: number[] = [];
    const checkpointed: number[] = [];
    const figures: { epochs: number; p50: number; p99: number; bytes: number }[] = [];
    try {
      for (let i = 0; i < plan.guestRuns; i++) {
        log(`full state: the C guest (${TICKS} ticks) alone, then checkpointed every ~1 ms`);
        const m = createImageMachine(kvm, { image });
        const tap = new OutputTap([GUEST_EXIT_PORT], 0, { released: true });
        const runner = new GuestRunner(m, [tap]);
        let t = performance.now();
        runner.start();
        await runner.done();
        alone.push(performance.now() - t);
        await runner.stop();
        if (runner.guestResult === null) throw new Error('the guest did not write its result');
        m.close();

        const c = createImageMachine(kvm, { image });
        const server = new ReplicaServer();
        const port = await server.listen(0);
        const sink = await TcpSink.connect(port);
        t = performance.now();
        const stats = await new Checkpointer({ machine: c, sink, outputs: new OutputCommit(), epochMs: 1 }).run();
        checkpointed.push(performance.now() - t);
        if (stats.guestResult !== runner.guestResult) throw new Error(`checkpointed, the guest wrote ${stats.guestResult}, alone ${runner.guestResult}`);
        figures.push({ epochs: stats.epochs, p50: stats.pauseP50Us, p99: stats.pauseP99Us, bytes: stats.bytes / Math.max(1, stats.epochs) });
        await server.close();
        c.close();
      }
    } finally {
      kvm.close();
    }
    o.aloneMs = median(alone);
    o.checkpointedMs = median(checkpointed);
    o.aloneOverCheckpointed = o.aloneMs / o.checkpointedMs;
    o.epochs = median(figures.map((f) => f.epochs));
    o.pauseP50Us = median(figures.map((f) => f.p50));
    o.pauseP99Us = median(figures.map((f) => f.p99));
    o.bytesPerEpoch = Math.round(median(figures.map((f) => f.bytes)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function formatFullState(b: FullStateBench, style: ReportStyle = 'text'): string {
  const title = (t: string) => (style === 'markdown' ? `**${t}**\n` : t);
  const c = b.costs;
  const parts: string[] = [];
  if (c) {
    parts.push(title('The whole state of a vCPU and a VM, µs per call (medians)'), table(style,
      ['vcpu.getState()', 'vcpu.setState()', 'vm.getState()', 'vm.setState()', 'getRegs + getSregs', 'encode / decode vCPU', 'bytes vCPU / VM', 'MSRs'],
      [[fmt(c.vcpuGetState), fmt(c.vcpuSetState), fmt(c.vmGetState), fmt(c.vmSetState), fmt(c.regsSregsGet), `${fmt(c.encodeVcpuState)} / ${fmt(c.decodeVcpuState)}`, `${c.vcpuStateBytes} / ${c.vmStateBytes}`, String(c.msrs)]]), '');
  }
  parts.push(title(`Checkpoint engine with the whole state in each epoch against the registers only (stride K = ${b.checkpoint.k}, 1 GiB, ring, replica process; full / regs = ${fmt(b.checkpoint.fullOverRegs)})`), table(style,
    ['state per epoch', 'committed/s', 'pause p50 / p99 µs', 'bytes/epoch'],
    b.checkpoint.rows.map((r) => [r.state === 'full' ? 'whole state (State frames)' : 'kvm_regs only', fmt(r.committedPerSec), `${fmt(r.pauseP50Us)} / ${fmt(r.pauseP99Us)}`, fmt(r.bytesPerEpoch)])), '');
  const g = b.ownGuest;
  parts.push(title(`The C guest of examples/own-guest (${g.ticks} ticks of 1 ms) to its result: alone, and checkpointed every ~1 ms with its whole state${g.skipped ? ` (skipped: ${g.skipped})` : ''}`), table(style,
    ['alone ms', 'checkpointed ms', 'alone / checkpointed', 'epochs', 'pause p50 / p99 µs', 'bytes/epoch'],
    [[fmt(g.aloneMs), fmt(g.checkpointedMs), fmt(g.aloneOverCheckpointed), fmt(g.epochs), `${fmt(g.pauseP50Us)} / ${fmt(g.pauseP99Us)}`, fmt(g.bytesPerEpoch)]]));
  return parts.join('\n');
}

if (require.main === module) {
  const quick = process.argv.includes('--quick');
  benchFullState(quick ? FULL_STATE_QUICK : FULL_STATE_FULL, (l) => process.stderr.write(`${l}\n`), (w, e) => process.stderr.write(`${w}: ${e instanceof Error ? e.stack : String(e)}\n`))
    .then((b) => process.stdout.write(`${process.argv.includes('--json') ? JSON.stringify(b) : formatFullState(b, process.argv.includes('--markdown') ? 'markdown' : 'text')}\n`));
}
