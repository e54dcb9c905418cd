// Payloads of the checkpoint stream's frames (docs/stream-format.md): the machine header,
// epochs, commits, acks, errors and guest outputs. Encoders write into caller buffers; the
// decoders check every count and bound against the frame (EFRAME) so that nothing a reader
// applies can point outside its image.

import type { Regs, Segment, Sregs, WorkloadSpec } from '../backend';
import type { Arch } from '../constants';
import { ENVELOPE_BYTES, FRAME_OVERHEAD, FrameType, StreamError, encodeFrame, readU64, sealFrame, writeEnvelope, writeU64, type Frame } from './format';

/** One memory slot of the machine. */
export interface SlotLayout {
  /** (address space << 16) | slot id, as KVM_SET_USER_MEMORY_REGION takes it */
  slot: number;
  guestPhysAddr: number;
  /** bytes (a multiple of the page size) */
  size: number;
  /** KVM_MEM_LOG_DIRTY_PAGES: the guest writes here and the log reports it */
  logged: boolean;
}

/** One vCPU of the machine: its id, the harness workload it runs, its special registers. */
export interface VcpuLayout {
  id: number;
  /** the workload loaded with vcpu.load() (needed to rebuild the vCPU: the emulator runs it as a model) */
  workload: WorkloadSpec | null;
  sregs: Sregs;
}

/** What a replica needs to rebuild the machine: the Header frame. */
export interface MachineLayout {
  pageSize: number;
  arch: Arch;
  slots: SlotLayout[];
  vcpus: VcpuLayout[];
  /** the VM has the in-kernel irqchip and PIT (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2 before the vCPUs): a guest image's machine */
  irqchip?: boolean;
  /** every epoch with registers also carries a State frame (extension 3): the full vCPU, VM and device state */
  fullState?: boolean;
}

/** Header flags (u32 at byte 12; 0 before extension 3). */
const HEADER_IRQCHIP = 1;
const HEADER_FULL_STATE = 2;

/** One output the guest emitted (an OUT to an I/O port). */
export interface OutputRecord {
  port: number;
  /** bytes of the access: 1, 2 or 4 */
  size: number;
  vcpu: number;
  value: number;
}

export const REG_NAMES = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;
/** struct kvm_regs: 18 u64. */
export const REGS_BYTES = REG_NAMES.length * 8;
/** A vCPU's record in an epoch: u32 id, u32 zero, struct kvm_regs. */
export const VCPU_REGS_BYTES = 8 + REGS_BYTES;
export const OUTPUT_BYTES = 8;
const SLOT_BYTES = 32;
const WORKLOAD_BYTES = 48;
const SEGMENT_BYTES = 24;
const DTABLE_BYTES = 16;
const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
/** struct kvm_sregs as encoded here: 8 segments, gdt, idt, 7 control values, the 256-bit interrupt bitmap. */
export const SREGS_BYTES = SEGMENTS.length * SEGMENT_BYTES + 2 * DTABLE_BYTES + 7 * 8 + 4 * 8;
const VCPU_LAYOUT_BYTES = 8 + WORKLOAD_BYTES + SREGS_BYTES;
const HEADER_FIXED = 16;
export const EPOCH_FIXED = 24;
export const COMMIT_BYTES = 48;
const ARCH_CODES: Record<Arch, number> = { x86_64: 1, arm64: 2, s390x: 3 };
const WORKLOAD_CODES = { stride: 1, random: 2, counter: 3, spin: 4 } as const;

// ---------------------------------------------------------------- header

export function encodeHeaderPayload(layout: MachineLayout): Buffer {
  const buf = Buffer.alloc(HEADER_FIXED + layout.slots.length * SLOT_BYTES + layout.vcpus.length * VCPU_LAYOUT_BYTES);
  buf.writeUInt32LE(layout.pageSize, 0);
  buf[4] = ARCH_CODES[layout.arch];
  buf.writeUInt16LE(layout.vcpus.length, 6);
  buf.writeUInt32LE(layout.slots.length, 8);
  buf.writeUInt32LE((layout.irqchip ? HEADER_IRQCHIP : 0) | (layout.fullState ? HEADER_FULL_STATE : 0), 12);
  let at = HEADER_FIXED;
  for (const s of layout.slots) {
    buf.writeUInt32LE(s.slot, at);
    buf.writeUInt32LE(s.logged ? 1 : 0, at + 4);
    writeU64(buf, at + 8, s.guestPhysAddr);
    writeU64(buf, at + 16, s.size);
    at += SLOT_BYTES;
  }
  for (const v of layout.vcpus) {
    buf.writeUInt32LE(v.id, at);
    writeWorkload(buf, at + 8, v.workload);
    writeSregs(buf, at + 8 + WORKLOAD_BYTES, v.sregs);
    at += VCPU_LAYOUT_BYTES;
  }
  return buf;
}

