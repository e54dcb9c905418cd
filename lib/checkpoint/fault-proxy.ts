// A fault-injecting TCP proxy for tests between processes: listen on a loopback port, forward
// every connection to the target, and on demand
//   partition()         stop forwarding in both directions: bytes wait in the proxy (and,
//                       once its buffers are full, in the senders' sockets), as on a network
//                       that drops packets which TCP then retransmits; a new connection is
//                       closed at once (unreachable). heal() lets everything through again.
//   partition('reset')  destroy every connection too (a middlebox that gave up on them)
//   delay(ms)           hold each chunk `ms` before forwarding it (order kept)
//   throttle(bps)       forward at most `bps` bytes per second per direction
// Nothing is ever dropped from the middle of a stream, so what a process sees is what a real
// network could do to TCP.

import { connect, createServer, type Server, type Socket } from 'node:net';

interface Pipe {
  from: Socket;
  to: Socket;
  /** chunks with their arrival time (an empty chunk: the sender ended its side) */
  queue: { data: Buffer; at: number }[];
  queued: number;
  /** earliest time (ms, performance.now) the next chunk may go, for throttling */
  nextAt: number;
  timer: NodeJS.Timeout | null;
}

const HIGH_WATER = 1 << 20;

export class FaultProxy {
  readonly server: Server;
  readonly #target: { host: string; port: number };
  #partitioned: 'hold' | 'reset' | null = null;
  #delayMs = 0;
  #bps = 0;
  readonly #pipes = new Set<Pipe>();
  readonly #conns = new Set<Socket>();

  constructor(target: { host?: string; port: number }) {
    this.#target = { host: target.host ?? '127.0.0.1', port: target.port };
    this.server = createServer({ noDelay: true }, (s) => this.#accept(s));
  }

  listen(port = 0, host = '127.0.0.1'): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve((this.server.address() as { port: number }).port));
    });
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** What the proxy does now, for logs. */
  get state(): string {
    const s = [this.#partitioned ? `partitioned (${this.#partitioned})` : 'connected'];
    if (this.#delayMs) s.push(`delay ${this.#delayMs} ms`);
    if (this.#bps) s.push(`throttle ${this.#bps} B/s`);
    return s.join(', ');
  }

  partition(mode: 'hold' | 'reset' = 'hold'): void {
    this.#partitioned = mode;
    if (mode === 'reset') for (const s of [...this.#conns]) s.destroy();
  }

  heal(): void {
    this.#partitioned = null;
    for (const p of this.#pipes) this.#pump(p);
  }

  delay(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`delay must be >= 0 ms, got ${ms}`);
    this.#delayMs = ms;
  }

  throttle(bytesPerSecond: number): void {
    if (!(bytesPerSecond >= 0)) throw new RangeError(`throttle must be >= 0 bytes/s (0: none), got ${bytesPerSecond}`);
    this.#bps = bytesPerSecond;
  }

  close(): Promise<void> {
    for (const s of this.#conns) s.destroy();
    for (const p of this.#pipes) if (p.timer) clearTimeout(p.timer);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    client.on('error', () => undefined);
    if (this.#partitioned) return void client.destroy();
    this.#conns.add(client);
    client.once('close', () => this.#conns.delete(client));
    client.pause();
    this.#open(client);
  }

  #open(client: Socket): void {
    const upstream = connect({ ...this.#target, noDelay: true });
    upstream.on('error', () => undefined);
    this.#conns.add(upstream);
    upstream.once('close', () => {
      this.#conns.delete(upstream);
      client.destroy();
    });
    client.once('close', () => upstream.destroy());
    upstream.once('connect', () => {
      this.#pipe(client, upstream);
      this.#pipe(upstream, client);
      client.resume();
    });
  }

  #pipe(from: Socket, to: Socket): void {
    const p: Pipe = { from, to, queue: [], queued: 0, nextAt: 0, timer: null };
    this.#pipes.add(p);
    from.on('data', (chunk: Buffer) => {
      p.queue.push({ data: chunk, at: performance.now() });
      p.queued += chunk.length;
      if (p.queued > HIGH_WATER) from.pause();
      this.#pump(p);
    });
    from.on('end', () => {
      p.queue.push({ data: Buffer.alloc(0), at: performance.now() });
      this.#pump(p);
    });
    from.once('close', () => {
      if (p.timer) clearTimeout(p.timer);
      this.#pipes.delete(p);
    });
  }

  /** Forwards what the faults allow now, and sets a timer for the rest. */
  #pump(p: Pipe): void {
    if (p.timer) {
      clearTimeout(p.timer);
      p.timer = null;
    }
    while (p.queue.length && !this.#partitioned) {
      const { data: chunk, at } = p.queue[0];
      const now = performance.now();
      const due = Math.max(at + this.#delayMs, p.nextAt);
      if (due > now) {
        p.timer = setTimeout(() => this.#pump(p), Math.max(1, due - now));
        return;
      }
      p.queue.shift();
      p.queued -= chunk.length;
      if (chunk.length === 0) {
        p.to.end();
        continue;
      }
      if (this.#bps) p.nextAt = Math.max(now, p.nextAt) + (chunk.length / this.#bps) * 1000;
      p.to.write(chunk);
    }
    if (p.queued <= HIGH_WATER && p.from.isPaused() && !this.#partitioned) p.from.resume();
  }
}
