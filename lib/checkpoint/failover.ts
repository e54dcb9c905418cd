// Failover trials: a Remus pair of separate processes (ha-node.ts) on loopback TCP, a counter
// guest whose every increment is an output, and an output client (this process) that must see
// 1, 2, 3, ... with no gap and no repeat.
//
// - runFailoverTrial: the primary is killed with SIGKILL at random moments, again and again:
//   each time the backup takes over from its last committed epoch, a new backup is started,
//   and the guest counts on. With the socket coordinator (the connection drop decides) or etcd
//   (the lease decides).
// - runPartitionTrial (etcd): random faults one after the other, through fault-injecting
//   proxies on every link but the client's: the replication link partitioned, slowed or
//   reset, the primary cut off from etcd and its backup, the primary or the backup killed,
//   the primary stopped (SIGSTOP) past its lease. After each: exactly one primary, and the
//   guest counts on. At the end, the client's log is checked against the lease history:
//   every output came from the holder of the lease it names, within that lease's period.

import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { checkLeasePeriods, comparePositions, type LeaseRecord } from './coordinator';
import { EtcdCoordinator } from './etcd-coordinator';
import { startEtcd, type EtcdServer } from './etcd-server';
import { FaultProxy } from './fault-proxy';
import type { CoordinatorSpec, HaCommand, HaConfig, HaEvent } from './ha-node';
import type { DirtyMode } from './machine';
import { OutputClient } from './output';

export interface EtcdTrialOptions {
  /** host:port of a running etcd (default: start one, scripts/etcd.sh's way, and stop it after) */
  address?: string;
  /** lease TTL, whole seconds (default 1) */
  ttlSeconds?: number;
  /** clock-safety margin, ms (default 300) */
  marginMs?: number;
}

interface TrialCommon {
  backend: 'native' | 'emulator';
  mode?: DirtyMode | 'auto';
  epochMs?: number;
  outputsPerEpoch?: number;
  /** the compiled ha-node.js (default: next to this file, or dist/ when running from the sources) */
  nodeScript?: string;
  /** progress lines */
  log?: (line: string) => void;
}

export interface FailoverOptions extends TrialCommon {
  kills: number;
  /** who decides the takeover (default socket) */
  coordinator?: 'socket' | 'etcd';
  etcd?: EtcdTrialOptions;
  /** outputs the client must receive from each new primary before it may be killed (default 20) */
  minOutputsBetweenKills?: number;
  /** extra random wait before each kill, up to this many ms (default 40) */
  maxKillDelayMs?: number;
  /** backups the primary streams to (default 1; more need etcd) */
  backups?: number;
  /** acknowledgements an epoch needs (default: every backup) */
  quorum?: number;
}

export interface FailoverResult {
  backend: string;
  coordinator: 'socket' | 'etcd';
  kills: number;
  /** failovers after which the backup took over and the client's sequence went on intact */
  failovers: number;
  gaps: number;
  duplicates: number;
  /** outputs the client received */
  outputs: number;
  /** the counter value each takeover restored, with the output count it had committed; ms from the kill to the takeover */
  takeovers: { epoch: number; counter: number; outputSeq: number; clientNext: number; replayed: number; ms: number }[];
  /** the lease history (etcd) */
  history: LeaseRecord[];
  violations: string[];
  seconds: number;
}

/** The ha-node.js script the children run. */
export function haNodeScript(): string {
  const here = join(__dirname, 'ha-node.js');
  if (existsSync(here)) return here;
  return resolve(__dirname, '../../dist/lib/checkpoint/ha-node.js');
}

type Ev<E extends HaEvent['ev']> = Extract<HaEvent, { ev: E }>;

class Host {
  readonly child: ChildProcess;
  readonly name: string;
  /** every event, in order (status lines included) */
  readonly history: HaEvent[] = [];
  readonly #events: HaEvent[] = [];
  readonly #waiters: { want: HaEvent['ev']; resolve: (e: HaEvent) => void; reject: (e: Error) => void }[] = [];
  exited = false;
  exitCode: number | null = null;
  /** the fault proxy in front of this host's etcd link, and (a backup) in front of its replica port */
  etcdProxy: FaultProxy | null = null;
  replProxy: FaultProxy | null = null;
  /** the port a primary streams to: the replication proxy's */
  port = 0;
  stopped = false;
  /** (a backup) resolves when it took over, or with null when it exited first */
  #takeover: Promise<Ev<'took-over'> | null> | null = null;
  tookOver: Ev<'took-over'> | null = null;