export function decodeHeader(frame: Frame): MachineLayout {
  const p = frame.payload;
  const off = frame.offset;
  need(p, HEADER_FIXED, off, 'Header');
  const pageSize = p.readUInt32LE(0);
  if (pageSize < 512 || (pageSize & (pageSize - 1)) !== 0) throw new StreamError('EFRAME', off, `page size ${pageSize} is not a power of two >= 512`);
  const arch = (Object.keys(ARCH_CODES) as Arch[]).find((a) => ARCH_CODES[a] === p[4]);
  if (!arch) throw new StreamError('EFRAME', off, `unknown architecture code ${p[4]}`);
  const nVcpus = p.readUInt16LE(6);
  const nSlots = p.readUInt32LE(8);
  const flags = p.readUInt32LE(12);
  if ((flags & ~(HEADER_IRQCHIP | HEADER_FULL_STATE)) !== 0) throw new StreamError('EFRAME', off, `unknown Header flags 0x${flags.toString(16)}`);
  if (p[5] !== 0) throw new StreamError('EFRAME', off, 'Header byte 5 must be zero');
  if (p.length !== HEADER_FIXED + nSlots * SLOT_BYTES + nVcpus * VCPU_LAYOUT_BYTES) {
    throw new StreamError('EFRAME', off, `Header of ${p.length} bytes for ${nSlots} slots and ${nVcpus} vCPUs`);
  }
  const slots: SlotLayout[] = [];
  let at = HEADER_FIXED;
  for (let i = 0; i < nSlots; i++, at += SLOT_BYTES) {
    const s: SlotLayout = {
      slot: p.readUInt32LE(at),
      logged: (p.readUInt32LE(at + 4) & 1) === 1,
      guestPhysAddr: readU64(p, at + 8, off, 'slot address'),
      size: readU64(p, at + 16, off, 'slot size'),
    };
    if (s.size === 0 || s.size % pageSize !== 0 || s.guestPhysAddr % pageSize !== 0) {
      throw new StreamError('EFRAME', off, `slot ${s.slot}: address ${s.guestPhysAddr} and size ${s.size} must be non-empty multiples of the page size`);
    }
    for (const o of slots) {
      if (s.guestPhysAddr < o.guestPhysAddr + o.size && o.guestPhysAddr < s.guestPhysAddr + s.size) {
        throw new StreamError('EFRAME', off, `slots ${o.slot} and ${s.slot} overlap`);
      }
    }
    slots.push(s);
  }
  const vcpus: VcpuLayout[] = [];
  for (let i = 0; i < nVcpus; i++, at += VCPU_LAYOUT_BYTES) {
    vcpus.push({ id: p.readUInt32LE(at), workload: readWorkload(p, at + 8, off), sregs: readSregs(p, at + 8 + WORKLOAD_BYTES) });
  }
  const layout: MachineLayout = { pageSize, arch, slots, vcpus };
  if (flags & HEADER_IRQCHIP) layout.irqchip = true;
  if (flags & HEADER_FULL_STATE) layout.fullState = true;
  return layout;
}

function writeWorkload(buf: Buffer, at: number, w: WorkloadSpec | null): void {
  buf.fill(0, at, at + WORKLOAD_BYTES);
  if (!w) return;
  buf.writeUInt32LE(WORKLOAD_CODES[w.kind], at);
  switch (w.kind) {
    case 'stride':
      writeU64(buf, at + 8, w.firstPage);
      writeU64(buf, at + 16, w.pages);
      writeU64(buf, at + 24, w.stridePages);
      break;
    case 'random':
      writeU64(buf, at + 8, w.firstPage);
      writeU64(buf, at + 16, w.spanPages);
      writeU64(buf, at + 24, w.pagesPerEpoch);
      buf.writeBigUInt64LE(w.seed, at + 32);
      break;
    case 'counter':
      writeU64(buf, at + 8, w.page);
      break;
    case 'spin':
      break;
  }
}

