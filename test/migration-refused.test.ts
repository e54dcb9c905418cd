// What a migration's destination refuses before it applies anything, and what a source says
// when it cannot reach one: a recorded stream, damaged, cut short or mixed with another's,
// fed to receiveMigration() over a socket; and sources pointed at nobody.
import { createServer, connect, type Socket } from 'node:net';
import { openKvm, Workload } from '../lib';
import { receiveMigration } from '../lib/checkpoint/incoming';
import { createMachine, DATA_GFN } from '../lib/checkpoint/machine';
import { migrateTo } from '../lib/checkpoint/migration';

/** A complete migration's source-to-destination bytes, recorded by a tee between the source and a real destination. */
async function recordStream(): Promise<Buffer> {
  const kvm = openKvm({ backend: 'emulator' });
  const m = createMachine(kvm, { dataPages: 256, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 8 }) });
  const chunks: Buffer[] = [];
  const realPort = deferred<number>();
  const real = receiveMigration({ kvm, listen: { port: 0 }, onListening: (p) => realPort.resolve(p) });
  const port = await realPort.promise;
  const tee = createServer((from) => {
    const to = connect(port, '127.0.0.1');
    from.on('data', (d) => {
      chunks.push(Buffer.from(d));
      to.write(d);
    });
    to.on('data', (d) => from.write(d));
    from.on('close', () => to.end());
    to.on('close', () => from.end());
  });
  await new Promise<void>((r) => tee.listen(0, '127.0.0.1', () => r()));
  const stats = await migrateTo(m, (tee.address() as { port: number }).port);
  expect(stats.status).toBe('completed');
  const inc = await real;
  await inc.runner.stop();
  inc.machine.close();
  tee.close();
  kvm.close();
  return Buffer.concat(chunks);
}

/** The frames of a stream, whole (32-byte envelope, payload, 4-byte trailer). */
function frames(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < b.length; at += 36 + b.readUInt32LE(at + 12)) out.push(b.subarray(at, at + 36 + b.readUInt32LE(at + 12)));
  return out;
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Feeds `bytes` to a fresh destination and returns how it ended, and what it answered. */
async function feed(bytes: Buffer): Promise<{ error: string | null; answered: Buffer }> {
  const kvm = openKvm({ backend: 'emulator' });
  const port = deferred<number>();
  const result = receiveMigration({ kvm, listen: { port: 0 }, onListening: (p) => port.resolve(p), handoverTimeoutMs: 2000 });
  const s: Socket = connect(await port.promise, '127.0.0.1');
  const answered: Buffer[] = [];
  s.on('data', (d) => answered.push(Buffer.from(d)));
  s.on('error', () => undefined);
  const closed = new Promise((r) => s.on('close', r));
  await new Promise<void>((r) => s.write(bytes, () => r()));
  s.end();
  let error: string | null = null;
  try {
    const inc = await result;
    await inc.runner.stop();
    inc.machine.close();
  } catch (e) {
    error = (e as Error).message;
  }
  await closed;
  kvm.close();
  return { error, answered: Buffer.concat(answered) };
}

describe('a destination refuses before it starts anything', () => {
  let stream: Buffer;
  let other: Buffer;
  beforeAll(async () => {
    stream = await recordStream();
    other = await recordStream(); // the same machine, another stream id
  });

  test('the recorded stream, replayed, completes; without its last frame (Released) the guest it resumed is discarded', async () => {
    expect((await feed(stream)).error).toBeNull();
    const r = await feed(Buffer.concat(frames(stream).slice(0, -1)));
    expect(r.error).toBe('the source went away before it released the guest: the guest stays with the source');
  });

  test.each([
    ['a flipped bit in a page', (b: Buffer) => { const c = Buffer.from(b); c[c.length >> 1] ^= 0x10; return c; }, /ECRC/],
    ['cut inside the final round', (b: Buffer) => b.subarray(0, b.length - 200), /closed the connection after \d+ round\(s\)|ETRUNCATED/],
    ['not a migration stream', () => Buffer.from('GET / HTTP/1.1\r\nHost: localhost:7000\r\nAccept: */*\r\n\r\n'), /EMAGIC/],
    ['a frame of another stream spliced in', 'foreign', /EFOREIGN/],
  ])('%s: refused, with the reason, and no guest runs', async (_what, damage, reason) => {
    // frame 3 of the other stream in place of frame 3 of this one (both are Pings: the same bytes but for the stream id)
    const bytes = damage === 'foreign' ? Buffer.concat([...frames(stream).slice(0, 3), frames(other)[3], ...frames(stream).slice(4)]) : (damage as (b: Buffer) => Buffer)(stream);
    const r = await feed(bytes);
    expect(r.error).toMatch(reason);
    expect(r.error).toMatch(/nothing was started/);
    // the source was told why in an Error frame (type 6), unless the stream was cut (there is no one to tell)
    if (!/closed the connection/.test(r.error!)) expect(frames(r.answered).map((f) => f[6])).toContain(6);
  });
});

describe('a source that cannot reach its destination says where', () => {
  test('connection refused: status failed, the address named, the guest kept', async () => {
    const kvm = openKvm({ backend: 'emulator' });
    try {
      const m = createMachine(kvm, { dataPages: 64, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 4 }) });
      const closed = createServer();
      await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
      const port = (closed.address() as { port: number }).port;
      await new Promise<void>((r) => closed.close(() => r()));
      const stats = await migrateTo(m, `127.0.0.1:${port}`);
      expect(stats).toMatchObject({ status: 'failed', error: `cannot reach 127.0.0.1:${port}: connection refused (is \`kvm-dirty incoming\` listening there?)` });
      expect(m.vm.closed).toBe(false);
      expect(m.vcpus[0].run().reason).toBeDefined(); // still ours to run
      m.close();
    } finally {
      kvm.close();
    }
  });

  test('no answer (a listener that never speaks): status failed after the timeout, the address named', async () => {
    const kvm = openKvm({ backend: 'emulator' });
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    try {
      const m = createMachine(kvm, { dataPages: 64, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 4 }) });
      const port = (silent.address() as { port: number }).port;
      const stats = await migrateTo(m, { port }, { connectTimeoutMs: 300 });
      expect(stats.status).toBe('failed');
      expect(stats.error).toBe('the destination did not answer the Ping within 300 ms');
      m.close();
    } finally {
      silent.close();
      kvm.close();
    }
  });

  test('bad targets and options are TypeErrors or RangeErrors before anything happens', async () => {
    const kvm = openKvm({ backend: 'emulator' });
    try {
      const m = createMachine(kvm, { dataPages: 64, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 4 }) });
      await expect(migrateTo(m, 'nowhere')).rejects.toThrow(RangeError);
      await expect(migrateTo(m, 70000)).rejects.toThrow(/port must be an integer in 1..65535/);
      await expect(migrateTo(m, 7000, { downtimeLimitMs: -1 })).rejects.toThrow(/downtimeLimitMs must be a positive number/);
      await expect(migrateTo(m, 7000, { throttle: 'fast' as never })).rejects.toThrow(RangeError);
      await expect(migrateTo(m, 7000, { maxBandwidthMBps: 0 })).rejects.toThrow(RangeError);
      m.close();
    } finally {
      kvm.close();
    }
  });
});
