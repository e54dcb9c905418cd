// The x86-64 KVM state structs, byte for byte as <linux/kvm.h> and <asm/kvm.h> lay them out
// (little-endian, the kernel's C build; native/uapi.h asserts the same sizes), with their typed
// JavaScript form. Both backends hand these structs around as Uint8Arrays; vcpu.ts and vm.ts
// decode them for callers, and lib/state-codec.ts stores them as they are.
//
// Field names are the kernel's in camelCase (last_opcode -> lastOpcode). Raw 64-bit values
// (registers, MSR data, flags words) are bigints; counts, vectors, small fields and addresses
// are numbers. Every encoder checks its input like the rest of the public API: TypeError for a
// wrong type, RangeError for a value out of the field's range, each naming the field.

import type { DTable, Regs, Sregs } from './backend';
import { checkObject, checkU64, checkUint, describe } from './validate';

// ---- sizes ----------------------------------------------------------------------------------

export const REGS_SIZE = 144;
export const SREGS_SIZE = 312;
export const FPU_SIZE = 416;
/** struct kvm_xsave without extra[]: the size KVM_GET_XSAVE copies. */
export const XSAVE_SIZE = 4096;
export const XCRS_SIZE = 392;
export const LAPIC_SIZE = 1024;
export const VCPU_EVENTS_SIZE = 64;
export const DEBUGREGS_SIZE = 128;
export const IRQCHIP_SIZE = 520;
export const PIT_STATE2_SIZE = 112;
export const CLOCK_DATA_SIZE = 48;
/** struct kvm_msrs / kvm_cpuid2 header: { u32 count; u32 pad; } */
export const COUNTED_HEADER_SIZE = 8;
export const MSR_ENTRY_SIZE = 16;
export const CPUID_ENTRY_SIZE = 40;
/** KVM_MAX_XCRS */
export const MAX_XCRS = 16;
/** KVM_MAX_CPUID_ENTRIES: the most entries KVM_SET_CPUID2 takes. */
export const MAX_CPUID_ENTRIES = 256;
/** MAX_IO_MSRS: KVM_GET/SET_MSRS take fewer entries than this (E2BIG otherwise). */
export const MAX_IO_MSRS = 256;

/** KVM_IRQCHIP_*: chip_id of struct kvm_irqchip. */
export enum IrqchipId {
  PicMaster = 0,
  PicSlave = 1,
  Ioapic = 2,
}

/** KVM_MP_STATE_* */
export enum MpState {
  Runnable = 0,
  Uninitialized = 1,
  InitReceived = 2,
  Halted = 3,
  SipiReceived = 4,
  Stopped = 5,
  CheckStop = 6,
  Operating = 7,
  Load = 8,
  ApResetHold = 9,
  Suspended = 10,
}

/** struct kvm_vcpu_events flags (KVM_VCPUEVENT_VALID_*). */
export const VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
export const VCPUEVENT_VALID_SHADOW = 0x4;
export const VCPUEVENT_VALID_SMM = 0x8;
export const VCPUEVENT_VALID_PAYLOAD = 0x10;
export const VCPUEVENT_VALID_TRIPLE_FAULT = 0x20;

/** struct kvm_clock_data flags (KVM_CLOCK_*). */
export const CLOCK_TSC_STABLE = 2;
export const CLOCK_REALTIME = 4;
export const CLOCK_HOST_TSC = 8;

// ---- typed forms ----------------------------------------------------------------------------

/** struct kvm_fpu: x87 and SSE registers in the FXSAVE layout. */
export interface Fpu {
  /** fpr[8][16]: ST0..ST7, 16 bytes each (80-bit values, 6 bytes padding) */
  fpr: Uint8Array;
  fcw: number;
  fsw: number;
  /** the abridged tag word */
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  /** xmm[16][16]: XMM0..XMM15, 16 bytes each, little-endian */
  xmm: Uint8Array;
  mxcsr: number;
}

/** struct kvm_xsave: the XSAVE image (legacy region, XSAVE header, extended components). */
export interface Xsave {
  /** vcpu.xsaveSize bytes: 4096, or KVM_CAP_XSAVE2's size where it is larger */
  region: Uint8Array;
}

/** struct kvm_xcr */
export interface Xcr {
  xcr: number;
  value: bigint;
}