function readWorkload(buf: Buffer, at: number, off: number): WorkloadSpec | null {
  const a = readU64(buf, at + 8, off, 'workload field');
  const b = readU64(buf, at + 16, off, 'workload field');
  const c = readU64(buf, at + 24, off, 'workload field');
  switch (buf.readUInt32LE(at)) {
    case 0: return null;
    case 1: return { kind: 'stride', firstPage: a, pages: b, stridePages: c };
    case 2: return { kind: 'random', firstPage: a, spanPages: b, pagesPerEpoch: c, seed: buf.readBigUInt64LE(at + 32) };
    case 3: return { kind: 'counter', page: a };
    case 4: return { kind: 'spin' };
    default: throw new StreamError('EFRAME', off, `unknown workload kind ${buf.readUInt32LE(at)}`);
  }
}

function writeSregs(buf: Buffer, at: number, s: Sregs): void {
  for (const name of SEGMENTS) {
    const g: Segment = s[name];
    buf.writeBigUInt64LE(BigInt.asUintN(64, g.base), at);
    buf.writeUInt32LE(g.limit >>> 0, at + 8);
    buf.writeUInt16LE(g.selector, at + 12);
    const f = [g.type, g.present, g.dpl, g.db, g.s, g.l, g.g, g.avl, g.unusable];
    for (let i = 0; i < f.length; i++) buf[at + 14 + i] = f[i];
    buf[at + 23] = 0;
    at += SEGMENT_BYTES;
  }
  for (const t of [s.gdt, s.idt]) {
    buf.writeBigUInt64LE(BigInt.asUintN(64, t.base), at);
    buf.writeUInt16LE(t.limit, at + 8);
    buf.fill(0, at + 10, at + 16);
    at += DTABLE_BYTES;
  }
  for (const v of [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apicBase]) {
    buf.writeBigUInt64LE(BigInt.asUintN(64, v), at);
    at += 8;
  }
  for (let i = 0; i < 4; i++, at += 8) buf.writeBigUInt64LE(BigInt.asUintN(64, s.interruptBitmap[i] ?? 0n), at);
}

function readSregs(buf: Buffer, at: number): Sregs {
  const seg = (): Segment => {
    const g: Segment = {
      base: buf.readBigUInt64LE(at), limit: buf.readUInt32LE(at + 8), selector: buf.readUInt16LE(at + 12),
      type: buf[at + 14], present: buf[at + 15], dpl: buf[at + 16], db: buf[at + 17], s: buf[at + 18],
      l: buf[at + 19], g: buf[at + 20], avl: buf[at + 21], unusable: buf[at + 22],
    };
    at += SEGMENT_BYTES;
    return g;
  };
  const segs = SEGMENTS.map(seg);
  const table = () => {
    const t = { base: buf.readBigUInt64LE(at), limit: buf.readUInt16LE(at + 8) };
    at += DTABLE_BYTES;
    return t;
  };
  const gdt = table();
  const idt = table();
  const u64 = () => {
    const v = buf.readBigUInt64LE(at);
    at += 8;
    return v;
  };
  const [cr0, cr2, cr3, cr4, cr8, efer, apicBase] = [u64(), u64(), u64(), u64(), u64(), u64(), u64()];
  const interruptBitmap = [u64(), u64(), u64(), u64()];
  const [cs, ds, es, fs, gs, ss, tr, ldt] = segs;
  return { cs, ds, es, fs, gs, ss, tr, ldt, gdt, idt, cr0, cr2, cr3, cr4, cr8, efer, apicBase, interruptBitmap };
}

// ---------------------------------------------------------------- epoch

/** A vCPU's registers at the end of an epoch. */
export interface VcpuRegs {
  id: number;
  regs: Regs;
}

/** Bytes of an Epoch payload. */
export function epochPayloadBytes(vcpus: number, outputs: number, pages: number, pageSize: number): number {
  return EPOCH_FIXED + vcpus * VCPU_REGS_BYTES + outputs * OUTPUT_BYTES + pages * (8 + pageSize);
}

