// `kvm-dirty incoming` and `kvm-dirty migrate --to`, as a user runs them in two terminals:
// the figures of a completed migration, and a migration cancelled with SIGINT.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { describeEachBackend } from './helpers/backends';

const CLI = join(__dirname, '..', 'dist', 'bin', 'kvm-dirty.js');

interface Ran { code: number | null; stdout: string; stderr: string }

function start(args: string[]): { child: ChildProcess; done: Promise<Ran>; port: Promise<number> } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let gotPort: (p: number) => void;
  const port = new Promise<number>((r) => (gotPort = r));
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => {
    stderr += d;
    const m = /listening on [^:]+:(\d+)/.exec(stderr);
    if (m) gotPort(Number(m[1]));
  });
  const done = new Promise<Ran>((r) => child.on('exit', (code) => r({ code, stdout, stderr })));
  return { child, done, port };
}

describeEachBackend('kvm-dirty incoming / migrate --to', (b) => {
  test('a stride guest moves between the two commands; both report, the destination checks the guest went on', async () => {
    const dst = start(['incoming', '--listen', '0', '--backend', b.name, '--run-ms', '200', '--json']);
    const port = await dst.port;
    const src = start(['migrate', '--to', `127.0.0.1:${port}`, '--backend', b.name, '--guest-mib', '16', '--pages', '32', '--run-ms', '100', '--json']);
    const [s, d] = await Promise.all([src.done, dst.done]);
    expect([s.code, d.code, s.stderr, d.stderr.replace(/kvm-dirty incoming: listening on .*\n/, '')]).toEqual([0, 0, '', '']);
    const stats = JSON.parse(s.stdout);
    expect(stats).toMatchObject({ status: 'completed', backend: b.name, converged: 'downtime-limit', downtimeLimitMs: 300, throttle: 'auto-converge' });
    for (const key of ['totalTimeMs', 'downtimeMs', 'setupTimeMs', 'transferredBytes', 'dirtySyncCount', 'expectedDowntimeMs', 'rttMs']) expect(typeof stats[key]).toBe('number');
    expect(stats.rounds.length).toBeGreaterThanOrEqual(2);
    expect(Object.keys(stats.rounds[0]).sort()).toEqual(['bandwidthMBps', 'bytes', 'dirtyPagesPerSec', 'expectedDowntimeMs', 'ms', 'overfilled', 'pages', 'round', 'throttlePercent']);
    // every round's bytes, plus the Header and the handshake
    expect(stats.transferredBytes).toBeGreaterThan(stats.rounds.reduce((n: number, r: { bytes: number }) => n + r.bytes, 0));
    const report = JSON.parse(d.stdout);
    expect(report).toMatchObject({ status: 'running-verified', backend: b.name, rounds: stats.rounds.length, problems: [] });
    expect(report.reached[0]).toBeGreaterThan(report.from[0]);
  });

  test('SIGINT on the source cancels: status cancelled, the guest runs on at the source; the destination starts nothing', async () => {
    const dst = start(['incoming', '--listen', '0', '--backend', b.name, '--json']);
    const port = await dst.port;
    // 8 MiB of pages rewritten at full speed, sent at 2 MB/s: far from converging when the SIGINT comes
    const src = start(['migrate', '--to', `127.0.0.1:${port}`, '--backend', b.name, '--guest-mib', '64', '--pages', '2048', '--max-bandwidth', '2', '--throttle', 'none', '--run-ms', '100', '--json']);
    await new Promise((r) => setTimeout(r, 1500));
    src.child.kill('SIGINT');
    const [s, d] = await Promise.all([src.done, dst.done]);
    expect(s.code).toBe(130);
    const stats = JSON.parse(s.stdout);
    expect(stats).toMatchObject({ status: 'cancelled', error: 'cancelled', downtimeMs: null, resumedOnSource: { ok: true, problems: [] } });
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/before the migration completed: nothing was started/);
  });
});
