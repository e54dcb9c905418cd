// VcpuState and VmState as bytes: a versioned little-endian container whose pieces are the
// kernel structs themselves (lib/kvm-structs.ts), byte for byte. docs/state-format.md is the
// specification; the checkpoint stream embeds these encodings as opaque blobs.

import {
  CLOCK_DATA_SIZE,
  COUNTED_HEADER_SIZE,
  CPUID_ENTRY_SIZE,
  decodeClockData,
  decodeCpuid,
  decodeDebugregs,
  decodeFpu,
  decodeIoapic,
  decodeLapic,
  decodeMsrs,
  decodePic,
  decodePitState2,
  decodeRegs,
  decodeSregs,
  decodeVcpuEvents,
  decodeXcrs,
  decodeXsave,
  DEBUGREGS_SIZE,
  encodeClockData,
  encodeCpuid,
  encodeDebugregs,
  encodeFpu,
  encodeIoapic,
  encodeLapic,
  encodeMsrs,
  encodePic,
  encodePitState2,
  encodeRegs,
  encodeSregs,
  encodeVcpuEvents,
  encodeXcrs,
  encodeXsave,
  FPU_SIZE,
  IRQCHIP_SIZE,
  IrqchipId,
  LAPIC_SIZE,
  MAX_CPUID_ENTRIES,
  MAX_IO_MSRS,
  MSR_ENTRY_SIZE,
  PIT_STATE2_SIZE,
  REGS_SIZE,
  SREGS_SIZE,
  VCPU_EVENTS_SIZE,
  XCRS_SIZE,
  XSAVE_SIZE,
} from './kvm-structs';
import { checkObject } from './validate';
import type { VcpuState } from './vcpu';
import type { VmState } from './vm';

/** "KVCS" and "KVMS" as the first four bytes. */
export const VCPU_STATE_MAGIC = 0x5343564b;
export const VM_STATE_MAGIC = 0x534d564b;
/** The layout version these functions write; they read it and nothing newer. */
export const STATE_FORMAT_VERSION = 1;
/** Architecture code of the header: the structs are x86-64's. */
export const STATE_ARCH_X86_64 = 1;

const HEADER_SIZE = 16;
const PIECE_HEADER_SIZE = 8;

/** vCPU piece tags, in the order they are written (QEMU's restore order after regs and sregs). */
export enum VcpuPieceTag {
  Regs = 1,
  Sregs = 2,
  Cpuid = 3,
  Fpu = 4,
  Xsave = 5,
  Xcrs = 6,
  Msrs = 7,
  VcpuEvents = 8,
  Lapic = 9,
  Debugregs = 10,
  MpState = 11,
}

/** VM piece tags. The three irqchip pieces come together or not at all. */
export enum VmPieceTag {
  PicMaster = 1,
  PicSlave = 2,
  Ioapic = 3,
  Pit2 = 4,
  Clock = 5,
}