/** Writes the fixed part, registers and outputs of an Epoch payload at `at`; returns where the gfn list starts. */
export function writeEpochHead(
  buf: Buffer, at: number, epoch: number, part: number, pages: number,
  vcpus: readonly VcpuRegs[], outputs: ArrayLike<number>, outputCount: number,
): number {
  writeU64(buf, at, epoch);
  buf.writeUInt32LE(part, at + 8);
  buf.writeUInt32LE(pages, at + 12);
  buf.writeUInt32LE(vcpus.length, at + 16);
  buf.writeUInt32LE(outputCount, at + 20);
  at += EPOCH_FIXED;
  for (const v of vcpus) {
    buf.writeUInt32LE(v.id, at);
    buf.writeUInt32LE(0, at + 4);
    at += 8;
    const r = v.regs;
    for (const name of REG_NAMES) {
      buf.writeBigUInt64LE(r[name], at);
      at += 8;
    }
  }
  // outputs: packed records, two u32 per output: (port | size << 16 | vcpu << 24), value
  for (let i = 0; i < outputCount; i++, at += OUTPUT_BYTES) {
    buf.writeUInt32LE(outputs[2 * i] >>> 0, at);
    buf.writeUInt32LE(outputs[2 * i + 1] >>> 0, at + 4);
  }
  return at;
}

/** Packs an output record's first word (see writeEpochHead). */
export function packOutput(port: number, size: number, vcpu: number): number {
  return (port & 0xffff) | ((size & 0xff) << 16) | ((vcpu & 0xff) << 24);
}

export interface EpochPart {
  epoch: number;
  part: number;
  vcpus: VcpuRegs[];
  outputs: OutputRecord[];
  /** gfn of page i */
  gfns: number[];
  /** page i at bytes [i * pageSize, (i + 1) * pageSize) (a view into the frame) */
  contents: Buffer;
}

export function decodeEpoch(frame: Frame, pageSize: number): EpochPart {
  const p = frame.payload;
  const off = frame.offset;
  need(p, EPOCH_FIXED, off, 'Epoch');
  const h = readEpochFixed(p, off);
  const expect = epochPayloadBytes(h.nVcpus, h.nOutputs, h.pages, pageSize);
  if (p.length !== expect) {
    throw new StreamError('EFRAME', off, `Epoch ${h.epoch} part ${h.part}: ${p.length} bytes for ${h.nVcpus} vCPUs, ${h.nOutputs} outputs and ${h.pages} pages (${expect} expected)`);
  }
  let at = EPOCH_FIXED;
  const vcpus = readVcpuRegs(p, at, h.nVcpus);
  at += h.nVcpus * VCPU_REGS_BYTES;
  const outputs = readOutputs(p, at, h.nOutputs);
  at += h.nOutputs * OUTPUT_BYTES;
  const gfns: number[] = new Array(h.pages);
  for (let i = 0; i < h.pages; i++, at += 8) gfns[i] = readU64(p, at, off, 'gfn');
  return { epoch: h.epoch, part: h.part, vcpus, outputs, gfns, contents: p.subarray(at, at + h.pages * pageSize) };
}

function readEpochFixed(p: Buffer, off: number): { epoch: number; part: number; pages: number; nVcpus: number; nOutputs: number } {
  return { epoch: readU64(p, 0, off, 'epoch number'), part: p.readUInt32LE(8), pages: p.readUInt32LE(12), nVcpus: p.readUInt32LE(16), nOutputs: p.readUInt32LE(20) };
}

function readVcpuRegs(p: Buffer, at: number, n: number): VcpuRegs[] {
  const vcpus: VcpuRegs[] = [];
  for (let i = 0; i < n; i++) {
    const id = p.readUInt32LE(at);
    at += 8;
    const regs = {} as Regs;
    for (const name of REG_NAMES) {
      regs[name] = p.readBigUInt64LE(at);
      at += 8;
    }
    vcpus.push({ id, regs });
  }
  return vcpus;
}

function readOutputs(p: Buffer, at: number, n: number): OutputRecord[] {
  const outputs: OutputRecord[] = [];
  for (let i = 0; i < n; i++, at += OUTPUT_BYTES) {
    const w = p.readUInt32LE(at);
    outputs.push({ port: w & 0xffff, size: (w >>> 16) & 0xff, vcpu: w >>> 24, value: p.readUInt32LE(at + 4) });
  }
  return outputs;
}

// ---------------------------------------------------------------- delta-encoded epoch (extension 2)

