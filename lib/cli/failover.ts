// kvm-dirty failover-test: the failover trial (lib/checkpoint/failover.ts) on each backend:
// "50/50 failovers, 0 gaps, 0 duplicates".

import { openKvm } from '../index';
import { formatFailover, runFailoverTrial, type FailoverResult } from '../checkpoint/failover';
import type { DirtyMode } from '../checkpoint/machine';

interface Flags {
  kills: number;
  backends: string;
  mode: DirtyMode | 'auto';
  verbose?: boolean;
  json?: boolean;
}

export async function failoverCommand(f: Flags): Promise<void> {
  const results: (FailoverResult | { backend: string; skipped: string })[] = [];
  for (const backend of f.backends.split(',').map((s) => s.trim()) as ('native' | 'emulator')[]) {
    if (backend !== 'native' && backend !== 'emulator') throw new Error(`unknown backend ${backend}`);
    try {
      openKvm({ backend }).close();
    } catch (e) {
      results.push({ backend, skipped: (e as Error).message });
      if (!f.json) console.log(`${backend}: skipped (${(e as Error).message})`);
      continue;
    }
    const r = await runFailoverTrial({
      backend, kills: f.kills, mode: f.mode,
      log: f.verbose && !f.json ? (line) => console.log(`  ${backend} ${line}`) : undefined,
    });
    results.push(r);
    if (!f.json) {
      console.log(`${backend}: ${formatFailover(r)} (${r.outputs} outputs in ${r.seconds.toFixed(1)} s)`);
      for (const v of r.violations) console.log(`  ${v}`);
    }
    if (r.failovers !== r.kills || r.violations.length) process.exitCode = 1;
  }
  if (f.json) console.log(JSON.stringify(results, null, 2));
}
