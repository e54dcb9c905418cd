// A replica's copy of the machine: memory image, registers and guest outputs as of the last
// committed epoch. It reads the checkpoint stream frame by frame and changes only at a
// Commit, all at once: the parts of an epoch are checked and held until their Commit
// arrives, then copied in. A damaged, truncated, reordered or foreign stream is rejected
// with a StreamError and leaves the image at its last good epoch.

import { decodeAttrsFrame, decodeControlFrame, type AttrRun, type ControlRecord } from './control';
import { BufferPool, FrameDecoder, FrameType, StreamError, frameTypeName, type Frame } from './format';
import { crc32c } from './crc32c';
import { applyDelta, warmUpDelta } from './xbzrle';
import {
  PageKind, decodeCommit, decodeEpoch, decodeEpochDelta, decodeHeader, decodeU64Frame,
  type CommitRecord, type EpochPart, type MachineLayout, type OutputRecord, type VcpuRegs,
} from './records';
import { decodeLeaseFrame, type LeaseTag } from './lease-frame';
import { decodeStateFrame, type MachineState } from './state-frame';

interface Staged {
  epoch: number;
  parts: EpochPart[];
  pages: number;
  /** s390 CMMA values of the epoch (StorageAttrs frames), copied out of their frames */
  attrs: AttrRun[];
  /** the epoch's State frame (extension 3), decoded */
  state: MachineState | null;
  /** pooled frame buffers the parts are views of, released once the epoch is applied or dropped */
  buffers: Buffer[];
}

export class ReplicaImage {
  #layout: MachineLayout | null = null;
  /** memory of slot i of the layout */
  #memory: Buffer[] = [];
  /** pages of slot i an epoch has written (1 byte per page); every other page is zero */
  #written: Uint8Array[] = [];
  /** first gfn and page count of slot i */
  #slotGfn: number[] = [];
  #slotPages: number[] = [];
  #regs: VcpuRegs[] = [];
  #state: MachineState | null = null;
  #committed: CommitRecord | null = null;
  #lease: LeaseTag | null = null;
  #staged: Staged | null = null;
  #finished = false;
  /** committed outputs not yet confirmed by the client: output #(outputsFrom + i) is outputs[i] */
  #outputs: OutputRecord[] = [];
  #outputsFrom = 0;
  readonly #pool = new BufferPool(8);
  readonly #decoder = new FrameDecoder({ pool: this.#pool });
  readonly #memoryFor: ((layout: MachineLayout) => Buffer[]) | undefined;
  readonly #onControl: ((c: ControlRecord) => void) | undefined;
  /** s390 CMMA value of each page of slot i, and which pages have one (a StorageAttrs frame set it) */
  #attrs: Uint8Array[] = [];
  #attrsKnown: Uint8Array[] = [];

  /**
   * @param memoryFor  supplies the image's memory (zero-filled, one buffer per slot of the
   *                   Header's layout) when the Header arrives, e.g. a destination VM's guest
   *                   memory, so that epochs land in it directly; by default new Buffers
   * @param onControl  receives a live migration's Control frames (which change no state of
   *                   the image); without it a Control frame is rejected
   */
  constructor(memoryFor?: (layout: MachineLayout) => Buffer[], onControl?: (c: ControlRecord) => void) {
    this.#memoryFor = memoryFor;
    this.#onControl = onControl;
    warmUpDelta();
  }

  /** The machine (after the Header frame). */
  get layout(): MachineLayout | null {
    return this.#layout;
  }

  /** The lease the stream was written under (its Lease frame), or null: a stream without a coordinator has none. */
  get lease(): LeaseTag | null {
    return this.#lease;
  }

  /** The last committed epoch, or null before the first Commit. */
  get committed(): CommitRecord | null {
    return this.#committed;
  }

  /** The last committed epoch's number, -1 before the first. */
  get epoch(): number {
    return this.#committed?.epoch ?? -1;
  }

  /**
   * The image can rebuild the machine: an epoch is committed and the registers of every vCPU
   * are known (and, where the Header says epochs carry it, the full state).
   */
  get restorable(): boolean {
    return this.#committed !== null && this.#layout !== null && this.#regs.length === this.#layout.vcpus.length && (!this.#layout.fullState || this.#state !== null);
  }