  constructor(script: string, backend: string, name: string, log: (line: string) => void) {
    this.name = name;
    this.child = fork(script, [], { env: { ...process.env, KVM_DIRTY_BACKEND: backend }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (e: HaEvent) => {
      this.history.push(e);
      if (e.ev === 'status') log(`${name}: ${e.state} (${e.why})`);
      const w = this.#waiters.find((x) => x.want === e.ev);
      if (e.ev === 'failed') this.#waiters.splice(0).forEach((x) => x.reject(new Error(`host ${name} failed: ${e.message}`)));
      else if (w) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      } else this.#events.push(e);
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      this.exitCode = code;
      this.etcdProxy?.close();
      this.replProxy?.close();
      this.#waiters.splice(0).forEach((x) => x.reject(new Error(`host ${name} exited (${signal ?? code}) while waiting for '${x.want}'`)));
    });
  }

  /** A backup's takeover, however long it takes (null: it exited first). */
  takeover(): Promise<Ev<'took-over'> | null> {
    return (this.#takeover ??= this.wait('took-over', 2 ** 31 - 1).then((t) => (this.tookOver = t), () => null));
  }

  send(c: HaCommand): void {
    if (!this.exited) this.child.send(c);
  }

  wait<E extends HaEvent['ev']>(want: E, timeoutMs = 30000): Promise<Ev<E>> {
    const i = this.#events.findIndex((e) => e.ev === want);
    if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0] as Ev<E>);
    const failed = this.history.find((e) => e.ev === 'failed') as Ev<'failed'> | undefined;
    if (failed) return Promise.reject(new Error(`host ${this.name} failed: ${failed.message}`));
    if (this.exited) return Promise.reject(new Error(`host ${this.name} has exited (${this.exitCode})`));
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`host ${this.name}: no '${want}' within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({
        want,
        resolve: (e) => (clearTimeout(timer), res(e as Ev<E>)),
        reject: (e) => (clearTimeout(timer), rej(e)),
      });
    });
  }

  /** resolves once the process has exited */
  exit(timeoutMs = 30000): Promise<number | null> {
    if (this.exited) return Promise.resolve(this.exitCode);
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`host ${this.name} still runs after ${timeoutMs} ms`)), timeoutMs);
      this.child.once('exit', (code) => (clearTimeout(timer), res(code)));
    });
  }

  signal(sig: 'SIGSTOP' | 'SIGCONT'): void {
    if (!this.exited) this.child.kill(sig);
    this.stopped = sig === 'SIGSTOP';
  }

  kill(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((r) => {
      this.child.once('exit', () => r());
      if (this.stopped) this.child.kill('SIGCONT');
      this.child.kill('SIGKILL');
    });
  }
}

/** The processes of one trial, the client, etcd and the proxies between them. */
class Cluster {
  readonly client = new OutputClient();
  readonly hosts: Host[] = [];
  readonly log: (line: string) => void;
  readonly script: string;
  readonly coordinator: 'socket' | 'etcd';
  readonly prefix = `/kvm-dirty-trial/${randomBytes(6).toString('hex')}`;
  readonly proxied: boolean;
  config!: Omit<HaConfig, 'name' | 'coordinator'>;
  etcdAddress = '';
  #etcd: EtcdServer | null = null;
  /** the client's own link to etcd, for its fencing check of every output (OutputClient.setLeaseCheck) */
  #clientEtcd: EtcdCoordinator | null = null;
  #names = 0;

  constructor(readonly o: TrialCommon & { coordinator: 'socket' | 'etcd'; etcd?: EtcdTrialOptions }, proxied: boolean) {
    this.log = o.log ?? (() => undefined);
    this.script = o.nodeScript ?? haNodeScript();
    this.coordinator = o.coordinator;
    this.proxied = proxied;
    if (!existsSync(this.script)) throw new Error(`${this.script} is missing: build with \`npm run build\` first`);
  }

  async start(): Promise<void> {
    const clientPort = await this.client.listen(0);
    this.config = {
      clientPort, counterPage: 512, dataPages: 64, mode: this.o.mode ?? 'auto',
      epochMs: this.o.epochMs ?? 5, outputsPerEpoch: this.o.outputsPerEpoch ?? 25,
    };
    if (this.coordinator === 'etcd') {
      if (this.o.etcd?.address) this.etcdAddress = this.o.etcd.address;
      else {
        this.#etcd = await startEtcd();
        this.etcdAddress = this.#etcd.address;
      }
      const c = (this.#clientEtcd = EtcdCoordinator.fromUrl(`etcd://${this.etcdAddress}${this.prefix}`));
      this.client.setLeaseCheck((token) => c.holds(token));
    }
  }

  coordinatorFor(address: string): CoordinatorSpec {
    if (this.coordinator === 'socket') return { kind: 'socket' };
    return { kind: 'etcd', url: `etcd://${address}${this.prefix}`, ttlSeconds: this.o.etcd?.ttlSeconds ?? 1, marginMs: this.o.etcd?.marginMs ?? 300 };
  }

  /** A new host process, its etcd link through a proxy of its own when the trial injects faults. */
  async spawn(role: 'primary' | 'backup'): Promise<Host> {
    const name = `${role === 'primary' ? 'p' : 'b'}${++this.#names}`;
    const h = new Host(this.script, this.o.backend, name, this.log);
    this.hosts.push(h);
    let address = this.etcdAddress;
    if (this.proxied && this.coordinator === 'etcd') {
      const [host, port] = this.etcdAddress.split(':');
      h.etcdProxy = new FaultProxy({ host, port: Number(port) });
      address = `127.0.0.1:${await h.etcdProxy.listen(0)}`;
    }
    return Object.assign(h, { coordinatorSpec: this.coordinatorFor(address) });
  }

  async startBackup(): Promise<Host> {
    const h = await this.spawn('backup');
    h.send({ cmd: 'backup', config: { ...this.config, name: h.name, coordinator: (h as Host & { coordinatorSpec: CoordinatorSpec }).coordinatorSpec } });
    const port = (await h.wait('listening')).port;
    if (this.proxied) {
      h.replProxy = new FaultProxy({ port });
      h.port = await h.replProxy.listen(0);
    } else h.port = port;
    return h;
  }

  async startPrimary(backups: Host[]): Promise<Host> {
    const h = await this.spawn('primary');
    h.send({ cmd: 'primary', config: { ...this.config, name: h.name, coordinator: (h as Host & { coordinatorSpec: CoordinatorSpec }).coordinatorSpec, backups: backups.map((b) => b.port) } });
    await h.wait('running');
    return h;
  }

  async history(): Promise<LeaseRecord[]> {
    if (this.coordinator !== 'etcd') return [];
    const c = EtcdCoordinator.fromUrl(`etcd://${this.etcdAddress}${this.prefix}`);
    try {
      return await c.history();
    } finally {
      await c.close();
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.kill()));
    await this.client.close();
    await this.#clientEtcd?.close();
    await this.#etcd?.stop();
  }

  /** The client's checks: the sequence 1, 2, 3, ... and, with etcd, the lease periods. */
  async finish(violations: string[]): Promise<LeaseRecord[]> {
    const values = this.client.values;
    const bad = values.findIndex((v, i) => v !== i + 1);
    if (bad >= 0) violations.push(`output #${bad} is ${values[bad]}, expected ${bad + 1}`);
    const history = await this.history();
    if (this.coordinator === 'etcd') violations.push(...checkLeasePeriods(this.client.log, history));
    return history;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `p`, or after `ms` undefined (the timer does not outlive p) */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: NodeJS.Timeout;
  return Promise.race([p.finally(() => clearTimeout(t)), new Promise<undefined>((r) => (t = setTimeout(() => r(undefined), ms)))]);
}

