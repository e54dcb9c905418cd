// kvm-dirty failover-test: the failover trials (lib/checkpoint/failover.ts) on each backend:
// SIGKILL the primary again and again with each coordinator ("50/50 failovers, 0 gaps,
// 0 duplicates"), and with etcd random partition/heal/kill schedules through fault proxies.
// `--coordinator etcd` starts a real etcd of its own (scripts/etcd.sh install puts the binary
// there); `--etcd HOST:PORT` uses a running one.

import { openKvm } from '../index';
import { formatFailover, runFailoverTrial, runPartitionTrial, type EtcdTrialOptions, type FailoverResult, type PartitionResult } from '../checkpoint/failover';
import { findEtcd, startEtcd, type EtcdServer } from '../checkpoint/etcd-server';
import type { DirtyMode } from '../checkpoint/machine';

interface Flags {
  kills: number;
  partitions: number;
  backends: string;
  coordinator: string;
  etcd?: string;
  backups: number;
  quorum?: number;
  unprotectedAfter?: number;
  leaseTtl: number;
  leaseMargin: number;
  seed?: number;
  mode: DirtyMode | 'auto';
  verbose?: boolean;
  json?: boolean;
}

type Row = (FailoverResult & { trial: 'kills' }) | (PartitionResult & { trial: 'partitions' }) | { backend: string; trial: string; skipped: string };

export async function failoverCommand(f: Flags): Promise<void> {
  const coordinators = f.coordinator.split(',').map((s) => s.trim());
  for (const c of coordinators) if (c !== 'socket' && c !== 'etcd') throw new Error(`--coordinator: socket, etcd or both (socket,etcd), got ${c}`);
  if (f.partitions && !coordinators.includes('etcd')) throw new Error('--partitions needs --coordinator etcd: with the socket coordinator a partition makes two primaries, by design');
  const say = (line: string) => !f.json && console.log(line);
  let server: EtcdServer | null = null;
  let etcd: EtcdTrialOptions | undefined;
  if (coordinators.includes('etcd')) {
    if (!f.etcd) {
      const found = findEtcd();
      if ('missing' in found) throw new Error(found.missing);
      server = await startEtcd();
      say(`etcd ${found.version} started at ${server.endpoint} (data in ${server.dataDir})`);
    }
    etcd = { address: f.etcd ?? server!.address, ttlSeconds: f.leaseTtl, marginMs: f.leaseMargin };
  }
  const results: Row[] = [];
  try {
    for (const backend of f.backends.split(',').map((s) => s.trim()) as ('native' | 'emulator')[]) {
      if (backend !== 'native' && backend !== 'emulator') throw new Error(`unknown backend ${backend}`);
      try {
        openKvm({ backend }).close();
      } catch (e) {
        results.push({ backend, trial: 'all', skipped: (e as Error).message });
        say(`${backend}: skipped (${(e as Error).message})`);
        continue;
      }
      const log = f.verbose && !f.json ? (line: string) => console.log(`  ${backend} ${line}`) : undefined;
      for (const coordinator of f.kills ? coordinators as ('socket' | 'etcd')[] : []) {
        const backups = coordinator === 'etcd' ? f.backups : 1;
        const r = await runFailoverTrial({ backend, kills: f.kills, mode: f.mode, coordinator, etcd, backups, quorum: coordinator === 'etcd' ? f.quorum : undefined, log });
        results.push({ ...r, trial: 'kills' });
        const ms = r.takeovers.map((t) => t.ms).sort((a, b) => a - b);
        say(`${backend}, ${coordinator}${backups > 1 ? `, ${backups} backups` : ''}: ${formatFailover(r)} (${r.outputs} outputs in ${r.seconds.toFixed(1)} s; kill to takeover p50 ${ms[Math.floor(ms.length / 2)] ?? '-'} ms, max ${ms[ms.length - 1] ?? '-'} ms)`);
        for (const v of r.violations) say(`  ${v}`);
        if (r.failovers !== r.kills || r.violations.length) process.exitCode = 1;
      }
      if (f.partitions) {
        const r = await runPartitionTrial({ backend, schedules: f.partitions, mode: f.mode, etcd, seed: f.seed, unprotectedAfterMs: f.unprotectedAfter, log });
        results.push({ ...r, trial: 'partitions' });
        const count = (fault: string) => r.schedules.filter((s) => s.fault === fault).length;
        const kinds = [...new Set(r.schedules.map((s) => s.fault))].map((k) => `${k} ${count(k)}`).join(', ');
        say(`${backend}, etcd: ${r.schedules.length} partition/heal/kill schedules (seed ${r.seed}: ${kinds}), ${r.takeovers} takeovers, ${r.violations.length} violations (${r.outputs} outputs in ${r.seconds.toFixed(1)} s, exactly once, ${r.history.length} lease periods; ${r.lateHosts} hosts cut off by the client's lease check)`);
        for (const v of r.violations) say(`  ${v}`);
        if (r.violations.length) process.exitCode = 1;
      }
    }
  } finally {
    await server?.stop();
  }
  if (f.json) console.log(JSON.stringify(results, null, 2));
}
