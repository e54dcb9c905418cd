// One host of a Remus pair (or group), as a child process (forked by failover.ts; the backend
// comes from KVM_DIRTY_BACKEND). The parent drives it over IPC:
//
//   parent -> child  { cmd: 'primary', config }    acquire the lease, build the VM, connect to the output client, checkpoint
//                    { cmd: 'backup', config }     listen for a primary's stream; take over once the coordinator says so
//                    { cmd: 'protect', backups }   stream to these backups from now on (a new stream, fresh base image)
//                    { cmd: 'stop' }               primary: stop checkpointing (End), finish the VM; backup: stop standing by
//   child -> parent  { ev: 'listening', port } | { ev: 'running', ... } | { ev: 'status', ... } | { ev: 'took-over', ... }
//                    | { ev: 'campaign', ... } (a backup: the lease expired, it stands with this position)
//                    | { ev: 'lost', why } | { ev: 'stopped', ... } | { ev: 'failed', message }
//
// A primary releases outputs only while its lease allows (Lease.mayRelease) and the quorum of
// its backups acknowledged the epoch. Without enough backups it pauses the guest, or with
// `unprotectedAfterMs` runs on unprotected once they have been gone that long, and says so
// ('status'); backups that come back, or new ones ('protect'), get a new stream with a fresh
// base image carrying every output the client has not confirmed. A primary whose lease is
// lost exits at once ('lost'): it never resumes.
//
// A backup stands by through the coordinator: with etcd it takes over only once it acquired
// the lease (after the primary's expired, and only if no other live backup holds a newer
// epoch); with the socket coordinator when its primary's connection ends without End. It
// rebuilds the VM from its newest committed epoch, resends the committed outputs the client
// has not confirmed, waits for the client to confirm them, and serves as the new primary.

import { connect } from 'node:net';
import { openKvm, Workload } from '../index';
import { Checkpointer } from './checkpointer';
import { comparePositions, SocketCoordinator, type Coordinator, type Lease, type Position } from './coordinator';
import { EtcdCoordinator } from './etcd-coordinator';
import type { ReplicaImage } from './image';
import type { LeaseTag } from './lease-frame';
import { createMachine, restoreMachine, type DirtyMode, type Machine } from './machine';
import { OutputChannel, OutputCommit } from './output';
import { QuorumSink, UnprotectedSink } from './replication';
import { ReplicaServer, TcpSink } from './transport';

export type CoordinatorSpec =
  | { kind: 'socket' }
  | { kind: 'etcd'; url: string; ttlSeconds?: number; marginMs?: number };

