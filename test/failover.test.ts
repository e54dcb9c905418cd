// Failover for real: primary and backup are separate processes on loopback TCP; the primary
// is killed with SIGKILL at random moments; the client's output sequence must go on with no
// gap and no repeat, and each takeover must restore the counter to exactly the committed
// output count. (`npm run test:failover -- --kills 50` runs the long version.)
import { formatFailover, runFailoverTrial, type FailoverResult } from '../lib/checkpoint/failover';
import { describeEachBackend } from './helpers/backends';
import { ensureBuilt } from './helpers/build';
import { describeWithEtcd } from './helpers/etcd';

const KILLS = 5;

beforeAll(ensureBuilt, 120000);

function checkKills(r: FailoverResult, kills: number): void {
  expect(r.violations).toEqual([]);
  expect(formatFailover(r)).toBe(`${kills}/${kills} failovers, 0 gaps, 0 duplicates`);
  expect(r.takeovers).toHaveLength(kills);
  for (const t of r.takeovers) {
    // The restored guest's counter is the committed output count (one more when the epoch ended
    // between the increment and its OUT, which the restored guest then executes first); the
    // client had at most that many, and its values 1, 2, 3, ... are checked in the trial.
    expect([0, 1]).toContain(t.counter - t.outputSeq);
    expect(t.clientNext).toBeLessThanOrEqual(t.outputSeq);
    expect(t.clientNext + t.replayed).toBe(t.outputSeq);
  }
  // Each takeover resumed past the previous one: the counter only goes up.
  const counters = r.takeovers.map((t) => t.counter);
  expect([...counters].sort((x, y) => x - y)).toEqual(counters);
  expect(r.outputs).toBeGreaterThan(counters[counters.length - 1]);
}

describeEachBackend('failover between two processes (SIGKILL)', (b) => {
  test(`${KILLS} kills: every failover takes over, the client sees 1, 2, 3, ... with no gap and no duplicate`, async () => {
    checkKills(await runFailoverTrial({ backend: b.name, kills: KILLS }), KILLS);
  });
});

describeWithEtcd('failover with the lease in etcd (SIGKILL)', (etcd) => {
  describeEachBackend('etcd', (b) => {
    test('3 kills, one backup: the backup takes over once the lease expired; every output came from its lease\'s holder, in its period', async () => {
      const r = await runFailoverTrial({ backend: b.name, kills: 3, coordinator: 'etcd', etcd: { address: etcd() } });
      checkKills(r, 3);
      // the first primary, then one holder per takeover, each resuming from a newer position
      expect(r.history.map((h) => h.position === null)).toEqual([true, false, false, false]);
    });

    test('3 kills, three backups with a quorum of 2: the backup with the newest epoch wins every campaign', async () => {
      const r = await runFailoverTrial({ backend: b.name, kills: 3, coordinator: 'etcd', etcd: { address: etcd() }, backups: 3, quorum: 2 });
      checkKills(r, 3);
      expect(r.history).toHaveLength(4);
    });
  });
});
