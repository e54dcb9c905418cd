// Failover for real: primary and backup are separate processes on loopback TCP; the primary
// is killed with SIGKILL at random moments; the client's output sequence must go on with no
// gap and no repeat, and each takeover must restore the counter to exactly the committed
// output count. (`npm run test:failover -- --kills 50` runs the long version.)
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { formatFailover, haNodeScript, runFailoverTrial } from '../lib/checkpoint/failover';
import { describeEachBackend } from './helpers/backends';

const KILLS = 5;
const ROOT = join(__dirname, '..');

/** The children run the compiled library: rebuild dist/ when a source is newer than it. */
function ensureBuilt(): void {
  const script = haNodeScript();
  const built = (() => {
    try {
      return statSync(script).mtimeMs;
    } catch {
      return 0;
    }
  })();
  const newest = (dir: string): number => readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
    const p = join(dir, e.name);
    return Math.max(t, e.isDirectory() ? newest(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0);
  }, 0);
  if (newest(join(ROOT, 'lib')) > built) {
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
    } catch {
      // tsc emits even when some other file has a type error; the check below is what counts
    }
  }
  expect(statSync(script).mtimeMs).toBeGreaterThan(0);
}

beforeAll(ensureBuilt, 120000);

describeEachBackend('failover between two processes (SIGKILL)', (b) => {
  test(`${KILLS} kills: every failover takes over, the client sees 1, 2, 3, ... with no gap and no duplicate`, async () => {
    const r = await runFailoverTrial({ backend: b.name, kills: KILLS });
    expect(r.violations).toEqual([]);
    expect(formatFailover(r)).toBe(`${KILLS}/${KILLS} failovers, 0 gaps, 0 duplicates`);
    expect(r.takeovers).toHaveLength(KILLS);
    for (const t of r.takeovers) {
      // The restored guest's counter is the committed output count; the client had at most that.
      expect(t.counter).toBe(t.outputSeq);
      expect(t.clientNext).toBeLessThanOrEqual(t.outputSeq);
      expect(t.clientNext + t.replayed).toBe(t.outputSeq);
    }
    // Each takeover resumed past the previous one: the counter only goes up.
    const counters = r.takeovers.map((t) => t.counter);
    expect([...counters].sort((x, y) => x - y)).toEqual(counters);
    expect(r.outputs).toBeGreaterThan(counters[counters.length - 1]);
  });
});