export interface HaConfig {
  /** this host's name (the lease holder's) */
  name: string;
  coordinator: CoordinatorSpec;
  clientPort: number;
  /** primary: the backups' ports */
  backups?: number[];
  /** acknowledgements an epoch needs (default: every backup) */
  quorum?: number;
  /** primary: with fewer backups than the quorum for this long, run unprotected instead of paused (default: stay paused) */
  unprotectedAfterMs?: number;
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
  | { cmd: 'protect'; backups: number[] }
  | { cmd: 'stop' };

/** protected: the quorum acknowledges; paused: too few backups, the guest waits; unprotected: running without replication; fenced: the lease could not be renewed */
export type HaState = 'protected' | 'paused' | 'unprotected' | 'fenced';

export type HaEvent =
  | { ev: 'listening'; port: number }
  | { ev: 'running'; outputSeq: number; token: number; stream: number; backups: number }
  | { ev: 'status'; state: HaState; why: string }
  | { ev: 'took-over'; epoch: number; outputSeq: number; counter: string; clientNext: number; replayed: number; token: number; position: Position }
  | { ev: 'campaign'; expired: number; position: Position | null }
  | { ev: 'lost'; why: string }
  | { ev: 'stopped'; epochs: number; outputs: number }
  | { ev: 'failed'; message: string };

const send = (e: HaEvent) => process.send?.(e);
/** the Checkpointer's default limit of unacknowledged epochs */
const MAX_IN_FLIGHT = 8;

export function makeCoordinator(spec: CoordinatorSpec): Coordinator {
  if (spec.kind === 'socket') return new SocketCoordinator();
  return EtcdCoordinator.fromUrl(spec.url, { ttlSeconds: spec.ttlSeconds, marginMs: spec.marginMs });
}

/** What the process is doing, for the IPC commands. */
const node: { onProtect: ((b: number[]) => void) | null; onStop: (() => void) | null } = { onProtect: null, onStop: null };

/** The primary's loop: one Checkpointer per stream, a new stream whenever the set of backups changes. */
async function serve(config: HaConfig, machine: Machine, lease: Lease, channel: OutputChannel, outputSeq: number): Promise<void> {
  let backups = config.backups ?? [];
  let ck: Checkpointer | null = null;
  let commit: OutputCommit | null = null;
  let stopping = false;
  let restart = false;
  let state: HaState | null = null;
  let stream = 0;
  let carried: { firstSeq: number; packed: Uint32Array; count: number; released: number } | undefined;
  let pausedSince = performance.now();
  /** the last protected stream failed before the backups acknowledged anything */
  let unanswered = false;
  let wake: (() => void) | null = null;
  const status = (s: HaState, why: string) => {
    if (s !== state) send({ ev: 'status', state: s, why });
    state = s;
  };
  const sleep = (ms: number) => new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    wake = () => (clearTimeout(t), r());
  });
  lease.onChange((s, why) => {
    if (s === 'lost') lost(why);
    else if (s === 'fenced') {
      status('fenced', why);
      ck?.interrupt();
    } else {
      commit?.flush();
      status(ck ? 'protected' : 'paused', `lease ${why}`);
    }
  });
  channel.onError = (e) => (lease.state === 'held' ? fail(e) : lost(`${e.message}, with the lease ${lease.state}`));
  node.onProtect = (b) => {
    backups = b;
    restart = true;
    ck?.stop();
    wake?.();
  };
  node.onStop = () => {
    stopping = true;
    ck?.stop();
    wake?.();
  };
  const quorum = () => Math.min(config.quorum ?? backups.length, backups.length);
  for (;;) {
    restart = false;
    const sinks = await connectAll(backups);
    const overdue = config.unprotectedAfterMs !== undefined && performance.now() - pausedSince >= config.unprotectedAfterMs;
    let sink: QuorumSink | UnprotectedSink;
    // (a backup that accepts connections but acknowledged nothing since counts as gone once overdue)
    if (backups.length && sinks.length >= quorum() && !(overdue && unanswered)) {
      sink = new QuorumSink(sinks, {
        quorum: quorum(), ackTimeoutMs: config.unprotectedAfterMs,
        onDegraded: (name, err, live) => send({ ev: 'status', state: 'protected', why: `backup ${name} lost (${err.message}); ${live} left` }),
      });
    } else {
      for (const s of sinks) s.sink.destroy();
      const why = `${sinks.length} of ${backups.length} backups reachable, quorum ${quorum() || 1}`;
      if (!overdue) {
        status('paused', why);
        if (stopping) break;
        await sleep(200);
        continue;
      }
      sink = new UnprotectedSink();
      status('unprotected', `${why}: running without replication for ${Math.round(performance.now() - pausedSince)} ms`);
    }
    commit = new OutputCommit();
    commit.clientAcked = channel.acked;
    channel.attach(commit);
    commit.setGate(() => lease.mayRelease());
    const tag: LeaseTag = { token: lease.token, stream: stream++, holder: lease.holder };
    ck = new Checkpointer({
      machine, sink, outputs: commit, outputSeq, carried, lease: tag, beforeEpoch: () => lease.whenHeld(),
      epochMs: config.epochMs, outputsPerEpoch: config.outputsPerEpoch,
    });
    const protectedRun = sink instanceof QuorumSink;
    const current = ck;
    // protected once the quorum acknowledged the base epoch; paused while acks are overdue
    let announced = false;
    const ticker = !protectedRun ? null : setInterval(() => {
      if (current.acked < 0 || lease.state !== 'held') return;
      if (!announced) {
        announced = true;
        send({ ev: 'running', outputSeq: current.outputSeq, token: lease.token, stream: tag.stream, backups: sinks.length });
      }
      const behind = current.epoch - current.acked;
      if (behind > MAX_IN_FLIGHT) status('paused', `${behind} epochs unacknowledged: the guest waits for the backups`);
      else status('protected', `${(sink as QuorumSink).live} of ${backups.length} backups, quorum ${quorum()}`);
    }, 20);
    // Unprotected: look for the backups again and again; once a quorum answers, a new stream.
    const retry = protectedRun ? null : setInterval(() => void reachable(backups).then((n) => {
      if (n < quorum() || !backups.length) return;
      unanswered = false;
      current.stop();
    }), 250);
    try {
      await ck.run();
      if (protectedRun) pausedSince = performance.now();
    } catch (e) {
      status('paused', `the stream failed: ${(e as Error).message}`);
      // the backups were gone since the last stream they acknowledged anything of
      unanswered = ck.acked < 0;
      if (!unanswered) pausedSince = performance.now();
      else await sleep(200);
    } finally {
      if (retry) clearInterval(retry);
      if (ticker) clearInterval(ticker);
    }
    outputSeq = ck.outputSeq;
    carried = carry(channel, commit, outputSeq);
    ck = null;
    if (stopping && !restart) break;
  }
  await lease.finish();
  await channel.close();
  send({ ev: 'stopped', epochs: stream, outputs: outputSeq });
}

