// The checkpointing benchmark (for the bench runner; not a timed test): Workload.stride over
// a 1 GiB guest, checkpointed epoch after epoch over loopback TCP to a replica in another
// process (ha-node.ts as a backup: it applies and acknowledges every epoch), with output
// commit on (each epoch's OUT is released when its ack arrives).

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fork } from 'node:child_process';
import { openKvm } from '../index';
import { Workload } from '../workload';
import { Checkpointer } from './checkpointer';
import { haNodeScript } from './failover';
import type { HaCommand, HaEvent } from './ha-node';
import { DATA_GFN, createMachine, dataGfnFor } from './machine';
import { OutputCommit } from './output';
import { EpochProfile, type PhaseFigures, type ProfilePhase } from './profile';
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
  /** record where each epoch's time goes (EpochProfile) and the CPU time of each thread */
  profile?: boolean;
  /** vCPUs, each with its own stride of `pagesPerEpoch` pages over its own share of the data and its own ring (default 1) */
  vcpus?: number;
  /** record every vCPU's whole state in each epoch (State frames), as a guest image's machine does (default: the registers only) */
  fullState?: boolean;
}

/** CPU time per committed epoch, µs, of the primary's threads and of the replica process (Linux schedstat). */
export interface CpuPerEpoch {
  /** the primary's main (JavaScript) thread */
  main: number;
  /** the vCPU threads (KVM_RUN: the guest itself) */
  vcpu: number;
  /** the primary's other threads (V8's and libuv's) */
  other: number;
  /** every thread of the replica process */
  replica: number;
  /** wall-clock time per committed epoch */
  wall: number;
}

export interface BenchCheckpointResult {
  committedPerSec: number;
  pauseP50Us: number;
  pauseP99Us: number;
  epochs: number;
  seconds: number;
  pagesPerEpoch: number;
  /** outputs released to the client (one per vCPU and epoch: the stride's epoch OUT) */
  released: number;
  vcpus: number;
  replica: 'process' | 'in-process';
  backend: string;
  mode: string;
  /** stream bytes per epoch after the base */
  bytesPerEpoch: number;
  /** with `profile`: µs per phase of an epoch (profile.ts), and CPU time per epoch */
  profile?: Partial<Record<ProfilePhase, PhaseFigures>>;
  cpu?: CpuPerEpoch | null;
}

export async function benchCheckpoint(o: BenchCheckpointOptions): Promise<BenchCheckpointResult> {
  const guestBytes = o.guestBytes ?? 2 ** 30;
  const dataPages = guestBytes / 4096 - DATA_GFN;
  const replica = o.replica ?? (existsSync(haNodeScript()) ? 'process' : 'in-process');
  const kvm = openKvm({ backend: o.backend });
  let stopReplica: () => Promise<void> = async () => undefined;
  try {
    const vcpus = o.vcpus ?? 1;
    if (!Number.isSafeInteger(vcpus) || vcpus < 1) throw new RangeError(`vcpus must be a positive integer, got ${vcpus}`);
    // vCPU i strides over the i-th of `vcpus` equal shares of the data: no page is written by two
    const share = Math.floor(dataPages / vcpus);
    const stridePages = Math.max(1, Math.floor(share / o.pagesPerEpoch));
    const machine = createMachine(kvm, {
      dataPages, mode: o.mode, vcpus,
      workloads: Array.from({ length: vcpus }, (_, i) => Workload.stride({ firstPage: dataGfnFor(dataPages) + i * share, pages: o.pagesPerEpoch, stridePages })),
    });
    machine.fullState = o.fullState ?? false;
    let port: number;
    let replicaPid: number | null = null;
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
      replicaPid = child.pid ?? null;
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
    const profile = o.profile ? new EpochProfile() : undefined;
    // Thread CPU from the first epoch's pause on (run() counts its seconds from the base's end: one epoch apart).
    let cpuBefore: Map<string, number> | null = null;
    const onEpoch = profile ? (e: { epoch: number }) => e.epoch === 1 && (cpuBefore = cpuTimes(replicaPid)) : undefined;
    const stats = await new Checkpointer({ machine, sink, outputs, outputPorts: [0x10], profile, onEpoch }).run({ seconds: o.seconds });
    const cpuAfter = profile ? cpuTimes(replicaPid) : null;
    machine.close();
    return {
      committedPerSec: Math.round(stats.committedPerSec), pauseP50Us: stats.pauseP50Us, pauseP99Us: stats.pauseP99Us,
      epochs: stats.epochs, seconds: stats.seconds, pagesPerEpoch: stats.pagesPerEpoch, released, vcpus, replica,
      backend: kvm.backend, mode: stats.mode, bytesPerEpoch: stats.bytesPerEpoch,
      ...(profile ? { profile: profile.summary(), cpu: cpuPerEpoch(cpuBefore, cpuAfter, stats.committed, stats.seconds) } : {}),
    };
  } finally {
    await stopReplica();
    kvm.close();
  }
}

/**
 * CPU ns so far of this process's threads, by role ('main', 'vcpu', 'other'), and of every
 * thread of the replica process ('replica'), from /proc/.../schedstat (time on a CPU, ns).
 * Null where /proc has no schedstat (not Linux, or a kernel without schedstats).
 */
function cpuTimes(replicaPid: number | null): Map<string, number> | null {
  const out = new Map<string, number>([['main', 0], ['vcpu', 0], ['other', 0], ['replica', 0]]);
  const add = (pid: number, role: (tid: string) => string) => {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
        const r = role(tid);
        out.set(r, out.get(r)! + ns);
      } catch {
        // the thread ended between the listing and the read
      }
    }
  };
  try {
    add(process.pid, (tid) => (Number(tid) === process.pid ? 'main' : readFileSync(`/proc/${process.pid}/task/${tid}/comm`, 'utf8').startsWith('kvm-vcpu') ? 'vcpu' : 'other'));
    if (replicaPid !== null) add(replicaPid, () => 'replica');
  } catch {
    return null;
  }
  return out;
}

function cpuPerEpoch(before: Map<string, number> | null, after: Map<string, number> | null, epochs: number, seconds: number): CpuPerEpoch | null {
  if (!before || !after || epochs === 0) return null;
  const us = (role: string) => Math.round((after.get(role)! - before.get(role)!) / epochs / 10) / 100;
  return { main: us('main'), vcpu: us('vcpu'), other: us('other'), replica: us('replica'), wall: Math.round((seconds * 1e8) / epochs) / 100 };
}