/** resolves once the host's latest status is `state` */
async function until(h: Host, state: string, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    const last = [...h.history].reverse().find((e) => e.ev === 'status');
    if (last && last.ev === 'status' && last.state === state) return true;
    if (h.exited || performance.now() > deadline) return false;
    await sleep(20);
  }
}

export async function runFailoverTrial(o: FailoverOptions): Promise<FailoverResult> {
  const started = Date.now();
  const coordinator = o.coordinator ?? 'socket';
  const cluster = new Cluster({ ...o, coordinator }, false);
  const client = cluster.client;
  const result: FailoverResult = {
    backend: o.backend, coordinator, kills: 0, failovers: 0, gaps: 0, duplicates: 0, outputs: 0, takeovers: [], history: [], violations: [], seconds: 0,
  };
  const n = o.backups ?? 1;
  if (n > 1 && coordinator !== 'etcd') throw new RangeError('several backups need a coordinator that picks one of them (etcd): with the socket coordinator each would take over');
  try {
    await cluster.start();
    if (o.quorum !== undefined) cluster.config.quorum = o.quorum;
    let backups: Host[] = [];
    for (let i = 0; i < n; i++) backups.push(await cluster.startBackup());
    let primary = await cluster.startPrimary(backups);
    for (let k = 1; k <= o.kills; k++) {
      await client.waitFor(client.next + (o.minOutputsBetweenKills ?? 20));
      await sleep(Math.random() * (o.maxKillDelayMs ?? 40));
      const before = client.next;
      const killedAt = performance.now();
      const campaignsFrom = backups.map((b) => b.history.length);
      await primary.kill();
      result.kills++;
      await within(Promise.race(backups.map((b) => b.takeover())), 60000);
      const backup = backups.find((b) => b.tookOver);
      if (!backup) throw new Error(`kill ${k}: no backup took over in 60 s`);
      const t = (await backup.takeover())!;
      // the winner holds the newest position any backup stood with
      backups.forEach((b, i) => {
        for (const e of b.history.slice(campaignsFrom[i])) {
          if (e.ev === 'campaign' && e.position && comparePositions(e.position, t.position) > 0) {
            client.violations.push(`kill ${k}: ${backup.name} took over at ${JSON.stringify(t.position)}, but ${b.name} stood with ${JSON.stringify(e.position)}`);
          }
        }
      });
      const counter = Number(t.counter);
      result.takeovers.push({ epoch: t.epoch, counter, outputSeq: t.outputSeq, clientNext: t.clientNext, replayed: t.replayed, ms: Math.round(performance.now() - killedAt) });
      // (one ahead when the epoch ended between the guest's increment and its OUT: the restored guest does that OUT first)
      if (counter !== t.outputSeq && counter !== t.outputSeq + 1) client.violations.push(`takeover #${k}: the counter restored to ${counter}, but ${t.outputSeq} outputs were committed`);
      primary = backup;
      backups = backups.filter((b) => b !== backup);
      backups.push(await cluster.startBackup());
      primary.send({ cmd: 'protect', backups: backups.map((b) => b.port) });
      await primary.wait('running');
      await client.waitFor(Math.max(before, t.outputSeq) + 1); // the new primary's guest counts on
      if (client.violations.length === 0) result.failovers++;
      o.log?.(`kill ${k}/${o.kills}: took over at epoch ${t.epoch} after ${result.takeovers[k - 1].ms} ms, counter ${counter}, client had ${t.clientNext}, resent ${t.replayed}`);
    }
    primary.send({ cmd: 'stop' });
    await primary.wait('stopped');
    for (const b of backups) {
      b.send({ cmd: 'stop' });
      await b.wait('stopped');
    }
    result.history = await cluster.finish(client.violations);
  } finally {
    await cluster.close();
  }
  result.violations = client.violations;
  result.gaps = client.violations.filter((v) => v.startsWith('gap')).length;
  result.duplicates = client.violations.filter((v) => v.startsWith('duplicate')).length;
  result.outputs = client.values.length;
  result.seconds = (Date.now() - started) / 1000;
  return result;
}

