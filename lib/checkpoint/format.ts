// The checkpoint stream's framing (docs/stream-format.md has the byte tables).
//
// Every message, on a file or a socket, in either direction, is one frame:
//
//   0   4  magic     'KDCK' (4b 44 43 4b)
//   4   2  version   1
//   6   1  type      FrameType
//   7   1  flags     0
//   8   4  streamId  chosen at random by the writer; every frame of one stream carries it
//   12  4  length    payload bytes N (at most MAX_PAYLOAD)
//   16  8  seq       0 for the first frame of the stream, then +1 per frame
//   24  4  headCrc   CRC32C of bytes 0..23
//   28  4  zero
//   32  N  payload
//   32+N 4 crc       CRC32C of the payload
//
// The envelope has its own CRC so a corrupted length is caught before the reader waits for
// (or allocates) a payload that never comes; the sequence number catches a frame that was
// lost, repeated or moved; the stream id catches a frame from another stream.

import { crc32c } from './crc32c';

/** 'KDCK' as a little-endian u32. */
export const MAGIC = 0x4b43444b;
export const VERSION = 1;
export const ENVELOPE_BYTES = 32;
export const TRAILER_BYTES = 4;
/** Bytes a frame adds around its payload. */
export const FRAME_OVERHEAD = ENVELOPE_BYTES + TRAILER_BYTES;
/** Largest payload a reader accepts (a writer splits bigger epochs into parts). */
export const MAX_PAYLOAD = 64 * 1024 * 1024;

export enum FrameType {
  /** the machine: page size, memory slots, vCPUs (always the first frame of a checkpoint stream) */
  Header = 1,
  /** pages (and, in part 0, registers and outputs) of one epoch */
  Epoch = 2,
  /** closes an epoch: a reader applies the epoch's parts only now, all at once */
  Commit = 3,
  /** the writer finished cleanly */
  End = 4,
  /** replica -> primary: this epoch is applied */
  Ack = 5,
  /** replica -> primary: the stream was rejected, and why */
  Error = 6,
  /** server -> output client: released guest outputs */
  Output = 7,
  /** output client -> server: the next output sequence number it expects */
  OutputAck = 8,
  /** live migration, either way: the handshake (ping, resumed, released; control.ts) */
  Control = 9,
  /** live migration: s390 CMMA values of an epoch, applied with its pages at the Commit */
  StorageAttrs = 10,
  /** primary -> replica, right after the Header (with a coordinator): the lease the stream is written under */
  Lease = 11,
  /** VM host -> output client, first (with a coordinator): the lease the host releases outputs under */
  HostHello = 12,
  /** an Epoch part whose pages are delta-encoded (extension 2): zero, unchanged, XBZRLE runs or whole */
  EpochDelta = 13,
  /** the machine's full state at an epoch (extension 3): every vCPU's, the VM's in-kernel devices', the VMM's devices' */
  State = 14,
}

const TYPE_NAMES: Record<number, string> = {
  1: 'Header', 2: 'Epoch', 3: 'Commit', 4: 'End', 5: 'Ack', 6: 'Error', 7: 'Output', 8: 'OutputAck', 9: 'Control', 10: 'StorageAttrs',
  11: 'Lease', 12: 'HostHello', 13: 'EpochDelta', 14: 'State',
};

export function frameTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `unknown type ${type}`;
}

export type StreamErrorCode =
  /** the stream ended inside a frame, or before an epoch's commit */
  | 'ETRUNCATED'
  /** not a checkpoint frame (magic) */
  | 'EMAGIC'
  /** a checkpoint frame of a version this reader does not know */
  | 'EVERSION'
  /** a checksum does not match: the bytes were damaged */
  | 'ECRC'
  /** a frame of another stream (stream id) */
  | 'EFOREIGN'
  /** a frame out of order: lost, repeated or moved (sequence or epoch number) */
  | 'EORDER'
  /** a frame whose content breaks the format (checksums were right: a writer bug) */
  | 'EFRAME';