interface Piece {
  tag: number;
  bytes: Uint8Array;
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

function container(magic: number, pieces: Piece[]): Uint8Array {
  const total = pieces.reduce((n, p) => n + PIECE_HEADER_SIZE + pad8(p.bytes.length), HEADER_SIZE);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  v.setUint32(0, magic, true);
  v.setUint16(4, STATE_FORMAT_VERSION, true);
  v.setUint16(6, STATE_ARCH_X86_64, true);
  v.setUint32(8, pieces.length, true);
  v.setUint32(12, total, true);
  let at = HEADER_SIZE;
  for (const p of pieces) {
    v.setUint16(at, p.tag, true);
    v.setUint32(at + 4, p.bytes.length, true);
    out.set(p.bytes, at + PIECE_HEADER_SIZE);
    at += PIECE_HEADER_SIZE + pad8(p.bytes.length);
  }
  return out;
}

/** The pieces of a container, every header field checked (RangeError naming what is wrong). */
function pieces(what: string, magic: number, bytes: Uint8Array): Map<number, Uint8Array> {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (bytes.length < HEADER_SIZE) throw new RangeError(`${what}: ${bytes.length} bytes, shorter than the ${HEADER_SIZE}-byte header`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint32(0, true) !== magic) throw new RangeError(`${what}: bad magic 0x${v.getUint32(0, true).toString(16)}`);
  const version = v.getUint16(4, true);
  if (version === 0 || version > STATE_FORMAT_VERSION) throw new RangeError(`${what}: format version ${version}; this library reads 1..${STATE_FORMAT_VERSION}`);
  if (v.getUint16(6, true) !== STATE_ARCH_X86_64) throw new RangeError(`${what}: architecture ${v.getUint16(6, true)} is not x86-64 (${STATE_ARCH_X86_64})`);
  const count = v.getUint32(8, true);
  const total = v.getUint32(12, true);
  if (total !== bytes.length) throw new RangeError(`${what}: the header says ${total} bytes, got ${bytes.length} (truncated or trailing data)`);
  const out = new Map<number, Uint8Array>();
  let at = HEADER_SIZE;
  let last = 0;
  for (let i = 0; i < count; i++) {
    if (at + PIECE_HEADER_SIZE > total) throw new RangeError(`${what}: piece ${i} of ${count} starts past the end`);
    const tag = v.getUint16(at, true);
    if (v.getUint16(at + 2, true) !== 0) throw new RangeError(`${what}: piece ${i} has a non-zero reserved field`);
    const length = v.getUint32(at + 4, true);
    if (at + PIECE_HEADER_SIZE + pad8(length) > total) throw new RangeError(`${what}: piece ${i} (tag ${tag}, ${length} bytes) runs past the end`);
    if (tag <= last) throw new RangeError(`${what}: piece tags must ascend without repeats; tag ${tag} follows ${last}`);
    last = tag;
    out.set(tag, bytes.subarray(at + PIECE_HEADER_SIZE, at + PIECE_HEADER_SIZE + length));
    at += PIECE_HEADER_SIZE + pad8(length);
  }
  if (at !== total) throw new RangeError(`${what}: ${total - at} bytes after the last piece`);
  return out;
}

function fixed(what: string, tag: number, bytes: Uint8Array, size: number): Uint8Array {
  if (bytes.length !== size) throw new RangeError(`${what}: piece ${tag} must be ${size} bytes, got ${bytes.length}`);
  return bytes;
}

/** A struct with a u32 count at 0 and `entry`-byte entries after the 8-byte header. */
function counted(what: string, tag: number, bytes: Uint8Array, entry: number, max: number): number {
  if (bytes.length < COUNTED_HEADER_SIZE) throw new RangeError(`${what}: piece ${tag} is shorter than its header`);
  const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (n > max || bytes.length !== COUNTED_HEADER_SIZE + n * entry) throw new RangeError(`${what}: piece ${tag} does not hold the ${n} entries it announces`);
  return n;
}

/** The bytes of a VcpuState (docs/state-format.md). TypeError/RangeError for a malformed state. */
export function encodeVcpuState(state: VcpuState): Uint8Array {
  const s = checkObject('state', state) as unknown as VcpuState;
  const list: Piece[] = [
    { tag: VcpuPieceTag.Regs, bytes: encodeRegs(s.regs) },
    { tag: VcpuPieceTag.Sregs, bytes: encodeSregs(s.sregs) },
  ];
  if (s.cpuid !== undefined) list.push({ tag: VcpuPieceTag.Cpuid, bytes: encodeCpuid(s.cpuid) });
  if (s.fpu !== undefined) list.push({ tag: VcpuPieceTag.Fpu, bytes: encodeFpu(s.fpu) });
  if (s.xsave !== undefined) {
    const region = checkObject('xsave', s.xsave).region;
    if (!(region instanceof Uint8Array) || region.length < XSAVE_SIZE) throw new RangeError(`xsave.region must be a Uint8Array of at least ${XSAVE_SIZE} bytes`);
    list.push({ tag: VcpuPieceTag.Xsave, bytes: encodeXsave(s.xsave, region.length) });
  }
  if (s.xcrs !== undefined) list.push({ tag: VcpuPieceTag.Xcrs, bytes: encodeXcrs(s.xcrs) });
  if (s.msrs !== undefined) list.push({ tag: VcpuPieceTag.Msrs, bytes: encodeMsrs(s.msrs) });
  if (s.vcpuEvents !== undefined) list.push({ tag: VcpuPieceTag.VcpuEvents, bytes: encodeVcpuEvents(s.vcpuEvents) });
  if (s.lapic !== undefined) list.push({ tag: VcpuPieceTag.Lapic, bytes: encodeLapic(s.lapic) });
  if (s.debugregs !== undefined) list.push({ tag: VcpuPieceTag.Debugregs, bytes: encodeDebugregs(s.debugregs) });
  if (s.mpState !== undefined) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, checkMpState(s.mpState), true);
    list.push({ tag: VcpuPieceTag.MpState, bytes: b });
  }
  return container(VCPU_STATE_MAGIC, list);
}

function checkMpState(x: unknown): number {
  if (typeof x !== 'number') throw new TypeError('mpState must be a number');
  if (!Number.isInteger(x) || x < 0 || x > 0xffff_ffff) throw new RangeError(`mpState must be a u32, got ${x}`);
  return x;
}

