// The lease of a VM in etcd (the `etcd3` client; any etcd >= 3.3, tested with Debian's 3.4).
//
// Keys under the VM's prefix P (etcd://HOST:PORT/P):
//   P/lease             the primary's: {holder, position}, attached to its etcd lease (TTL).
//                       Its create revision is the fencing token.
//   P/history/HOLDER@N  one per acquisition, written in the same transaction (never deleted):
//                       {holder, position, requestedAt, at}; sorted by create revision.
//   P/backups/HOLDER    one per backup standing by, attached to the backup's own lease: "~"
//                       while a primary holds P/lease, the position it would resume from
//                       once P/lease is gone ("0" when it has none).
//   P/done              the VM finished cleanly: nobody takes over.
//
// The primary releases an output only while now + margin < the lease's expiry as it can
// know it: the send time of its last successful renewal plus the TTL (etcd restarts the TTL
// when the renewal arrives, later than it was sent, so the real expiry is no earlier).
// It renews every TTL/4; when the margin is reached without a renewal it fences itself: no
// output leaves and the guest pauses, until a renewal comes through, or for good once etcd
// says the lease is gone. The margin covers what happens between the check and an output
// leaving the host, the time a vCPU takes to stop, and the drift of this host's clock
// against the etcd leader's over one TTL (see README).
//
// A backup campaigns once P/lease is gone: it publishes its position in P/backups/HOLDER
// and acquires with one transaction: P/lease absent, P/done absent, and every value in
// P/backups/ below its own (positions are fixed-width, so byte order is numeric order; "~"
// sorts above every position). So a backup that has not yet published blocks the others
// until it does, or until its own lease expires (it died, or it cannot reach etcd), and the
// backup with the newest position wins.

import { Etcd3, EtcdLeaseInvalidError, type Lease as EtcdLeaseHandle } from 'etcd3';
import { noop } from 'cockatiel';
import { randomBytes } from 'node:crypto';
import {
  LeaseLostError, monotonicMs,
  type Coordinator, type Lease, type LeaseRecord, type LeaseState, type Position, type StandByOptions,
} from './coordinator';

export interface EtcdCoordinatorOptions {
  /** client URLs, http://HOST:PORT */
  endpoints: string[];
  /** the VM's key prefix, e.g. /fleet/vm1 */
  prefix: string;
  /** lease TTL in whole seconds (etcd's unit; default 5; etcd refuses TTLs below ceil(1.5 x its election timeout)) */
  ttlSeconds?: number;
  /** clock-safety margin in ms (default: a fifth of the TTL, at least 200 ms); must be under half the TTL */
  marginMs?: number;
  /** how often a backup looks at the lease while standing by (default: TTL / 10, at most 100 ms) */
  pollMs?: number;
}

const STANDBY = '~';
const NO_POSITION = '0';

