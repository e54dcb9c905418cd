// Loads the native addon (native/*.cc) and declares its raw shape. Only lib/native/backend.ts
// uses it; everything else goes through the backend interface (lib/backend.ts).
//
// The addon is looked for where the two builds put it: node-gyp (build/Release, build/Debug)
// and cmake-js (build-cmake/Release). Every path tried and the last error are kept, so
// openKvm({ backend: 'auto' }) can say why it fell back to the emulator.
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { KvmError } from '../errors';

/** The /dev/kvm fd. `new System(path)` opens the device (O_RDWR | O_CLOEXEC). */
export interface NativeSystem {
  getApiVersion(): number;
  checkExtension(cap: number): number;
  getVcpuMmapSize(): number;
  createVm(type: number): NativeVm;
  getSupportedCpuid(): Uint8Array;
  getMsrIndexList(): Uint32Array;
  close(): void;
}

/** Guest RAM: anonymous shared memory (a memfd) mapped shared; its buffers are detached once closed. */
export interface NativeMemory {
  /** The whole mapping; RangeError when it is larger than buffer.constants.MAX_LENGTH (4 GiB on Node 20). */
  readonly buffer: ArrayBuffer;
  readonly size: number;
  /** A Uint8Array over [offset, offset + length) (its own ArrayBuffer), for memories larger than one ArrayBuffer may be. */
  view(offset: number, length: number): Uint8Array;
  /** [start, end, ...] byte ranges the memfd holds pages for (SEEK_DATA/SEEK_HOLE); EBADF once closed. */
  dataRanges(): Float64Array;
  close(): void;
}

/** A VM fd. Arguments are already checked by the public layer; the addon checks what could fault. */
export interface NativeVm {
  checkExtension(cap: number): number;
  enableCap(cap: number, args: readonly bigint[], flags: number): number;
  createMemory(size: number): NativeMemory;
  setUserMemoryRegion(slot: number, flags: number, guestPhysAddr: number, memorySize: number, memory: NativeMemory | null, memoryOffset: number): void;
  /** ringBytes: the size KVM_ENABLE_CAP(DIRTY_LOG_RING*) took, 0 without a ring. */
  createVcpu(id: number, ringBytes: number): NativeVcpu;
  getDirtyLog(slot: number, bitmap: Uint8Array): void;
  clearDirtyLog(slot: number, firstPage: number, numPages: number, bitmap: Uint8Array): void;
  resetDirtyRings(): number;
  harvestRings(vcpus: NativeVcpu[], fetch: Float64Array, slots: Uint32Array, offsets: Float64Array, start: number, counts: Uint32Array): number;
  setDeviceAttr(group: number, attr: number, value?: bigint): void;
  getDeviceAttr(group: number, attr: number): bigint;
  hasDeviceAttr(group: number, attr: number): boolean;
  getCmmaBits(startGfn: number, count: number, flags: number, values: Uint8Array): { startGfn: number; count: number; flags: number; remaining: number };
  setCmmaBits(startGfn: number, count: number, flags: number, mask: bigint, values: Uint8Array): void;
  createIrqchip(): void;
  createPit2(flags: number): void;
  setTssAddr(addr: number): void;
  setIdentityMapAddr(addr: number): void;
  irqLine(irq: number, level: number): void;
  getIrqchip(chip: Uint8Array): void;
  setIrqchip(chip: Uint8Array): void;
  getPit2(pit: Uint8Array): void;
  setPit2(pit: Uint8Array): void;
  getClock(clock: Uint8Array): void;
  setClock(clock: Uint8Array): void;
  close(): void;
}

/** A vCPU fd with kvm_run and (with the ring on) its dirty ring mapped. */
export interface NativeVcpu {
  readonly id: number;
  readonly runBuffer: ArrayBuffer;
  readonly ringBuffer: ArrayBuffer | null;
  /** KVM_RUN; returns the exit reason, the exit itself is in exitState (decodeExit()). */
  run(): number;
  /** KVM_RUN on the vCPU's thread; resolves with the exit encoded as exitState is. */
  runAsync(): Promise<Float64Array>;
  /** Spins up to `ns` until the pending runAsync()'s result is posted; whether it is. */
  spinForExit(ns: number): boolean;
  /** How long (ns) the vCPU thread watches for the next runAsync() after an exit; returns the previous. */
  setRunWatch(ns: number): number;
  /** The last run()'s exit, encoded (layout.exitFields). */
  readonly exitState: Float64Array;
  kick(): void;
  /** struct kvm_regs (144 bytes) in or out */
  getRegs(regs: Uint8Array): void;
  setRegs(regs: Uint8Array): void;
  /** struct kvm_sregs (312 bytes) in or out */
  getSregs(sregs: Uint8Array): void;
  setSregs(sregs: Uint8Array): void;
  harvestRing(fetch: number, max: number, slots: Uint32Array, offsets: Float64Array, start: number): number;
  readonly xsaveSize: number;
  getFpu(fpu: Uint8Array): void;
  setFpu(fpu: Uint8Array): void;
  getXsave(xsave: Uint8Array): void;
  setXsave(xsave: Uint8Array): void;
  getXcrs(xcrs: Uint8Array): void;
  setXcrs(xcrs: Uint8Array): void;
  getMsrs(msrs: Uint8Array): number;
  setMsrs(msrs: Uint8Array): number;
  getLapic(lapic: Uint8Array): void;
  setLapic(lapic: Uint8Array): void;
  getVcpuEvents(events: Uint8Array): void;
  setVcpuEvents(events: Uint8Array): void;
  getDebugregs(regs: Uint8Array): void;
  setDebugregs(regs: Uint8Array): void;
  getMpState(): number;
  setMpState(state: number): void;
  getCpuid2(cpuid: Uint8Array): number;
  setCpuid2(cpuid: Uint8Array): void;
  close(): void;
}