/** The VcpuState of encodeVcpuState()'s bytes; RangeError for anything else. */
export function decodeVcpuState(bytes: Uint8Array): VcpuState {
  const what = 'vCPU state';
  const p = pieces(what, VCPU_STATE_MAGIC, bytes);
  for (const tag of p.keys()) if (!(tag in VcpuPieceTag)) throw new RangeError(`${what}: unknown piece tag ${tag}`);
  const regs = p.get(VcpuPieceTag.Regs);
  const sregs = p.get(VcpuPieceTag.Sregs);
  if (regs === undefined || sregs === undefined) throw new RangeError(`${what}: regs and sregs are required`);
  const state: VcpuState = {
    regs: decodeRegs(fixed(what, VcpuPieceTag.Regs, regs, REGS_SIZE)),
    sregs: decodeSregs(fixed(what, VcpuPieceTag.Sregs, sregs, SREGS_SIZE)),
  };
  for (const [tag, b] of p) {
    switch (tag) {
      case VcpuPieceTag.Cpuid:
        state.cpuid = decodeCpuid(b, counted(what, tag, b, CPUID_ENTRY_SIZE, MAX_CPUID_ENTRIES));
        break;
      case VcpuPieceTag.Fpu:
        state.fpu = decodeFpu(fixed(what, tag, b, FPU_SIZE));
        break;
      case VcpuPieceTag.Xsave:
        if (b.length < XSAVE_SIZE) throw new RangeError(`${what}: piece ${tag} must be at least ${XSAVE_SIZE} bytes, got ${b.length}`);
        state.xsave = decodeXsave(b);
        break;
      case VcpuPieceTag.Xcrs:
        state.xcrs = decodeXcrs(fixed(what, tag, b, XCRS_SIZE));
        break;
      case VcpuPieceTag.Msrs:
        state.msrs = decodeMsrs(b, counted(what, tag, b, MSR_ENTRY_SIZE, MAX_IO_MSRS - 1));
        break;
      case VcpuPieceTag.VcpuEvents:
        state.vcpuEvents = decodeVcpuEvents(fixed(what, tag, b, VCPU_EVENTS_SIZE));
        break;
      case VcpuPieceTag.Lapic:
        state.lapic = decodeLapic(fixed(what, tag, b, LAPIC_SIZE));
        break;
      case VcpuPieceTag.Debugregs:
        state.debugregs = decodeDebugregs(fixed(what, tag, b, DEBUGREGS_SIZE));
        break;
      case VcpuPieceTag.MpState:
        state.mpState = new DataView(fixed(what, tag, b, 4).buffer, b.byteOffset, 4).getUint32(0, true);
        break;
      default:
        break; // regs, sregs: above
    }
  }
  return state;
}

/** The bytes of a VmState (docs/state-format.md). */
export function encodeVmState(state: VmState): Uint8Array {
  const s = checkObject('state', state) as unknown as VmState;
  const list: Piece[] = [];
  if (s.irqchip !== undefined) {
    const c = checkObject('state.irqchip', s.irqchip) as unknown as NonNullable<VmState['irqchip']>;
    list.push(
      { tag: VmPieceTag.PicMaster, bytes: encodePic(IrqchipId.PicMaster, c.picMaster, 'irqchip.picMaster') },
      { tag: VmPieceTag.PicSlave, bytes: encodePic(IrqchipId.PicSlave, c.picSlave, 'irqchip.picSlave') },
      { tag: VmPieceTag.Ioapic, bytes: encodeIoapic(c.ioapic, 'irqchip.ioapic') },
    );
  }
  if (s.pit2 !== undefined) list.push({ tag: VmPieceTag.Pit2, bytes: encodePitState2(s.pit2) });
  if (s.clock !== undefined) list.push({ tag: VmPieceTag.Clock, bytes: encodeClockData(s.clock) });
  return container(VM_STATE_MAGIC, list);
}

/** The VmState of encodeVmState()'s bytes; RangeError for anything else. */
export function decodeVmState(bytes: Uint8Array): VmState {
  const what = 'VM state';
  const p = pieces(what, VM_STATE_MAGIC, bytes);
  for (const tag of p.keys()) if (!(tag in VmPieceTag)) throw new RangeError(`${what}: unknown piece tag ${tag}`);
  const state: VmState = {};
  const chips = [VmPieceTag.PicMaster, VmPieceTag.PicSlave, VmPieceTag.Ioapic].map((t) => p.get(t));
  if (chips.some((c) => c !== undefined)) {
    if (chips.some((c) => c === undefined)) throw new RangeError(`${what}: the irqchip needs all three pieces (PIC master, PIC slave, IOAPIC)`);
    const [master, slave, ioapic] = chips.map((c, i) => {
      const b = fixed(what, i + 1, c!, IRQCHIP_SIZE);
      if (new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) !== i) throw new RangeError(`${what}: piece ${i + 1} names chip ${b[0]}, not ${i}`);
      return b;
    });
    state.irqchip = { picMaster: decodePic(master), picSlave: decodePic(slave), ioapic: decodeIoapic(ioapic) };
  }
  const pit = p.get(VmPieceTag.Pit2);
  if (pit !== undefined) state.pit2 = decodePitState2(fixed(what, VmPieceTag.Pit2, pit, PIT_STATE2_SIZE));
  const clock = p.get(VmPieceTag.Clock);
  if (clock !== undefined) state.clock = decodeClockData(fixed(what, VmPieceTag.Clock, clock, CLOCK_DATA_SIZE));
  return state;
}