/** struct kvm_xcrs: nr_xcrs is xcrs.length (at most 16). */
export interface Xcrs {
  flags: number;
  xcrs: Xcr[];
}

/** struct kvm_msr_entry */
export interface MsrEntry {
  index: number;
  data: bigint;
}

/** struct kvm_lapic_state: the local APIC's 1 KiB register page. */
export interface Lapic {
  regs: Uint8Array;
}

/** struct kvm_vcpu_events */
export interface VcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  /** KVM_VCPUEVENT_VALID_*: which optional parts the struct carries */
  flags: number;
  smi: { smm: number; pending: number; smmInsideNmi: number; latchedInit: number };
  tripleFault: { pending: number };
  exceptionHasPayload: number;
  exceptionPayload: bigint;
}

/** struct kvm_debugregs */
export interface Debugregs {
  /** DR0..DR3 */
  db: bigint[];
  dr6: bigint;
  dr7: bigint;
  flags: bigint;
}

/** struct kvm_cpuid_entry2 */
export interface CpuidEntry {
  function: number;
  index: number;
  /** KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1) and friends */
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** struct kvm_pic_state (one 8259A). */
export interface PicState {
  lastIrr: number; irr: number; imr: number; isr: number; priorityAdd: number; irqBase: number;
  readRegSelect: number; poll: number; specialMask: number; initState: number; autoEoi: number;
  rotateOnAutoEoi: number; specialFullyNestedMode: number; init4: number; elcr: number; elcrMask: number;
}

/** struct kvm_ioapic_state */
export interface IoapicState {
  baseAddress: number;
  ioregsel: number;
  id: number;
  irr: number;
  /** the 24 redirection table entries, raw (union kvm_ioapic_state.redirtbl[].bits) */
  redirtbl: bigint[];
}

/** struct kvm_pit_channel_state */
export interface PitChannelState {
  count: number; latchedCount: number; countLatched: number; statusLatched: number; status: number;
  readState: number; writeState: number; writeLatch: number; rwMode: number; mode: number; bcd: number; gate: number;
  /** host monotonic ns of the last count load (KVM_SET_PIT2 reloads the count from now) */
  countLoadTime: bigint;
}

/** struct kvm_pit_state2 */
export interface PitState2 {
  channels: PitChannelState[];
  /** KVM_PIT_FLAGS_HPET_LEGACY (1), KVM_PIT_FLAGS_SPEAKER_DATA_ON (2) */
  flags: number;
}

/** struct kvm_clock_data */
export interface ClockData {
  /** kvmclock, ns */
  clock: bigint;
  /** KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC: which of the rest is valid */
  flags: number;
  /** CLOCK_REALTIME ns when `clock` was read; KVM_SET_CLOCK with KVM_CLOCK_REALTIME adds the time since */
  realtime: bigint;
  hostTsc: bigint;
}

// ---- helpers --------------------------------------------------------------------------------

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A copy of bytes [offset, offset + length). */
function slice(bytes: Uint8Array, offset: number, length: number): Uint8Array {
  return bytes.slice(offset, offset + length);
}

/** A Uint8Array of exactly `length` bytes, else TypeError / RangeError naming it. */
export function checkBytes(name: string, value: unknown, length: number): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array, got ${describe(value)}`);
  if (value.length !== length) throw new RangeError(`${name} must be ${length} bytes, got ${value.length}`);
  return value;
}

function checkArray(name: string, value: unknown, min: number, max: number): unknown[] {
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array, got ${describe(value)}`);
  if (value.length < min || value.length > max) {
    throw new RangeError(min === max ? `${name} must have ${min} entries, got ${value.length}` : `${name} must have ${min}..${max} entries, got ${value.length}`);
  }
  return value;
}

const U8 = 0xff;
const U16 = 0xffff;
const U32 = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;

// The checks run on every encode (a checkpoint's setState() encodes ~10 structs), so the
// common case is tested inline and the checker, with its message and the field's name built
// from `name`, runs only for a value that fails.
type Name = string | (() => string);
const nameOf = (name: Name): string => (typeof name === 'string' ? name : name());

function uint(name: Name, value: unknown, max: number): number {
  if (typeof value === 'number' && value >= 0 && value <= max && Number.isInteger(value)) return value;
  return checkUint(nameOf(name), value, max);
}

