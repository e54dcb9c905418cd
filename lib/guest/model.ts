// The workload models: the emulator's stand-in for the x86-64 code of lib/guest/x86.ts.
//
// The model executes that code instruction by instruction, at the same guest-physical
// addresses, on the same registers, so the two backends write the same pages in the same
// order with the same values, and stop with the same registers. Exits leave the registers as
// KVM's instruction emulator (x86_emulate_instruction()) leaves them, which is also what the
// native backend shows on this host: after an OUT (KVM_EXIT_IO) and after a store to MMIO
// the instruction has completed and rip is past it; a load from MMIO completes on the next
// KVM_RUN with the data userspace put in kvm_run.mmio. (A VMX/SVM host taking the OUT
// through the fast PIO path would instead show rip on the OUT until the next KVM_RUN.)
// A checkpoint that saves registers and memory therefore continues in a new VM, on either
// backend.
//
// The instructions are modelled exactly (64-bit arithmetic as u32 pairs, no BigInt on the
// hot path), RFLAGS' arithmetic flags included: each program keeps the last flag-setting
// instruction's kind and result and computes RFLAGS when it stops. Code bytes are checked
// against x86.ts's before each run: the model runs only the harness's code, as it sits in
// guest memory.

import { cpuInfo } from '../cpu';
import {
  COUNTER_CODE,
  COUNTER_GPA,
  COUNTER_PORT,
  EPOCH_PORT,
  RANDOM_CODE,
  RANDOM_GPA,
  SPIN_CODE,
  SPIN_GPA,
  STRIDE_CODE,
  STRIDE_GPA,
} from './x86';

const TWO_32 = 0x1_0000_0000;
const PAGE = 4096;

/** Index of a register's low u32 in ModelCpu.regs (high u32 at +1), in struct kvm_regs order. */
export enum R {
  rax = 0, rbx = 2, rcx = 4, rdx = 6, rsi = 8, rdi = 10, rsp = 12, rbp = 14,
  r8 = 16, r9 = 18, r10 = 20, r11 = 22, r12 = 24, r13 = 26, r14 = 28, r15 = 30,
  rip = 32, rflags = 34,
}

/** Names of struct kvm_regs in the order of ModelCpu.regs. */
export const REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const;

/** What a guest memory access came to (GuestBus). */
export enum Access {
  /** done; carry on */
  Ok = 0,
  /** done, and the dirty ring became soft-full: KVM_EXIT_DIRTY_RING_FULL before the next instruction */
  RingFull = 1,
  /** no RAM there (no memslot, or a store to a read-only one): KVM_EXIT_MMIO */
  Mmio = 2,
  /** the address is not mapped by the harness page tables: #PF with no IDT, a triple fault */
  Fault = 3,
  /** the memslot's host memory is gone: KVM_RUN fails with EFAULT */
  Efault = 4,
}

/** Guest-physical memory as a vCPU sees it (lib/emulator/vcpu.ts). */
export interface GuestBus {
  /** An 8-byte store of (lo, hi) at `gpa`, logged as the kernel logs a guest write. */
  write64(gpa: number, lo: number, hi: number): Access;
  /** An 8-byte load at `gpa` into readLo/readHi. */
  read64(gpa: number): Access;
  readLo: number;
  readHi: number;
  /** True if guest-physical memory at `gpa` holds exactly `code`. */
  codeMatches(gpa: number, code: Uint8Array): boolean;
}

/** Why the model stopped. */
export enum Stop {
  /** OUT: exit.port/size/value */
  Io = 1,
  /** MMIO: exit.gpa/len/isWrite/lo/hi */
  Mmio,
  RingFull,
  /** triple fault */
  Shutdown,
  /** ran `budget` loop iterations; call again */
  Budget,
  Efault,
  /** rip is not at an instruction of the harness code: emulation failure */
  Unknown,
}

/** The details of the last Io or Mmio stop (lo/hi: the bytes an MMIO store wrote). */
export interface ModelExit {
  port: number;
  size: number;
  value: number;
  gpa: number;
  len: number;
  isWrite: boolean;
  lo: number;
  hi: number;
}