/** Every output the client has not confirmed: those sent (the channel keeps them) and those still held. */
function carry(channel: OutputChannel, commit: OutputCommit, outputSeq: number) {
  const u = channel.unconfirmed();
  const h = commit.held();
  if (h.firstSeq !== channel.sent || h.firstSeq + h.count !== outputSeq) {
    throw new Error(`output accounting: sent ${channel.sent}, held ${h.firstSeq}..${h.firstSeq + h.count - 1}, guest at ${outputSeq}`);
  }
  const packed = new Uint32Array(2 * (u.count + h.count));
  packed.set(u.packed);
  packed.set(h.packed, 2 * u.count);
  return { firstSeq: u.firstSeq, packed, count: u.count + h.count, released: channel.sent };
}

/** The backups that accept a connection now. */
async function connectAll(ports: number[]): Promise<{ name: string; sink: TcpSink }[]> {
  const r = await Promise.allSettled(ports.map((p) => withTimeout(TcpSink.connect(p), 1000, `backup :${p}`)));
  return r.flatMap((x, i) => (x.status === 'fulfilled' ? [{ name: `:${ports[i]}`, sink: x.value }] : []));
}

/** How many of the backups keep a connection open for 100 ms (a probe: it sends nothing, and a backup ignores it). */
async function reachable(ports: number[]): Promise<number> {
  const r = await Promise.all(ports.map((port) => new Promise<boolean>((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    const t = setTimeout(() => (s.destroy(), resolve(true)), 100);
    s.on('error', () => undefined);
    s.on('close', () => (clearTimeout(t), resolve(false)));
  })));
  return r.filter(Boolean).length;
}

function withTimeout<T extends { destroy(): void }>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    let late = false;
    const t = setTimeout(() => {
      late = true;
      reject(new Error(`${what}: no connection in ${ms} ms`));
    }, ms);
    p.then((v) => (late ? v.destroy() : (clearTimeout(t), resolve(v))), (e) => (clearTimeout(t), reject(e)));
  });
}

async function primary(config: HaConfig): Promise<void> {
  const coordinator = makeCoordinator(config.coordinator);
  const lease = await coordinator.acquire(config.name);
  const kvm = openKvm();
  const machine = createMachine(kvm, { dataPages: config.dataPages, mode: config.mode, workloads: Workload.counter({ page: config.counterPage }) });
  const { channel, next } = await OutputChannel.connect(config.clientPort, '127.0.0.1', { token: lease.token, stream: 0, holder: lease.holder });
  if (next !== 0) throw new Error(`a fresh guest starts at output 0; the client expects ${next}`);
  await serve(config, machine, lease, channel, 0);
  await coordinator.close();
}

/** The order streams arrived in (the socket coordinator's leases all have token 0: there, the newest stream is the last to arrive). */
const arrival = new WeakMap<ReplicaImage, number>();

