// Where checkpoint streams go: a file, a replica over TCP, or a replica image in memory;
// and the replica's TCP server.
//
// Over TCP the primary writes the checkpoint stream and reads the replica's stream back:
// Ack frames (cumulative: "every epoch up to e is applied") or one Error frame (the replica
// rejected the stream, and why) before it closes. Nagle is off on both ends: an epoch is
// one write and its ack a 44-byte frame, and either waiting 40 ms for company would cap
// the rate at 25 epochs/s.

import { closeSync, createReadStream, fsyncSync, openSync, writeSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import type { CheckpointSink } from './checkpointer';
import { FrameDecoder, FrameType, StreamError, type Frame } from './format';
import { ReplicaImage } from './image';
import { decodeErrorFrame, decodeU64Frame, encodeErrorFrame, encodeU64Frame, type CommitRecord } from './records';

/** A replica said no: its Error frame's code and reason. */
export class ReplicaRejected extends Error {
  readonly code: string;
  constructor(code: string, reason: string) {
    super(`the replica rejected the stream: ${reason}`);
    this.name = 'ReplicaRejected';
    this.code = code;
  }
}

/**
 * A checkpoint file. Each epoch is one write(2); an epoch counts as durable once written
 * (to the page cache; `fsync: true` makes each epoch wait for the disk).
 */
export class FileSink implements CheckpointSink {
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  readonly path: string;
  #fd: number;
  #epochs = -1;
  readonly #fsync: boolean;

  constructor(path: string, options: { fsync?: boolean } = {}) {
    this.path = path;
    this.#fd = openSync(path, 'w');
    this.#fsync = options.fsync ?? false;
  }

  send(buf: Buffer, done: () => void): void {
    try {
      for (let at = 0; at < buf.length;) at += writeSync(this.#fd, buf, at, buf.length - at);
      if (this.#fsync) fsyncSync(this.#fd);
    } catch (e) {
      this.onFailure(e as Error);
      return;
    }
    done();
    // Every buffer but the Header and End holds exactly one epoch, sent in order: ack the
    // epoch once the Commit frame that closes it is written (the caller counts them).
    const commits = countCommits(buf);
    if (commits) {
      this.#epochs += commits;
      const e = this.#epochs;
      queueMicrotask(() => this.onAck(e));
    }
  }

  async close(): Promise<void> {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

/** The primary's connection to a replica (ReplicaServer) over TCP. */
export class TcpSink implements CheckpointSink {
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  readonly #socket: Socket;
  readonly #decoder = new FrameDecoder();
  #closing = false;
  #failed = false;
  #closed: Promise<void>;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      try {
        this.#decoder.pushEach(chunk, (f) => this.#frame(f));
      } catch (e) {
        this.#fail(e as Error);
      }
    });
    socket.on('error', (e) => this.#fail(e));
    this.#closed = new Promise((resolve) => socket.on('close', () => {
      if (!this.#closing) this.#fail(new Error('the replica closed the connection'));
      resolve();
    }));
  }

  static connect(port: number, host = '127.0.0.1'): Promise<TcpSink> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, noDelay: true }, () => {
        socket.off('error', reject);
        resolve(new TcpSink(socket));
      });
      socket.once('error', reject);
    });
  }

  send(buf: Buffer, done: () => void): void {
    this.#socket.write(buf, () => done());
  }

  /** Ends the stream after everything written, and waits for the replica to close its side. */
  close(): Promise<void> {
    this.#closing = true;
    this.#socket.end();
    return this.#closed;
  }

  /** Drops the connection at once (a test's crash, without End). */
  destroy(): void {
    this.#closing = true;
    this.#socket.destroy();
  }

  #frame(f: Frame): void {
    if (f.type === FrameType.Ack) this.onAck(decodeU64Frame(f, 'Ack'));
    else if (f.type === FrameType.Error) {
      const { code, message } = decodeErrorFrame(f);
      this.#fail(new ReplicaRejected(code, message));
    } else throw new StreamError('EFRAME', f.offset, `a ${FrameType[f.type]} frame from the replica`);
  }

  #fail(err: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    this.onFailure(err);
  }
}

/** How a replica's connection with its primary ended. */
export type ReplicaOutcome =
  /** the primary sent End: the stream is complete */
  | { kind: 'finished'; image: ReplicaImage }
  /** the stream was damaged; the image keeps its last good epoch */
  | { kind: 'rejected'; image: ReplicaImage; error: StreamError }
  /** the connection ended without End (the primary died): time to fail over */
  | { kind: 'lost'; image: ReplicaImage; reason: string };