/** The model's CPU: struct kvm_regs as u32 pairs, plus the kernel's pending-completion state. */
export class ModelCpu {
  readonly regs = new Uint32Array(36);
  /** rip of a load waiting for userspace's kvm_run.mmio.data (complete_emulated_mmio), or -1 */
  pendingMmioRead = -1;
  readonly exit: ModelExit = { port: 0, size: 0, value: 0, gpa: 0, len: 0, isWrite: false, lo: 0, hi: 0 };

  get(name: (typeof REG_NAMES)[number]): bigint {
    const i = REG_NAMES.indexOf(name) * 2;
    return BigInt(this.regs[i]) | (BigInt(this.regs[i + 1]) << 32n);
  }

  set(name: (typeof REG_NAMES)[number], value: bigint): void {
    const i = REG_NAMES.indexOf(name) * 2;
    this.regs[i] = Number(value & 0xffff_ffffn);
    this.regs[i + 1] = Number((value >> 32n) & 0xffff_ffffn);
  }

  /**
   * What KVM_RUN does before entering the guest: finish a load that exited to userspace for
   * MMIO (complete_emulated_mmio()) with the value in kvm_run.mmio.data, if rip still points
   * at it.
   */
  completeUserspaceIo(mmioLo: number, mmioHi: number): void {
    const r = this.regs;
    const rip = r[R.rip + 1] === 0 ? r[R.rip] : -2;
    if (this.pendingMmioRead >= 0 && rip === this.pendingMmioRead) {
      r[R.rax] = mmioLo; // mov rax, [rdi] (3 bytes) completes with the data
      r[R.rax + 1] = mmioHi;
      r[R.rip] = rip + 3;
    }
    this.pendingMmioRead = -1;
  }
}

interface Program {
  gpa: number;
  code: Uint8Array;
  run(cpu: ModelCpu, bus: GuestBus, budget: number): Stop;
}

/**
 * Runs the workload code at rip until it exits, or for at most `budget` loop iterations
 * (each a write, or a spin). Unknown code (nothing loaded, or other bytes in memory) is
 * Stop.Unknown.
 */
export function runModel(cpu: ModelCpu, bus: GuestBus, budget: number): Stop {
  const r = cpu.regs;
  if (r[R.rip + 1] !== 0) return Stop.Unknown;
  const p = programAt(r[R.rip]);
  if (p === null || !bus.codeMatches(p.gpa, p.code)) return Stop.Unknown;
  return p.run(cpu, bus, budget);
}

function programAt(rip: number): Program | null {
  for (const p of PROGRAMS) if (rip >= p.gpa && rip < p.gpa + p.code.length) return p;
  return null;
}

function addr(lo: number, hi: number): number {
  return hi * TWO_32 + lo;
}

/** The last flag-setting instruction, for RFLAGS at a stop. */
enum F {
  /** none ran: RFLAGS as it was */
  None = 0,
  /** test / xor: CF = OF = AF = 0 */
  Logic,
  /** dec: CF kept; AF, OF from the decrement */
  Dec,
  /** inc: CF kept; AF, OF from the increment */
  Inc,
  /** shl r, 12: CF = the last bit shifted out; OF = MSB ^ CF; AF as the host's CPU leaves it (SHIFT_AF) */
  Shl12,
}

const RFLAGS_ARITH = 0x8d5; // CF | PF | AF | ZF | SF | OF

/**
 * AF after a shift is undefined by the architecture, and KVM's instruction emulator executes the
 * shift on the host CPU: Intel leaves AF clear, AMD (and Hygon) set it (measured on both with
 * `shl rdx, 12`). The native backend shows the host's; so does the model.
 */
const SHIFT_AF = ['AMD', 'Hygon'].includes(cpuInfo().vendor) ? 0x10 : 0;

