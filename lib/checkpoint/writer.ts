// The writing side of the checkpoint stream: frames built in place in pooled buffers, one
// buffer (hence one write) per epoch in the common case.

import { randomInt } from 'node:crypto';
import { encodeAttrsFrame, encodeControlFrame, type AttrRun, type ControlRecord } from './control';
import { crc32c } from './crc32c';
import { BufferPool, ENVELOPE_BYTES, FRAME_OVERHEAD, FrameType, MAX_PAYLOAD, encodeFrame, readU64, sealFrame, writeEnvelope, writeU64 } from './format';
import { encodeDelta, warmUpDelta } from './xbzrle';
import {
  COMMIT_BYTES, EPOCH_DELTA_FIXED, EPOCH_FIXED, OUTPUT_BYTES, PAGE_RECORD_BYTES, PageKind, VCPU_REGS_BYTES,
  encodeHeaderPayload, encodeU64Frame, epochPayloadBytes, writeCommitFrame, writeEpochHead,
  type MachineLayout, type VcpuRegs,
} from './records';
import { encodeLeaseFrame, type LeaseTag } from './lease-frame';

/** Where an epoch's pages come from: page i is `pages[i]` of slot `slotIndex[i]`. */
export interface PageSource {
  count: number;
  slotIndex: Uint32Array;
  pages: Uint32Array;
}

export interface SlotSource {
  /** first gfn of the slot */
  gfn: number;
  /** the slot's bytes */
  bytes: Buffer;
}

/** Pages per Epoch frame, so that one part stays well under MAX_PAYLOAD. */
export const PART_PAGES = 4096;

/** The delta encoder's default memory of sent pages: 64 MiB (16,384 pages of 4 KiB). */
export const DELTA_CACHE_BYTES = 64 * 2 ** 20;

export interface StreamWriterOptions {
  streamId?: number;
  /**
   * Delta-encode the pages (stream format extension 2): the bytes of sent pages this writer
   * remembers to encode against (default DELTA_CACHE_BYTES); false: every page whole, in
   * plain Epoch frames, as readers before the extension take them.
   */
  delta?: false | { cacheBytes?: number };
}

export class StreamWriter {
  readonly streamId: number;
  readonly pageSize: number;
  readonly pool = new BufferPool();
  #seq = 0;
  readonly #cache: PageCache | null;
  readonly #counts = { delta: 0, unchanged: 0, zero: 0, whole: 0 };

