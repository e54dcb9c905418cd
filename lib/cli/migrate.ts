// kvm-dirty migrate: pre-copy live migration of a running workload to a second VM in the
// same process; prints the rounds, pages per round and the downtime, and checks the result.

import { migrate } from '../checkpoint/migrate';
import { sameContents } from '../checkpoint/machine';
import { buildGuest, open, type GuestFlags } from './common';

interface Flags extends GuestFlags {
  rounds: number;
  threshold: number;
  roundMs: number;
  json?: boolean;
}

export async function migrateCommand(f: Flags): Promise<void> {
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

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