/** RFLAGS after an instruction of kind `k` with 64-bit result (lo, hi) and carry `cf`. */
function rflagsAfter(rflags: number, k: F, lo: number, hi: number, cf: number): number {
  let f = (rflags & ~RFLAGS_ARITH) >>> 0;
  if ((lo | hi) === 0) f |= 0x40; // ZF
  if (hi >>> 31) f |= 0x80; // SF
  if (PARITY_EVEN[lo & 0xff]) f |= 0x04; // PF: even number of ones in the low byte
  switch (k) {
    case F.Dec: { // old = result + 1
      if (((((lo + 1) >>> 0) ^ 1 ^ lo) & 0x10) !== 0) f |= 0x10;
      if (hi === 0x7fff_ffff && lo === 0xffff_ffff) f |= 0x800;
      f |= cf;
      break;
    }
    case F.Inc: { // old = result - 1
      if (((((lo - 1) >>> 0) ^ 1 ^ lo) & 0x10) !== 0) f |= 0x10;
      if (hi === 0x8000_0000 && lo === 0) f |= 0x800;
      f |= cf;
      break;
    }
    case F.Shl12:
      f |= cf | SHIFT_AF;
      if ((hi >>> 31) !== cf) f |= 0x800;
      break;
    default: // F.Logic
      break;
  }
  return f >>> 0;
}

const PARITY_EVEN = Uint8Array.from({ length: 256 }, (_, b) => {
  let ones = 0;
  for (let v = b; v !== 0; v >>= 1) ones += v & 1;
  return ones % 2 === 0 ? 1 : 0;
});

/** Maps a failed access to its stop; rip stays on the instruction (it did not complete). */
function faultStop(a: Access): Stop {
  return a === Access.Efault ? Stop.Efault : Stop.Shutdown;
}

/** STRIDE_CODE, instruction by instruction (offsets as in x86.ts). */
function runStride(cpu: ModelCpu, bus: GuestBus, budget: number): Stop {
  const r = cpu.regs;
  let off = r[R.rip] - STRIDE_GPA;
  let rdxL = r[R.rdx], rdxH = r[R.rdx + 1];
  let rcxL = r[R.rcx], rcxH = r[R.rcx + 1];
  let fk = F.None, fL = 0, fH = 0, cf = r[R.rflags] & 1;
  let stop: Stop;
  loop: for (;;) {
    switch (off) {
      case 0x00: // mov rdx, rdi
        rdxL = r[R.rdi]; rdxH = r[R.rdi + 1]; off = 0x03; break;
      case 0x03: // mov rcx, r8
        rcxL = r[R.r8]; rcxH = r[R.r8 + 1]; off = 0x06; break;
      case 0x06: // test rcx, rcx
        fk = F.Logic; fL = rcxL; fH = rcxH; cf = 0; off = 0x09; break;
      case 0x09: // jz epoch_end
        off = (rcxL | rcxH) === 0 ? 0x16 : 0x0b; break;
      case 0x0b: { // next: whole iterations, 0x0b .. 0x14, in one straight block
        const vL = r[R.rbx], vH = r[R.rbx + 1];
        const sL = r[R.rsi], sH = r[R.rsi + 1];
        for (;;) {
          // mov [rdx], rbx
          const a = bus.write64(addr(rdxL, rdxH), vL, vH);
          if (a !== Access.Ok) {
            if (a >= Access.Fault) { stop = faultStop(a); break loop; }
            off = 0x0e;
            if (a === Access.RingFull) { stop = Stop.RingFull; break loop; }
            mmioWrite(cpu, addr(rdxL, rdxH), vL, vH); stop = Stop.Mmio; break loop;
          }
          // add rdx, rsi (only its carry outlives the dec that follows)
          const lo = rdxL + sL;
          const hi = rdxH + sH + (lo >= TWO_32 ? 1 : 0);
          rdxL = lo >>> 0;
          rdxH = hi >>> 0;
          cf = hi >= TWO_32 ? 1 : 0;
          // dec rcx; jnz next
          if (rcxL === 0) rcxH = (rcxH - 1) >>> 0;
          rcxL = (rcxL - 1) >>> 0;
          fk = F.Dec; fL = rcxL; fH = rcxH;
          if ((rcxL | rcxH) === 0) { off = 0x16; break; }
          if (--budget <= 0) { off = 0x0b; stop = Stop.Budget; break loop; }
        }
        break;
      }
      case 0x0e: { // add rdx, rsi (no stop before the dec: only the carry is kept)
        const lo = rdxL + r[R.rsi];
        const hi = rdxH + r[R.rsi + 1] + (lo >= TWO_32 ? 1 : 0);
        rdxL = lo >>> 0;
        rdxH = hi >>> 0;
        cf = hi >= TWO_32 ? 1 : 0;
        off = 0x11; break;
      }
      case 0x11: // dec rcx
        if (rcxL === 0) rcxH = (rcxH - 1) >>> 0;
        rcxL = (rcxL - 1) >>> 0;
        fk = F.Dec; fL = rcxL; fH = rcxH;
        off = 0x14; break;
      case 0x14: // jnz next
        if ((rcxL | rcxH) !== 0) {
          off = 0x0b;
          if (--budget <= 0) { stop = Stop.Budget; break loop; }
        } else off = 0x16;
        break;
      case 0x16: // mov eax, ebx
        r[R.rax] = r[R.rbx]; r[R.rax + 1] = 0; off = 0x18; break;
      case 0x18: // out 0x10, al
        out(cpu, EPOCH_PORT, 1, r[R.rax] & 0xff);
        off = 0x1a; stop = Stop.Io; break loop;
      case 0x1a: // inc rbx
        inc(r, R.rbx); fk = F.Inc; fL = r[R.rbx]; fH = r[R.rbx + 1]; off = 0x1d; break;
      case 0x1d: // jmp top
        off = 0x00;
        if (--budget <= 0) { stop = Stop.Budget; break loop; }
        break;
      default:
        stop = Stop.Unknown; break loop;
    }
  }
  r[R.rdx] = rdxL; r[R.rdx + 1] = rdxH;
  r[R.rcx] = rcxL; r[R.rcx + 1] = rcxH;
  if (fk !== F.None) r[R.rflags] = rflagsAfter(r[R.rflags], fk, fL, fH, cf);
  r[R.rip] = STRIDE_GPA + off;
  return stop;
}

