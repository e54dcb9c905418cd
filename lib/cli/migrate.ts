// kvm-dirty migrate: pre-copy live migration of a running workload. With --to HOST:PORT, to
// another process (`kvm-dirty incoming`), on this host or another, with a progress bar and
// query-migrate-like figures; without it, to a second VM in this process (then both stop in
// the same state and are compared).

import { SingleBar } from 'cli-progress';
import { migrate } from '../checkpoint/migrate';
import { migrateTo, type MigrationStats, type ThrottleMode } from '../checkpoint/migration';
import { sameContents, type Machine } from '../checkpoint/machine';
import { OutputTap } from '../checkpoint/migration-link';
import { OutputChannel } from '../checkpoint/output';
import { checkWorkload } from '../checkpoint/verify';
import { GuestRunner } from '../dirtyrate/runner';
import { SerialPrinter, buildGuest, open, round3, untilGuestExit, type GuestFlags } from './common';

interface Flags extends GuestFlags {
  rounds: number;
  threshold: number;
  roundMs: number;
  to?: { host: string; port: number };
  downtimeLimit: number;
  maxBandwidth?: number;
  throttle: ThrottleMode;
  maxRounds: number;
  runMs: number;
  outputClient?: { host: string; port: number };
  delta: boolean;
  json?: boolean;
}

export async function migrateCommand(f: Flags): Promise<void> {
  if (f.to) return migrateToCommand(f);
  if (f.image !== undefined) throw new Error('--image needs --to: the in-process mode compares two VMs of the built-in workloads');
  const kvm = open(f);
  try {
    const src = buildGuest(kvm, f);
    const r = await migrate({ source: src, destination: kvm, maxRounds: f.rounds, thresholdPages: f.threshold, roundMs: f.roundMs });
    // Both VMs stopped in the same state: run each to its next exit; they must agree.
    const a = src.vcpus[0].run();
    const b = r.destination.vcpus[0].run();
    const nextEpochOk = JSON.stringify(a) === JSON.stringify(b) && src.slots.every((s, i) => sameContents(s, r.destination.slots[i]));
    const report = {
      backend: kvm.backend, mode: src.mode, workload: f.workload, pages: f.pages, guestMib: f.guestMib,
      rounds: r.rounds.map((x) => ({ round: x.round, pages: x.pages, ms: round3(x.ms) })),
      converged: r.converged, downtimeMs: round3(r.downtimeMs), totalPages: r.totalPages, bytes: r.bytes,
      memoryEqual: r.memoryEqual, nextEpochOk,
    };
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(`pre-copy migration on ${kvm.backend} (${src.mode}), ${f.workload} ${f.pages} pages/epoch, ${f.guestMib} MiB guest`);
      for (const x of r.rounds) {
        const what = x.round === 0 ? 'full copy' : x === r.rounds[r.rounds.length - 1] ? 'stop-and-copy' : 'pre-copy';
        console.log(`  round ${String(x.round).padStart(2)}  ${String(x.pages).padStart(7)} pages  ${x.ms.toFixed(2).padStart(8)} ms  ${what}`);
      }
      console.log(`  converged: ${r.converged}; downtime ${r.downtimeMs.toFixed(3)} ms; ${r.totalPages} pages, ${(r.bytes / 2 ** 20).toFixed(1)} MiB sent`);
      console.log(`  destination memory ${r.memoryEqual ? 'equals' : 'DIFFERS FROM'} the source; next epoch ${nextEpochOk ? 'identical' : 'DIFFERS'} on both`);
    }
    if (!r.memoryEqual || !nextEpochOk) process.exitCode = 1;
    r.destination.close();
    src.close();
  } finally {
    kvm.close();
  }
}

