#!/usr/bin/env node
// The kvm-dirty command line: probe the host's KVM dirty-tracking capabilities, the
// checkpointing commands (checkpoint, replica, restore, migrate, failover-test) and the
// dirty-rate commands (dirtyrate, dirtylimit) of lib/cli/.
import { Command, Option } from 'commander';
import { openKvm, type OpenOptions } from '../lib';
import { registerCheckpointCommands } from '../lib/cli';
import { registerDirtyRateCommands } from '../lib/cli/dirtyrate';
import { formatProbe, probe } from '../lib/probe';

const program = new Command();
program.name('kvm-dirty').description('Linux KVM dirty-memory tracking from Node.js').version(require('../../package.json').version);

/** Options every command takes to choose the backend. */
function backendOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--backend <name>', 'backend').choices(['auto', 'native', 'emulator']))
    .addOption(new Option('--arch <arch>', 'architecture (other than the host\'s: emulator only)').choices(['x86_64', 'arm64', 's390x']))
    .option('--device <path>', 'KVM device', undefined)
    .option('--pml', 'emulate an Intel host with PML (576 reserved ring entries; emulator, x86_64)');
}

backendOptions(program.command('probe'))
  .description('print the backend, the host\'s KVM flavour and every dirty-tracking capability')
  .option('--json', 'machine-readable output')
  .action((opts: OpenOptions & { json?: boolean }) => {
    const kvm = openKvm({ backend: opts.backend, arch: opts.arch, device: opts.device, pml: opts.pml });
    try {
      const report = probe(kvm);
      console.log(opts.json ? JSON.stringify(report, null, 2) : formatProbe(report));
    } finally {
      kvm.close();
    }
  });

registerCheckpointCommands(program, backendOptions);
registerDirtyRateCommands(program, backendOptions);

program.parseAsync().catch((e: Error) => {
  console.error(`kvm-dirty: ${e.message}`);
  process.exitCode = 1;
});