/** A stream's place: its lease, its stream number under that lease, its last committed epoch. */
function positionOf(image: ReplicaImage): Position | null {
  if (!image.restorable) return null;
  const token = image.lease?.token ?? 0;
  return { token, stream: token ? image.lease!.stream : arrival.get(image) ?? 0, epoch: image.epoch };
}

async function backup(config: HaConfig): Promise<void> {
  const coordinator = makeCoordinator(config.coordinator);
  let fencedUpTo = -1;
  let best: ReplicaImage | null = null;
  let lostSignal: () => void = () => undefined;
  const primaryLost = new Promise<void>((r) => (lostSignal = r));
  /** streams being received, and the one that committed last (the primary's, as far as this backup knows) */
  const live = new Set<ReplicaImage>();
  let latest: ReplicaImage | null = null;
  let streams = 0;
  const server: ReplicaServer = new ReplicaServer({
    onCommit: (_c, image) => {
      // a stream of a lease that has expired (a stale primary, or one paused past its TTL) is refused
      if ((image.lease?.token ?? 0) <= fencedUpTo) return server.drop(image);
      if (!live.has(image)) arrival.set(image, ++streams);
      live.add(image);
      latest = image;
      if (!best || comparePositions(positionOf(image)!, positionOf(best)!) > 0) best = image;
    },
    onOutcome: (o) => {
      live.delete(o.image);
      if (o.kind === 'lost' && o.image === latest) lostSignal();
    },
  });
  send({ ev: 'listening', port: await server.listen(0) });
  const abort = new AbortController();
  node.onStop = () => abort.abort(new Error('stopped'));
  let lease: Lease;
  try {
    lease = await coordinator.standBy(config.name, {
      position: () => (best ? positionOf(best) : null),
      freeze: (token) => {
        fencedUpTo = Math.max(fencedUpTo, token);
        for (const im of live) if ((im.lease?.token ?? 0) <= token) server.drop(im);
        send({ ev: 'campaign', expired: token, position: best ? positionOf(best) : null });
      },
      primaryLost,
      signal: abort.signal,
    });
  } catch (e) {
    await server.close();
    await coordinator.close();
    if (abort.signal.aborted || (e as Error).constructor.name === 'VmFinishedError') return void send({ ev: 'stopped', epochs: (best as ReplicaImage | null)?.epoch ?? -1, outputs: 0 });
    throw e;
  }
  for (const im of live) server.drop(im);
  await server.close();
  const image = best as ReplicaImage | null;
  if (!image) throw new Error('took the lease without an image to resume from');
  const position = positionOf(image)!;

  // Take over: the VM as of the newest committed epoch.
  const kvm = openKvm();
  const machine = restoreMachine(kvm, image, config.mode);
  const counter = image.readU64(config.counterPage * 4096);
  const { channel, next } = await OutputChannel.connect(config.clientPort, '127.0.0.1', { token: lease.token, stream: 0, holder: lease.holder });
  const held = image.outputsFrom(next);
  if (held.firstSeq !== next) throw new Error(`the client expects output ${next}; this replica holds outputs from ${held.firstSeq} on`);
  const outputSeq = image.committed!.outputSeq;
  if (next > outputSeq) throw new Error(`the client has output ${next - 1}, beyond the last committed one (${outputSeq - 1})`);
  channel.sendRecords(held.firstSeq, held.outputs);
  await channel.waitAcked(outputSeq);
  send({ ev: 'took-over', epoch: image.epoch, outputSeq, counter: counter.toString(), clientNext: next, replayed: held.outputs.length, token: lease.token, position });
  await serve({ ...config, backups: [] }, machine, lease, channel, outputSeq);
  await coordinator.close();
}

function lost(why: string): void {
  // a holder that lost its lease never resumes: the guest goes with the process
  process.exitCode = 3;
  if (process.send) process.send({ ev: 'lost', why } satisfies HaEvent, () => process.exit(3));
  else process.exit(3);
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
      case 'protect': node.onProtect?.(m.backups); break;
      case 'stop': node.onStop?.(); break;
    }
  });
  process.on('disconnect', () => process.exit(0));
}