/** "50/50 failovers, 0 gaps, 0 duplicates" */
export function formatFailover(r: FailoverResult): string {
  return `${r.failovers}/${r.kills} failovers, ${r.gaps} gaps, ${r.duplicates} duplicates`;
}

// ------------------------------------------------------------------ partition trials

/** The faults a partition trial draws from. */
export const FAULTS = ['partition-replication', 'reset-replication', 'slow-replication', 'isolate-primary', 'etcd-blip', 'kill-primary', 'kill-backup', 'stop-primary'] as const;
export type Fault = (typeof FAULTS)[number];

export interface PartitionOptions extends TrialCommon {
  /** faults to inject, one after the other */
  schedules: number;
  /** draw only from these (default: all of FAULTS) */
  faults?: readonly Fault[];
  /** seed of the schedule (default: random); the result says which */
  seed?: number;
  etcd?: EtcdTrialOptions;
  /** the primary runs unprotected after its backup has been gone this long (default: it pauses) */
  unprotectedAfterMs?: number;
  /** outputs the client must receive after each fault settled (default 30) */
  outputsBetween?: number;
}

export interface ScheduleRecord {
  fault: Fault;
  /** how long the fault lasted (ms) */
  ms: number;
  /** a backup took over, and how long after the fault began (ms) */
  takeoverMs: number | null;
  /** the states the primary reported during the fault (first the one it was in, unless protected) */
  states: string[];
}

