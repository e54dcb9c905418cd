// The checkpoint commands of the CLI, run in-process through commander: checkpoint to a file
// and restore it, checkpoint to a replica over TCP, migrate; every JSON summary checked.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as net } from 'node:net';
import { Command, Option } from 'commander';
import { registerCheckpointCommands } from '../lib/cli';
import { describeEachBackend } from './helpers/backends';

function backendOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--backend <name>').choices(['auto', 'native', 'emulator']))
    .addOption(new Option('--arch <arch>').choices(['x86_64', 'arm64', 's390x']))
    .option('--device <path>');
}

/** Every console.log line of the running test. */
let logged: string[] = [];
beforeEach(() => {
  logged = [];
  jest.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void logged.push(a.join(' ')));
});
afterEach(() => jest.restoreAllMocks());

/** Runs `kvm-dirty <args>` and returns what it printed on stdout (one command at a time). */
async function cli(args: string[]): Promise<string> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
  registerCheckpointCommands(program, backendOptions);
  const from = logged.length;
  await program.parseAsync(['node', 'kvm-dirty', ...args]);
  return logged.slice(from).join('\n');
}

describeEachBackend('kvm-dirty checkpoint / restore / replica / migrate', (b) => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kvm-dirty-cli-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  afterEach(() => (process.exitCode = undefined));

  test.each(['stride', 'random', 'counter'])('checkpoint --workload %s --out, then restore verifies the next epoch', async (workload) => {
    const file = join(dir, `${workload}.kdck`);
    const summary = JSON.parse(await cli(['checkpoint', '--backend', b.name, '--workload', workload, '--pages', '16', '--guest-mib', '8', '--epochs', '50', '--out', file, '--json']));
    expect(summary).toMatchObject({ epochs: 50, committed: 50, backend: b.name, workload, target: { file } });
    // Every output was released (one per epoch, or 16 per counter epoch, unless a loaded host
    // let the 50 ms budget end an epoch first).
    expect(summary.released).toBe(summary.outputs);
    expect(summary.outputs).toBeLessThanOrEqual(workload === 'counter' ? 50 * 16 : 50);
    expect(summary.outputs).toBeGreaterThan(0);
    const report = JSON.parse(await cli(['restore', file, '--backend', b.name, '--json']));
    expect(report).toMatchObject({ epoch: 50, streamError: null, ok: true });
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual(
      workload === 'stride' ? ['memory', 'registers', 'vCPU 0 epoch', 'vCPU 0 stride pages']
        : workload === 'counter' ? ['memory', 'registers', 'vCPU 0 counter'] : ['memory', 'registers', 'vCPU 0 epoch'],
    );
    expect(process.exitCode ?? 0).toBe(0);
  });

  test('checkpoint --backup to `replica --listen --once`', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    // Both commands run at once here: tell their output apart by its shape.
    const replica = cli(['replica', '--listen', String(port), '--once', '--json']);
    await new Promise((r) => setTimeout(r, 200));
    await cli(['checkpoint', '--backend', b.name, '--backup', `127.0.0.1:${port}`, '--epochs', '300', '--pages', '32', '--json']);
    await replica;
    const all = logged.map((l) => JSON.parse(l));
    const summary = all.find((x) => 'committed' in x);
    expect(summary).toMatchObject({ epochs: 300, committed: 300 });
    expect(summary.released).toBe(summary.outputs);
    const events = all.filter((x) => 'event' in x);
    expect(events[0]).toMatchObject({ event: 'listening', port });
    expect(events[events.length - 1]).toMatchObject({ event: 'finished', epoch: 300, outputSeq: summary.outputs });
  });

  test('migrate --json: rounds, downtime, identical memory and next epoch', async () => {
    const r = JSON.parse(await cli(['migrate', '--backend', b.name, '--workload', 'random', '--pages', '100', '--guest-mib', '16', '--rounds', '4', '--threshold', '10', '--round-ms', '5', '--json']));
    expect(r).toMatchObject({ backend: b.name, memoryEqual: true, nextEpochOk: true });
    expect(r.rounds[0]).toMatchObject({ round: 0 });
    expect(r.rounds.length).toBeGreaterThanOrEqual(2);
    expect(r.downtimeMs).toBeGreaterThan(0);
  });

  test('bad arguments are refused with a reason', async () => {
    await expect(cli(['checkpoint', '--backend', b.name, '--epochs', '1'])).rejects.toThrow(/exactly one of --out FILE and --backup/);
    await expect(cli(['checkpoint', '--backend', b.name, '--guest-mib', '2', '--out', join(dir, 'x'), '--epochs', '1'])).rejects.toThrow(/at least 3/);
    await expect(cli(['checkpoint', '--pages', '0', '--out', 'x'])).rejects.toThrow(/--pages must be a positive integer/);
    await expect(cli(['restore', join(dir, 'missing.kdck'), '--backend', b.name])).rejects.toThrow(/ENOENT/);
  });
});