/** A rejected stream: `code` says what kind of damage, the message says where and what. */
export class StreamError extends Error {
  readonly code: StreamErrorCode;
  /** byte offset in the stream of the frame that was rejected */
  readonly offset: number;

  constructor(code: StreamErrorCode, offset: number, message: string) {
    super(`${code}: ${message} (frame at stream byte ${offset})`);
    this.name = 'StreamError';
    this.code = code;
    this.offset = offset;
  }
}

/** A decoded frame; `payload` is a view into the bytes received (valid until the next push). */
export interface Frame {
  type: FrameType;
  streamId: number;
  seq: number;
  payload: Buffer;
  /** byte offset of the frame in the stream */
  offset: number;
  /** the pooled buffer the frame was assembled in (DecoderOptions.pool), to release after use */
  pooled?: Buffer;
}

/** Writes a frame envelope at `at`; the payload (`length` bytes) follows at at + 32. */
export function writeEnvelope(buf: Buffer, at: number, type: FrameType, streamId: number, seq: number, length: number): void {
  buf.writeUInt32LE(MAGIC, at);
  buf.writeUInt16LE(VERSION, at + 4);
  buf[at + 6] = type;
  buf[at + 7] = 0;
  buf.writeUInt32LE(streamId >>> 0, at + 8);
  buf.writeUInt32LE(length, at + 12);
  writeU64(buf, at + 16, seq);
  buf.writeUInt32LE(crc32c(buf.subarray(at, at + 24)), at + 24);
  buf.writeUInt32LE(0, at + 28);
}

/** Writes the trailer CRC of the frame at `at` whose payload is already in place. */
export function sealFrame(buf: Buffer, at: number, length: number): void {
  const p = at + ENVELOPE_BYTES;
  buf.writeUInt32LE(crc32c(buf.subarray(p, p + length)), p + length);
}

/** A whole frame in a new buffer (for small frames; epochs are built in place, see EpochWriter). */
export function encodeFrame(type: FrameType, streamId: number, seq: number, payload: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_OVERHEAD + payload.length);
  writeEnvelope(buf, 0, type, streamId, seq, payload.length);
  buf.set(payload, ENVELOPE_BYTES);
  sealFrame(buf, 0, payload.length);
  return buf;
}

/** u64 from a safe integer (the stream's counters never pass 2^53). */
export function writeU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32LE(value % 0x1_0000_0000, at);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000), at + 4);
}

/** A u64 that must be a safe integer; throws EFRAME otherwise. */
export function readU64(buf: Buffer, at: number, offset: number, what: string): number {
  const hi = buf.readUInt32LE(at + 4);
  if (hi > 0x1f_ffff) throw new StreamError('EFRAME', offset, `${what} does not fit in 53 bits`);
  return hi * 0x1_0000_0000 + buf.readUInt32LE(at);
}

/**
 * Reusable buffers for frames: a writer's epoch buffers go back once their write completed,
 * a reader's assembly buffers once the epoch they hold is applied; the steady state then
 * allocates nothing (and a 256 KiB allocation per epoch costs more in GC than the copy).
 */
export class BufferPool {
  readonly #free: Buffer[] = [];
  readonly #keep: number;

  constructor(keep = 16) {
    this.#keep = keep;
  }

  /** A buffer of exactly `size` bytes (a view of a pooled one: pass the view back to release). */
  get(size: number): Buffer {
    for (let i = this.#free.length - 1; i >= 0; i--) {
      const b = this.#free[i];
      if (b.buffer.byteLength >= size) {
        this.#free.splice(i, 1);
        return Buffer.from(b.buffer, 0, size);
      }
    }
    let cap = 4096;
    while (cap < size) cap *= 2;
    return Buffer.from(Buffer.allocUnsafeSlow(cap).buffer, 0, size);
  }

