// kvm-dirty incoming: wait for one live migration (kvm-dirty migrate --to), resume its guest
// here, run it for --run-ms, check that the workload went on, report and exit.

import { receiveMigration } from '../checkpoint/incoming';
import type { DirtyMode } from '../checkpoint/machine';
import { checkWorkload } from '../checkpoint/verify';
import { open, round3, type BackendFlags } from './common';

interface Flags extends BackendFlags {
  listen: number;
  host: string;
  runMs: number;
  mode: DirtyMode | 'auto';
  outputClient?: { host: string; port: number };
  json?: boolean;
}

export async function incomingCommand(f: Flags): Promise<void> {
  const kvm = open(f);
  try {
    const inc = await receiveMigration({
      kvm, listen: { port: f.listen, host: f.host }, mode: f.mode, outputs: f.outputClient ?? null,
      onListening: (port) => process.stderr.write(`kvm-dirty incoming: listening on ${f.host}:${port}\n`),
    });
    // where each workload stood when it resumed: its epoch (rbx), or the counter's value (rax)
    const from = inc.regs.map((r, i) => Number(inc.machine.workloads[i]?.spec.kind === 'counter' ? r.regs.rax : r.regs.rbx));
    await new Promise((r) => setTimeout(r, f.runMs));
    const runs = await inc.runner.stop();
    const check = checkWorkload(inc.machine, from);
    const report = {
      status: check.ok ? 'running-verified' : 'verify-failed',
      backend: kvm.backend, arch: kvm.arch, mode: inc.machine.mode, vcpus: inc.machine.vcpus.length,
      resumedEpoch: inc.epoch, outputSeq: inc.outputSeq, replayedOutputs: inc.replayed,
      rounds: inc.stats.rounds, bytes: inc.stats.bytes, pages: inc.stats.pages, storageAttrs: inc.stats.storageAttrs,
      resumeMs: round3(inc.stats.resumeMs), totalTimeMs: round3(inc.stats.totalTimeMs),
      ranMs: f.runMs, runs: runs.reduce((n, r) => n + r.runs, 0), from, reached: check.reached, problems: check.problems,
    };
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(`migrated in: ${inc.stats.rounds} rounds, ${(inc.stats.bytes / 2 ** 20).toFixed(2)} MiB, ${inc.stats.pages} pages; resumed from epoch ${inc.epoch} ${report.resumeMs} ms after the last round`);
      console.log(`ran ${f.runMs} ms on ${kvm.backend} (${inc.machine.mode}): ${check.ok ? `the workload went on (${from.join(', ')} -> ${check.reached.join(', ')})` : `PROBLEMS: ${check.problems.join('; ')}`}`);
    }
    await inc.channel?.close();
    inc.machine.close();
    if (!check.ok) process.exitCode = 1;
  } finally {
    kvm.close();
  }
}
