// The writing side of the checkpoint stream: frames built in place in pooled buffers, one
// buffer (hence one write) per epoch in the common case.

import { randomInt } from 'node:crypto';
import { encodeAttrsFrame, encodeControlFrame, type AttrRun, type ControlRecord } from './control';
import { BufferPool, ENVELOPE_BYTES, FRAME_OVERHEAD, FrameType, MAX_PAYLOAD, encodeFrame, sealFrame, writeEnvelope, writeU64 } from './format';
import {
  COMMIT_BYTES, EPOCH_FIXED, OUTPUT_BYTES, VCPU_REGS_BYTES,
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

export class StreamWriter {
  readonly streamId: number;
  readonly pageSize: number;
  readonly pool = new BufferPool();
  #seq = 0;

  constructor(pageSize: number, streamId = randomInt(1, 0xffff_ffff)) {
    this.streamId = streamId;
    this.pageSize = pageSize;
    if (PART_PAGES * (pageSize + 8) > MAX_PAYLOAD / 2) throw new RangeError(`page size ${pageSize} is too large`);
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
   * straight from guest memory. The Epoch frames' payload checksums are left for seal(), so
   * that a checkpointer can let the guest run on as soon as the pages are copied and checksum
   * while it runs. Release the buffer to `pool` once written. `attrs`: s390 storage attributes
   * of the epoch, in a StorageAttrs frame before the Commit (a live migration's).
   */
  epoch(
    epoch: number, vcpus: readonly VcpuRegs[], outputs: ArrayLike<number>, outputCount: number,
    src: PageSource, slots: readonly SlotSource[], outputSeq: number, clientAcked: number, attrs?: AttrRun[],
  ): Buffer {
    const ps = this.pageSize;
    const total = src.count;
    const parts = Math.max(1, Math.ceil(total / PART_PAGES));
    let size = parts * FRAME_OVERHEAD + FRAME_OVERHEAD + COMMIT_BYTES;
    size += epochPayloadBytes(vcpus.length, outputCount, total, ps) + (parts - 1) * EPOCH_FIXED;
    const attrsFrame = attrs ? encodeAttrsFrame(this.streamId, this.#seq + parts, { epoch, runs: attrs }) : null;
    if (attrsFrame) size += attrsFrame.length;
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
    at += writeCommitFrame(buf, at, this.streamId, this.#seq++, { epoch, parts, pages: total, outputSeq, clientAcked });
    if (at !== size) throw new Error(`epoch frame size ${at} != ${size}`);
    return buf;
  }

  /** Writes the payload checksums of the Epoch frames of a buffer from epoch(). */
  seal(buf: Buffer): void {
    for (let at = 0; at < buf.length;) {
      const length = buf.readUInt32LE(at + 12);
      if (buf[at + 6] === FrameType.Epoch) sealFrame(buf, at, length);
      at += FRAME_OVERHEAD + length;
    }
  }
}
