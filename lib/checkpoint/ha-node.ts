// One host of a Remus pair, as a child process (forked by failover.ts; the backend comes
// from KVM_DIRTY_BACKEND). The parent drives it over IPC:
//
//   parent -> child  { cmd: 'primary', config }   build the VM, connect to the output client and the backup, checkpoint
//                    { cmd: 'backup', config }    listen for a primary's stream; if it dies, take over
//                    { cmd: 'protect', port }     (after a takeover) checkpoint to this new backup
//                    { cmd: 'stop' }              stop checkpointing (End frame), report, exit
//   child -> parent  { ev: 'listening', port } | { ev: 'running' } | { ev: 'took-over', ... }
//                    | { ev: 'stopped', stats } | { ev: 'failed', message }
//
// A backup takes over when its primary's connection ends without an End frame: it rebuilds
// the VM from the last committed epoch, connects to the output client, resends the committed
// outputs the client has not confirmed, waits for the client to confirm them, and then runs
// the guest on as the new primary once it is given a new backup.

import { openKvm, Workload } from '../index';
import { Checkpointer } from './checkpointer';
import { createMachine, restoreMachine, type DirtyMode, type Machine } from './machine';
import { OutputChannel, OutputCommit } from './output';
import { ReplicaServer, TcpSink } from './transport';

export interface HaConfig {
  clientPort: number;
  /** the backup's port (primary) */
  backupPort?: number;
  /** gfn of the counter workload's page */
  counterPage: number;
  dataPages: number;
  mode: DirtyMode | 'auto';
  epochMs: number;
  outputsPerEpoch: number;
}

export type HaCommand =
  | { cmd: 'primary'; config: HaConfig }
  | { cmd: 'backup'; config: HaConfig }
  | { cmd: 'protect'; port: number }
  | { cmd: 'stop' };

export type HaEvent =
  | { ev: 'listening'; port: number }
  | { ev: 'running'; outputSeq: number }
  | { ev: 'took-over'; epoch: number; outputSeq: number; counter: string; clientNext: number; replayed: number }
  | { ev: 'stopped'; epochs: number; outputs: number }
  | { ev: 'failed'; message: string };

const send = (e: HaEvent) => process.send?.(e);
let checkpointer: Checkpointer | null = null;
let protectPort: ((port: number) => void) | null = null;

async function protect(machine: Machine, config: HaConfig, backupPort: number, channel: OutputChannel, outputSeq: number): Promise<void> {
  const sink = await TcpSink.connect(backupPort);
  const commit = new OutputCommit();
  commit.clientAcked = channel.acked;
  channel.attach(commit);
  channel.onError = (e) => fail(e);
  checkpointer = new Checkpointer({ machine, sink, outputs: commit, outputSeq, epochMs: config.epochMs, outputsPerEpoch: config.outputsPerEpoch });
  send({ ev: 'running', outputSeq });
  const stats = await checkpointer.run();
  await channel.close();
  send({ ev: 'stopped', epochs: stats.epochs, outputs: stats.outputs });
}

async function primary(config: HaConfig): Promise<void> {
  const kvm = openKvm();
  const machine = createMachine(kvm, { dataPages: config.dataPages, mode: config.mode, workloads: Workload.counter({ page: config.counterPage }) });
  const { channel, next } = await OutputChannel.connect(config.clientPort);
  if (next !== 0) throw new Error(`a fresh guest starts at output 0; the client expects ${next}`);
  await protect(machine, config, config.backupPort!, channel, 0);
}

async function backup(config: HaConfig): Promise<void> {
  const server = new ReplicaServer();
  send({ ev: 'listening', port: await server.listen(0) });
  const outcome = await server.nextOutcome();
  await server.close();
  if (outcome.kind === 'finished') return void send({ ev: 'stopped', epochs: outcome.image.epoch, outputs: 0 });
  if (outcome.kind === 'rejected') throw outcome.error;
  const image = outcome.image;
  if (!image.committed) throw new Error(`the primary died before its first epoch was committed (${outcome.reason})`);

  // Take over: the VM as of the last committed epoch.
  const kvm = openKvm();
  const machine = restoreMachine(kvm, image, config.mode);
  const counter = image.readU64(config.counterPage * 4096);
  const { channel, next } = await OutputChannel.connect(config.clientPort);
  const held = image.outputsFrom(next);
  if (held.firstSeq !== next) throw new Error(`the client expects output ${next}; this replica holds outputs from ${held.firstSeq} on`);
  const outputSeq = image.committed.outputSeq;
  if (next > outputSeq) throw new Error(`the client has output ${next - 1}, beyond the last committed one (${outputSeq - 1})`);
  channel.sendRecords(held.firstSeq, held.outputs);
  await channel.waitAcked(outputSeq);
  send({ ev: 'took-over', epoch: image.epoch, outputSeq, counter: counter.toString(), clientNext: next, replayed: held.outputs.length });
  const port = await new Promise<number>((resolve) => (protectPort = resolve));
  await protect(machine, config, port, channel, outputSeq);
}

function fail(e: unknown): void {
  send({ ev: 'failed', message: e instanceof Error ? e.stack ?? e.message : String(e) });
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 50);
}

if (require.main === module) {
  process.on('message', (m: HaCommand) => {
    switch (m.cmd) {
      case 'primary': primary(m.config).catch(fail); break;
      case 'backup': backup(m.config).catch(fail); break;
      case 'protect': protectPort?.(m.port); break;
      case 'stop': checkpointer?.stop(); break;
    }
  });
  process.on('disconnect', () => process.exit(0));
}