/** RANDOM_CODE, instruction by instruction (offsets as in x86.ts). */
function runRandom(cpu: ModelCpu, bus: GuestBus, budget: number): Stop {
  const r = cpu.regs;
  let off = r[R.rip] - RANDOM_GPA;
  let raxL = r[R.rax], raxH = r[R.rax + 1];
  let rdxL = r[R.rdx], rdxH = r[R.rdx + 1];
  let rcxL = r[R.rcx], rcxH = r[R.rcx + 1];
  let xL = r[R.r9], xH = r[R.r9 + 1];
  let fk = F.None, fL = 0, fH = 0, cf = r[R.rflags] & 1;
  let stop: Stop;
  loop: for (;;) {
    switch (off) {
      case 0x00: // mov rcx, r8
        rcxL = r[R.r8]; rcxH = r[R.r8 + 1]; off = 0x03; break;
      case 0x03: // test rcx, rcx
        fk = F.Logic; fL = rcxL; fH = rcxH; cf = 0; off = 0x06; break;
      case 0x06: // jz epoch_end
        off = (rcxL | rcxH) === 0 ? 0x3b : 0x08; break;
      case 0x08: { // next: whole iterations, 0x08 .. 0x39, in one straight block
        const dL = r[R.r10];
        if (r[R.r10 + 1] !== 0 || dL === 0 || dL > 0x20_0000) {
          raxL = xL; raxH = xH; off = 0x0b; break; // mov rax, r9; then one instruction at a time
        }
        const rdiL = r[R.rdi], rdiH = r[R.rdi + 1];
        const vL = r[R.rbx], vH = r[R.rbx + 1];
        for (;;) {
          // x ^= x << 13; x ^= x >> 7; x ^= x << 17 (rax holds each shifted value)
          let h = (xH ^ ((xH << 13) | (xL >>> 19))) >>> 0;
          let l = (xL ^ (xL << 13)) >>> 0;
          l = (l ^ ((l >>> 7) | (h << 25))) >>> 0;
          h = (h ^ (h >>> 7)) >>> 0;
          raxH = ((h << 17) | (l >>> 15)) >>> 0;
          raxL = (l << 17) >>> 0;
          xH = (h ^ raxH) >>> 0;
          xL = (l ^ raxL) >>> 0;
          // div r10 with rdx = 0, split so every intermediate stays below 2^53
          const qH = Math.floor(xH / dL);
          const t = (xH - qH * dL) * TWO_32 + xL;
          const qL = Math.floor(t / dL);
          const rem = t - qL * dL;
          raxL = qL; raxH = qH;
          // shl rdx, 12 (rem < 2^21, so rem << 12 < 2^33 and no set bit is shifted out)
          const sh = rem * PAGE;
          rdxL = sh >>> 0; rdxH = Math.floor(sh / TWO_32);
          fk = F.Shl12; fL = rdxL; fH = rdxH; cf = 0;
          // mov [rdi + rdx], rbx
          const lo = rdiL + rdxL;
          const gpa = addr(lo >>> 0, (rdiH + rdxH + (lo >= TWO_32 ? 1 : 0)) >>> 0);
          const a = bus.write64(gpa, vL, vH);
          if (a >= Access.Fault) { off = 0x32; stop = faultStop(a); break loop; }
          if (a === Access.RingFull) { off = 0x36; stop = Stop.RingFull; break loop; }
          if (a === Access.Mmio) { off = 0x36; mmioWrite(cpu, gpa, vL, vH); stop = Stop.Mmio; break loop; }
          // dec rcx; jnz next
          if (rcxL === 0) rcxH = (rcxH - 1) >>> 0;
          rcxL = (rcxL - 1) >>> 0;
          fk = F.Dec; fL = rcxL; fH = rcxH;
          if ((rcxL | rcxH) === 0) { off = 0x3b; break; }
          if (--budget <= 0) { off = 0x08; stop = Stop.Budget; break loop; }
        }
        break;
      }
      case 0x0b: // shl rax, 13
        raxH = ((raxH << 13) | (raxL >>> 19)) >>> 0; raxL = (raxL << 13) >>> 0; off = 0x0f; break;
      case 0x0f: // xor r9, rax (the shifts' own flags are overwritten here before any stop)
        xL = (xL ^ raxL) >>> 0; xH = (xH ^ raxH) >>> 0; fk = F.Logic; fL = xL; fH = xH; cf = 0; off = 0x12; break;
      case 0x12: // mov rax, r9
        raxL = xL; raxH = xH; off = 0x15; break;
      case 0x15: // shr rax, 7
        raxL = ((raxL >>> 7) | (raxH << 25)) >>> 0; raxH = raxH >>> 7; off = 0x19; break;
      case 0x19: // xor r9, rax
        xL = (xL ^ raxL) >>> 0; xH = (xH ^ raxH) >>> 0; fk = F.Logic; fL = xL; fH = xH; cf = 0; off = 0x1c; break;
      case 0x1c: // mov rax, r9
        raxL = xL; raxH = xH; off = 0x1f; break;
      case 0x1f: // shl rax, 17
        raxH = ((raxH << 17) | (raxL >>> 15)) >>> 0; raxL = (raxL << 17) >>> 0; off = 0x23; break;
      case 0x23: // xor r9, rax
        xL = (xL ^ raxL) >>> 0; xH = (xH ^ raxH) >>> 0; fk = F.Logic; fL = xL; fH = xH; cf = 0; off = 0x26; break;
      case 0x26: // mov rax, r9
        raxL = xL; raxH = xH; off = 0x29; break;
      case 0x29: // xor edx, edx
        rdxL = 0; rdxH = 0; fk = F.Logic; fL = 0; fH = 0; cf = 0; off = 0x2b; break;
      case 0x2b: { // div r10: rdx:rax / r10 -> rax quotient, rdx remainder
        const dL = r[R.r10], dH = r[R.r10 + 1];
        if ((dL | dH) === 0) { stop = Stop.Shutdown; break loop; } // #DE, no IDT: triple fault
        if (dH === 0 && dL <= 0x20_0000 && rdxL === 0 && rdxH === 0) {
          // hi * 2^32 + lo split so every intermediate stays below 2^53
          const qH = Math.floor(raxH / dL);
          const t = (raxH - qH * dL) * TWO_32 + raxL;
          const qL = Math.floor(t / dL);
          rdxL = t - qL * dL; rdxH = 0;
          raxL = qL; raxH = qH;
        } else {
          const n = (BigInt(rdxH) << 96n) | (BigInt(rdxL) << 64n) | (BigInt(raxH) << 32n) | BigInt(raxL);
          const d = (BigInt(dH) << 32n) | BigInt(dL);
          const q = n / d;
          if (q >> 64n !== 0n) { stop = Stop.Shutdown; break loop; } // quotient overflow: #DE
          const m = n % d;
          raxL = Number(q & 0xffff_ffffn); raxH = Number(q >> 32n);
          rdxL = Number(m & 0xffff_ffffn); rdxH = Number(m >> 32n);
        }
        off = 0x2e; break;
      }
      case 0x2e: // shl rdx, 12 (div leaves the flags undefined; shl defines the ones kept)
        cf = (rdxH >>> 20) & 1;
        rdxH = ((rdxH << 12) | (rdxL >>> 20)) >>> 0; rdxL = (rdxL << 12) >>> 0;
        fk = F.Shl12; fL = rdxL; fH = rdxH; off = 0x32; break;
      case 0x32: { // mov [rdi + rdx], rbx
        const lo = r[R.rdi] + rdxL;
        const gpa = addr(lo >>> 0, (r[R.rdi + 1] + rdxH + (lo >= TWO_32 ? 1 : 0)) >>> 0);
        const a = bus.write64(gpa, r[R.rbx], r[R.rbx + 1]);
        if (a >= Access.Fault) { stop = faultStop(a); break loop; }
        off = 0x36;
        if (a === Access.RingFull) { stop = Stop.RingFull; break loop; }
        if (a === Access.Mmio) { mmioWrite(cpu, gpa, r[R.rbx], r[R.rbx + 1]); stop = Stop.Mmio; break loop; }
        break;
      }
      case 0x36: // dec rcx
        if (rcxL === 0) rcxH = (rcxH - 1) >>> 0;
        rcxL = (rcxL - 1) >>> 0;
        fk = F.Dec; fL = rcxL; fH = rcxH;
        off = 0x39; break;
      case 0x39: // jnz next
        if ((rcxL | rcxH) !== 0) {
          off = 0x08;
          if (--budget <= 0) { stop = Stop.Budget; break loop; }
        } else off = 0x3b;
        break;
      case 0x3b: // mov eax, ebx
        raxL = r[R.rbx]; raxH = 0; off = 0x3d; break;
      case 0x3d: // out 0x10, al
        out(cpu, EPOCH_PORT, 1, raxL & 0xff);
        off = 0x3f; stop = Stop.Io; break loop;
      case 0x3f: // inc rbx
        inc(r, R.rbx); fk = F.Inc; fL = r[R.rbx]; fH = r[R.rbx + 1]; off = 0x42; break;
      case 0x42: // jmp top
        off = 0x00;
        if (--budget <= 0) { stop = Stop.Budget; break loop; }
        break;
      default:
        stop = Stop.Unknown; break loop;
    }
  }
  r[R.rax] = raxL; r[R.rax + 1] = raxH;
  r[R.rdx] = rdxL; r[R.rdx + 1] = rdxH;
  r[R.rcx] = rcxL; r[R.rcx + 1] = rcxH;
  r[R.r9] = xL; r[R.r9 + 1] = xH;
  if (fk !== F.None) r[R.rflags] = rflagsAfter(r[R.rflags], fk, fL, fH, cf);
  r[R.rip] = RANDOM_GPA + off;
  return stop;
}