  constructor(pageSize: number, options: StreamWriterOptions = {}) {
    this.streamId = options.streamId ?? randomInt(1, 0xffff_ffff);
    this.pageSize = pageSize;
    if (PART_PAGES * (pageSize + 8) > MAX_PAYLOAD / 2) throw new RangeError(`page size ${pageSize} is too large`);
    this.#cache = options.delta === false ? null : new PageCache(options.delta?.cacheBytes ?? DELTA_CACHE_BYTES, pageSize);
    if (this.#cache) warmUpDelta();
  }

  /** Frames written so far (the next frame's sequence number). */
  get frames(): number {
    return this.#seq;
  }

  header(layout: MachineLayout): Buffer {
    return encodeFrame(FrameType.Header, this.streamId, this.#seq++, encodeHeaderPayload(layout));
  }

  /** The Lease frame (stream format extension 1), right after the header. */
  lease(tag: LeaseTag): Buffer {
    return encodeLeaseFrame(FrameType.Lease, this.streamId, this.#seq++, tag);
  }

  end(lastEpoch: number): Buffer {
    return encodeU64Frame(FrameType.End, this.streamId, this.#seq++, lastEpoch);
  }

  /** A live migration's Control frame (control.ts). */
  control(c: ControlRecord): Buffer {
    return encodeControlFrame(this.streamId, this.#seq++, c);
  }

  /**
   * One epoch (its Epoch part(s) and its Commit) in one pooled buffer: registers, the guest's
   * outputs (packed pairs, see records.writeEpochHead), the gfn list, then each page copied
   * straight from guest memory. Encoding and checksums are left for finish(), so that a
   * checkpointer can let the guest run on as soon as the pages are copied and do them while
   * it runs. Release finish()'s buffer to `pool` once written. `attrs`: s390 storage attributes
   * of the epoch, in a StorageAttrs frame before the Commit (a live migration's). `state`: the
   * machine's full state (encodeStatePayload), in a State frame before the Commit.
   */
  epoch(
    epoch: number, vcpus: readonly VcpuRegs[], outputs: ArrayLike<number>, outputCount: number,
    src: PageSource, slots: readonly SlotSource[], outputSeq: number, clientAcked: number, attrs?: AttrRun[], state?: Buffer,
  ): Buffer {
    const ps = this.pageSize;
    const total = src.count;
    const parts = Math.max(1, Math.ceil(total / PART_PAGES));
    let size = parts * FRAME_OVERHEAD + FRAME_OVERHEAD + COMMIT_BYTES;
    size += epochPayloadBytes(vcpus.length, outputCount, total, ps) + (parts - 1) * EPOCH_FIXED;
    const attrsFrame = attrs ? encodeAttrsFrame(this.streamId, this.#seq + parts, { epoch, runs: attrs }) : null;
    if (attrsFrame) size += attrsFrame.length;
    if (state) size += FRAME_OVERHEAD + state.length;
    const buf = this.pool.get(size);
    let at = 0;
    for (let part = 0; part < parts; part++) {
      const first = part * PART_PAGES;
      const n = Math.min(PART_PAGES, total - first);
      const v = part === 0 ? vcpus : [];
      const o = part === 0 ? outputCount : 0;
      const length = EPOCH_FIXED + v.length * VCPU_REGS_BYTES + o * OUTPUT_BYTES + n * (8 + ps);
      writeEnvelope(buf, at, FrameType.Epoch, this.streamId, this.#seq++, length);
      let p = writeEpochHead(buf, at + ENVELOPE_BYTES, epoch, part, n, v, outputs, o);
      const slotIndex = src.slotIndex;
      const pages = src.pages;
      for (let i = first; i < first + n; i++, p += 8) writeU64(buf, p, slots[slotIndex[i]].gfn + pages[i]);
      for (let i = first; i < first + n; i++, p += ps) {
        const off = pages[i] * ps;
        slots[slotIndex[i]].bytes.copy(buf, p, off, off + ps);
      }
      at += FRAME_OVERHEAD + length;
    }
    if (attrsFrame) {
      attrsFrame.copy(buf, at);
      at += attrsFrame.length;
      this.#seq++;
    }
    if (state) {
      // checksummed in finish(), with the guest running
      writeEnvelope(buf, at, FrameType.State, this.streamId, this.#seq++, state.length);
      state.copy(buf, at + ENVELOPE_BYTES);
      at += FRAME_OVERHEAD + state.length;
    }
    at += writeCommitFrame(buf, at, this.streamId, this.#seq++, { epoch, parts, pages: total, outputSeq, clientAcked });
    if (at !== size) throw new Error(`epoch frame size ${at} != ${size}`);
    return buf;
  }

  /**
   * Makes a buffer from epoch() ready to send, after the guest has resumed: without delta
   * encoding, the Epoch frames' payload checksums are written in place and `buf` is returned;
   * with it, each Epoch frame becomes an EpochDelta frame (each page as zero, unchanged,
   * XBZRLE runs against what this stream last sent of it, or whole, whichever is smallest)
   * in a new pooled buffer, returned, and `buf` goes back to the pool. Frames keep their
   * sequence numbers; the State frame is checksummed, the StorageAttrs and Commit frames are
   * copied as they are.
   */
  finish(buf: Buffer): Buffer {
    if (!this.#cache) {
      for (let at = 0; at < buf.length;) {
        const length = buf.readUInt32LE(at + 12);
        if (buf[at + 6] === FrameType.Epoch || buf[at + 6] === FrameType.State) sealFrame(buf, at, length);
        at += FRAME_OVERHEAD + length;
      }
      return buf;
    }
    const ps = this.pageSize;
    // The worst case: every page whole, plus its record.
    let bound = 0;
    for (let at = 0; at < buf.length;) {
      const length = buf.readUInt32LE(at + 12);
      const pages = buf[at + 6] === FrameType.Epoch ? buf.readUInt32LE(at + ENVELOPE_BYTES + 12) : 0;
      bound += FRAME_OVERHEAD + length + (EPOCH_DELTA_FIXED - EPOCH_FIXED) + pages * PAGE_RECORD_BYTES;
      at += FRAME_OVERHEAD + length;
    }
    const out = this.pool.get(bound);
    let o = 0;
    for (let at = 0; at < buf.length;) {
      const length = buf.readUInt32LE(at + 12);
      if (buf[at + 6] === FrameType.Epoch) o += this.#encodePart(buf, at, out, o, ps);
      else {
        buf.copy(out, o, at, at + FRAME_OVERHEAD + length);
        if (buf[at + 6] === FrameType.State) sealFrame(out, o, length);
        o += FRAME_OVERHEAD + length;
      }
      at += FRAME_OVERHEAD + length;
    }
    this.pool.release(buf);
    return out.subarray(0, o);
  }

  /** Pages sent delta-encoded, unchanged, zero and whole so far (delta encoding only). */
  get pageCounts(): Record<'delta' | 'unchanged' | 'zero' | 'whole', number> {
    return { ...this.#counts };
  }

  /** The raw Epoch frame at `at` of `src` as an EpochDelta frame at `o` of `out`; returns its size. */
  #encodePart(src: Buffer, at: number, out: Buffer, o: number, ps: number): number {
    const cache = this.#cache!;
    const p = at + ENVELOPE_BYTES;
    const pages = src.readUInt32LE(p + 12);
    const head = src.readUInt32LE(p + 16) * VCPU_REGS_BYTES + src.readUInt32LE(p + 20) * OUTPUT_BYTES;
    const gfnsAt = p + EPOCH_FIXED + head;
    const contentsAt = gfnsAt + pages * 8;
    const q = o + ENVELOPE_BYTES;
    src.copy(out, q, p, p + EPOCH_FIXED); // epoch, part, counts
    out.writeUInt32LE(0, q + 28);
    src.copy(out, q + EPOCH_DELTA_FIXED, p + EPOCH_FIXED, gfnsAt); // registers and outputs
    let rec = q + EPOCH_DELTA_FIXED + head;
    let data = rec + pages * PAGE_RECORD_BYTES;
    // the pages lie back to back in the raw frame: their CRC in one call
    out.writeUInt32LE(crc32c(src.subarray(contentsAt, contentsAt + pages * ps)), q + 24);
    // The frame's contents as words (a pooled buffer: 8-byte aligned, as is contentsAt), each page addressed by offset.
    const words = new Uint32Array(src.buffer, src.byteOffset + contentsAt, (pages * ps) / 4);
    const pw = ps / 4;
    for (let i = 0; i < pages; i++, rec += PAGE_RECORD_BYTES) {
      const gfn = readU64(src, gfnsAt + i * 8, 0, 'gfn');
      const from = contentsAt + i * ps;
      src.copy(out, rec, gfnsAt + i * 8, gfnsAt + i * 8 + 8);
      let kind: PageKind;
      let n = 0;
      const old = cache.get(gfn);
      if (ZERO_PAGE.compare(src, from, from + ps) === 0) kind = PageKind.Zero;
      else if (old && (n = encodeDelta(old, words, out, data, ps - PAGE_RECORD_BYTES, i * pw, pw)) >= 0) kind = n === 0 ? PageKind.Unchanged : PageKind.Delta;
      else {
        kind = PageKind.Whole;
        n = src.copy(out, data, from, from + ps);
      }
      out.writeUInt32LE(kind, rec + 8);
      out.writeUInt32LE(n, rec + 12);
      data += n;
      this.#counts[KIND_NAMES[kind]]++;
      cache.set(gfn, words, i * pw);
    }
    const length = data - q;
    writeEnvelope(out, o, FrameType.EpochDelta, this.streamId, readU64(src, at + 16, 0, 'sequence number'), length);
    sealFrame(out, o, length);
    return FRAME_OVERHEAD + length;
  }
}

const ZERO_PAGE = Buffer.alloc(4096);
const KIND_NAMES = ['zero', 'whole', 'unchanged', 'delta'] as const;

/**
 * What the writer last sent of each page (the replica's copy, as far as the stream knows),
 * for delta encoding: at most `pages` pages, the least recently sent ones forgotten first.
 */
export class PageCache {
  readonly #map = new Map<number, Uint32Array>();
  readonly #pages: number;
  readonly #words: number;

  constructor(bytes: number, pageSize: number) {
    this.#words = pageSize / 4;
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`the delta cache size must be a non-negative integer of bytes, got ${bytes}`);
    this.#pages = Math.floor(bytes / pageSize);
  }

  get size(): number {
    return this.#map.size;
  }

  get(gfn: number): Uint32Array | undefined {
    return this.#map.get(gfn);
  }

  /** Remembers the page at word `at` of `contents` (copied) as what was sent of page `gfn`. */
  set(gfn: number, contents: Uint32Array, at: number): void {
    if (this.#pages === 0) return;
    let kept = this.#map.get(gfn);
    if (kept) this.#map.delete(gfn);
    else if (this.#map.size >= this.#pages) {
      const oldest = this.#map.keys().next().value as number;
      kept = this.#map.get(oldest)!;
      this.#map.delete(oldest);
    } else kept = new Uint32Array(this.#words);
    kept.set(contents.subarray(at, at + this.#words));
    this.#map.set(gfn, kept);
  }
}