export interface PartitionResult {
  backend: string;
  seed: number;
  schedules: ScheduleRecord[];
  takeovers: number;
  outputs: number;
  history: LeaseRecord[];
  violations: string[];
  seconds: number;
  /** hosts whose outputs arrived after their lease ended and were not counted (OutputClient.setLeaseCheck) */
  lateHosts: number;
}

/** xorshift32: the schedule is reproducible from its seed */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

export async function runPartitionTrial(o: PartitionOptions): Promise<PartitionResult> {
  const started = Date.now();
  const seed = o.seed ?? (randomBytes(4).readUInt32LE(0) || 1);
  const random = rng(seed);
  const ttlMs = (o.etcd?.ttlSeconds ?? 1) * 1000;
  const cluster = new Cluster({ ...o, coordinator: 'etcd' }, true);
  const client = cluster.client;
  const log = cluster.log;
  const violations = client.violations;
  const result: PartitionResult = { backend: o.backend, seed, schedules: [], takeovers: 0, outputs: 0, history: [], violations, seconds: 0, lateHosts: 0 };
  const faults = o.faults ?? FAULTS;
  const between = o.outputsBetween ?? 30;
  try {
    await cluster.start();
    if (o.unprotectedAfterMs !== undefined) cluster.config.unprotectedAfterMs = o.unprotectedAfterMs;
    let backup = await cluster.startBackup();
    let primary = await cluster.startPrimary([backup]);
    await client.waitFor(between);
    for (let i = 1; i <= o.schedules; i++) {
      const fault = faults[Math.floor(random() * faults.length)];
      // from half a TTL to two TTLs: some faults end before the lease could expire, some after
      const ms = Math.round(ttlMs * (0.5 + 1.5 * random()));
      const statesFrom = primary.history.length;
      const t0 = performance.now();
      log(`schedule ${i}/${o.schedules}: ${fault} for ${ms} ms (primary ${primary.name}, backup ${backup.name}, client at ${client.next})`);
      let expectTakeover = false;
      let oldPrimaryGone = false;
      const takeover = backup.takeover();
      switch (fault) {
        case 'partition-replication':
        case 'reset-replication':
          backup.replProxy!.partition(fault === 'reset-replication' ? 'reset' : 'hold');
          await sleep(ms);
          backup.replProxy!.heal();
          break;
        case 'slow-replication':
          backup.replProxy!.delay(5 + Math.round(random() * 20));
          backup.replProxy!.throttle(64 * 1024 + Math.round(random() * 512 * 1024));
          await sleep(ms);
          backup.replProxy!.delay(0);
          backup.replProxy!.throttle(0);
          break;
        case 'etcd-blip':
          // shorter than the time a renewal has left: the lease survives, the primary may fence for a moment
          primary.etcdProxy!.partition('hold');
          await sleep(Math.round(ttlMs / 5));
          primary.etcdProxy!.heal();
          break;
        case 'isolate-primary':
          expectTakeover = true;
          primary.etcdProxy!.partition('hold');
          backup.replProxy!.partition('hold');
          await within(takeover, Math.max(ms, 3 * ttlMs));
          primary.etcdProxy!.heal();
          backup.replProxy!.heal();
          break;
        case 'kill-primary':
          expectTakeover = true;
          oldPrimaryGone = true;
          await primary.kill();
          break;
        case 'kill-backup':
          await backup.kill();
          break;
        case 'stop-primary':
          expectTakeover = true;
          primary.signal('SIGSTOP');
          await sleep(Math.max(ms, ttlMs + 500));
          primary.signal('SIGCONT');
          break;
      }
      // Settle: who is primary now? Without a takeover expected the primary counts on (a
      // takeover may still come, legitimately, when the fault outlived the lease).
      if (expectTakeover) {
        await within(takeover, 60000);
        if (!backup.tookOver) throw new Error(`schedule ${i} (${fault}): ${backup.name} did not take over`);
      } else if (!backup.exited) await Promise.race([client.waitFor(client.next + between, 60000), takeover]);
      // ... and is protected again (a new stream, when the old one broke)
      if (!backup.tookOver && !backup.exited && !(await until(primary, 'protected', 60000))) {
        violations.push(`schedule ${i} (${fault}): ${primary.name} not protected again within 60 s of the heal`);
      }
      const took = backup.tookOver;
      // A primary already paused when the fault began (its backup lagging on a loaded host)
      // reports no new 'paused': the state it was in counts as reported during the fault.
      const states = (events: typeof primary.history) => events.flatMap((e) => (e.ev === 'status' ? [e.state] : []));
      const atStart = states(primary.history.slice(0, statesFrom)).pop();
      const rec: ScheduleRecord = {
        fault, ms, takeoverMs: took ? Math.round(performance.now() - t0) : null,
        states: [...(atStart && atStart !== 'protected' ? [atStart] : []), ...states(primary.history.slice(statesFrom))],
      };
      result.schedules.push(rec);
      if (took) {
        result.takeovers++;
        if (Number(took.counter) - took.outputSeq !== 0 && Number(took.counter) - took.outputSeq !== 1) violations.push(`schedule ${i}: the counter restored to ${took.counter}, but ${took.outputSeq} outputs were committed`);
        if (!expectTakeover && fault !== 'etcd-blip' && !primary.exited) {
          violations.push(`schedule ${i} (${fault}): ${backup.name} took over while ${primary.name} was alive${rec.states.includes('fenced') ? ' and fenced' : ''}`);
        }
        // the old primary, unless killed, must find it lost its lease and stop by itself
        if (!oldPrimaryGone) {
          const code = await primary.exit(30000).catch((e: Error) => (violations.push(`schedule ${i}: ${e.message}`), null));
          if (code !== null && code !== 3) violations.push(`schedule ${i}: the old primary ${primary.name} exited ${code}, not 3 (lease lost)`);
          const lost = primary.history.find((e) => e.ev === 'lost') as Ev<'lost'> | undefined;
          if (lost) log(`${primary.name} stopped: ${lost.why}`);
        }
        await primary.kill();
        primary = backup;
        backup = await cluster.startBackup();
        primary.send({ cmd: 'protect', backups: [backup.port] });
        await primary.wait('running');
      } else if (backup.exited) {
        backup = await cluster.startBackup();
        primary.send({ cmd: 'protect', backups: [backup.port] });
        await primary.wait('running');
      }
      await client.waitFor(client.next + between, 60000);
      log(`  -> ${took ? `${primary.name} took over after ${rec.takeoverMs} ms` : `${primary.name} still primary`}; states: ${rec.states.join(', ') || '-'}; client at ${client.next}`);
      const alive = cluster.hosts.filter((h) => !h.exited && h !== backup);
      if (alive.length !== 1) violations.push(`schedule ${i}: ${alive.length} primaries alive (${alive.map((h) => h.name).join(', ')})`);
    }
    primary.send({ cmd: 'stop' });
    await primary.wait('stopped');
    backup.send({ cmd: 'stop' });
    await backup.wait('stopped');
    result.history = await cluster.finish(violations);
  } finally {
    await cluster.close();
  }
  result.outputs = client.values.length;
  result.lateHosts = client.hostLog.filter((v) => v.ended === 'expired').length;
  result.seconds = (Date.now() - started) / 1000;
  return result;
}
