// Remus-style failover between two processes: a primary checkpoints a counting guest to a
// backup over loopback TCP, holding each output until the backup has its epoch; the primary
// is killed with SIGKILL; the backup takes over from its last committed epoch and the client
// (this process) keeps receiving 1, 2, 3, ... with nothing lost and nothing twice.
//
//   npm run build && node dist/examples/failover.js [--backend native|emulator] [--kills 3]
import { openKvm, type BackendName } from '../lib';
import { formatFailover, runFailoverTrial } from '../lib/checkpoint';

const arg = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);

async function main(): Promise<void> {
  // The children open KVM the same way (KVM_DIRTY_BACKEND); 'auto' is resolved here once.
  const probe = openKvm({ backend: arg('--backend') as BackendName | undefined });
  const backend = probe.backend;
  probe.close();
  const r = await runFailoverTrial({ backend, kills: Number(arg('--kills') ?? 3), log: (line) => console.log(line) });
  console.log(`${backend}: ${formatFailover(r)}; the client received ${r.outputs} outputs, each exactly once, in order`);
  if (r.violations.length) {
    for (const v of r.violations) console.log(`  ${v}`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
