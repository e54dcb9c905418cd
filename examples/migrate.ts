// Pre-copy live migration: copy a running guest's memory in rounds while it keeps writing,
// then stop it, copy the last dirty pages and the registers, and run it on at the destination.
//
//   node dist/examples/migrate.js [--backend native|emulator] [--mode ring|bitmap|bitmap-clear]
import { ExitReason, Workload, openKvm, type BackendName, type Vcpu } from '../lib';
import { createMachine, migrate, sameContents, type DirtyMode } from '../lib/checkpoint';

const arg = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);

function nextEpoch(v: Vcpu) {
  const e = v.run();
  if (e.reason !== ExitReason.Io) throw new Error(`vCPU ${v.id}: exit ${e.reason}, expected the epoch OUT`);
  return e;
}

async function main(): Promise<void> {
  const kvm = openKvm({ backend: arg('--backend') as BackendName | undefined });
  try {
    // 64 MiB of data; every epoch the guest writes 500 pages picked at random over all of it.
    const source = createMachine(kvm, {
      dataPages: 16384,
      mode: (arg('--mode') as DirtyMode | undefined) ?? 'auto',
      workloads: Workload.random({ firstPage: 512, spanPages: 16384, pagesPerEpoch: 500, seed: 42 }),
    });
    console.log(`backend ${kvm.backend}, dirty tracking: ${source.mode}`);
    const r = await migrate({ source, destination: kvm, thresholdPages: 256, maxRounds: 6, roundMs: 10 });
    for (const round of r.rounds) console.log(`  round ${round.round}: ${round.pages} pages in ${round.ms.toFixed(2)} ms`);
    console.log(`converged by ${r.converged}; downtime ${r.downtimeMs.toFixed(3)} ms; destination memory ${r.memoryEqual ? 'equals' : 'DIFFERS FROM'} the source`);

    // Source and destination stopped in the same state: their next epochs must agree.
    const a = nextEpoch(source.vcpus[0]);
    const b = nextEpoch(r.destination.vcpus[0]);
    const same = a.io?.value === b.io?.value && sameContents(source.slots[1], r.destination.slots[1]);
    console.log(`next epoch: source OUT ${a.io?.value}, destination OUT ${b.io?.value} -> ${same ? 'identical' : 'DIFFERENT'}`);
    if (!r.memoryEqual || !same) process.exitCode = 1;
  } finally {
    kvm.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