function u64(name: Name, value: unknown): bigint {
  if (typeof value === 'bigint' && value >= 0n && value <= U64_MAX) return value;
  return checkU64(nameOf(name), value);
}

function obj(name: Name, value: unknown): Record<string, unknown> {
  if (typeof value === 'object' && value !== null) return value as Record<string, unknown>;
  return checkObject(nameOf(name), value);
}

/** A struct's small fields: [name, byte offset, width in bytes]. */
type Fields = ReadonlyArray<readonly [string, number, 1 | 2 | 4]>;

function readFields(v: DataView, base: number, fields: Fields): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, at, width] of fields) {
    out[name] = width === 1 ? v.getUint8(base + at) : width === 2 ? v.getUint16(base + at, true) : v.getUint32(base + at, true);
  }
  return out;
}

function writeFields(v: DataView, base: number, fields: Fields, o: Record<string, unknown>, path: Name): void {
  for (const [name, at, width] of fields) {
    const x = uint(() => `${nameOf(path)}.${name}`, o[name], width === 1 ? U8 : width === 2 ? U16 : U32);
    if (width === 1) v.setUint8(base + at, x);
    else if (width === 2) v.setUint16(base + at, x, true);
    else v.setUint32(base + at, x, true);
  }
}

// ---- kvm_regs, kvm_sregs ----------------------------------------------------------------------

const REG_ORDER = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

export function encodeRegs(regs: Regs, out = new Uint8Array(REGS_SIZE)): Uint8Array {
  const o = checkObject('regs', regs);
  const v = view(out);
  REG_ORDER.forEach((name, i) => v.setBigUint64(i * 8, u64(() => `regs.${name}`, o[name]), true));
  return out;
}

export function decodeRegs(bytes: Uint8Array): Regs {
  const v = view(checkBytes('struct kvm_regs', bytes, REGS_SIZE));
  const regs = {} as Regs;
  REG_ORDER.forEach((name, i) => (regs[name] = v.getBigUint64(i * 8, true)));
  return regs;
}

const SEGMENT_ORDER = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SEGMENT_FIELDS: Fields = [
  ['limit', 8, 4], ['selector', 12, 2], ['type', 14, 1], ['present', 15, 1], ['dpl', 16, 1], ['db', 17, 1],
  ['s', 18, 1], ['l', 19, 1], ['g', 20, 1], ['avl', 21, 1], ['unusable', 22, 1],
];
const SREGS_GDT = 192;
const SREGS_IDT = 208;
const SREGS_CRS = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const SREGS_CR0 = 224;
const SREGS_BITMAP = 280;

export function encodeSregs(sregs: Sregs, out = new Uint8Array(SREGS_SIZE)): Uint8Array {
  const o = checkObject('sregs', sregs);
  const v = view(out);
  SEGMENT_ORDER.forEach((name, i) => {
    const seg = obj(() => `sregs.${name}`, o[name]);
    v.setBigUint64(i * 24, u64(() => `sregs.${name}.base`, seg.base), true);
    writeFields(v, i * 24, SEGMENT_FIELDS, seg, () => `sregs.${name}`);
  });
  for (const [name, at] of [['gdt', SREGS_GDT], ['idt', SREGS_IDT]] as const) {
    const t = obj(() => `sregs.${name}`, o[name]);
    v.setBigUint64(at, u64(() => `sregs.${name}.base`, t.base), true);
    v.setUint16(at + 8, uint(() => `sregs.${name}.limit`, t.limit, U16), true);
  }
  SREGS_CRS.forEach((name, i) => v.setBigUint64(SREGS_CR0 + i * 8, u64(() => `sregs.${name}`, o[name]), true));
  const bitmap = checkArray('sregs.interruptBitmap', o.interruptBitmap, 4, 4);
  bitmap.forEach((w, i) => v.setBigUint64(SREGS_BITMAP + i * 8, u64(() => `sregs.interruptBitmap[${i}]`, w), true));
  return out;
}