export interface ReplicaServerOptions {
  /** called after each commit (ack already sent) */
  onCommit?: (c: CommitRecord, image: ReplicaImage) => void;
  /** called when a primary's connection ends */
  onOutcome?: (o: ReplicaOutcome) => void;
}

/**
 * A replica over TCP: each connection is one checkpoint stream, applied to a fresh
 * ReplicaImage; every chunk's newest commit is acknowledged at once (acks are cumulative).
 */
export class ReplicaServer {
  readonly server: Server;
  readonly #o: ReplicaServerOptions;
  /** the image of the most recent connection */
  image: ReplicaImage | null = null;
  readonly outcomes: ReplicaOutcome[] = [];
  readonly #waiters: ((o: ReplicaOutcome) => void)[] = [];
  readonly #sockets = new Map<ReplicaImage, Socket>();

  constructor(options: ReplicaServerOptions = {}) {
    this.#o = options;
    this.server = createServer({ noDelay: true }, (s) => this.#serve(s));
  }

  listen(port = 0, host = '127.0.0.1'): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve((this.server.address() as { port: number }).port));
    });
  }

  /** Resolves with the outcome of the next connection to end. */
  nextOutcome(): Promise<ReplicaOutcome> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** Ends the connection that feeds `image` at once (a backup refusing a stale primary's stream); the image keeps its last commit. */
  drop(image: ReplicaImage): void {
    this.#sockets.get(image)?.destroy();
  }

  #serve(socket: Socket): void {
    const image = new ReplicaImage();
    this.image = image;
    this.#sockets.set(image, socket);
    const streamId = randomInt(1, 0xffff_ffff);
    let seq = 0;
    let acked = -1;
    let done = false;
    const finish = (o: ReplicaOutcome) => {
      if (done) return;
      done = true;
      this.outcomes.push(o);
      this.#o.onOutcome?.(o);
      this.#waiters.splice(0).forEach((w) => w(o));
    };
    socket.on('data', (chunk) => {
      if (done) return;
      try {
        const commits = image.push(chunk);
        if (commits.length) {
          acked = commits[commits.length - 1].epoch;
          socket.write(encodeU64Frame(FrameType.Ack, streamId, seq++, acked));
          for (const c of commits) this.#o.onCommit?.(c, image);
        }
        if (image.finished) {
          finish({ kind: 'finished', image });
          socket.end();
        }
      } catch (e) {
        if (!(e instanceof StreamError)) throw e;
        // Epochs this chunk committed before the damaged frame are applied: ack them first.
        if (image.epoch > acked) socket.write(encodeU64Frame(FrameType.Ack, streamId, seq++, (acked = image.epoch)));
        socket.end(encodeErrorFrame(streamId, seq++, e.code, `${e.message}; the replica keeps epoch ${image.epoch}`));
        finish({ kind: 'rejected', image, error: e });
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#sockets.delete(image);
      if (done) return;
      let reason = 'the primary closed the connection without an End frame';
      try {
        image.end();
      } catch (e) {
        reason = (e as Error).message;
      }
      finish({ kind: 'lost', image, reason });
    });
  }
}

/** Commit frames in a buffer of whole frames (a FileSink's epoch accounting). */
export function countCommits(buf: Buffer): number {
  let n = 0;
  for (let at = 0; at + 32 <= buf.length; at += 36 + buf.readUInt32LE(at + 12)) {
    if (buf[at + 6] === FrameType.Commit) n++;
  }
  return n;
}

/**
 * Reads a checkpoint file into a replica image. Resolves with the image and, when the file
 * is damaged or truncated, the StreamError (the image then holds the last good epoch).
 */
export function readCheckpointFile(path: string): Promise<{ image: ReplicaImage; error: StreamError | null }> {
  return new Promise((resolve, reject) => {
    const image = new ReplicaImage();
    const input = createReadStream(path, { highWaterMark: 1 << 20 });
    const settle = (error: StreamError | null) => {
      input.destroy();
      resolve({ image, error });
    };
    input.on('data', (chunk) => {
      try {
        image.push(chunk as Buffer);
      } catch (e) {
        if (!(e instanceof StreamError)) return reject(e);
        settle(e);
      }
    });
    input.on('error', reject);
    input.on('end', () => {
      if (image.error) return;
      try {
        image.end();
        settle(null);
      } catch (e) {
        if (!(e instanceof StreamError)) return reject(e);
        settle(e);
      }
    });
  });
}