  release(buf: Buffer): void {
    if (this.#free.length < this.#keep) this.#free.push(buf);
  }
}

export interface DecoderOptions {
  /** the stream id to expect; by default the first frame's is taken */
  streamId?: number;
  /** the first frame's sequence number (default 0) */
  firstSeq?: number;
  /**
   * where frames that span chunks are assembled; such a frame's `pooled` is set and the
   * caller hands it back (pool.release) once done with the frame's payload
   */
  pool?: BufferPool;
}

/**
 * Splits a byte stream into checked frames. Feed it chunks as they arrive (push) and call
 * end() when the stream ends. Every check that can be made is made as early as possible:
 * the envelope (magic, version, envelope CRC, type, length bound, stream id, sequence) as
 * soon as its 32 bytes are in, the payload CRC when the frame is complete. The first error
 * is final: later calls throw it again.
 */
export class FrameDecoder {
  #streamId: number | undefined;
  #nextSeq: number;
  /** bytes of the stream consumed before the frame being assembled */
  #offset = 0;
  readonly #head = Buffer.alloc(ENVELOPE_BYTES);
  #headFill = 0;
  /** the frame being assembled across chunks (after its envelope was checked) */
  #frame: Buffer | null = null;
  #frameFill = 0;
  #error: StreamError | null = null;
  readonly #pool: BufferPool | undefined;

  constructor(options: DecoderOptions = {}) {
    this.#streamId = options.streamId;
    this.#nextSeq = options.firstSeq ?? 0;
    this.#pool = options.pool;
  }

  /** The stream id (once the first frame's envelope was read). */
  get streamId(): number | undefined {
    return this.#streamId;
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.#frame ? this.#frameFill : this.#headFill;
  }

  /** Bytes of the stream consumed so far (complete frames). */
  get offset(): number {
    return this.#offset;
  }

  /** The decoder's error, once it rejected the stream. */
  get error(): StreamError | null {
    return this.#error;
  }

  /**
   * Takes the next bytes of the stream; returns the frames they complete, in order. Throws a
   * StreamError at the first damaged frame (frames before it in this chunk are lost to the
   * caller: a caller that must act on each good frame uses pushEach).
   */
  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    this.pushEach(chunk, (f) => frames.push(f));
    return frames;
  }