export function decodeSregs(bytes: Uint8Array): Sregs {
  const v = view(checkBytes('struct kvm_sregs', bytes, SREGS_SIZE));
  const out = {} as Sregs;
  SEGMENT_ORDER.forEach((name, i) => {
    const at = i * 24;
    out[name] = {
      base: v.getBigUint64(at, true), limit: v.getUint32(at + 8, true), selector: v.getUint16(at + 12, true), type: v.getUint8(at + 14),
      present: v.getUint8(at + 15), dpl: v.getUint8(at + 16), db: v.getUint8(at + 17), s: v.getUint8(at + 18), l: v.getUint8(at + 19),
      g: v.getUint8(at + 20), avl: v.getUint8(at + 21), unusable: v.getUint8(at + 22),
    };
  });
  const dtable = (at: number): DTable => ({ base: v.getBigUint64(at, true), limit: v.getUint16(at + 8, true) });
  out.gdt = dtable(SREGS_GDT);
  out.idt = dtable(SREGS_IDT);
  SREGS_CRS.forEach((name, i) => (out[name] = v.getBigUint64(SREGS_CR0 + i * 8, true)));
  out.interruptBitmap = [0, 1, 2, 3].map((i) => v.getBigUint64(SREGS_BITMAP + i * 8, true));
  return out;
}

// ---- kvm_fpu --------------------------------------------------------------------------------

const FPU_FIELDS: Fields = [['fcw', 128, 2], ['fsw', 130, 2], ['ftwx', 132, 1], ['lastOpcode', 134, 2], ['mxcsr', 408, 4]];

export function encodeFpu(fpu: Fpu, out = new Uint8Array(FPU_SIZE)): Uint8Array {
  const o = checkObject('fpu', fpu);
  const v = view(out);
  out.set(checkBytes('fpu.fpr', o.fpr, 128), 0);
  writeFields(v, 0, FPU_FIELDS, o, 'fpu');
  v.setBigUint64(136, checkU64('fpu.lastIp', o.lastIp), true);
  v.setBigUint64(144, checkU64('fpu.lastDp', o.lastDp), true);
  out.set(checkBytes('fpu.xmm', o.xmm, 256), 152);
  return out;
}

export function decodeFpu(bytes: Uint8Array): Fpu {
  const v = view(checkBytes('struct kvm_fpu', bytes, FPU_SIZE));
  const f = readFields(v, 0, FPU_FIELDS);
  return {
    fpr: slice(bytes, 0, 128), fcw: f.fcw, fsw: f.fsw, ftwx: f.ftwx, lastOpcode: f.lastOpcode,
    lastIp: v.getBigUint64(136, true), lastDp: v.getBigUint64(144, true), xmm: slice(bytes, 152, 256), mxcsr: f.mxcsr,
  };
}

// ---- kvm_xsave ------------------------------------------------------------------------------

export function encodeXsave(xsave: Xsave, size: number): Uint8Array {
  const o = checkObject('xsave', xsave);
  return checkBytes('xsave.region', o.region, size).slice();
}

export function decodeXsave(bytes: Uint8Array): Xsave {
  return { region: bytes.slice() };
}

// ---- kvm_xcrs -------------------------------------------------------------------------------

export function encodeXcrs(xcrs: Xcrs, out = new Uint8Array(XCRS_SIZE)): Uint8Array {
  const o = checkObject('xcrs', xcrs);
  const v = view(out);
  const list = checkArray('xcrs.xcrs', o.xcrs, 0, MAX_XCRS);
  v.setUint32(0, list.length, true);
  v.setUint32(4, checkUint('xcrs.flags', o.flags, U32), true);
  list.forEach((x, i) => {
    const e = obj(() => `xcrs.xcrs[${i}]`, x);
    v.setUint32(8 + i * 16, uint(() => `xcrs.xcrs[${i}].xcr`, e.xcr, U32), true);
    v.setBigUint64(8 + i * 16 + 8, u64(() => `xcrs.xcrs[${i}].value`, e.value), true);
  });
  return out;
}

export function decodeXcrs(bytes: Uint8Array): Xcrs {
  const v = view(checkBytes('struct kvm_xcrs', bytes, XCRS_SIZE));
  const n = Math.min(v.getUint32(0, true), MAX_XCRS);
  const xcrs: Xcr[] = [];
  for (let i = 0; i < n; i++) xcrs.push({ xcr: v.getUint32(8 + i * 16, true), value: v.getBigUint64(8 + i * 16 + 8, true) });
  return { flags: v.getUint32(4, true), xcrs };
}

// ---- kvm_msrs -------------------------------------------------------------------------------

