// The coordinator against a real etcd, the fault proxy, and the check of a client's log
// against a lease history (which must catch what it is there to catch).
import { createServer, connect, type Socket } from 'node:net';
import { checkLeasePeriods, monotonicMs, type Lease, type LeaseRecord, type Position } from '../lib/checkpoint/coordinator';
import { EtcdCoordinator, parseEtcdUrl } from '../lib/checkpoint/etcd-coordinator';
import { FaultProxy } from '../lib/checkpoint/fault-proxy';
import { describeWithEtcd } from './helpers/etcd';

let prefixes = 0;
const prefix = () => `/kvm-dirty-test/${process.pid}-${Date.now()}-${++prefixes}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('etcd URLs', () => {
  test('etcd://HOST:PORT[,HOST:PORT]/PREFIX', () => {
    expect(parseEtcdUrl('etcd://10.0.0.1:2379,10.0.0.2:2379/fleet/vm1/')).toEqual({ endpoints: ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'], prefix: '/fleet/vm1' });
    expect(() => parseEtcdUrl('http://127.0.0.1:2379/x')).toThrow(/expected etcd:\/\/HOST:PORT/);
    expect(() => parseEtcdUrl('etcd://127.0.0.1:2379/')).toThrow(/names no key prefix/);
    expect(() => parseEtcdUrl('etcd://127.0.0.1/x')).toThrow(/is not HOST:PORT/);
    expect(() => EtcdCoordinator.fromUrl('etcd://127.0.0.1:1/x', { ttlSeconds: 0.5 })).toThrow(/whole number of seconds/);
    expect(() => EtcdCoordinator.fromUrl('etcd://127.0.0.1:1/x', { ttlSeconds: 1, marginMs: 600 })).toThrow(/under half the TTL/);
  });
});

describe('checkLeasePeriods', () => {
  const history: LeaseRecord[] = [
    { token: 5, holder: 'p1', position: null, requestedAt: 0, at: '' },
    { token: 9, holder: 'b1', position: { token: 5, stream: 0, epoch: 3 }, requestedAt: 1000, at: '' },
  ];
  const out = (firstSeq: number, token: number, holder: string, at: number) => ({ firstSeq, count: 2, token, holder, at });
  test('a log that keeps to the periods passes', () => {
    expect(checkLeasePeriods([out(0, 5, 'p1', 10), out(2, 5, 'p1', 999), out(4, 9, 'b1', 1200)], history)).toEqual([]);
  });
  test('an output of an old lease after the next holder asked, from the wrong holder, or after a newer lease is caught', () => {
    expect(checkLeasePeriods([out(0, 5, 'p1', 1000.5)], history)).toEqual(['outputs 0..1 from p1: arrived 0.5 ms after b1 asked for lease 9']);
    expect(checkLeasePeriods([out(0, 9, 'p1', 1200)], history)).toEqual(['outputs 0..1 from p1: lease 9 was held by b1']);
    expect(checkLeasePeriods([out(0, 9, 'b1', 1200), out(2, 5, 'p1', 500)], history)).toEqual(['outputs 2..3 from p1: lease 5 after outputs of lease 9']);
    expect(checkLeasePeriods([out(0, 7, 'x', 1)], history)).toEqual(['outputs 0..1 from x: lease 7 is not in the history']);
  });
});

describe('FaultProxy', () => {
  let echo: ReturnType<typeof createServer>;
  let port: number;
  beforeAll(async () => {
    echo = createServer((s) => s.pipe(s));
    port = await new Promise<number>((r) => echo.listen(0, '127.0.0.1', () => r((echo.address() as { port: number }).port)));
  });
  afterAll(() => new Promise<void>((r) => echo.close(() => r())));

  const open = (p: number) => new Promise<{ s: Socket; got: () => string }>((resolve) => {
    let data = '';
    const s = connect({ port: p, host: '127.0.0.1' }, () => resolve({ s, got: () => data }));
    s.on('data', (c) => (data += c.toString()));
    s.on('error', () => undefined);
  });

  test('partition holds bytes (in order) until heal, refuses new connections; reset destroys them', async () => {
    const proxy = new FaultProxy({ port });
    const p = await proxy.listen(0);
    const a = await open(p);
    a.s.write('one ');
    await sleep(50);
    expect(a.got()).toBe('one ');
    proxy.partition();
    a.s.write('two ');
    a.s.write('three');
    await sleep(150);
    expect(a.got()).toBe('one ');
    const refused = await open(p);
    await sleep(50);
    expect(refused.s.destroyed).toBe(true);
    proxy.heal();
    await sleep(100);
    expect(a.got()).toBe('one two three');
    proxy.partition('reset');
    await sleep(50);
    expect(a.s.destroyed).toBe(true);
    proxy.heal();
    await proxy.close();
  });

  test('delay and throttle slow the bytes down and lose none', async () => {
    const proxy = new FaultProxy({ port });
    const p = await proxy.listen(0);
    const a = await open(p);
    proxy.delay(100);
    const t0 = performance.now();
    a.s.write('x');
    while (a.got() !== 'x') await sleep(5);
    // (two legs through the proxy: out and back)
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    proxy.delay(0);
    proxy.throttle(20000);
    const big = 'y'.repeat(10000);
    a.s.write(big);
    while (a.got().length < 1 + big.length) await sleep(10);
    expect(a.got()).toBe(`x${big}`);
    expect(() => proxy.delay(-1)).toThrow(RangeError);
    await proxy.close();
  });
});

describeWithEtcd('EtcdCoordinator against a real etcd', (etcd) => {
  const coordinator = (p: string, through = etcd()) => EtcdCoordinator.fromUrl(`etcd://${through}${p}`, { ttlSeconds: 1, marginMs: 300 });

  test('a fresh guest acquires once; a second fresh start is refused; the history says who', async () => {
    const p = prefix();
    const a = coordinator(p);
    const b = coordinator(p);
    try {
      const lease = await a.acquire('p1');
      expect([lease.state, lease.mayRelease(), lease.token > 0]).toEqual(['held', true, true]);
      await expect(b.acquire('p2')).rejects.toThrow(/is held .*a fresh guest may not start/);
      const h = await b.history();
      expect(h.map((r) => [r.token, r.holder, r.position])).toEqual([[lease.token, 'p1', null]]);
      await lease.finish();
      await expect(b.acquire('p3')).rejects.toThrow(/a fresh guest may not start/);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('holds(token): true only for the lease that is the VM\'s now, read by any client; false once it ended', async () => {
    const p = prefix();
    const a = coordinator(p);
    const b = coordinator(p);
    try {
      expect(await b.holds(1)).toBe(false);
      const lease = await a.acquire('p1');
      expect([await b.holds(lease.token), await b.holds(lease.token - 1), await b.holds(lease.token + 1)]).toEqual([true, false, false]);
      await lease.finish();
      expect(await b.holds(lease.token)).toBe(false);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('cut off from etcd the primary fences before its lease can expire; the backup with the newest position takes over after; the stale primary finds it lost', async () => {
    const p = prefix();
    const [host, port] = etcd().split(':');
    const proxy = new FaultProxy({ host, port: Number(port) });
    const through = `127.0.0.1:${await proxy.listen(0)}`;
    const primaryC = coordinator(p, through);
    const b1 = coordinator(p);
    const b2 = coordinator(p);
    const abort = new AbortController();
    try {
      const lease: Lease = await primaryC.acquire('p1');
      const changes: { state: string; at: number }[] = [];
      lease.onChange((state) => changes.push({ state, at: monotonicMs() }));
      const stood: Record<string, number> = {};
      const stand = (c: EtcdCoordinator, name: string, pos: Position) => c.standBy(name, {
        position: () => pos, freeze: () => (stood[name] = monotonicMs()), primaryLost: new Promise(() => undefined), signal: abort.signal,
      });
      const older = stand(b1, 'b1', { token: lease.token, stream: 0, epoch: 40 });
      const newer = stand(b2, 'b2', { token: lease.token, stream: 0, epoch: 41 });
      older.catch(() => undefined);
      await sleep(1500);
      expect([lease.state, stood]).toEqual(['held', {}]); // renewed all along: nobody campaigns
      const cutAt = monotonicMs();
      proxy.partition();
      const won = await newer;
      const wonAt = monotonicMs();
      expect(won.holder).toBe('b2');
      expect(won.token).toBeGreaterThan(lease.token);
      // fenced (outputs stopped) before anyone asked for the lease
      const fenced = changes.find((c) => c.state === 'fenced');
      expect(fenced).toBeDefined();
      const history = await b2.history();
      expect(history.map((r) => r.holder)).toEqual(['p1', 'b2']);
      expect(history[1].position).toEqual({ token: lease.token, stream: 0, epoch: 41 });
      expect(fenced!.at).toBeLessThan(history[1].requestedAt);
      expect(fenced!.at).toBeGreaterThan(cutAt);
      expect(lease.mayRelease()).toBe(false);
      // the other backup stands by for the new primary: it did not take over
      await sleep(300);
      expect(await Promise.race([older.then(() => 'won'), sleep(10).then(() => 'standing by')])).toBe('standing by');
      proxy.heal();
      while (lease.state !== 'lost') await sleep(20);
      expect(wonAt).toBeGreaterThan(cutAt);
      await won.finish();
    } finally {
      abort.abort(new Error('done'));
      await proxy.close();
      await Promise.all([primaryC.close(), b1.close(), b2.close()]);
    }
  });
});