/** Struct layouts and constants as the addon was compiled (tests compare them with lib/constants.ts). */
export interface NativeLayout {
  pageSize: number;
  dirtyGfnSize: number;
  dirtyGfnSlotOffset: number;
  dirtyGfnOffsetOffset: number;
  dirtyLogPageOffset: number;
  kvmRunImmediateExitOffset: number;
  kvmRunExitReasonOffset: number;
  cmmaLogSize: number;
  /** the real-time signal that interrupts a KVM_RUN on a vCPU thread */
  kickSignal: number;
  /** indexes of an exit's fields in NativeVcpu.exitState (native/vcpu.h ExitField) */
  exitFields: NativeExitFields;
  /** x86: sizes and offsets of the state structs as compiled (lib/kvm-structs.ts uses the same) */
  stateStructs?: Record<string, number>;
}

export interface NativeExitFields {
  reason: number; ioDirection: number; ioSize: number; ioPort: number; ioCount: number; ioValue: number;
  mmioPhysAddr: number; mmioLen: number; mmioIsWrite: number; mmioData: number;
  hasDetail: number; detailHigh: number; detailLow: number;
}

export interface NativeAddon {
  System: new (device: string) => NativeSystem;
  init(options: { KvmError: typeof KvmError; maxBufferLength: number }): void;
  layout: NativeLayout;
}

/** The package root: the nearest directory above this file with kvm-dirty's package.json (lib/native or dist/lib/native). */
function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      if (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).name === 'kvm-dirty') return dir;
    } catch {
      // no package.json here: keep walking up
    }
    if (path.dirname(dir) === dir) return path.resolve(__dirname, '..', '..');
  }
}

/** Where the addon may be, in the order tried. */
export function candidatePaths(root = packageRoot()): string[] {
  // KVM_DIRTY_ADDON names one addon file to load instead (a sanitizer or cmake-js build).
  if (process.env.KVM_DIRTY_ADDON) return [path.resolve(process.env.KVM_DIRTY_ADDON)];
  return [
    path.join(root, 'build', 'Release', 'kvm_dirty.node'),
    path.join(root, 'build-cmake', 'Release', 'kvm_dirty.node'),
    path.join(root, 'build', 'Debug', 'kvm_dirty.node'),
  ];
}

/** Why the addon did not load. */
export class NativeLoadError extends Error {
  readonly code = 'ERR_KVM_DIRTY_NATIVE_UNAVAILABLE';
  /** Every path tried, with what went wrong there. */
  readonly tried: ReadonlyArray<{ path: string; error: string }>;
  /** The last error of require(), when a file existed but did not load. */
  readonly lastError: Error | undefined;

  constructor(tried: Array<{ path: string; error: string }>, lastError: Error | undefined) {
    super(
      `kvm-dirty native addon unavailable (${tried.map((t) => `${t.path}: ${t.error}`).join('; ')}); ` +
        'build it with `npm run build:native` (node-gyp) or `npm run build:cmake`',
    );
    this.name = 'NativeLoadError';
    this.tried = tried;
    this.lastError = lastError;
  }
}

let loaded: NativeAddon | undefined;
let failure: NativeLoadError | undefined;

/** The addon, loaded once (and initialised); throws NativeLoadError if no build loads. */
export function loadBinding(): NativeAddon {
  if (loaded) return loaded;
  if (failure) throw failure;
  const tried: Array<{ path: string; error: string }> = [];
  let lastError: Error | undefined;
  for (const file of candidatePaths()) {
    if (!fs.existsSync(file)) {
      tried.push({ path: file, error: 'not built' });
      continue;
    }
    try {
      const addon = require(file) as NativeAddon;
      addon.init({ KvmError, maxBufferLength: bufferConstants.MAX_LENGTH });
      loaded = addon;
      return addon;
    } catch (e) {
      lastError = e instanceof Error ? e : new Error(String(e));
      tried.push({ path: file, error: lastError.message });
    }
  }
  failure = new NativeLoadError(tried, lastError);
  throw failure;
}
