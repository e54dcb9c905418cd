// The checkpointing benchmark (for the bench runner; not a timed test): Workload.stride over
// a 1 GiB guest, checkpointed epoch after epoch over loopback TCP to a replica in another
// process (ha-node.ts as a backup: it applies and acknowledges every epoch), with output
// commit on (each epoch's OUT is released when its ack arrives).

import { existsSync } from 'node:fs';
import { fork } from 'node:child_process';
import { openKvm } from '../index';
import { Workload } from '../workload';
import { Checkpointer } from './checkpointer';
import { haNodeScript } from './failover';
import type { HaCommand, HaEvent } from './ha-node';
import { DATA_GFN, createMachine, dataGfnFor } from './machine';
import { OutputCommit } from './output';
import { ReplicaServer, TcpSink } from './transport';

export interface BenchCheckpointOptions {
  backend: 'native' | 'emulator';
  pagesPerEpoch: number;
  mode: 'ring' | 'bitmap';
  seconds: number;
  /** guest memory in bytes (default 1 GiB) */
  guestBytes?: number;
  /** where the replica runs (default: a child process when the compiled ha-node.js exists) */
  replica?: 'process' | 'in-process';
}

export interface BenchCheckpointResult {
  committedPerSec: number;
  pauseP50Us: number;
  pauseP99Us: number;
  epochs: number;
  seconds: number;
  pagesPerEpoch: number;
  /** outputs released to the client (one per epoch: the stride's epoch OUT) */
  released: number;
  replica: 'process' | 'in-process';
  backend: string;
  mode: string;
}

export async function benchCheckpoint(o: BenchCheckpointOptions): Promise<BenchCheckpointResult> {
  const guestBytes = o.guestBytes ?? 2 ** 30;
  const dataPages = guestBytes / 4096 - DATA_GFN;
  const replica = o.replica ?? (existsSync(haNodeScript()) ? 'process' : 'in-process');
  const kvm = openKvm({ backend: o.backend });
  let stopReplica: () => Promise<void> = async () => undefined;
  try {
    const machine = createMachine(kvm, {
      dataPages, mode: o.mode,
      workloads: Workload.stride({ firstPage: dataGfnFor(dataPages), pages: o.pagesPerEpoch, stridePages: Math.max(1, Math.floor(dataPages / o.pagesPerEpoch)) }),
    });
    let port: number;
    if (replica === 'process') {
      const child = fork(haNodeScript(), [], { env: { ...process.env, KVM_DIRTY_BACKEND: o.backend }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const events: HaEvent[] = [];
      const next = () => new Promise<HaEvent>((resolve, reject) => {
        if (events.length) return resolve(events.shift()!);
        child.once('message', (e: HaEvent) => resolve(e));
        child.once('exit', () => reject(new Error('the replica process exited')));
      });
      child.on('message', (e: HaEvent) => events.push(e));
      child.send({ cmd: 'backup', config: { name: 'bench-replica', coordinator: { kind: 'socket' }, clientPort: 0, counterPage: DATA_GFN, dataPages, mode: 'auto', epochMs: 50, outputsPerEpoch: 1 } } satisfies HaCommand);
      const hello = await next();
      events.length = 0;
      if (hello.ev !== 'listening') throw new Error(`replica: ${JSON.stringify(hello)}`);
      port = hello.port;
      stopReplica = async () => {
        if (child.exitCode === null) {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        }
      };
    } else {
      const server = new ReplicaServer();
      port = await server.listen(0);
      stopReplica = () => server.close();
    }
    const sink = await TcpSink.connect(port);
    let released = 0;
    const outputs = new OutputCommit((_f, _p, count) => (released += count));
    const stats = await new Checkpointer({ machine, sink, outputs, outputPorts: [0x10] }).run({ seconds: o.seconds });
    machine.close();
    return {
      committedPerSec: Math.round(stats.committedPerSec), pauseP50Us: stats.pauseP50Us, pauseP99Us: stats.pauseP99Us,
      epochs: stats.epochs, seconds: stats.seconds, pagesPerEpoch: stats.pagesPerEpoch, released, replica,
      backend: kvm.backend, mode: stats.mode,
    };
  } finally {
    await stopReplica();
    kvm.close();
  }
}