/** etcd://HOST:PORT[,HOST:PORT...]/PREFIX -> endpoints and prefix. */
export function parseEtcdUrl(url: string): { endpoints: string[]; prefix: string } {
  const m = /^etcd:\/\/([^/]+)(\/[^?#]*)$/.exec(url);
  if (!m) throw new RangeError(`expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX, got ${JSON.stringify(url)}`);
  const endpoints = m[1].split(',').map((hp) => {
    const p = /^([^:]+):(\d+)$/.exec(hp);
    if (!p || Number(p[2]) < 1 || Number(p[2]) > 65535) throw new RangeError(`etcd endpoint ${JSON.stringify(hp)} is not HOST:PORT`);
    return `http://${hp}`;
  });
  const prefix = m[2].replace(/\/+$/, '');
  if (!prefix) throw new RangeError(`etcd URL ${JSON.stringify(url)} names no key prefix for the VM (etcd://HOST:PORT/PREFIX)`);
  return { endpoints, prefix };
}

export function encodePosition(p: Position): string {
  return `${String(p.token).padStart(16, '0')}.${String(p.stream).padStart(8, '0')}.${String(p.epoch).padStart(16, '0')}`;
}

function decodePosition(s: string): Position | null {
  const m = /^(\d{16})\.(\d{8})\.(\d{16})$/.exec(s);
  return m ? { token: Number(m[1]), stream: Number(m[2]), epoch: Number(m[3]) } : null;
}

/** The key just after every key that starts with `prefix` (etcd's range end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  b[b.length - 1]++;
  return b;
}

export class EtcdCoordinator implements Coordinator {
  readonly kind = 'etcd';
  readonly description: string;
  readonly ttlMs: number;
  readonly marginMs: number;
  readonly #ttl: number;
  readonly #poll: number;
  readonly #client: Etcd3;
  readonly #keys: { lease: string; history: string; backups: string; done: string };

  constructor(o: EtcdCoordinatorOptions) {
    const ttl = o.ttlSeconds ?? 5;
    if (!Number.isSafeInteger(ttl) || ttl < 1) throw new RangeError(`the lease TTL is a whole number of seconds >= 1, got ${ttl}`);
    this.#ttl = ttl;
    this.ttlMs = ttl * 1000;
    this.marginMs = o.marginMs ?? Math.max(200, this.ttlMs / 5);
    if (!(this.marginMs > 0 && this.marginMs < this.ttlMs / 2)) throw new RangeError(`the clock-safety margin must be above 0 and under half the TTL (${this.ttlMs / 2} ms), got ${this.marginMs}`);
    this.#poll = o.pollMs ?? Math.min(100, this.ttlMs / 10);
    if (!o.endpoints.length) throw new RangeError('no etcd endpoint');
    if (!/^\/./.test(o.prefix) || o.prefix.endsWith('/')) throw new RangeError(`the VM's key prefix starts with / and does not end with one, got ${JSON.stringify(o.prefix)}`);
    const p = o.prefix;
    this.#keys = { lease: `${p}/lease`, history: `${p}/history/`, backups: `${p}/backups/`, done: `${p}/done` };
    this.description = `etcd://${o.endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(',')}${p} (TTL ${ttl} s, margin ${this.marginMs} ms)`;
    this.#client = new Etcd3({
      hosts: o.endpoints,
      // No retries and no circuit breaker: a call that fails must fail now (the lease's
      // validity, not the client, decides what a missed renewal means), and one that failed
      // during a partition must not keep the next ones from being tried after it heals.
      faultHandling: { host: () => noop, global: noop },
      grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 50, 'grpc.max_reconnect_backoff_ms': Math.min(1000, this.ttlMs / 4) },
      dialTimeout: this.ttlMs,
    });
  }

  static fromUrl(url: string, options: Omit<EtcdCoordinatorOptions, 'endpoints' | 'prefix'> = {}): EtcdCoordinator {
    return new EtcdCoordinator({ ...parseEtcdUrl(url), ...options });
  }

  /** Per-call deadline: no renewal may outlive the interval to the next one. */
  #deadline(): { deadline: Date } {
    return { deadline: new Date(Date.now() + Math.max(50, this.ttlMs / 4)) };
  }

  async acquire(holder: string): Promise<Lease> {
    const handle = this.#client.lease(this.#ttl, { autoKeepAlive: false });
    const grantedAt = monotonicMs();
    const id = await handle.grant();
    const r = await this.#acquireTxn(holder, null, handle, id, grantedAt, [
      { key: Buffer.from(this.#keys.history), range_end: prefixEnd(this.#keys.history), target: 'Create', result: 'Equal', create_revision: 0 },
    ]);
    if (r) return r;
    await handle.revoke().catch(() => undefined);
    const [cur, history] = await Promise.all([this.#client.get(this.#keys.lease).string(), this.history()]);
    throw new Error(cur
      ? `the lease of ${this.#keys.lease} is held (${cur}): a fresh guest may not start`
      : `${this.#keys.lease.replace(/\/lease$/, '')} has run before (${history.length} acquisitions in its history): a fresh guest may not start; a backup resumes it`);
  }

  async standBy(holder: string, o: StandByOptions): Promise<Lease> {
    const member = `${this.#keys.backups}${holder}`;
    let membership = null as KeptLease | null;
    let published: string | null = null;
    let primary = null as { handle: EtcdLeaseHandle; id: string } | null;
    let lastToken = 0;
    let frozen = false;
    const publish = async (value: string) => {
      if (membership?.state !== 'held') {
        // (re)join: a backup whose lease expired (it could not reach etcd for a TTL) counts as gone until it registers again
        membership?.stop();
        membership = await KeptLease.grant(this.#client, this.#ttl, this.marginMs, () => this.#deadline());
        published = null;
      }
      if (published === value) return;
      await this.#client.put(member).value(value).lease(membership.id).options(this.#deadline());
      published = value;
    };
    try {
      for (;;) {
        if (o.signal?.aborted) throw o.signal.reason;
        try {
          const [cur, done] = await Promise.all([
            this.#client.get(this.#keys.lease).options(this.#deadline()).exec(),
            this.#client.get(this.#keys.done).options(this.#deadline()).string(),
          ]);
          if (done !== null) throw new VmFinishedError(`${this.#keys.done} is set: the VM finished, nobody takes over`);
          if (cur.kvs.length) {
            lastToken = Number(cur.kvs[0].create_revision);
            frozen = false;
            await publish(STANDBY);
          } else {
            if (!frozen) {
              o.freeze(lastToken);
              frozen = true;
            }
            const pos = o.position();
            const mine = pos ? encodePosition(pos) : NO_POSITION;
            await publish(mine);
            if (pos) {
              if (!primary) {
                const handle = this.#client.lease(this.#ttl, { autoKeepAlive: false });
                primary = { handle, id: await handle.grant() };
              }
              const grantedAt = monotonicMs();
              await primary.handle.keepaliveOnce(this.#deadline());
              const won = await this.#acquireTxn(holder, pos, primary.handle, primary.id, grantedAt, [
                { key: Buffer.from(this.#keys.backups), range_end: prefixEnd(this.#keys.backups), target: 'Value', result: 'Less', value: Buffer.from(`${mine}\0`) },
              ], member);
              if (won) {
                primary = null;
                return won;
              }
            }
          }
        } catch (e) {
          if (e instanceof VmFinishedError) throw e;
          if (e instanceof EtcdLeaseInvalidError) primary = null;
          // etcd unreachable for now: try again (standing by costs nothing)
        }
        await new Promise((r) => setTimeout(r, this.#poll));
      }
    } finally {
      if (primary) await primary.handle.revoke().catch(() => undefined);
      // the membership lasts as long as standing by: after it, this backup is primary or gone
      if (membership) {
        membership.stop();
        await membership.handle.revoke().catch(() => undefined);
      }
    }
  }

  /** The acquiring transaction: P/lease and P/done absent, plus `extra`; writes P/lease and a history record. */
  async #acquireTxn(holder: string, position: Position | null, handle: EtcdLeaseHandle, id: string, grantedAt: number, extra: object[], member?: string): Promise<Lease | null> {
    const requestedAt = monotonicMs();
    const record = JSON.stringify({ holder, position, requestedAt, at: new Date().toISOString() });
    const success: object[] = [
      { request_put: { key: Buffer.from(this.#keys.lease), value: Buffer.from(JSON.stringify({ holder, position })), lease: id } },
      { request_put: { key: Buffer.from(`${this.#keys.history}${holder}@${randomBytes(4).toString('hex')}`), value: Buffer.from(record) } },
    ];
    if (member) success.push({ request_delete_range: { key: Buffer.from(member) } });
    const r = await this.#client.kv.txn({
      compare: [
        { key: Buffer.from(this.#keys.lease), target: 'Create', result: 'Equal', create_revision: 0 },
        { key: Buffer.from(this.#keys.done), target: 'Create', result: 'Equal', create_revision: 0 },
        ...extra,
      ],
      success,
      failure: [],
    } as Parameters<Etcd3['kv']['txn']>[0], this.#deadline());
    if (!r.succeeded) return null;
    return new EtcdLease(this.#client, handle, id, Number(r.header.revision), holder, this.#keys, grantedAt, this.ttlMs, this.marginMs, () => this.#deadline());
  }

  /**
   * Whether the lease with this fencing token (P/lease's create revision) is still the VM's:
   * a linearizable read, so a true answer means it was at some instant after the call began.
   * The output client's fencing check (OutputClient.setLeaseCheck).
   */
  async holds(token: number): Promise<boolean> {
    const r = await this.#client.get(this.#keys.lease).options(this.#deadline()).exec();
    return r.kvs.length === 1 && Number(r.kvs[0].create_revision) === token;
  }

  async history(): Promise<LeaseRecord[]> {
    const r = await this.#client.getAll().prefix(this.#keys.history).exec();
    return r.kvs
      .map((kv) => ({ token: Number(kv.create_revision), ...JSON.parse(kv.value.toString()) as Omit<LeaseRecord, 'token'> }))
      .sort((a, b) => a.token - b.token);
  }

  /** The backups standing by and what they publish ("~": a primary holds the lease; otherwise their position). */
  async backups(): Promise<{ holder: string; value: string; position: Position | null }[]> {
    const r = await this.#client.getAll().prefix(this.#keys.backups).strings();
    return Object.entries(r).map(([k, value]) => ({ holder: k.slice(this.#keys.backups.length), value, position: decodePosition(value) }));
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}

class VmFinishedError extends Error {}

/** An etcd lease renewed every TTL/4, with its validity as this host can know it. */
class KeptLease {
  #state: LeaseState = 'held';
  #expiresAt: number;
  #timer: NodeJS.Timeout | null = null;
  #fence: NodeJS.Timeout | null = null;
  #stopped = false;
  readonly #listeners: ((s: LeaseState, why: string) => void)[] = [];
  #waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** extra check after each renewal (a primary: its key is still its own) */
  verify: (() => Promise<string | null>) | null = null;

  constructor(
    readonly handle: EtcdLeaseHandle, readonly id: string, grantedAt: number,
    readonly ttlMs: number, readonly marginMs: number, readonly callOptions: () => { deadline: Date },
  ) {
    this.#expiresAt = grantedAt + ttlMs;
    this.#schedule();
  }

  static async grant(client: Etcd3, ttl: number, marginMs: number, callOptions: () => { deadline: Date }): Promise<KeptLease> {
    const handle = client.lease(ttl, { autoKeepAlive: false });
    const grantedAt = monotonicMs();
    const id = await handle.grant();
    return new KeptLease(handle, id, grantedAt, ttl * 1000, marginMs, callOptions);
  }

  get state(): LeaseState {
    return this.#state;
  }

  /** the last instant (monotonicMs) an output may leave */
  get releaseDeadline(): number {
    return this.#expiresAt - this.marginMs;
  }

  onChange(fn: (s: LeaseState, why: string) => void): void {
    this.#listeners.push(fn);
  }

  whenHeld(): Promise<void> | undefined {
    if (this.#state === 'held') return undefined;
    if (this.#state === 'lost') return Promise.reject(new LeaseLostError('the lease is lost'));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#fence) clearTimeout(this.#fence);
  }

  lose(why: string): void {
    if (this.#state === 'lost') return;
    this.stop();
    this.#set('lost', why);
    this.handle.release();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#renew(), this.ttlMs / 4);
    if (this.#fence) clearTimeout(this.#fence);
    const fenceIn = this.releaseDeadline - monotonicMs();
    this.#fence = setTimeout(() => {
      if (this.#state === 'held' && monotonicMs() >= this.releaseDeadline) this.#set('fenced', `no renewal for ${(this.ttlMs - this.marginMs).toFixed(0)} ms: fenced ${this.marginMs} ms before the lease could expire`);
    }, Math.max(0, fenceIn));
  }

  async #renew(): Promise<void> {
    const sentAt = monotonicMs();
    try {
      const r = await this.handle.keepaliveOnce(this.callOptions());
      const why = this.verify ? await this.verify() : null;
      // (stopped meanwhile: the holder finished or revoked it; what etcd says now is no news)
      if (this.#stopped) return;
      if (why) return this.lose(why);
      this.#expiresAt = Math.max(this.#expiresAt, sentAt + Number(r.TTL) * 1000);
      if (this.#state === 'fenced' && monotonicMs() < this.releaseDeadline) this.#set('held', 'renewed');
    } catch (e) {
      if (this.#stopped) return;
      if (e instanceof EtcdLeaseInvalidError) return this.lose('etcd says the lease expired');
      // unreachable: the validity runs down, and the fence timer acts when it must
    }
    if (this.#state !== 'lost' && monotonicMs() >= this.#expiresAt) {
      // Past the expiry as this host can bound it: whatever etcd says later, another holder may exist.
      return this.lose(`no renewal for a whole TTL (${this.ttlMs} ms)`);
    }
    this.#schedule();
  }

  #set(s: LeaseState, why: string): void {
    this.#state = s;
    for (const l of this.#listeners) l(s, why);
    if (s === 'held') this.#waiters.splice(0).forEach((w) => w.resolve());
    if (s === 'lost') this.#waiters.splice(0).forEach((w) => w.reject(new LeaseLostError(`the lease is lost: ${why}`)));
  }
}

/** A primary's lease: a KeptLease whose key must stay its own. */
class EtcdLease implements Lease {
  readonly #kept: KeptLease;
  readonly #client: Etcd3;
  readonly #keys: { lease: string; done: string };

  constructor(
    client: Etcd3, handle: EtcdLeaseHandle, id: string, readonly token: number, readonly holder: string,
    keys: { lease: string; done: string }, grantedAt: number, ttlMs: number, marginMs: number, callOptions: () => { deadline: Date },
  ) {
    this.#client = client;
    this.#keys = keys;
    this.#kept = new KeptLease(handle, id, grantedAt, ttlMs, marginMs, callOptions);
    this.#kept.verify = async () => {
      const r = await client.get(keys.lease).options(callOptions()).exec();
      const kv = r.kvs[0];
      if (!kv) return `${keys.lease} is gone`;
      if (Number(kv.create_revision) !== token) return `${keys.lease} belongs to another holder (revision ${kv.create_revision})`;
      return null;
    };
  }

  get state(): LeaseState {
    return this.#kept.state;
  }

  mayRelease(now = monotonicMs()): boolean {
    return this.#kept.state === 'held' && now < this.#kept.releaseDeadline;
  }

  whenHeld(): Promise<void> | undefined {
    return this.#kept.whenHeld();
  }

  onChange(fn: (state: LeaseState, why: string) => void): void {
    this.#kept.onChange(fn);
  }

  remainingMs(): number {
    return Math.max(0, this.#kept.releaseDeadline - monotonicMs());
  }

  async finish(): Promise<void> {
    await this.#client.if(this.#keys.lease, 'Create', '==', this.token).then(this.#client.put(this.#keys.done).value(JSON.stringify({ holder: this.holder, token: this.token }))).commit();
    this.#kept.stop();
    await this.#kept.handle.revoke().catch(() => undefined);
  }
}