/** How a page of an EpochDelta part is sent. */
export enum PageKind {
  /** all zeros: no data */
  Zero = 0,
  /** the page itself: pageSize bytes */
  Whole = 1,
  /** the same bytes as the previous committed contents of that page: no data */
  Unchanged = 2,
  /** XBZRLE runs against the previous committed contents (xbzrle.ts) */
  Delta = 3,
}

/** The fixed part of an EpochDelta payload: the Epoch frame's 24 bytes, then u32 CRC32C of the decoded pages, u32 zero. */
export const EPOCH_DELTA_FIXED = 32;
/** Per page of an EpochDelta part: u64 gfn, u32 kind, u32 length of its data. */
export const PAGE_RECORD_BYTES = 16;

export interface DeltaPart {
  epoch: number;
  part: number;
  vcpus: VcpuRegs[];
  outputs: OutputRecord[];
  gfns: number[];
  kinds: Uint8Array;
  /** page i's data: [dataStart[i], dataStart[i] + dataLength[i]) of `data` */
  dataStart: Uint32Array;
  dataLength: Uint32Array;
  data: Buffer;
  /** CRC32C the writer computed over the decoded pages, in order */
  contentCrc: number;
}

export function decodeEpochDelta(frame: Frame, pageSize: number): DeltaPart {
  const p = frame.payload;
  const off = frame.offset;
  need(p, EPOCH_DELTA_FIXED, off, 'EpochDelta');
  const h = readEpochFixed(p, off);
  const contentCrc = p.readUInt32LE(24);
  const head = EPOCH_DELTA_FIXED + h.nVcpus * VCPU_REGS_BYTES + h.nOutputs * OUTPUT_BYTES + h.pages * PAGE_RECORD_BYTES;
  if (p.readUInt32LE(28) !== 0 || head > p.length) {
    throw new StreamError('EFRAME', off, `EpochDelta ${h.epoch} part ${h.part}: ${p.length} bytes for ${h.nVcpus} vCPUs, ${h.nOutputs} outputs and ${h.pages} page records`);
  }
  let at = EPOCH_DELTA_FIXED;
  const vcpus = readVcpuRegs(p, at, h.nVcpus);
  at += h.nVcpus * VCPU_REGS_BYTES;
  const outputs = readOutputs(p, at, h.nOutputs);
  at += h.nOutputs * OUTPUT_BYTES;
  const gfns: number[] = new Array(h.pages);
  const kinds = new Uint8Array(h.pages);
  const dataStart = new Uint32Array(h.pages);
  const dataLength = new Uint32Array(h.pages);
  let data = 0;
  for (let i = 0; i < h.pages; i++, at += PAGE_RECORD_BYTES) {
    gfns[i] = readU64(p, at, off, 'gfn');
    const kind = p.readUInt32LE(at + 8);
    const length = p.readUInt32LE(at + 12);
    const ok = kind === PageKind.Whole ? length === pageSize : kind === PageKind.Delta ? length > 0 && length < pageSize : kind <= PageKind.Unchanged && length === 0;
    if (!ok) throw new StreamError('EFRAME', off, `EpochDelta ${h.epoch}: page ${gfns[i]} of kind ${kind} with ${length} bytes of data`);
    kinds[i] = kind;
    dataStart[i] = data;
    dataLength[i] = length;
    data += length;
  }
  if (head + data !== p.length) throw new StreamError('EFRAME', off, `EpochDelta ${h.epoch} part ${h.part}: ${p.length - head} bytes of page data where the records name ${data}`);
  return { epoch: h.epoch, part: h.part, vcpus, outputs, gfns, kinds, dataStart, dataLength, data: p.subarray(head), contentCrc };
}

// ---------------------------------------------------------------- commit, end, ack, error

export interface CommitRecord {
  epoch: number;
  /** Epoch frames (parts) of this epoch */
  parts: number;
  /** pages over all parts */
  pages: number;
  /** guest outputs emitted from the start of the run through this epoch (a sequence number) */
  outputSeq: number;
  /** outputs the client has confirmed receiving: a replica may forget the ones before */
  clientAcked: number;
}

export function writeCommitPayload(buf: Buffer, at: number, c: CommitRecord): void {
  writeU64(buf, at, c.epoch);
  buf.writeUInt32LE(c.parts, at + 8);
  buf.writeUInt32LE(0, at + 12);
  writeU64(buf, at + 16, c.pages);
  writeU64(buf, at + 24, c.outputSeq);
  writeU64(buf, at + 32, c.clientAcked);
  writeU64(buf, at + 40, 0);
}

