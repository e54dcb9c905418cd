// Pieces both ends of a live migration between processes use: the connection (frames in,
// frames out, errors named after the address), the guest-output tap of the run loop, and the
// s390 storage attributes (CMMA) drained on the source and applied on the destination.

import { connect, type Socket } from 'node:net';
import { S390_CMMA_SIZE_MAX } from '../constants';
import type { RunPolicy } from '../dirtyrate/runner';
import type { Exit } from '../vcpu';
import type { Vm } from '../vm';
import type { AttrRun } from './control';
import { FrameDecoder, StreamError, type Frame } from './format';
import type { OutputChannel } from './output';
import { packOutput } from './records';

/** Where a migration goes: "host:port", a port on 127.0.0.1, { host, port }, or a connected socket. */
export type MigrationTarget = string | number | { host?: string; port: number } | Socket;

/** host and port of a target that is not a socket; RangeError for a malformed one. */
export function parseTarget(t: Exclude<MigrationTarget, Socket>): { host: string; port: number } {
  if (typeof t === 'number') return { host: '127.0.0.1', port: checkPort(t) };
  if (typeof t === 'string') {
    const m = /^(?:\[?([^\]]+?)\]?:)?(\d+)$/.exec(t);
    if (!m) throw new RangeError(`a migration target is HOST:PORT or PORT, got ${JSON.stringify(t)}`);
    return { host: m[1] ?? '127.0.0.1', port: checkPort(Number(m[2])) };
  }
  if (typeof t !== 'object' || t === null) throw new TypeError('target must be HOST:PORT, a port, { host, port } or a connected net.Socket');
  return { host: t.host ?? '127.0.0.1', port: checkPort(t.port) };
}

function checkPort(p: unknown): number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) throw new RangeError(`port must be an integer in 1..65535, got ${String(p)}`);
  return p;
}