/** struct kvm_msrs asking for `indices` (data 0), for KVM_GET_MSRS. */
export function msrsFor(indices: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(COUNTED_HEADER_SIZE + indices.length * MSR_ENTRY_SIZE);
  const v = view(out);
  v.setUint32(0, indices.length, true);
  for (let i = 0; i < indices.length; i++) v.setUint32(COUNTED_HEADER_SIZE + i * MSR_ENTRY_SIZE, indices[i], true);
  return out;
}

export function encodeMsrs(entries: MsrEntry[]): Uint8Array {
  const list = checkArray('msrs', entries, 0, MAX_IO_MSRS - 1);
  const out = new Uint8Array(COUNTED_HEADER_SIZE + list.length * MSR_ENTRY_SIZE);
  const v = view(out);
  v.setUint32(0, list.length, true);
  list.forEach((x, i) => {
    const e = obj(() => `msrs[${i}]`, x);
    const at = COUNTED_HEADER_SIZE + i * MSR_ENTRY_SIZE;
    v.setUint32(at, uint(() => `msrs[${i}].index`, e.index, U32), true);
    v.setBigUint64(at + 8, u64(() => `msrs[${i}].data`, e.data), true);
  });
  return out;
}

/** The first `count` entries of a struct kvm_msrs. */
export function decodeMsrs(bytes: Uint8Array, count = view(bytes).getUint32(0, true)): MsrEntry[] {
  const v = view(bytes);
  const out: MsrEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = COUNTED_HEADER_SIZE + i * MSR_ENTRY_SIZE;
    out.push({ index: v.getUint32(at, true), data: v.getBigUint64(at + 8, true) });
  }
  return out;
}

// ---- kvm_lapic_state ------------------------------------------------------------------------

export function encodeLapic(lapic: Lapic): Uint8Array {
  return checkBytes('lapic.regs', checkObject('lapic', lapic).regs, LAPIC_SIZE).slice();
}

export function decodeLapic(bytes: Uint8Array): Lapic {
  return { regs: checkBytes('struct kvm_lapic_state', bytes, LAPIC_SIZE).slice() };
}

// ---- kvm_vcpu_events ------------------------------------------------------------------------

const EVENT_PARTS: ReadonlyArray<readonly [keyof VcpuEvents, Fields]> = [
  ['exception', [['injected', 0, 1], ['nr', 1, 1], ['hasErrorCode', 2, 1], ['pending', 3, 1], ['errorCode', 4, 4]]],
  ['interrupt', [['injected', 8, 1], ['nr', 9, 1], ['soft', 10, 1], ['shadow', 11, 1]]],
  ['nmi', [['injected', 12, 1], ['pending', 13, 1], ['masked', 14, 1]]],
  ['smi', [['smm', 24, 1], ['pending', 25, 1], ['smmInsideNmi', 26, 1], ['latchedInit', 27, 1]]],
  ['tripleFault', [['pending', 28, 1]]],
];
const EVENT_FIELDS: Fields = [['sipiVector', 16, 4], ['flags', 20, 4], ['exceptionHasPayload', 55, 1]];

export function encodeVcpuEvents(events: VcpuEvents, out = new Uint8Array(VCPU_EVENTS_SIZE)): Uint8Array {
  const o = checkObject('vcpuEvents', events);
  const v = view(out);
  for (const [part, fields] of EVENT_PARTS) writeFields(v, 0, fields, obj(() => `vcpuEvents.${part}`, o[part]), () => `vcpuEvents.${part}`);
  writeFields(v, 0, EVENT_FIELDS, o, 'vcpuEvents');
  v.setBigUint64(56, checkU64('vcpuEvents.exceptionPayload', o.exceptionPayload), true);
  return out;
}

export function decodeVcpuEvents(bytes: Uint8Array): VcpuEvents {
  const v = view(checkBytes('struct kvm_vcpu_events', bytes, VCPU_EVENTS_SIZE));
  const out = readFields(v, 0, EVENT_FIELDS) as unknown as Record<string, unknown>;
  for (const [part, fields] of EVENT_PARTS) out[part] = readFields(v, 0, fields);
  out.exceptionPayload = v.getBigUint64(56, true);
  return out as unknown as VcpuEvents;
}

// ---- kvm_debugregs --------------------------------------------------------------------------