export function decodeCommit(frame: Frame): CommitRecord {
  const p = frame.payload;
  if (p.length !== COMMIT_BYTES) throw new StreamError('EFRAME', frame.offset, `Commit of ${p.length} bytes (${COMMIT_BYTES} expected)`);
  const off = frame.offset;
  return {
    epoch: readU64(p, 0, off, 'epoch number'),
    parts: p.readUInt32LE(8),
    pages: readU64(p, 16, off, 'page count'),
    outputSeq: readU64(p, 24, off, 'output sequence'),
    clientAcked: readU64(p, 32, off, 'client ack'),
  };
}

/** A Commit frame written in place at `at`; returns its size. */
export function writeCommitFrame(buf: Buffer, at: number, streamId: number, seq: number, c: CommitRecord): number {
  writeEnvelope(buf, at, FrameType.Commit, streamId, seq, COMMIT_BYTES);
  writeCommitPayload(buf, at + ENVELOPE_BYTES, c);
  sealFrame(buf, at, COMMIT_BYTES);
  return FRAME_OVERHEAD + COMMIT_BYTES;
}

export function encodeU64Frame(type: FrameType, streamId: number, seq: number, value: number): Buffer {
  const p = Buffer.alloc(8);
  writeU64(p, 0, value);
  return encodeFrame(type, streamId, seq, p);
}

export function decodeU64Frame(frame: Frame, what: string): number {
  if (frame.payload.length !== 8) throw new StreamError('EFRAME', frame.offset, `${what} frame of ${frame.payload.length} bytes (8 expected)`);
  return readU64(frame.payload, 0, frame.offset, what);
}

/** Error frame: a 16-byte code (ASCII, zero-padded), then the reason in UTF-8. */
export function encodeErrorFrame(streamId: number, seq: number, code: string, message: string): Buffer {
  const text = Buffer.from(message, 'utf8');
  const p = Buffer.alloc(16 + text.length);
  p.write(code.slice(0, 16), 0, 'ascii');
  text.copy(p, 16);
  return encodeFrame(FrameType.Error, streamId, seq, p);
}

export function decodeErrorFrame(frame: Frame): { code: string; message: string } {
  const p = frame.payload;
  need(p, 16, frame.offset, 'Error');
  const code = p.subarray(0, 16).toString('ascii').replace(/\0+$/, '');
  return { code, message: p.subarray(16).toString('utf8') };
}

// ---------------------------------------------------------------- outputs to the client

/** Output frame: u64 first sequence number, u32 count, u32 zero, then count packed records. */
export function encodeOutputFrame(streamId: number, seq: number, firstSeq: number, outputs: ArrayLike<number>, count: number): Buffer {
  const p = Buffer.allocUnsafe(16 + count * OUTPUT_BYTES);
  writeU64(p, 0, firstSeq);
  p.writeUInt32LE(count, 8);
  p.writeUInt32LE(0, 12);
  for (let i = 0; i < count; i++) {
    p.writeUInt32LE(outputs[2 * i] >>> 0, 16 + i * 8);
    p.writeUInt32LE(outputs[2 * i + 1] >>> 0, 20 + i * 8);
  }
  return encodeFrame(FrameType.Output, streamId, seq, p);
}

export function decodeOutputFrame(frame: Frame): { firstSeq: number; outputs: OutputRecord[] } {
  const p = frame.payload;
  need(p, 16, frame.offset, 'Output');
  const firstSeq = readU64(p, 0, frame.offset, 'output sequence');
  const count = p.readUInt32LE(8);
  if (p.length !== 16 + count * OUTPUT_BYTES) throw new StreamError('EFRAME', frame.offset, `Output frame of ${p.length} bytes for ${count} outputs`);
  const outputs: OutputRecord[] = [];
  for (let i = 0; i < count; i++) {
    const w = p.readUInt32LE(16 + i * 8);
    outputs.push({ port: w & 0xffff, size: (w >>> 16) & 0xff, vcpu: w >>> 24, value: p.readUInt32LE(20 + i * 8) });
  }
  return { firstSeq, outputs };
}

function need(p: Buffer, bytes: number, off: number, what: string): void {
  if (p.length < bytes) throw new StreamError('EFRAME', off, `${what} payload of ${p.length} bytes (at least ${bytes} expected)`);
}