/** COUNTER_CODE, instruction by instruction (offsets as in x86.ts). */
function runCounter(cpu: ModelCpu, bus: GuestBus, budget: number): Stop {
  const r = cpu.regs;
  let off = r[R.rip] - COUNTER_GPA;
  let fk = F.None;
  let stop: Stop;
  loop: for (;;) {
    switch (off) {
      case 0x00: { // mov rax, [rdi]
        const gpa = addr(r[R.rdi], r[R.rdi + 1]);
        const a = bus.read64(gpa);
        if (a >= Access.Fault) { stop = faultStop(a); break loop; }
        if (a === Access.Mmio) {
          // KVM_EXIT_MMIO read: rip stays; the next KVM_RUN completes the load with kvm_run.mmio.data
          const e = cpu.exit;
          e.gpa = gpa; e.len = 8; e.isWrite = false;
          cpu.pendingMmioRead = COUNTER_GPA;
          stop = Stop.Mmio; break loop;
        }
        r[R.rax] = bus.readLo; r[R.rax + 1] = bus.readHi;
        off = 0x03; break;
      }
      case 0x03: // inc rax
        inc(r, R.rax); fk = F.Inc; off = 0x06; break;
      case 0x06: { // mov [rdi], rax
        const gpa = addr(r[R.rdi], r[R.rdi + 1]);
        const a = bus.write64(gpa, r[R.rax], r[R.rax + 1]);
        if (a >= Access.Fault) { stop = faultStop(a); break loop; }
        off = 0x09;
        if (a === Access.RingFull) { stop = Stop.RingFull; break loop; }
        if (a === Access.Mmio) { mmioWrite(cpu, gpa, r[R.rax], r[R.rax + 1]); stop = Stop.Mmio; break loop; }
        break;
      }
      case 0x09: // out 0x11, eax
        out(cpu, COUNTER_PORT, 4, r[R.rax]);
        off = 0x0b; stop = Stop.Io; break loop;
      case 0x0b: // jmp top
        off = 0x00;
        if (--budget <= 0) { stop = Stop.Budget; break loop; }
        break;
      default:
        stop = Stop.Unknown; break loop;
    }
  }
  if (fk !== F.None) r[R.rflags] = rflagsAfter(r[R.rflags], fk, r[R.rax], r[R.rax + 1], r[R.rflags] & 1);
  r[R.rip] = COUNTER_GPA + off;
  return stop;
}