async function migrateToCommand(f: Flags): Promise<void> {
  const kvm = open(f);
  try {
    const machine = buildGuest(kvm, f);
    const client = f.outputClient ? await OutputChannel.connect(f.outputClient.port, f.outputClient.host) : null;
    // The guest's outputs (the counter's; a guest image's serial bytes and result), numbered from what the client expects, sent as they come.
    const serial = new SerialPrinter(!f.json && !client);
    const outputs = new OutputTap(machine.exitPort !== null ? [machine.exitPort] : [0x11], client?.next ?? 0, { released: true, channel: client?.channel, onRelease: serial.onOutput });
    // The guest runs a while before it moves (--run-ms), as a guest would that has been up; the migration takes its running runner.
    const runner = new GuestRunner(machine, [outputs]);
    runner.start();
    await new Promise((r) => setTimeout(r, f.runMs));
    if (runner.guestResult !== null) throw new Error(`the guest ended (result 0x${runner.guestResult.toString(16)}) within --run-ms ${f.runMs} ms, before it could migrate`);
    const abort = new AbortController();
    const onSigint = () => abort.abort();
    process.once('SIGINT', onSigint);
    const bar = new SingleBar({
      stream: process.stderr,
      format: 'round {round} | sent {sent} MiB | remaining {remaining} pages | dirty {dirty} pages/s | {bw} MB/s | expected downtime {expected} ms | throttle {throttle}%',
      hideCursor: false,
      fps: 10,
    });
    if (!f.json && process.stderr.isTTY) bar.start(1, 0, { round: 0, sent: 0, remaining: '-', dirty: '-', bw: '-', expected: '-', throttle: 0 });
    let stats: MigrationStats;
    try {
      stats = await migrateTo(machine, f.to!, {
        downtimeLimitMs: f.downtimeLimit, maxBandwidthMBps: f.maxBandwidth, throttle: f.throttle, maxRounds: f.maxRounds,
        runner, outputs, signal: abort.signal, delta: f.delta ? undefined : false,
        onProgress: (p) => bar.update(0, {
          round: p.round, sent: (p.transferredBytes / 2 ** 20).toFixed(1), remaining: p.remainingPages, dirty: Math.round(p.dirtyPagesPerSec),
          bw: p.bandwidthMBps.toFixed(0), expected: p.expectedDowntimeMs.toFixed(1), throttle: p.throttlePercent,
        }),
      });
    } finally {
      process.off('SIGINT', onSigint);
      bar.stop();
    }
    let resumedHere: ReturnType<typeof checkWorkload> | null = null;
    let guestResult: number | null = null;
    if (stats.status !== 'completed') {
      // a guest image that did not move runs to its result here
      if (machine.exitPort !== null) {
        if (!runner.running) runner.start();
        guestResult = await untilGuestExit(runner, 60_000);
        machine.close();
      } else resumedHere = await resumeHere(machine, runner, f.runMs);
    }
    const guest = f.image !== undefined ? { image: f.image, serial: serial.text, ...(stats.status !== 'completed' ? { guestResult } : {}) } : { workload: f.workload, pages: f.pages, guestMib: f.guestMib };
    const report = { ...summary(stats), ...guest, ...(resumedHere ? { resumedOnSource: resumedHere } : {}) };
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else printStats(stats, resumedHere);
    await client?.channel.close();
    if (stats.status === 'failed') process.exitCode = 1;
    if (stats.status === 'cancelled') process.exitCode = 130;
  } finally {
    kvm.close();
  }
}

/**
 * A migration that did not complete leaves the guest here: it runs on (its runner again, if
 * stop-and-copy had stopped it) and is checked against where it stood.
 */
async function resumeHere(machine: Machine, runner: GuestRunner, ms: number): Promise<ReturnType<typeof checkWorkload>> {
  if (runner.running) await runner.stop();
  const from = machine.vcpus.map((v, i) => Number(machine.workloads[i]?.spec.kind === 'counter' ? v.getRegs().rax : v.getRegs().rbx));
  runner.start();
  await new Promise((r) => setTimeout(r, ms));
  await runner.stop();
  const check = checkWorkload(machine, from);
  machine.close();
  return check;
}

function summary(s: MigrationStats): Record<string, unknown> {
  return {
    ...s,
    totalTimeMs: round3(s.totalTimeMs), downtimeMs: s.downtimeMs === null ? null : round3(s.downtimeMs), setupTimeMs: round3(s.setupTimeMs),
    expectedDowntimeMs: round3(s.expectedDowntimeMs), rttMs: round3(s.rttMs),
    rounds: s.rounds.map((r) => ({ ...r, ms: round3(r.ms), bandwidthMBps: round3(r.bandwidthMBps), expectedDowntimeMs: round3(r.expectedDowntimeMs) })),
  };
}

function printStats(s: MigrationStats, resumed: ReturnType<typeof checkWorkload> | null): void {
  console.log(`live migration to ${s.target}: ${s.status}${s.error ? ` (${s.error})` : ''}`);
  console.log(`  ${s.backend} ${s.arch}, ${s.mode}, ${s.vcpus} vCPU(s); setup ${s.setupTimeMs.toFixed(1)} ms, round trip ${s.rttMs.toFixed(3)} ms`);
  for (const r of s.rounds) {
    console.log(`  round ${String(r.round).padStart(3)}  ${String(r.pages).padStart(8)} pages  ${(r.bytes / 2 ** 20).toFixed(2).padStart(8)} MiB  ${r.ms.toFixed(2).padStart(8)} ms  ${r.bandwidthMBps.toFixed(0).padStart(6)} MB/s  dirty ${String(r.dirtyPagesPerSec).padStart(8)} pages/s  throttle ${r.throttlePercent}%${r.overfilled ? '  (ring overfilled: full copy)' : ''}`);
  }
  if (s.status === 'completed') {
    console.log(`  converged: ${s.converged}; downtime ${s.downtimeMs!.toFixed(3)} ms (limit ${s.downtimeLimitMs}, expected ${s.expectedDowntimeMs.toFixed(2)}); total ${s.totalTimeMs.toFixed(1)} ms; ${(s.transferredBytes / 2 ** 20).toFixed(2)} MiB sent; throttle up to ${s.maxThrottlePercent}%`);
  }
  if (resumed) console.log(`  the guest runs on here: ${resumed.ok ? `it went on (${resumed.reached.join(', ')})` : `PROBLEMS: ${resumed.problems.join('; ')}`}`);
}
