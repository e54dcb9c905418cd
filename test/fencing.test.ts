// Failover that cannot split the brain: primary and backup are separate processes with the
// lease in a real etcd, every link but the client's through a fault-injecting proxy. Each
// trial ends with one primary, the client's outputs exactly once (1, 2, 3, ...), and the
// client's log checked against the lease history (runPartitionTrial does both checks; its
// violations must be empty). `npm run test:failover -- --partitions 30` runs the long version.
import { runPartitionTrial, type Fault, type PartitionOptions, type PartitionResult } from '../lib/checkpoint/failover';
import { describeEachBackend } from './helpers/backends';
import { ensureBuilt } from './helpers/build';
import { describeWithEtcd } from './helpers/etcd';

beforeAll(ensureBuilt, 120000);

describeWithEtcd('fencing with the lease in etcd', (etcd) => {
  describeEachBackend('partitions, pauses and kills', (b) => {
    const trial = async (faults: Fault[], schedules: number, more: Partial<PartitionOptions> = {}): Promise<PartitionResult> => {
      const r = await runPartitionTrial({ backend: b.name, schedules, faults, etcd: { address: etcd() }, ...more });
      expect(r.violations).toEqual([]);
      expect(r.outputs).toBeGreaterThan(30 * (schedules + 1));
      return r;
    };

    test('replication link partitioned while both reach etcd: no takeover, the primary pauses; healed, replication resumes', async () => {
      const r = await trial(['partition-replication', 'reset-replication'], 2, { seed: 7 });
      expect(r.takeovers).toBe(0);
      for (const s of r.schedules) expect(s.states).toContain('paused');
      expect(r.history).toHaveLength(1);
    });

    test('with unprotectedAfterMs the primary runs on unprotected, says so, and is protected again after the heal', async () => {
      const r = await trial(['reset-replication'], 1, { unprotectedAfterMs: 200, etcd: { address: etcd(), ttlSeconds: 2, marginMs: 600 } });
      expect(r.takeovers).toBe(0);
      // (paused first, unless it already was from overdue acks just before the fault)
      const states = r.schedules[0].states;
      expect(states).toContain('unprotected');
      expect(states.lastIndexOf('protected')).toBeGreaterThan(states.indexOf('unprotected'));
    });

    test('primary cut off from etcd and backup: it fences before its lease expires, the backup takes over after, the stale primary stops', async () => {
      const r = await trial(['isolate-primary'], 1);
      expect(r.takeovers).toBe(1);
      expect(r.schedules[0].states).toContain('fenced');
      expect(r.history.map((h) => h.position === null)).toEqual([true, false]);
    });

    test('SIGSTOP the primary past its TTL, then SIGCONT: the backup took over and the old primary finds its lease lost and stops', async () => {
      const r = await trial(['stop-primary'], 1);
      expect(r.takeovers).toBe(1);
    });

    test('SIGKILL the backup, then a slow link: the primary pauses until a new backup has its base image; nothing is lost', async () => {
      const r = await trial(['kill-backup', 'slow-replication'], 2, { seed: 3 });
      expect(r.takeovers).toBe(0);
      expect(r.schedules.map((s) => s.fault).sort()).toEqual(['kill-backup', 'slow-replication']);
    });

    test('4 random schedules of partitions, heals, pauses and kills', async () => {
      await trial([], 4, { faults: undefined });
    });
  });
});