  /** As push, but hands each frame to `onFrame` as soon as it is checked (before later frames are read). */
  pushEach(chunk: Buffer, onFrame: (frame: Frame) => void): void {
    if (this.#error) throw this.#error;
    try {
      this.#push(chunk, onFrame);
    } catch (e) {
      if (e instanceof StreamError) this.#error = e;
      throw e;
    }
  }

  /** The stream ended: throws ETRUNCATED if a frame was left incomplete. */
  end(): void {
    if (this.#error) throw this.#error;
    const have = this.buffered;
    if (have > 0) {
      const want = this.#frame ? this.#frame.length : ENVELOPE_BYTES;
      this.#error = new StreamError('ETRUNCATED', this.#offset, `the stream ended inside a frame: ${have} of ${want} bytes`);
      throw this.#error;
    }
  }

  #push(chunk: Buffer, onFrame: (frame: Frame) => void): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#frame) {
        const n = Math.min(this.#frame.length - this.#frameFill, chunk.length - at);
        chunk.copy(this.#frame, this.#frameFill, at, at + n);
        this.#frameFill += n;
        at += n;
        if (this.#frameFill === this.#frame.length) {
          const f = this.#frame;
          this.#frame = null;
          this.#frameFill = 0;
          const frame = this.#finish(f);
          if (this.#pool) frame.pooled = f;
          onFrame(frame);
        }
        continue;
      }
      if (this.#headFill === 0 && chunk.length - at >= ENVELOPE_BYTES) {
        // Fast path: the envelope (and often the whole frame) is in this chunk: no copy.
        const total = this.#checkEnvelope(chunk, at);
        if (chunk.length - at >= total) {
          onFrame(this.#finish(chunk.subarray(at, at + total)));
          at += total;
        } else {
          this.#frame = this.#alloc(total);
          this.#frameFill = chunk.copy(this.#frame, 0, at);
          at = chunk.length;
        }
        continue;
      }
      const n = Math.min(ENVELOPE_BYTES - this.#headFill, chunk.length - at);
      chunk.copy(this.#head, this.#headFill, at, at + n);
      this.#headFill += n;
      at += n;
      if (this.#headFill < ENVELOPE_BYTES) return;
      const total = this.#checkEnvelope(this.#head, 0);
      this.#headFill = 0;
      this.#frame = this.#alloc(total);
      this.#head.copy(this.#frame, 0);
      this.#frameFill = ENVELOPE_BYTES;
    }
  }

  #alloc(size: number): Buffer {
    return this.#pool ? this.#pool.get(size) : Buffer.allocUnsafe(size);
  }

  /** Checks the envelope at buf[at..at+32); returns the frame's total size. */
  #checkEnvelope(buf: Buffer, at: number): number {
    const off = this.#offset;
    const magic = buf.readUInt32LE(at);
    if (magic !== MAGIC) {
      throw new StreamError('EMAGIC', off, `not a kvm-dirty checkpoint frame: magic ${hex(magic)}, expected ${hex(MAGIC)} ('KDCK')`);
    }
    // The envelope CRC before the version: a damaged version field is damage, not a future version.
    const headCrc = crc32c(buf.subarray(at, at + 24));
    if (headCrc !== buf.readUInt32LE(at + 24)) {
      throw new StreamError('ECRC', off, `frame envelope checksum ${hex(buf.readUInt32LE(at + 24))} does not match its bytes (${hex(headCrc)})`);
    }
    const version = buf.readUInt16LE(at + 4);
    if (version !== VERSION) throw new StreamError('EVERSION', off, `stream format version ${version}; this reader knows version ${VERSION}`);
    const type = buf[at + 6];
    if (!(type in TYPE_NAMES)) throw new StreamError('EFRAME', off, `unknown frame type ${type}`);
    if (buf[at + 7] !== 0 || buf.readUInt32LE(at + 28) !== 0) throw new StreamError('EFRAME', off, 'reserved envelope bits are set');
    const streamId = buf.readUInt32LE(at + 8);
    if (this.#streamId === undefined) this.#streamId = streamId;
    else if (streamId !== this.#streamId) {
      throw new StreamError('EFOREIGN', off, `${frameTypeName(type)} frame of stream ${hex(streamId)} in stream ${hex(this.#streamId)}`);
    }
    const seq = readU64(buf, at + 16, off, 'sequence number');
    if (seq !== this.#nextSeq) {
      throw new StreamError('EORDER', off, `${frameTypeName(type)} frame #${seq} where frame #${this.#nextSeq} was due`);
    }
    const length = buf.readUInt32LE(at + 12);
    if (length > MAX_PAYLOAD) throw new StreamError('EFRAME', off, `payload of ${length} bytes exceeds the ${MAX_PAYLOAD}-byte limit`);
    return FRAME_OVERHEAD + length;
  }

  #finish(frame: Buffer): Frame {
    const off = this.#offset;
    const length = frame.length - FRAME_OVERHEAD;
    const payload = frame.subarray(ENVELOPE_BYTES, ENVELOPE_BYTES + length);
    const want = frame.readUInt32LE(ENVELOPE_BYTES + length);
    const got = crc32c(payload);
    const type = frame[6] as FrameType;
    if (got !== want) {
      throw new StreamError('ECRC', off, `${frameTypeName(type)} frame #${this.#nextSeq}: payload checksum ${hex(want)} does not match its ${length} bytes (${hex(got)})`);
    }
    const seq = this.#nextSeq++;
    this.#offset += frame.length;
    return { type, streamId: this.#streamId!, seq, payload, offset: off };
  }
}

export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}