/** Connects with a timeout; the error names the address ("cannot reach 10.0.0.2:7000: connection refused"). */
export function connectTo(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`cannot reach ${host}:${port}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = e.code === 'ECONNREFUSED' ? 'connection refused (is `kvm-dirty incoming` listening there?)' : e.code === 'EHOSTUNREACH' ? 'host unreachable' : e.message;
      reject(new Error(`cannot reach ${host}:${port}: ${why}`));
    };
    socket.once('error', onError);
  });
}

/**
 * One side of the migration connection: frames read with their checks (FrameDecoder), each
 * handed to `onFrame`; the first failure (a damaged frame, a socket error, the peer closing
 * while the link is still wanted) is reported once to `onFailure`.
 */
export class Link {
  readonly socket: Socket;
  readonly #decoder = new FrameDecoder();
  #done = false;
  #wanted = true;

  constructor(socket: Socket, onFrame: (f: Frame) => void, onFailure: (err: Error) => void) {
    this.socket = socket;
    socket.setNoDelay(true);
    const fail = (e: Error) => {
      if (this.#done) return;
      this.#done = true;
      onFailure(e);
    };
    socket.on('data', (chunk) => {
      if (this.#done) return;
      try {
        this.#decoder.pushEach(chunk, onFrame);
      } catch (e) {
        fail(e instanceof Error ? e : new Error(String(e)));
      }
    });
    socket.on('error', (e) => fail(e));
    socket.on('close', () => {
      if (this.#wanted) fail(new Error('the peer closed the connection'));
      this.#done = true;
    });
  }

  /** Writes a buffer; resolves once it is handed to the kernel. */
  write(buf: Buffer): Promise<void> {
    if (this.socket.destroyed) return Promise.reject(new Error('the connection is closed'));
    return new Promise((resolve, reject) => this.socket.write(buf, (e) => (e ? reject(e) : resolve())));
  }

  /** The link's work is done: the peer closing is no failure any more. Ends our side. */
  finish(): void {
    this.#wanted = false;
    this.socket.end();
  }

  destroy(): void {
    this.#wanted = false;
    this.socket.destroy();
  }

  get error(): StreamError | null {
    return this.#decoder.error;
  }
}

/**
 * The guest's outputs (OUTs to the given ports), as the run loop sees them: numbered from
 * `firstSeq`, kept until taken for the stream (take()), and, once released, sent to the
 * output client (or counted) as they come; until then held, in order.
 */
export class OutputTap implements RunPolicy {
  readonly ports: ReadonlySet<number>;
  #packed = new Uint32Array(512);
  #count = 0;
  /** sequence number of the next output */
  #seq: number;
  /** outputs before this sequence number went out */
  #releasedTo: number;
  #released: boolean;
  readonly #held: number[] = [];
  #channel: OutputChannel | null;

  readonly #onRelease: ((port: number, value: number) => void) | undefined;

  /** `onRelease`: called with each output as it goes out (a CLI prints a guest's serial bytes with it) */
  constructor(ports: Iterable<number>, firstSeq: number, options: { released: boolean; channel?: OutputChannel | null; onRelease?: (port: number, value: number) => void }) {
    this.ports = new Set(ports);
    this.#seq = firstSeq;
    this.#releasedTo = firstSeq;
    this.#released = options.released;
    this.#channel = options.channel ?? null;
    this.#onRelease = options.onRelease;
  }

  /** Sequence number of the next output. */
  get seq(): number {
    return this.#seq;
  }

  /** Outputs sent to the client (or, without one, released) so far: the next one's number. */
  get releasedTo(): number {
    return this.#releasedTo;
  }

  /** The output client's connection, if there is one. */
  get channel(): OutputChannel | null {
    return this.#channel;
  }

  /** Outputs the client has confirmed (without a client: those released), for the stream's Commit. */
  get clientAcked(): number {
    return this.#channel ? this.#channel.acked : this.#releasedTo;
  }

  afterRun(vcpuId: number, exit: Exit): void {
    const io = exit.io;
    if (io && io.direction === 'out' && this.ports.has(io.port)) this.onOutput(vcpuId, io.port, io.size, io.value);
  }

  /** A device's output (a serial byte), recorded as an OUT would be. */
  onOutput(vcpuId: number, port: number, size: number, value: number): void {
    if (2 * this.#count + 2 > this.#packed.length) {
      const grown = new Uint32Array(this.#packed.length * 2);
      grown.set(this.#packed);
      this.#packed = grown;
    }
    const w = packOutput(port, size, vcpuId);
    this.#packed[2 * this.#count] = w;
    this.#packed[2 * this.#count + 1] = value >>> 0;
    this.#count++;
    this.#seq++;
    if (this.#released) this.#send(w, value >>> 0);
    else this.#held.push(w, value >>> 0);
  }

  /** The outputs since the last take(), packed pairs, for the stream's next epoch. */
  take(): { packed: Uint32Array; count: number } {
    const r = { packed: this.#packed.slice(0, 2 * this.#count), count: this.#count };
    this.#count = 0;
    return r;
  }

  /** From now on outputs go out as they come, after the held ones (in order), to `channel` if given. */
  release(channel?: OutputChannel | null): void {
    if (channel !== undefined) this.#channel = channel;
    this.#released = true;
    for (let i = 0; i < this.#held.length; i += 2) this.#send(this.#held[i], this.#held[i + 1]);
    this.#held.length = 0;
  }

  #send(word: number, value: number): void {
    this.#channel?.send(this.#releasedTo, [word, value], 1);
    this.#onRelease?.(word & 0xffff, value);
    this.#releasedTo++;
  }
}

/** Values per KVM_S390_GET_CMMA_BITS call (QEMU asks for its whole buffer each time). */
const CMMA_CHUNK = 4096;

/**
 * The s390 storage attributes dirtied since the last drain, as QEMU's s390-stattrib saves
 * them: KVM_S390_GET_CMMA_BITS from the cursor until nothing remains, restarting at gfn 0
 * when a call finds nothing above the cursor but values remain (kernel-semantics rule 111).
 * The cursor (`state.gfn`) carries over from drain to drain.
 */
export function drainStorageAttrs(vm: Vm, state: { gfn: number }): AttrRun[] {
  const runs: AttrRun[] = [];
  for (let guard = 0; guard < 1 << 20; guard++) {
    const r = vm.getCmmaBits({ startGfn: state.gfn, count: CMMA_CHUNK });
    if (r.count > 0) runs.push({ startGfn: r.startGfn, values: r.values });
    if (r.remaining === 0) {
      if (r.count > 0) state.gfn = r.startGfn + r.count;
      return runs;
    }
    state.gfn = r.count > 0 ? r.startGfn + r.count : 0;
  }
  throw new Error('KVM_S390_GET_CMMA_BITS kept reporting values left');
}

/** KVM_S390_SET_CMMA_BITS for every run of pages whose value is known (mask: every bit, as QEMU sets them). */
export function applyStorageAttrs(vm: Vm, slotGfn: number, attrs: { values: Uint8Array; known: Uint8Array }): number {
  let pages = 0;
  const n = attrs.known.length;
  for (let p = 0; p < n;) {
    if (!attrs.known[p]) {
      p++;
      continue;
    }
    let end = p;
    while (end < n && attrs.known[end] && end - p < S390_CMMA_SIZE_MAX) end++;
    vm.setCmmaBits({ startGfn: slotGfn + p, values: attrs.values.subarray(p, end), mask: -1 });
    pages += end - p;
    p = end;
  }
  return pages;
}
