// kvm-dirty incoming: wait for one live migration (kvm-dirty migrate --to), resume its guest
// here, run it for --run-ms, check that the workload went on, report and exit. A guest image
// runs on until it writes its result (--run-ms bounds the wait), its serial output printed.

import { receiveMigration, type IncomingMigration } from '../checkpoint/incoming';
import type { DirtyMode } from '../checkpoint/machine';
import { checkWorkload } from '../checkpoint/verify';
import { SerialPrinter, open, round3, untilGuestExit, type BackendFlags } from './common';

interface Flags extends BackendFlags {
  listen: number;
  host: string;
  runMs?: number;
  mode: DirtyMode | 'auto';
  outputClient?: { host: string; port: number };
  json?: boolean;
}

export async function incomingCommand(f: Flags): Promise<void> {
  const kvm = open(f);
  const serial = new SerialPrinter(!f.json && !f.outputClient);
  try {
    const inc = await receiveMigration({
      kvm, listen: { port: f.listen, host: f.host }, mode: f.mode, outputs: f.outputClient ?? null, onOutput: serial.onOutput,
      onListening: (port) => process.stderr.write(`kvm-dirty incoming: listening on ${f.host}:${port}\n`),
    });
    if (inc.machine.exitPort !== null) return await imageGuest(inc, f, serial, kvm.backend);
    const runMs = f.runMs ?? 1000;
    // where each workload stood when it resumed: its epoch (rbx), or the counter's value (rax)
    const from = inc.regs.map((r, i) => Number(inc.machine.workloads[i]?.spec.kind === 'counter' ? r.regs.rax : r.regs.rbx));
    await new Promise((r) => setTimeout(r, runMs));
    const runs = await inc.runner.stop();
    const check = checkWorkload(inc.machine, from);
    const report = {
      status: check.ok ? 'running-verified' : 'verify-failed',
      backend: kvm.backend, arch: kvm.arch, mode: inc.machine.mode, vcpus: inc.machine.vcpus.length,
      resumedEpoch: inc.epoch, outputSeq: inc.outputSeq, replayedOutputs: inc.replayed,
      rounds: inc.stats.rounds, bytes: inc.stats.bytes, pages: inc.stats.pages, storageAttrs: inc.stats.storageAttrs,
      resumeMs: round3(inc.stats.resumeMs), totalTimeMs: round3(inc.stats.totalTimeMs),
      ranMs: runMs, runs: runs.reduce((n, r) => n + r.runs, 0), from, reached: check.reached, problems: check.problems,
    };
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(`migrated in: ${inc.stats.rounds} rounds, ${(inc.stats.bytes / 2 ** 20).toFixed(2)} MiB, ${inc.stats.pages} pages; resumed from epoch ${inc.epoch} ${report.resumeMs} ms after the last round`);
      console.log(`ran ${runMs} ms on ${kvm.backend} (${inc.machine.mode}): ${check.ok ? `the workload went on (${from.join(', ')} -> ${check.reached.join(', ')})` : `PROBLEMS: ${check.problems.join('; ')}`}`);
    }
    await inc.channel?.close();
    inc.machine.close();
    if (!check.ok) process.exitCode = 1;
  } finally {
    kvm.close();
  }
}

/** A guest image migrated in: it runs to its result here. */
async function imageGuest(inc: IncomingMigration, f: Flags, serial: SerialPrinter, backend: string): Promise<void> {
  const result = await untilGuestExit(inc.runner, f.runMs ?? 60_000);
  const report = {
    status: result === null ? 'no-result' : 'guest-exit', guestResult: result, backend, mode: inc.machine.mode,
    resumedEpoch: inc.epoch, outputSeq: inc.outputSeq, replayedOutputs: inc.replayed,
    rounds: inc.stats.rounds, bytes: inc.stats.bytes, pages: inc.stats.pages,
    resumeMs: round3(inc.stats.resumeMs), totalTimeMs: round3(inc.stats.totalTimeMs), serial: serial.text,
  };
  if (f.json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(`migrated in: ${inc.stats.rounds} rounds, ${(inc.stats.bytes / 2 ** 20).toFixed(2)} MiB; resumed from epoch ${inc.epoch} ${report.resumeMs} ms after the last round`);
    console.log(result === null ? 'the guest did not write its result in time' : `guest result 0x${result.toString(16).padStart(8, '0')}`);
  }
  await inc.channel?.close();
  inc.machine.close();
  if (result === null) process.exitCode = 1;
}