export function encodeDebugregs(regs: Debugregs, out = new Uint8Array(DEBUGREGS_SIZE)): Uint8Array {
  const o = checkObject('debugregs', regs);
  const v = view(out);
  checkArray('debugregs.db', o.db, 4, 4).forEach((x, i) => v.setBigUint64(i * 8, checkU64(`debugregs.db[${i}]`, x), true));
  v.setBigUint64(32, checkU64('debugregs.dr6', o.dr6), true);
  v.setBigUint64(40, checkU64('debugregs.dr7', o.dr7), true);
  v.setBigUint64(48, checkU64('debugregs.flags', o.flags), true);
  return out;
}

export function decodeDebugregs(bytes: Uint8Array): Debugregs {
  const v = view(checkBytes('struct kvm_debugregs', bytes, DEBUGREGS_SIZE));
  return {
    db: [0, 1, 2, 3].map((i) => v.getBigUint64(i * 8, true)),
    dr6: v.getBigUint64(32, true),
    dr7: v.getBigUint64(40, true),
    flags: v.getBigUint64(48, true),
  };
}

// ---- kvm_cpuid2 -----------------------------------------------------------------------------

const CPUID_FIELDS: Fields = [['function', 0, 4], ['index', 4, 4], ['flags', 8, 4], ['eax', 12, 4], ['ebx', 16, 4], ['ecx', 20, 4], ['edx', 24, 4]];

/** struct kvm_cpuid2 with room for `nent` entries (KVM_GET_CPUID2 fills them). */
export function cpuidRoom(nent: number): Uint8Array {
  const out = new Uint8Array(COUNTED_HEADER_SIZE + nent * CPUID_ENTRY_SIZE);
  view(out).setUint32(0, nent, true);
  return out;
}

export function encodeCpuid(entries: CpuidEntry[]): Uint8Array {
  const list = checkArray('cpuid', entries, 0, MAX_CPUID_ENTRIES);
  const out = cpuidRoom(list.length);
  const v = view(out);
  list.forEach((x, i) => writeFields(v, COUNTED_HEADER_SIZE + i * CPUID_ENTRY_SIZE, CPUID_FIELDS, obj(() => `cpuid[${i}]`, x), () => `cpuid[${i}]`));
  return out;
}

/** The first `count` entries of a struct kvm_cpuid2. */
export function decodeCpuid(bytes: Uint8Array, count = view(bytes).getUint32(0, true)): CpuidEntry[] {
  const v = view(bytes);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = COUNTED_HEADER_SIZE + i * CPUID_ENTRY_SIZE;
    out.push({
      function: v.getUint32(at, true), index: v.getUint32(at + 4, true), flags: v.getUint32(at + 8, true),
      eax: v.getUint32(at + 12, true), ebx: v.getUint32(at + 16, true), ecx: v.getUint32(at + 20, true), edx: v.getUint32(at + 24, true),
    });
  }
  return out;
}

// ---- kvm_irqchip ----------------------------------------------------------------------------

const PIC_FIELDS: Fields = [
  'lastIrr', 'irr', 'imr', 'isr', 'priorityAdd', 'irqBase', 'readRegSelect', 'poll', 'specialMask', 'initState',
  'autoEoi', 'rotateOnAutoEoi', 'specialFullyNestedMode', 'init4', 'elcr', 'elcrMask',
].map((name, i) => [name, 8 + i, 1] as const);
const IOAPIC_FIELDS: Fields = [['ioregsel', 16, 4], ['id', 20, 4], ['irr', 24, 4]];
/** IOAPIC_NUM_PINS */
export const IOAPIC_PINS = 24;

/** struct kvm_irqchip naming `chip`, for KVM_GET_IRQCHIP. */
export function irqchipFor(chip: IrqchipId): Uint8Array {
  const out = new Uint8Array(IRQCHIP_SIZE);
  view(out).setUint32(0, chip, true);
  return out;
}

export function encodePic(chip: IrqchipId.PicMaster | IrqchipId.PicSlave, pic: PicState, name = 'pic'): Uint8Array {
  const out = irqchipFor(chip);
  writeFields(view(out), 0, PIC_FIELDS, checkObject(name, pic), name);
  return out;
}

export function decodePic(bytes: Uint8Array): PicState {
  return readFields(view(checkBytes('struct kvm_irqchip', bytes, IRQCHIP_SIZE)), 0, PIC_FIELDS) as unknown as PicState;
}

