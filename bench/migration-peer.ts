// The destination of the migration bench (bench/migration.ts): a long-lived process, as a
// VMM is, that receives migration after migration. For each it says where it listens,
// receives the guest, lets it run a moment, checks it went on, and reports; then the next.
//
//   parent -> child  { backend, mode, count }
//   child -> parent  { ev: 'listening', port } | { ev: 'done', ok, resumeMs } | { ev: 'failed', message }
import { openKvm } from '../lib/index';
import { receiveMigration } from '../lib/checkpoint/incoming';
import type { DirtyMode } from '../lib/checkpoint/machine';
import { checkWorkload } from '../lib/checkpoint/verify';

interface Config { backend: 'native' | 'emulator'; mode: DirtyMode | 'auto'; count: number }

async function serve(c: Config): Promise<void> {
  const kvm = openKvm({ backend: c.backend });
  try {
    for (let i = 0; i < c.count; i++) {
      const inc = await receiveMigration({ kvm, listen: { port: 0 }, mode: c.mode, onListening: (port) => process.send?.({ ev: 'listening', port }) });
      const from = inc.regs.map((r) => Number(r.regs.rbx));
      await new Promise((r) => setTimeout(r, 20));
      await inc.runner.stop();
      const check = checkWorkload(inc.machine, from);
      inc.machine.close();
      process.send?.({ ev: 'done', ok: check.ok, problems: check.problems, resumeMs: inc.stats.resumeMs });
    }
  } finally {
    kvm.close();
  }
}

process.once('message', (c: Config) => {
  serve(c).then(
    () => process.exit(0),
    (e: unknown) => {
      process.send?.({ ev: 'failed', message: e instanceof Error ? e.message : String(e) });
      process.exit(1);
    },
  );
});