  /** The machine's full state (State frame) as of the last committed epoch that carried one, or null. */
  get state(): MachineState | null {
    return this.#state;
  }

  /** Registers of every vCPU as of the last committed epoch that carried them. */
  get regs(): readonly VcpuRegs[] {
    return this.#regs;
  }

  /** Memory of each slot of the layout (same order), as of the last committed epoch. */
  get memory(): readonly Buffer[] {
    return this.#memory;
  }

  /**
   * Slot i's memory and which of its pages an epoch has written: every other page is zero,
   * so a restore copies and compares only these (a checkpoint/machine Contents).
   */
  slot(i: number): { bytes: Buffer; written: Uint8Array } {
    if (!this.#memory[i]) throw new RangeError(`the image has no slot ${i}`);
    return { bytes: this.#memory[i], written: this.#written[i] };
  }

  /**
   * Slot i's s390 storage attributes as of the last committed epoch: `values[p]` is page p's
   * CMMA value where `known[p]` is 1 (a StorageAttrs frame carried it); other pages have none.
   */
  storageAttrs(i: number): { values: Uint8Array; known: Uint8Array } {
    if (!this.#memory[i]) throw new RangeError(`the image has no slot ${i}`);
    return { values: this.#attrs[i], known: this.#attrsKnown[i] };
  }

  /** The writer's End frame arrived. */
  get finished(): boolean {
    return this.#finished;
  }

  /** Why the stream was rejected, or null. */
  get error(): StreamError | null {
    return this.#decoder.error;
  }

  /** Committed outputs with sequence number >= `from` that the image still holds (oldest first). */
  outputsFrom(from: number): { firstSeq: number; outputs: OutputRecord[] } {
    const start = Math.max(from, this.#outputsFrom);
    return { firstSeq: start, outputs: this.#outputs.slice(start - this.#outputsFrom) };
  }

  /** The u64 (little-endian) at guest-physical address `gpa` in the image. */
  readU64(gpa: number): bigint {
    const pageSize = this.#layout!.pageSize;
    const i = this.#slotOf(Math.floor(gpa / pageSize));
    if (i < 0) throw new RangeError(`gpa ${gpa} is in no slot`);
    return this.#memory[i].readBigUInt64LE(gpa - this.#slotGfn[i] * pageSize);
  }

  /**
   * Takes the next bytes of the stream and returns the epochs they committed (oldest first).
   * The chunk's bytes are referenced until the epoch they belong to commits: do not reuse it.
   * Throws a StreamError when the stream is damaged; the image keeps its last committed
   * epoch, and every later push throws the same error.
   */
  push(chunk: Buffer): CommitRecord[] {
    const commits: CommitRecord[] = [];
    try {
      this.#decoder.pushEach(chunk, (f) => {
        const c = this.#frame(f);
        if (c) commits.push(c);
      });
    } catch (e) {
      this.#drop();
      throw e;
    }
    return commits;
  }

  /** The stream ended. Throws ETRUNCATED when it ended inside a frame or inside an epoch. */
  end(): void {
    this.#decoder.end();
    if (this.#staged) {
      const s = this.#staged;
      this.#drop();
      throw new StreamError('ETRUNCATED', this.#decoder.offset, `the stream ended inside epoch ${s.epoch} (${s.parts.length} part(s), no Commit): the image stays at epoch ${this.epoch}`);
    }
  }

  #frame(f: Frame): CommitRecord | null {
    const r = this.#apply(f);
    // A plain Epoch frame's buffer stays with its staged part; an EpochDelta's contents were decoded out of it.
    if (f.pooled && f.type !== FrameType.Epoch) this.#pool.release(f.pooled);
    return r;
  }

  #drop(): void {
    this.#staged?.buffers.forEach((b) => this.#pool.release(b));
    this.#staged = null;
  }

  #apply(f: Frame): CommitRecord | null {
    if (f.type === FrameType.Control && this.#onControl) {
      // The handshake of a migration: outside the epochs, also after End.
      if (this.#staged) throw new StreamError('EORDER', f.offset, `Control frame inside epoch ${this.#staged.epoch}`);
      this.#onControl(decodeControlFrame(f));
      return null;
    }
    if (this.#finished) throw new StreamError('EORDER', f.offset, `${frameTypeName(f.type)} frame after the End frame`);
    if (f.type !== FrameType.Header && !this.#layout) throw new StreamError('EORDER', f.offset, `${frameTypeName(f.type)} frame before the Header`);
    switch (f.type) {
      case FrameType.Header:
        if (this.#layout) throw new StreamError('EORDER', f.offset, 'a second Header frame');
        this.#setLayout(decodeHeader(f));
        return null;
      case FrameType.Lease:
        if (this.#lease || this.#staged || this.#committed) throw new StreamError('EORDER', f.offset, 'a Lease frame that does not follow the Header');
        this.#lease = decodeLeaseFrame(f);
        return null;
      case FrameType.Epoch:
        this.#stage(f, decodeEpoch(f, this.#layout!.pageSize));
        return null;
      case FrameType.EpochDelta: {
        const part = this.#decodeDelta(f);
        this.#stage(f, part);
        this.#staged!.buffers.push(part.contents);
        return null;
      }
      case FrameType.Commit:
        return this.#commit(f);
      case FrameType.StorageAttrs:
        this.#stageAttrs(f);
        return null;
      case FrameType.State:
        this.#stageState(f);
        return null;
      case FrameType.End: {
        const last = decodeU64Frame(f, 'End');
        if (this.#staged) throw new StreamError('EORDER', f.offset, `End frame inside epoch ${this.#staged.epoch}`);
        if (last !== this.epoch) throw new StreamError('EORDER', f.offset, `End frame says the last epoch is ${last}; the last committed is ${this.epoch}`);
        this.#finished = true;
        return null;
      }
      default:
        throw new StreamError('EFRAME', f.offset, `a ${frameTypeName(f.type)} frame has no place in a checkpoint stream`);
    }
  }

  #setLayout(layout: MachineLayout): void {
    this.#layout = layout;
    const ps = layout.pageSize;
    this.#memory = this.#memoryFor ? this.#memoryFor(layout) : layout.slots.map((s) => Buffer.alloc(s.size));
    layout.slots.forEach((s, i) => {
      if (this.#memory[i]?.length !== s.size) throw new RangeError(`memory for slot ${s.slot} must be ${s.size} bytes`);
    });
    this.#slotGfn = layout.slots.map((s) => s.guestPhysAddr / ps);
    this.#slotPages = layout.slots.map((s) => s.size / ps);
    this.#written = this.#slotPages.map((n) => new Uint8Array(n));
    this.#attrs = this.#slotPages.map((n) => new Uint8Array(n));
    this.#attrsKnown = this.#slotPages.map((n) => new Uint8Array(n));
  }

  /** A StorageAttrs frame belongs to the epoch being staged, after its first part. */
  #stageAttrs(f: Frame): void {
    const r = decodeAttrsFrame(f);
    const s = this.#staged;
    if (!s || s.epoch !== r.epoch) {
      throw new StreamError('EORDER', f.offset, `StorageAttrs of epoch ${r.epoch} ${s ? `inside epoch ${s.epoch}` : 'outside an epoch'}`);
    }
    // A run may span slots that lie back to back (KVM_S390_GET_CMMA_BITS reads across them): staged per slot.
    for (const run of r.runs) {
      for (let at = 0; at < run.values.length;) {
        const gfn = run.startGfn + at;
        const k = this.#slotOf(gfn);
        if (k < 0) throw new StreamError('EFRAME', f.offset, `StorageAttrs of epoch ${r.epoch}: page ${gfn} is in no memory slot`);
        const n = Math.min(run.values.length - at, this.#slotGfn[k] + this.#slotPages[k] - gfn);
        s.attrs.push({ startGfn: gfn, values: Uint8Array.from(run.values.subarray(at, at + n)) });
        at += n;
      }
    }
  }

  /** A State frame belongs to the epoch being staged, after its parts, once; its part 0 carries the registers. */
  #stageState(f: Frame): void {
    if (!this.#layout!.fullState) throw new StreamError('EFRAME', f.offset, 'a State frame in a stream whose Header does not announce full state');
    const { epoch, state } = decodeStateFrame(f);
    const s = this.#staged;
    if (!s || s.epoch !== epoch) throw new StreamError('EORDER', f.offset, `State of epoch ${epoch} ${s ? `inside epoch ${s.epoch}` : 'outside an epoch'}`);
    if (s.state) throw new StreamError('EORDER', f.offset, `a second State frame in epoch ${epoch}`);
    const ids = this.#layout!.vcpus.map((v) => v.id).join(',');
    if (!s.parts[0].vcpus.length) throw new StreamError('EFRAME', f.offset, `State of epoch ${epoch}, an epoch without registers`);
    if (state.vcpus.map((v) => v.id).join(',') !== ids) {
      throw new StreamError('EFRAME', f.offset, `State of epoch ${epoch}: vCPUs [${state.vcpus.map((v) => v.id)}], the machine has [${ids}]`);
    }
    s.state = state;
  }

  /**
   * An EpochDelta part, decoded against the pages as last committed (an epoch names each page
   * once, so none of its own parts changed them yet) into contents of its own, then checked
   * against the writer's CRC of the decoded pages: a delta applied to other contents than the
   * writer's (a page this replica does not hold as the writer thinks) is refused, not applied.
   */
  #decodeDelta(f: Frame): EpochPart {
    const ps = this.#layout!.pageSize;
    const d = decodeEpochDelta(f, ps);
    // every page is written below; pooled (released with the epoch's other buffers): a fresh
    // buffer per epoch costs a page fault per page, more than the decoding itself
    const contents = this.#pool.get(d.gfns.length * ps);
    for (let i = 0; i < d.gfns.length; i++) {
      const k = this.#slotOf(d.gfns[i]);
      if (k < 0) throw new StreamError('EFRAME', f.offset, `epoch ${d.epoch}: page ${d.gfns[i]} is in no memory slot`);
      const page = contents.subarray(i * ps, (i + 1) * ps);
      const data = d.data.subarray(d.dataStart[i], d.dataStart[i] + d.dataLength[i]);
      const base = (d.gfns[i] - this.#slotGfn[k]) * ps;
      if (d.kinds[i] === PageKind.Whole) data.copy(page);
      else if (d.kinds[i] === PageKind.Zero) page.fill(0);
      else {
        this.#memory[k].copy(page, 0, base, base + ps);
        if (d.kinds[i] === PageKind.Delta && !applyDelta(page, data)) throw new StreamError('EFRAME', f.offset, `epoch ${d.epoch}: the delta of page ${d.gfns[i]} reaches past the page`);
      }
    }
    if (crc32c(contents) !== d.contentCrc) {
      throw new StreamError('ECRC', f.offset, `epoch ${d.epoch} part ${d.part}: the decoded pages do not match the writer's checksum (a delta against contents this replica does not hold)`);
    }
    return { epoch: d.epoch, part: d.part, vcpus: d.vcpus, outputs: d.outputs, gfns: d.gfns, contents };
  }

  #stage(f: Frame, part: EpochPart): void {
    const layout = this.#layout!;
    const want = this.#staged ? this.#staged.epoch : this.epoch + 1;
    if (part.epoch !== want) {
      throw new StreamError('EORDER', f.offset, `Epoch frame of epoch ${part.epoch} where epoch ${want} was due (last committed: ${this.epoch})`);
    }
    const wantPart = this.#staged ? this.#staged.parts.length : 0;
    if (part.part !== wantPart) throw new StreamError('EORDER', f.offset, `epoch ${part.epoch}: part ${part.part} where part ${wantPart} was due`);
    if (part.part === 0) {
      // Every vCPU's registers, or none: an epoch without them changes memory only (a
      // pre-copy round of live migration, taken while the guest runs; it may carry outputs).
      const ids = layout.vcpus.map((v) => v.id).join(',');
      if (part.vcpus.length > 0 && part.vcpus.map((v) => v.id).join(',') !== ids) {
        throw new StreamError('EFRAME', f.offset, `epoch ${part.epoch}: registers of vCPUs [${part.vcpus.map((v) => v.id)}], the machine has [${ids}]`);
      }
    } else if (part.vcpus.length || part.outputs.length) {
      throw new StreamError('EFRAME', f.offset, `epoch ${part.epoch} part ${part.part}: registers and outputs belong in part 0`);
    }
    for (const gfn of part.gfns) {
      if (this.#slotOf(gfn) < 0) throw new StreamError('EFRAME', f.offset, `epoch ${part.epoch}: page ${gfn} is in no memory slot`);
    }
    if (this.#staged?.state) throw new StreamError('EORDER', f.offset, `epoch ${part.epoch}: part ${part.part} after the epoch's State frame`);
    if (!this.#staged) this.#staged = { epoch: part.epoch, parts: [], pages: 0, attrs: [], state: null, buffers: [] };
    this.#staged.parts.push(part);
    if (f.pooled && f.type === FrameType.Epoch) this.#staged.buffers.push(f.pooled);
    this.#staged.pages += part.gfns.length;
  }

  #commit(f: Frame): CommitRecord {
    const c = decodeCommit(f);
    const s = this.#staged;
    if (!s || s.epoch !== c.epoch) {
      throw new StreamError('EORDER', f.offset, `Commit of epoch ${c.epoch} ${s ? `inside epoch ${s.epoch}` : `with no Epoch frame before it (last committed: ${this.epoch})`}`);
    }
    if (c.parts !== s.parts.length || c.pages !== s.pages) {
      throw new StreamError('EORDER', f.offset, `Commit of epoch ${c.epoch} counts ${c.parts} parts and ${c.pages} pages; ${s.parts.length} parts and ${s.pages} pages arrived`);
    }
    const outputs = s.parts[0].outputs;
    if (this.#committed && c.outputSeq !== this.#committed.outputSeq + outputs.length) {
      throw new StreamError('EFRAME', f.offset, `Commit of epoch ${c.epoch}: output sequence ${c.outputSeq}, expected ${this.#committed.outputSeq} + ${outputs.length}`);
    }
    if (c.clientAcked > c.outputSeq) throw new StreamError('EFRAME', f.offset, `Commit of epoch ${c.epoch}: the client acked ${c.clientAcked} of ${c.outputSeq} outputs`);
    if (this.#layout!.fullState && s.parts[0].vcpus.length && !s.state) {
      throw new StreamError('EFRAME', f.offset, `epoch ${c.epoch} carries registers but no State frame; the Header says every such epoch does`);
    }
    // Everything is checked: apply the whole epoch (nothing below can fail).
    const ps = this.#layout!.pageSize;
    for (const p of s.parts) {
      for (let i = 0; i < p.gfns.length; i++) {
        const k = this.#slotOf(p.gfns[i]);
        const page = p.gfns[i] - this.#slotGfn[k];
        p.contents.copy(this.#memory[k], page * ps, i * ps, (i + 1) * ps);
        this.#written[k][page] = 1;
      }
    }
    for (const run of s.attrs) {
      const k = this.#slotOf(run.startGfn);
      const first = run.startGfn - this.#slotGfn[k];
      this.#attrs[k].set(run.values, first);
      this.#attrsKnown[k].fill(1, first, first + run.values.length);
    }
    if (s.parts[0].vcpus.length) this.#regs = s.parts[0].vcpus;
    if (s.state) this.#state = s.state;
    if (!this.#committed) this.#outputsFrom = c.outputSeq - outputs.length;
    for (const o of outputs) this.#outputs.push(o);
    const drop = Math.min(this.#outputs.length, c.clientAcked - this.#outputsFrom);
    if (drop > 0) {
      this.#outputs.splice(0, drop);
      this.#outputsFrom += drop;
    }
    this.#committed = c;
    this.#drop();
    return c;
  }

  #lastSlot = 0;

  #slotOf(gfn: number): number {
    const k = this.#lastSlot;
    if (k < this.#slotGfn.length && gfn >= this.#slotGfn[k] && gfn < this.#slotGfn[k] + this.#slotPages[k]) return k;
    for (let i = 0; i < this.#slotGfn.length; i++) {
      if (gfn >= this.#slotGfn[i] && gfn < this.#slotGfn[i] + this.#slotPages[i]) return (this.#lastSlot = i);
    }
    return -1;
  }
}