/** SPIN_CODE: pause; jmp top, until the budget runs out (the caller checks for a kick). */
function runSpin(cpu: ModelCpu, _bus: GuestBus, _budget: number): Stop {
  const r = cpu.regs;
  const off = r[R.rip] - SPIN_GPA;
  if (off !== 0x00 && off !== 0x02) return Stop.Unknown;
  // The iterations change nothing but rip, which every whole one brings back to the pause.
  r[R.rip] = SPIN_GPA;
  return Stop.Budget;
}

/** OUT: the data goes to userspace; the instruction itself is complete (rip moves past it). */
function out(cpu: ModelCpu, port: number, size: number, value: number): void {
  const e = cpu.exit;
  e.port = port; e.size = size; e.value = value >>> 0;
}

function mmioWrite(cpu: ModelCpu, gpa: number, lo: number, hi: number): void {
  const e = cpu.exit;
  e.gpa = gpa; e.len = 8; e.isWrite = true; e.lo = lo; e.hi = hi;
}

function inc(r: Uint32Array, i: number): void {
  r[i] = (r[i] + 1) >>> 0;
  if (r[i] === 0) r[i + 1] = (r[i + 1] + 1) >>> 0;
}

const PROGRAMS: readonly Program[] = [
  { gpa: STRIDE_GPA, code: STRIDE_CODE, run: runStride },
  { gpa: RANDOM_GPA, code: RANDOM_CODE, run: runRandom },
  { gpa: COUNTER_GPA, code: COUNTER_CODE, run: runCounter },
  { gpa: SPIN_GPA, code: SPIN_CODE, run: runSpin },
];

/**
 * One xorshift64 step on a u32 pair (x ^= x << 13; x ^= x >> 7; x ^= x << 17, mod 2^64),
 * written into out[0] (low) and out[1] (high): the random workload's sequence without BigInt.
 */
export function xorshift64Pair(lo: number, hi: number, out: Uint32Array): void {
  let h = (hi ^ ((hi << 13) | (lo >>> 19))) >>> 0;
  let l = (lo ^ (lo << 13)) >>> 0;
  l = (l ^ ((l >>> 7) | (h << 25))) >>> 0;
  h = (h ^ (h >>> 7)) >>> 0;
  h = (h ^ ((h << 17) | (l >>> 15))) >>> 0;
  l = (l ^ (l << 17)) >>> 0;
  out[0] = l;
  out[1] = h;
}
