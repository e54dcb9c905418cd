// kvm-dirty dirtyrate and dirtylimit, run in-process through commander; the JSON checked
// against the bounds of the library's own tests (the truth is the pacer's, in the same run).
import { Command, Option } from 'commander';
import { registerDirtyRateCommands } from '../lib/cli/dirtyrate';
import { describeEachBackend } from './helpers/backends';

function backendOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--backend <name>').choices(['auto', 'native', 'emulator']))
    .addOption(new Option('--arch <arch>').choices(['x86_64', 'arm64', 's390x']))
    .option('--device <path>');
}

let logged: string[] = [];
beforeEach(() => {
  logged = [];
  jest.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void logged.push(a.join(' ')));
  jest.spyOn(process.stderr, 'write').mockImplementation(() => true); // the progress bar
});
afterEach(() => jest.restoreAllMocks());

async function cli(args: string[]): Promise<string> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
  registerDirtyRateCommands(program, backendOptions);
  const from = logged.length;
  await program.parseAsync(['node', 'kvm-dirty', ...args]);
  return logged.slice(from).join('\n');
}

describeEachBackend('kvm-dirty dirtyrate / dirtylimit', (b) => {
  test.each(['dirty-ring', 'dirty-bitmap'])('dirtyrate --mode %s --json: measured per vCPU beside the true rate', async (mode) => {
    const out = JSON.parse(await cli(['dirtyrate', '--backend', b.name, '--mode', mode, '--rate-mbps', '5,50', '--seconds', '0.6', '--span-mib', '32', '--json']));
    expect(out).toMatchObject({ backend: b.name, mode, workload: 'stride', spanMiB: 32 });
    expect(out.vcpus.map((v: { id: number; rateMBps: number }) => [v.id, v.rateMBps])).toEqual([[0, 5], [1, 50]]);
    expect(Math.abs(out.errorPct)).toBeLessThan(3);
    expect(out.trueMBps).toBeGreaterThan(0);
    if (mode === 'dirty-ring') for (const v of out.vcpus) expect(Math.abs(v.errorPct)).toBeLessThan(3);
    else for (const v of out.vcpus) expect(v.MBps).toBeUndefined(); // the bitmap is the VM's
    expect(out.periods).toBeUndefined();
  });

  test('dirtyrate --watch: a line per period; with --json the periods', async () => {
    const text = await cli(['dirtyrate', '--backend', b.name, '--rate-mbps', '10', '--seconds', '0.9', '--period-ms', '300', '--watch']);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^dirty rate on /);
    expect(lines.filter((l) => /^ {2}\d+\.\d+ s {2}measured .* true /.test(l)).length).toBeGreaterThanOrEqual(3);
    expect(lines[lines.length - 1]).toMatch(/VM: .* MB\/s measured over .* true/);
    const out = JSON.parse(await cli(['dirtyrate', '--backend', b.name, '--mode', 'page-sampling', '--workload', 'random', '--rate-mbps', '20', '--seconds', '0.6', '--period-ms', '300', '--watch', '--json']));
    expect(out.periods.length).toBeGreaterThanOrEqual(2);
    expect(out.samplePages).toBe(32); // 64 MiB at 512 per GiB
    expect(out).toHaveProperty('stdErrMBps');
  });

  test('dirtylimit --json: achieved against the limit per period, the unthrottled vCPU beside it', async () => {
    const out = JSON.parse(await cli(['dirtylimit', '--backend', b.name, '--limit-mbps', '10', '--seconds', '2', '--period-ms', '400', '--span-mib', '64', '--json']));
    expect(out).toMatchObject({ backend: b.name, limitMBps: 10, vcpus: 2, steadyFromPeriod: 3 });
    expect(out.periods).toHaveLength(5); // whole periods: no sliver at the end
    // A ceiling; the limit itself when the steady periods left vCPU 0 time to spare (test/dirtylimit.test.ts says why).
    expect(out.achievedMBps).toBeLessThanOrEqual(11);
    expect(out.trueMBps).toBeLessThanOrEqual(11);
    const steady = out.periods.slice(3);
    if (steady.every((p: { heldPct: number; latePct: number }) => p.heldPct >= 50 && p.latePct <= 5)) {
      expect(out.achievedMBps).toBeGreaterThanOrEqual(9);
      expect(out.trueMBps).toBeGreaterThanOrEqual(9);
    }
    expect(out.unthrottledMBps).toBeGreaterThan(0);
    expect(out.unthrottledWriteMBps).toBeGreaterThan(out.unthrottledMBps * 0.99);
  });

  test('bad arguments are refused with the reason', async () => {
    await expect(cli(['dirtyrate', '--backend', b.name, '--rate-mbps', '-1'])).rejects.toThrow(/positive numbers of MB\/s/);
    await expect(cli(['dirtyrate', '--backend', b.name, '--mode', 'sampling'])).rejects.toThrow(/Allowed choices/);
    await expect(cli(['dirtyrate', '--backend', b.name, '--rate-mbps', '1,2,3', '--vcpus', '2'])).rejects.toThrow(/3 rates for 2 vCPUs/);
    await expect(cli(['dirtylimit', '--backend', b.name])).rejects.toThrow(/--limit-mbps/);
    await expect(cli(['dirtylimit', '--backend', b.name, '--limit-mbps', '0'])).rejects.toThrow(/positive number/);
  });
});