export function encodeIoapic(ioapic: IoapicState, name = 'ioapic'): Uint8Array {
  const out = irqchipFor(IrqchipId.Ioapic);
  const o = checkObject(name, ioapic);
  const v = view(out);
  v.setBigUint64(8, BigInt(checkUint(`${name}.baseAddress`, o.baseAddress)), true);
  writeFields(v, 0, IOAPIC_FIELDS, o, name);
  checkArray(`${name}.redirtbl`, o.redirtbl, IOAPIC_PINS, IOAPIC_PINS).forEach((e, i) => v.setBigUint64(32 + i * 8, checkU64(`${name}.redirtbl[${i}]`, e), true));
  return out;
}

export function decodeIoapic(bytes: Uint8Array): IoapicState {
  const v = view(checkBytes('struct kvm_irqchip', bytes, IRQCHIP_SIZE));
  const f = readFields(v, 0, IOAPIC_FIELDS);
  const redirtbl: bigint[] = [];
  for (let i = 0; i < IOAPIC_PINS; i++) redirtbl.push(v.getBigUint64(32 + i * 8, true));
  return { baseAddress: Number(v.getBigUint64(8, true)), ioregsel: f.ioregsel, id: f.id, irr: f.irr, redirtbl };
}

// ---- kvm_pit_state2 -------------------------------------------------------------------------

const PIT_CHANNEL_SIZE = 24;
const PIT_CHANNEL_FIELDS: Fields = [
  ['count', 0, 4], ['latchedCount', 4, 2], ['countLatched', 6, 1], ['statusLatched', 7, 1], ['status', 8, 1], ['readState', 9, 1],
  ['writeState', 10, 1], ['writeLatch', 11, 1], ['rwMode', 12, 1], ['mode', 13, 1], ['bcd', 14, 1], ['gate', 15, 1],
];

export function encodePitState2(pit: PitState2, out = new Uint8Array(PIT_STATE2_SIZE)): Uint8Array {
  const o = checkObject('pit2', pit);
  const v = view(out);
  checkArray('pit2.channels', o.channels, 3, 3).forEach((c, i) => {
    const ch = checkObject(`pit2.channels[${i}]`, c);
    writeFields(v, i * PIT_CHANNEL_SIZE, PIT_CHANNEL_FIELDS, ch, `pit2.channels[${i}]`);
    const t = ch.countLoadTime;
    if (typeof t !== 'bigint') throw new TypeError(`pit2.channels[${i}].countLoadTime must be a bigint, got ${describe(t)}`);
    if (t < -(1n << 63n) || t >= 1n << 63n) throw new RangeError(`pit2.channels[${i}].countLoadTime does not fit in an s64: ${t}`);
    v.setBigInt64(i * PIT_CHANNEL_SIZE + 16, t, true);
  });
  v.setUint32(72, checkUint('pit2.flags', o.flags, U32), true);
  return out;
}

export function decodePitState2(bytes: Uint8Array): PitState2 {
  const v = view(checkBytes('struct kvm_pit_state2', bytes, PIT_STATE2_SIZE));
  const channels = [0, 1, 2].map((i) => ({
    ...readFields(v, i * PIT_CHANNEL_SIZE, PIT_CHANNEL_FIELDS),
    countLoadTime: v.getBigInt64(i * PIT_CHANNEL_SIZE + 16, true),
  }) as unknown as PitChannelState);
  return { channels, flags: v.getUint32(72, true) };
}

// ---- kvm_clock_data -------------------------------------------------------------------------

export function encodeClockData(clock: ClockData, out = new Uint8Array(CLOCK_DATA_SIZE)): Uint8Array {
  const o = checkObject('clock', clock);
  const v = view(out);
  v.setBigUint64(0, checkU64('clock.clock', o.clock), true);
  v.setUint32(8, checkUint('clock.flags', o.flags, U32), true);
  v.setBigUint64(16, checkU64('clock.realtime', o.realtime), true);
  v.setBigUint64(24, checkU64('clock.hostTsc', o.hostTsc), true);
  return out;
}

export function decodeClockData(bytes: Uint8Array): ClockData {
  const v = view(checkBytes('struct kvm_clock_data', bytes, CLOCK_DATA_SIZE));
  return { clock: v.getBigUint64(0, true), flags: v.getUint32(8, true), realtime: v.getBigUint64(16, true), hostTsc: v.getBigUint64(24, true) };
}
