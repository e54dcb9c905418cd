// The checkpointing commands of the kvm-dirty CLI: checkpoint, replica, restore, migrate,
// failover-test. bin/kvm-dirty.ts registers them with registerCheckpointCommands().

import { Option, type Command } from 'commander';
import { checkpointCommand } from './checkpoint';
import { InvalidArgumentError } from 'commander';
import { address, positiveInt, positiveNumber, hostPort } from './common';
import { failoverCommand } from './failover';
import { incomingCommand } from './incoming';
import { migrateCommand } from './migrate';
import { replicaCommand } from './replica';
import { restoreCommand } from './restore';

function nonNegativeInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number >= 0`);
    return n;
  };
}

function rangeInt(name: string, v: string, lo: number, hi: number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < lo || n > hi) throw new InvalidArgumentError(`${name} must be a whole number from ${lo} to ${hi}`);
  return n;
}

function guestOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--workload <kind>', 'guest workload').choices(['stride', 'random', 'counter']).default('stride'))
    .option('--pages <K>', 'pages the workload writes per epoch (counter: outputs per epoch)', positiveInt('--pages'), 64)
    .option('--guest-mib <M>', 'guest memory in MiB (the first 2 MiB hold the guest harness; data that would reach the APIC page at 0xfee00000 starts at 4 GiB instead; 2 GiB per slot)', positiveInt('--guest-mib'), 64)
    .addOption(new Option('--mode <mode>', 'dirty tracking (auto: the ring where the kernel has one, else the bitmap; a guest image: the bitmap)').choices(['auto', 'ring', 'bitmap', 'bitmap-clear']).default('auto'))
    .option('--image <file>', 'run a guest image of your own instead of --workload: a flat binary or an ELF64, started in long mode with the in-kernel irqchip and PIT, a 16550 at 0x3f8 (its output is printed), its result written to port 0xf4; every epoch carries the full vCPU, VM and device state')
    .option('--entry <addr>', '--image: where the guest starts (default: the ELF entry, a flat binary\'s first byte at 2 MiB)', address('--entry'))
    .option('--image-mib <M>', '--image: guest memory from address 0, a multiple of 2', positiveInt('--image-mib'), 8);
}

export function registerCheckpointCommands(program: Command, backendOptions: (cmd: Command) => Command): void {
  guestOptions(backendOptions(program.command('checkpoint')))
    .description('run a workload under checkpointing, to a file or to a backup replica')
    .option('--out <file>', 'write the checkpoint stream to this file')
    .option('--backup <host:port>', 'send the checkpoint stream to a replica (`kvm-dirty replica --listen`)', hostPort)
    .option('--epochs <N>', 'stop after N epochs', positiveInt('--epochs'))
    .option('--seconds <S>', 'stop after S seconds', positiveNumber('--seconds'))
    .option('--epoch-ms <ms>', 'time budget of one epoch (vcpu.kick() ends it)', positiveNumber('--epoch-ms'), 50)
    .option('--no-delta', 'send every page whole (no delta encoding: stream format without extension 2)')
    .option('--output-client <host:port>', 'send the released outputs to this output client (a replica with --take-over resends what it has not confirmed)', hostPort)
    .option('--json', 'print a JSON summary at the end')
    .action(checkpointCommand);

  backendOptions(program.command('replica'))
    .description('receive checkpoint streams, apply each epoch atomically and acknowledge it; with --take-over, run the guest on when the primary is lost')
    .requiredOption('--listen <port>', 'TCP port to listen on (0: any)', (v) => Number(v))
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--once', 'exit after the first stream ends')
    .option('--take-over', 'when the primary is lost, rebuild the machine as of the last committed epoch and run its guest here (a guest image to its result)')
    .addOption(new Option('--mode <mode>', '--take-over: dirty tracking of the rebuilt VM').choices(['auto', 'ring', 'bitmap', 'bitmap-clear']).default('auto'))
    .option('--run-ms <ms>', '--take-over: how long the guest runs here (a guest image: at most; default 60000, a workload 1000)', positiveNumber('--run-ms'))
    .option('--output-client <host:port>', '--take-over: resend the outputs this client has not confirmed, then send it the guest\'s new ones', hostPort)
    .option('--json', 'one JSON line per event')
    .action(replicaCommand);

  backendOptions(program.command('restore'))
    .description('rebuild a VM from a checkpoint file, run one more epoch and verify it')
    .argument('<file>', 'a file written by `kvm-dirty checkpoint --out`')
    .addOption(new Option('--mode <mode>', 'dirty tracking of the rebuilt VM').choices(['auto', 'ring', 'bitmap', 'bitmap-clear']).default('auto'))
    .option('--json', 'machine-readable output')
    .action(restoreCommand);

  guestOptions(backendOptions(program.command('migrate')))
    .description('pre-copy live migration of a running workload: to `kvm-dirty incoming` in another process (--to), or to a second VM in this one')
    .option('--to <host:port>', 'migrate to the destination listening there (`kvm-dirty incoming --listen`)', hostPort)
    .option('--downtime-limit <ms>', '--to: stop-and-copy once the pages left fit in this many ms at the measured bandwidth', positiveNumber('--downtime-limit'), 300)
    .option('--max-bandwidth <MBps>', '--to: cap the send rate (MB/s)', positiveNumber('--max-bandwidth'))
    .addOption(new Option('--throttle <mode>', '--to: slow a guest that dirties faster than the link').choices(['auto-converge', 'dirty-limit', 'none']).default('auto-converge'))
    .option('--max-rounds <N>', '--to: stop-and-copy after at most N pre-copy rounds', positiveInt('--max-rounds'), 30)
    .option('--run-ms <ms>', '--to: run the guest this long before migrating (and after a failed migration)', positiveNumber('--run-ms'), 200)
    .option('--output-client <host:port>', '--to: send the guest\'s outputs (counter workload) to this client', hostPort)
    .option('--no-delta', '--to: send every page whole (no XBZRLE delta encoding)')
    .option('--rounds <N>', 'in-process: at most N pre-copy rounds', positiveInt('--rounds'), 8)
    .option('--threshold <pages>', 'in-process: stop-and-copy once a round dirtied fewer pages', positiveInt('--threshold'), 256)
    .option('--round-ms <ms>', 'in-process: guest run time between rounds', positiveNumber('--round-ms'), 20)
    .option('--json', 'machine-readable output')
    .action(migrateCommand);

  backendOptions(program.command('incoming'))
    .description('wait for one live migration (`kvm-dirty migrate --to`), resume the guest here, run it, check it went on')
    .requiredOption('--listen <port>', 'TCP port to listen on (0: any; the port is printed on stderr)', (v) => Number(v))
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--run-ms <ms>', 'run the guest this long after it resumed, then check it and exit (default 1000; a guest image: until its result, at most this long, default 60000)', positiveNumber('--run-ms'))
    .addOption(new Option('--mode <mode>', 'dirty tracking of the new VM').choices(['auto', 'ring', 'bitmap', 'bitmap-clear']).default('auto'))
    .option('--output-client <host:port>', 'send the guest\'s outputs to this client once the guest is ours', hostPort)
    .option('--json', 'machine-readable output')
    .action(incomingCommand);

  program.command('failover-test')
    .description('kill a Remus primary process with SIGKILL again and again, and (etcd) partition, pause and kill it through fault proxies; check the client sees every output once and never two primaries in one lease period')
    .option('--kills <N>', 'SIGKILLs of the primary per backend and coordinator (0: none)', nonNegativeInt('--kills'), 50)
    .option('--partitions <N>', 'random partition/heal/kill schedules per backend (needs etcd)', nonNegativeInt('--partitions'), 0)
    .option('--coordinator <list>', 'who decides a takeover: socket, etcd, or both (socket,etcd)', 'socket,etcd')
    .option('--etcd <host:port>', 'a running etcd to use (default: start one; scripts/etcd.sh install puts the binary there)')
    .option('--backups <N>', 'backups per primary in the etcd kill trial (1 to 3)', (v) => rangeInt('--backups', v, 1, 3), 1)
    .option('--quorum <N>', 'acknowledgements an epoch needs (default: every backup)', positiveInt('--quorum'))
    .option('--unprotected-after <ms>', 'partition trial: the primary runs unprotected (and says so) after its backups have been gone this long, instead of pausing', positiveInt('--unprotected-after'))
    .option('--lease-ttl <s>', 'etcd lease TTL, whole seconds', positiveInt('--lease-ttl'), 1)
    .option('--lease-margin <ms>', 'clock-safety margin: outputs stop this long before the lease could expire', positiveInt('--lease-margin'), 300)
    .option('--seed <n>', 'seed of the partition schedules (default: random, printed)', positiveInt('--seed'))
    .option('--backends <list>', 'comma-separated: native,emulator (native is skipped where it cannot open)', 'native,emulator')
    .addOption(new Option('--mode <mode>', 'dirty tracking').choices(['auto', 'ring', 'bitmap', 'bitmap-clear']).default('auto'))
    .option('--verbose', 'a line per kill')
    .option('--json', 'machine-readable output')
    .action(failoverCommand);
}
