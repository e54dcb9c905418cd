// Output commit (the Remus rule): what the guest emits during epoch e leaves the host only
// after the backup has acknowledged epoch e. Until then the outputs wait here, epoch by
// epoch; the VM does not wait for them (epoch e + 1 runs while e is in flight).
//
// Outputs carry a sequence number from the start of the run (the stream's Commit frames
// carry it too), and the client connection works like TCP's: the client says which
// sequence number it expects next (OutputAck) when it accepts a server and as it receives.
// After a failover the backup resends, from its image, the committed outputs from that
// number on: the client sees every output once, in order, whichever host it came from.

import { createServer, connect, type Server, type Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { FrameDecoder, FrameType, StreamError, type Frame } from './format';
import { decodeLeaseFrame, encodeLeaseFrame, type LeaseTag } from './lease-frame';
import { decodeOutputFrame, decodeU64Frame, encodeOutputFrame, encodeU64Frame, packOutput, type OutputRecord } from './records';

interface Held {
  epoch: number;
  firstSeq: number;
  /** packed output pairs (see records.writeEpochHead), null when the epoch emitted none */
  packed: Uint32Array | null;
  count: number;
}

/** Receives released outputs, in order: `firstSeq` is the sequence number of the first. */
export type ReleaseFn = (firstSeq: number, packed: Uint32Array, count: number) => void;

export class OutputCommit {
  readonly #held: Held[] = [];
  #next = 0;
  /** outputs the client has confirmed (reported in each Commit so a backup can forget them) */
  clientAcked = 0;
  #release: ReleaseFn | null;
  /** clientAcked follows the client's own acks (OutputChannel); otherwise a release is delivery */
  #clientAcks = false;
  /** the newest acknowledged epoch */
  #acked = -1;
  /** releases happen only while this says yes (a coordinator's lease: see setGate) */
  #gate: (() => boolean) | null = null;

  constructor(release?: ReleaseFn) {
    this.#release = release ?? null;
  }

  /** Outputs released so far (the next sequence number to release). */
  get released(): number {
    return this.#next;
  }

  /** Outputs waiting for their epoch's ack. */
  get waiting(): number {
    return this.#held.reduce((n, h) => n + h.count, 0);
  }

  /**
   * The first output's sequence number (the checkpointer calls this). Every output before it
   * must already be confirmed by the client (a host that took over waits for that, see
   * OutputChannel.waitAcked), so a new backup never needs them.
   */
  start(seq: number, clientAcked = seq): void {
    this.#next = seq;
    this.clientAcked = Math.max(this.clientAcked, clientAcked);
  }

  /**
   * Releases happen only while `gate()` is true (a primary's lease is valid past the release
   * instant); acknowledged epochs wait here while it is false, until flush().
   */
  setGate(gate: () => boolean): void {
    this.#gate = gate;
  }

  /** Releases what was acknowledged while the gate was closed (call when it opens again). */
  flush(): void {
    this.ack(this.#acked);
  }

  /** The outputs waiting here (acknowledged or not), in order, as packed pairs. */
  held(): { firstSeq: number; packed: Uint32Array; count: number } {
    const count = this.waiting;
    const packed = new Uint32Array(2 * count);
    let at = 0;
    for (const h of this.#held) {
      if (h.packed) packed.set(h.packed, at);
      at += 2 * h.count;
    }
    return { firstSeq: this.#next, packed, count };
  }

  /** Where released outputs go; `clientAcks`: the receiver confirms them itself (see clientAcked). */
  setRelease(fn: ReleaseFn, clientAcks = false): void {
    this.#release = fn;
    this.#clientAcks = clientAcks;
  }

  /** Holds epoch `epoch`'s `count` outputs (packed pairs, copied) until ack(epoch). */
  hold(epoch: number, firstSeq: number, packed: Uint32Array, count: number): void {
    this.#held.push({ epoch, firstSeq, packed: count ? packed.slice(0, 2 * count) : null, count });
  }

  /** Epochs up to `epoch` are durable at the backup: release their outputs, in order. */
  ack(epoch: number): void {
    this.#acked = Math.max(this.#acked, epoch);
    while (this.#held.length && this.#held[0].epoch <= epoch && (!this.#gate || this.#gate())) {
      const h = this.#held.shift()!;
      if (!h.packed) continue;
      if (h.firstSeq !== this.#next) throw new Error(`output commit: epoch ${h.epoch} starts at output ${h.firstSeq}, ${this.#next} expected`);
      this.#next += h.count;
      this.#release?.(h.firstSeq, h.packed, h.count);
      if (!this.#clientAcks) this.clientAcked = this.#next;
    }
  }
}

/**
 * A VM host's connection to the output client: connect, learn which output the client
 * expects next, then send released outputs; the client's acks update `commit.clientAcked`.
 */
export class OutputChannel {
  readonly #socket: Socket;
  readonly #streamId = randomInt(1, 0xffff_ffff);
  #seq = 0;
  #decoder = new FrameDecoder();
  #commit: OutputCommit | null = null;
  #sent = 0;
  #acked = 0;
  readonly #ackWaiters: { seq: number; done: () => void }[] = [];
  #closed = false;
  /** outputs sent and not yet confirmed by the client, packed pairs from output #acked on (a restarted stream carries them) */
  #unconfirmed = new Uint32Array(512);
  onError: (err: Error) => void = () => undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
  }

  /**
   * Connects to the client and resolves with the sequence number it expects next. With a
   * lease (a coordinator's), the host says first which lease it releases under (HostHello):
   * the client then serves the newest holder and refuses older ones.
   */
  static connect(port: number, host = '127.0.0.1', lease?: LeaseTag): Promise<{ channel: OutputChannel; next: number }> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, noDelay: true });
      const ch = new OutputChannel(socket);
      if (lease) socket.write(encodeLeaseFrame(FrameType.HostHello, ch.#streamId, ch.#seq++, lease));
      let hello = false;
      socket.on('data', (chunk) => {
        try {
          ch.#decoder.pushEach(chunk, (f) => {
            const next = ch.#ackValue(f);
            if (!hello) {
              hello = true;
              ch.#sent = next;
              resolve({ channel: ch, next });
            }
          });
        } catch (e) {
          socket.destroy();
          if (!hello) reject(e);
          else ch.onError(e as Error);
        }
      });
      socket.on('error', (e) => (hello ? ch.onError(e) : reject(e)));
      socket.on('close', () => {
        if (!hello) reject(new Error('the output client closed the connection before its hello'));
        else if (!ch.#closed) ch.onError(new Error('the output client closed the connection'));
      });
    });
  }

  /** Sends released outputs from now on, and reports the client's acks to `commit`. */
  attach(commit: OutputCommit): void {
    this.#commit = commit;
    commit.clientAcked = Math.max(commit.clientAcked, this.#acked);
    commit.setRelease((first, packed, count) => this.send(first, packed, count), true);
  }

  /** Sends outputs [firstSeq, firstSeq + count); they must follow what was sent before. */
  send(firstSeq: number, packed: ArrayLike<number>, count: number): void {
    if (firstSeq !== this.#sent) throw new Error(`output channel: sending output ${firstSeq}, ${this.#sent} is next`);
    const kept = 2 * (this.#sent - this.#acked);
    if (kept + 2 * count > this.#unconfirmed.length) {
      const grown = new Uint32Array(Math.max(2 * this.#unconfirmed.length, kept + 2 * count));
      grown.set(this.#unconfirmed.subarray(0, kept));
      this.#unconfirmed = grown;
    }
    for (let i = 0; i < 2 * count; i++) this.#unconfirmed[kept + i] = packed[i];
    this.#sent += count;
    this.#socket.write(encodeOutputFrame(this.#streamId, this.#seq++, firstSeq, packed, count));
  }

  /** Sends records (a replica replaying what it holds). */
  sendRecords(firstSeq: number, outputs: readonly OutputRecord[]): void {
    const packed = new Uint32Array(2 * outputs.length);
    outputs.forEach((o, i) => {
      packed[2 * i] = packOutput(o.port, o.size, o.vcpu);
      packed[2 * i + 1] = o.value;
    });
    if (outputs.length) this.send(firstSeq, packed, outputs.length);
  }

  get sent(): number {
    return this.#sent;
  }

  /** Outputs sent that the client has not confirmed yet (from output #acked on), as packed pairs. */
  unconfirmed(): { firstSeq: number; packed: Uint32Array; count: number } {
    const count = this.#sent - this.#acked;
    return { firstSeq: this.#acked, packed: this.#unconfirmed.slice(0, 2 * count), count };
  }

  /** The client's latest OutputAck (the next sequence number it expects). */
  get acked(): number {
    return this.#acked;
  }

  /** Resolves once the client has confirmed every output before `seq`. */
  waitAcked(seq: number, timeoutMs = 10000): Promise<void> {
    if (this.#acked >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the output client did not confirm output ${seq - 1} in ${timeoutMs} ms`)), timeoutMs);
      this.#ackWaiters.push({ seq, done: () => (clearTimeout(timer), resolve()) });
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  #ackValue(f: Frame): number {
    if (f.type !== FrameType.OutputAck) throw new StreamError('EFRAME', f.offset, `a ${FrameType[f.type]} frame from the output client`);
    const next = decodeU64Frame(f, 'OutputAck');
    if (next > this.#acked && next <= this.#sent) {
      this.#unconfirmed.copyWithin(0, 2 * (next - this.#acked), 2 * (this.#sent - this.#acked));
    }
    this.#acked = Math.max(this.#acked, next);
    for (const w of this.#ackWaiters.filter((x) => x.seq <= this.#acked)) {
      this.#ackWaiters.splice(this.#ackWaiters.indexOf(w), 1);
      w.done();
    }
    if (this.#commit) this.#commit.clientAcked = Math.max(this.#commit.clientAcked, Math.min(next, this.#sent));
    return next;
  }
}

/** One Output frame as the client received it (OutputClient.log). */
export interface OutputArrival {
  firstSeq: number;
  count: number;
  /** the host that sent it: its number in OutputClient.hostLog */
  host: number;
  /** the lease it was released under (HostHello), null for a host without a coordinator */
  token: number | null;
  holder: string | null;
  /** arrival time, ms of CLOCK_MONOTONIC (one clock for every process on the machine: monotonicMs) */
  at: number;
}

/** A VM host's connection, as the client saw it. */
export interface HostVisit {
  host: number;
  token: number | null;
  holder: string | null;
  /** when the client began to serve it (null: never served) */
  servedAt: number | null;
  /**
   * why it ended early: a newer lease holder took its place, its lease was older than one
   * already served, or the lease check found its lease over (OutputClient.setLeaseCheck)
   */
  ended?: 'preempted' | 'refused' | 'expired';
}

/** Whether the lease with this fencing token is still the VM's (a linearizable read of the coordinator). */
export type LeaseCheck = (token: number) => Promise<boolean>;

interface PendingOutput {
  firstSeq: number;
  outputs: OutputRecord[];
  at: number;
}

interface Conn {
  socket: Socket;
  visit: HostVisit;
  decoder: FrameDecoder;
  /** frames sent to the host / received from it */
  seq: number;
  frames: number;
  /** Output frames that arrived and wait for the lease check (setLeaseCheck) */
  pending: PendingOutput[];
  checking: boolean;
  /** the host closed its side while outputs were pending: served on until they are settled */
  closed: boolean;
}

/** ms on CLOCK_MONOTONIC (process.hrtime): comparable across the processes of one machine. */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/**
 * The client of the guest's output: a server that VM hosts connect to (the primary, and
 * after a failover the backup that took over). It serves one host at a time: a new host
 * gets its hello (the next sequence number expected) only once the previous host's
 * connection has ended, so nothing the old host sent can arrive after it. Every output
 * must continue the sequence exactly: a gap or a repeat is recorded as a violation, never
 * silently skipped.
 *
 * Hosts with a coordinator say first which lease they hold (HostHello, a fencing token):
 * a host with a newer lease than the one served takes its place at once (the old host may be
 * cut off, paused or dead, its connection still open), and a host whose lease is older than
 * one already served is refused. `log` and `hostLog` record what came from whom and when,
 * for checks against the coordinator's lease history.
 *
 * A host can still send after its lease ended: a primary paused (SIGSTOP, a stalled VM)
 * between its lease check and its socket write writes when it resumes, and no check in the
 * host can close that window. With setLeaseCheck() the client is the fencing point: an
 * Output frame counts only once a read of the coordinator, issued after the frame arrived,
 * says the host's lease is still the VM's; otherwise the host's connection ends there
 * ('expired') and its outputs are left to the next holder, which resends what the client
 * has not confirmed (output commit: every released output is in its image).
 */
export class OutputClient {
  readonly server: Server;
  /** every value received, in sequence order */
  readonly values: number[] = [];
  /** gaps and duplicates seen (should stay empty) */
  readonly violations: string[] = [];
  /** every Output frame received, in arrival order */
  readonly log: OutputArrival[] = [];
  /** every host that connected, in connection order */
  readonly hostLog: HostVisit[] = [];
  /** how many hosts have served this client */
  hosts = 0;
  #active: Conn | null = null;
  readonly #queue: Conn[] = [];
  #newestToken = -1;
  readonly #listeners = new Set<(n: number) => void>();
  readonly #streamId = randomInt(1, 0xffff_ffff);
  #leaseCheck: LeaseCheck | null = null;

  constructor() {
    this.server = createServer({ noDelay: true }, (s) => this.#accept(s));
  }

  listen(port = 0, host = '127.0.0.1'): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve((this.server.address() as { port: number }).port));
    });
  }

  /** Outputs of hosts that name a lease count only once `check` confirms it after their arrival (see the class). */
  setLeaseCheck(check: LeaseCheck): void {
    this.#leaseCheck = check;
  }

  /** The sequence number expected next (= outputs received). */
  get next(): number {
    return this.values.length;
  }

  /** Resolves once at least `n` outputs have arrived. */
  waitFor(n: number, timeoutMs = 30000): Promise<void> {
    if (this.values.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#listeners.delete(check);
        reject(new Error(`timed out waiting for output #${n} (have ${this.values.length})`));
      }, timeoutMs);
      timer.unref(); // a wait that lost a race must not keep the process alive
      const check = (have: number) => {
        if (have < n) return;
        clearTimeout(timer);
        this.#listeners.delete(check);
        resolve();
      };
      this.#listeners.add(check);
    });
  }

  close(): Promise<void> {
    this.#active?.socket.destroy();
    for (const c of this.#queue) c.socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  #accept(socket: Socket): void {
    const visit: HostVisit = { host: this.hostLog.length + 1, token: null, holder: null, servedAt: null };
    this.hostLog.push(visit);
    const c: Conn = { socket, visit, decoder: new FrameDecoder(), seq: 0, frames: 0, pending: [], checking: false, closed: false };
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      try {
        c.decoder.pushEach(chunk, (f) => this.#frame(c, f));
        if (this.#active === c) this.#ack(c);
      } catch (e) {
        this.#broken(c, e);
      }
    });
    socket.on('close', () => {
      const q = this.#queue.indexOf(c);
      if (q >= 0) this.#queue.splice(q, 1);
      if (this.#active !== c) return;
      if (c.pending.length) {
        c.closed = true; // #confirm serves the next host once they are settled
        return;
      }
      this.#active = null;
      this.#serveNext();
    });
    this.#queue.push(c);
    if (!this.#active) this.#serveNext();
  }

  #serveNext(): void {
    const c = this.#queue.shift();
    if (!c || c.socket.destroyed) return c ? this.#serveNext() : undefined;
    this.#active = c;
    this.hosts++;
    c.visit.servedAt = monotonicMs();
    if (c.visit.token !== null) this.#newestToken = Math.max(this.#newestToken, c.visit.token);
    this.#ack(c);
  }

  #ack(c: Conn): void {
    if (!c.socket.destroyed) c.socket.write(encodeU64Frame(FrameType.OutputAck, this.#streamId, c.seq++, this.values.length));
  }

  #broken(c: Conn, e: unknown): void {
    this.violations.push(`host #${c.visit.host}: ${(e as Error).message}`);
    c.pending.length = 0;
    c.socket.destroy();
    if (c.closed) this.#end(c);
  }

  /** The served host is done with: the next one in line is served. */
  #end(c: Conn): void {
    if (this.#active !== c) return;
    this.#active = null;
    c.socket.destroy();
    this.#serveNext();
  }

  /** Settles the pending outputs that arrived before one lease check (the next waits for it). */
  #confirm(c: Conn): void {
    if (c.checking || !c.pending.length) return;
    c.checking = true;
    const n = c.pending.length;
    this.#leaseCheck!(c.visit.token!).then((current) => {
      c.checking = false;
      if (this.#active !== c) return; // preempted meanwhile: nothing more from it counts
      if (!current) {
        c.visit.ended = 'expired';
        c.pending.length = 0;
        return this.#end(c);
      }
      try {
        for (const p of c.pending.splice(0, n)) this.#take(c, p);
        this.#ack(c);
      } catch (e) {
        return this.#broken(c, e);
      }
      if (c.pending.length) this.#confirm(c);
      else if (c.closed) this.#end(c);
    }, () => {
      // the coordinator did not answer: ask again (the outputs wait; the host is not acked)
      c.checking = false;
      setTimeout(() => this.#active === c && this.#confirm(c), 50).unref();
    });
  }

  /** An Output frame counts: it must continue the sequence exactly. */
  #take(c: Conn, p: PendingOutput): void {
    this.log.push({ firstSeq: p.firstSeq, count: p.outputs.length, host: c.visit.host, token: c.visit.token, holder: c.visit.holder, at: p.at });
    const want = this.values.length;
    if (p.firstSeq !== want) {
      this.violations.push(p.firstSeq > want
        ? `gap: outputs ${want}..${p.firstSeq - 1} never arrived (host #${c.visit.host} sent from ${p.firstSeq})`
        : `duplicate: host #${c.visit.host} resent outputs ${p.firstSeq}..${Math.min(want, p.firstSeq + p.outputs.length) - 1}`);
      throw new Error(this.violations[this.violations.length - 1]);
    }
    for (const o of p.outputs) this.values.push(o.value);
    for (const l of [...this.#listeners]) l(this.values.length);
  }

  #frame(c: Conn, f: Frame): void {
    c.frames++;
    if (f.type === FrameType.HostHello) return this.#hello(c, f);
    if (this.#active !== c) throw new StreamError('EFRAME', f.offset, `a ${FrameType[f.type]} frame from a host that is not being served`);
    if (f.type !== FrameType.Output) throw new StreamError('EFRAME', f.offset, `a ${FrameType[f.type]} frame from a VM host`);
    const { firstSeq, outputs } = decodeOutputFrame(f);
    const p = { firstSeq, outputs, at: monotonicMs() };
    if (!this.#leaseCheck || c.visit.token === null) return this.#take(c, p);
    c.pending.push(p);
    this.#confirm(c);
  }

  /** A host names its lease: the newest holder is served, an older one refused. */
  #hello(c: Conn, f: Frame): void {
    if (c.frames > 1) {
      throw new StreamError('EORDER', f.offset, 'a HostHello frame that is not the host\'s first frame');
    }
    const tag = decodeLeaseFrame(f);
    c.visit.token = tag.token;
    c.visit.holder = tag.holder;
    if (tag.token < this.#newestToken) {
      c.visit.ended = 'refused';
      c.socket.destroy();
      return;
    }
    const active = this.#active;
    if (active === c) this.#newestToken = Math.max(this.#newestToken, tag.token);
    else if (active && (active.visit.token === null || active.visit.token < tag.token)) {
      // the served host's lease is over (its holder may be cut off or paused with the
      // connection open): nothing more from it counts
      active.visit.ended = 'preempted';
      this.#active = null;
      active.socket.destroy();
      this.#queue.splice(this.#queue.indexOf(c), 1);
      this.#queue.unshift(c);
      this.#serveNext();
    }
  }
}
