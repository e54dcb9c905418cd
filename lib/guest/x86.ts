// The x86-64 guest harness: identity page tables, long-mode registers and the machine code
// of the four workloads (DESIGN.md §3), for the native backend's `vcpu.load()` and for the
// in-tree C reference (bench/guest-code.h is generated from the bytes below).
//
// The guest runs in 64-bit long mode set up from the host with KVM_SET_SREGS: no GDT, no
// IDT, no stack, no firmware. Every workload keeps its whole state in registers, so a
// KVM_EXIT_DIRTY_RING_FULL (or a kick) in the middle of an epoch resumes exactly where it
// stopped, and the only guest-physical bytes a workload writes are its data pages.
//
// GUEST-PHYSICAL LAYOUT of the harness, gpa [0, 2 MiB) = pages 0..511 (host-written, the
// guest never writes there; a slot covering it may or may not log dirty pages):
//
//   page      gpa                    holds
//   0         0x000000               unused (zeros)
//   1         0x001000               PML4: entry 0 -> PDPT
//   2         0x002000               PDPT: entry i -> PD i, for i < ceil(mapBytes / 1 GiB); the rest 0
//   3         0x003000               code: stride @ 0x3000, random @ 0x3080, counter @ 0x3100, spin @ 0x3180
//   4         0x004000               GDT of an image (loadImage): null, 64-bit code (0x08), data (0x10)
//   5..255    0x005000..0x0fffff     unused (zeros)
//   256..511  0x100000..0x1fffff     PD 0..255: PD i, entry j maps the 2 MiB page (i * 512 + j) << 21
//
//   workload data: pages >= 512 (gpa >= 2 MiB), identity-mapped up to 256 GiB
//
// Every paging entry has Present, Writable, Accessed (and in the PDs Page Size and Dirty)
// preset: the CPU (or KVM's shadow MMU on a host without EPT) then has no Accessed/Dirty bit
// to write back into the page tables, so no page-table page ever appears in a dirty log.
//
// Registers of a running workload (see workloadRegs):
//   rbx  epoch (u64, from 1); after an Io exit it is the epoch that just ended
//   rdi  gpa of the first data page (stride, random) or of the counter page
//   rsi  stride in bytes (stride)
//   r8   writes per epoch (stride: pages; random: pagesPerEpoch)
//   r9   xorshift64 state (random), r10 spanPages (random)
//   rcx  writes left in the current epoch; rax, rdx scratch

import type { Regs, Segment, Sregs, WorkloadSpec } from '../backend';

export const PAGE_SIZE = 4096;
/** gpa [0, 2 MiB) = pages 0..511 belong to the harness. */
export const HARNESS_SIZE = 2 * 1024 * 1024;
/** Pages the harness owns (0..511); workloads address pages from here on. */
export const HARNESS_PAGES = HARNESS_SIZE / PAGE_SIZE;

/** gpa of the PML4 (CR3). */
export const PML4_GPA = 0x1000;
/** gpa of the single PDPT (covers 512 GiB; the harness fills at most PD_COUNT entries). */
export const PDPT_GPA = 0x2000;
/** gpa of the page holding the workloads' code. */
export const CODE_GPA = 0x3000;
/** gpa of PD 0; PD i (mapping [i GiB, (i + 1) GiB)) is at PD_GPA + i * 4096. */
export const PD_GPA = 0x100000;
/** Number of PD pages: the harness maps at most PD_COUNT GiB. */
export const PD_COUNT = 256;
/** Largest mapBytes installHarness accepts: 256 GiB. */
export const MAX_MAP_BYTES = PD_COUNT * 2 ** 30;

const GIB = 2 ** 30;
const LARGE_PAGE = 2 * 1024 * 1024;

// Paging entry bits (Intel SDM vol. 3 §4.5).
const PTE_P = 1n; // present
const PTE_RW = 1n << 1n; // writable
const PTE_A = 1n << 5n; // accessed
const PTE_D = 1n << 6n; // dirty (leaf entries only)
const PTE_PS = 1n << 7n; // 2 MiB page (in a PD entry)
/** Flags of PML4 and PDPT entries: P | RW | A. */
export const TABLE_ENTRY_FLAGS = PTE_P | PTE_RW | PTE_A;
/** Flags of a PD entry mapping a 2 MiB page: P | RW | A | D | PS. */
export const LARGE_PAGE_FLAGS = PTE_P | PTE_RW | PTE_A | PTE_D | PTE_PS;

/**
 * Workload.stride:
 *   0x00  48 89 fa     top:  mov rdx, rdi        ; first page
 *   0x03  4c 89 c1           mov rcx, r8         ; pages per epoch
 *   0x06  48 85 c9           test rcx, rcx
 *   0x09  74 0b              jz epoch_end
 *   0x0b  48 89 1a     next: mov [rdx], rbx      ; the epoch number, u64
 *   0x0e  48 01 f2           add rdx, rsi        ; stride in bytes
 *   0x11  48 ff c9           dec rcx
 *   0x14  75 f5              jnz next
 *   0x16  89 d8   epoch_end: mov eax, ebx
 *   0x18  e6 10              out 0x10, al        ; KVM_EXIT_IO, 1 byte: the epoch's low byte
 *   0x1a  48 ff c3           inc rbx
 *   0x1d  eb e1              jmp top
 */
export const STRIDE_CODE: Uint8Array = Uint8Array.from([
  0x48, 0x89, 0xfa, 0x4c, 0x89, 0xc1, 0x48, 0x85, 0xc9, 0x74, 0x0b, 0x48, 0x89, 0x1a, 0x48, 0x01,
  0xf2, 0x48, 0xff, 0xc9, 0x75, 0xf5, 0x89, 0xd8, 0xe6, 0x10, 0x48, 0xff, 0xc3, 0xeb, 0xe1,
]);

/**
 * Workload.random:
 *   0x00  4c 89 c1     top:  mov rcx, r8         ; pagesPerEpoch
 *   0x03  48 85 c9           test rcx, rcx
 *   0x06  74 33              jz epoch_end
 *   0x08  4c 89 c8     next: mov rax, r9         ; x ^= x << 13
 *   0x0b  48 c1 e0 0d        shl rax, 13
 *   0x0f  49 31 c1           xor r9, rax
 *   0x12  4c 89 c8           mov rax, r9         ; x ^= x >> 7
 *   0x15  48 c1 e8 07        shr rax, 7
 *   0x19  49 31 c1           xor r9, rax
 *   0x1c  4c 89 c8           mov rax, r9         ; x ^= x << 17
 *   0x1f  48 c1 e0 11        shl rax, 17
 *   0x23  49 31 c1           xor r9, rax
 *   0x26  4c 89 c8           mov rax, r9
 *   0x29  31 d2              xor edx, edx
 *   0x2b  49 f7 f2           div r10             ; rdx = x mod spanPages (unsigned 128/64)
 *   0x2e  48 c1 e2 0c        shl rdx, 12
 *   0x32  48 89 1c 17        mov [rdi + rdx], rbx
 *   0x36  48 ff c9           dec rcx
 *   0x39  75 cd              jnz next
 *   0x3b  89 d8   epoch_end: mov eax, ebx
 *   0x3d  e6 10              out 0x10, al
 *   0x3f  48 ff c3           inc rbx
 *   0x42  eb bc              jmp top
 */
export const RANDOM_CODE: Uint8Array = Uint8Array.from([
  0x4c, 0x89, 0xc1, 0x48, 0x85, 0xc9, 0x74, 0x33, 0x4c, 0x89, 0xc8, 0x48, 0xc1, 0xe0, 0x0d, 0x49,
  0x31, 0xc1, 0x4c, 0x89, 0xc8, 0x48, 0xc1, 0xe8, 0x07, 0x49, 0x31, 0xc1, 0x4c, 0x89, 0xc8, 0x48,
  0xc1, 0xe0, 0x11, 0x49, 0x31, 0xc1, 0x4c, 0x89, 0xc8, 0x31, 0xd2, 0x49, 0xf7, 0xf2, 0x48, 0xc1,
  0xe2, 0x0c, 0x48, 0x89, 0x1c, 0x17, 0x48, 0xff, 0xc9, 0x75, 0xcd, 0x89, 0xd8, 0xe6, 0x10, 0x48,
  0xff, 0xc3, 0xeb, 0xbc,
]);

/**
 * Workload.counter:
 *   0x00  48 8b 07     top:  mov rax, [rdi]
 *   0x03  48 ff c0           inc rax
 *   0x06  48 89 07           mov [rdi], rax      ; the u64 at bytes 0-7 of the page
 *   0x09  e7 11              out 0x11, eax       ; KVM_EXIT_IO, 4 bytes: its low 32 bits
 *   0x0b  eb f3              jmp top
 */
export const COUNTER_CODE: Uint8Array = Uint8Array.from([
  0x48, 0x8b, 0x07, 0x48, 0xff, 0xc0, 0x48, 0x89, 0x07, 0xe7, 0x11, 0xeb, 0xf3,
]);

/**
 * Workload.spin (writes nothing; only a kick or a host interrupt ends a run):
 *   0x00  f3 90        top:  pause
 *   0x02  eb fc              jmp top
 */
export const SPIN_CODE: Uint8Array = Uint8Array.from([0xf3, 0x90, 0xeb, 0xfc]);

/** gpa of each workload's first instruction (128-byte slots in the code page). */
export const STRIDE_GPA = CODE_GPA;
export const RANDOM_GPA = CODE_GPA + 0x80;
export const COUNTER_GPA = CODE_GPA + 0x100;
export const SPIN_GPA = CODE_GPA + 0x180;

/** Every workload's code and where it goes, in layout order. */
export const WORKLOAD_CODE: ReadonlyArray<{ kind: WorkloadSpec['kind']; gpa: number; code: Uint8Array }> = [
  { kind: 'stride', gpa: STRIDE_GPA, code: STRIDE_CODE },
  { kind: 'random', gpa: RANDOM_GPA, code: RANDOM_CODE },
  { kind: 'counter', gpa: COUNTER_GPA, code: COUNTER_CODE },
  { kind: 'spin', gpa: SPIN_GPA, code: SPIN_CODE },
];

/** I/O port of the epoch OUT (stride, random; 1 byte). */
export const EPOCH_PORT = 0x10;
/** I/O port of the counter's OUT (4 bytes). */
export const COUNTER_PORT = 0x11;

/**
 * Writes the page tables identity-mapping gpa [0, mapBytes) (rounded up to whole GiB) with
 * 2 MiB pages, and all workload code, into `harness`, a host view of gpa [0, 2 MiB).
 * Idempotent: the same mapBytes writes the same bytes, and a larger one only adds entries
 * (present ones never change), so it can be called again after the vCPU has run; a smaller
 * one drops the PDPT entries above it. Code bytes and their addresses never change.
 */
export function installHarness(harness: Uint8Array, mapBytes: number): void {
  if (!(harness instanceof Uint8Array) || harness.byteLength < HARNESS_SIZE) {
    throw new RangeError(`harness must be a Uint8Array of at least ${HARNESS_SIZE} bytes`);
  }
  if (!Number.isSafeInteger(mapBytes) || mapBytes < HARNESS_SIZE || mapBytes > MAX_MAP_BYTES) {
    throw new RangeError(`mapBytes must be an integer in [${HARNESS_SIZE}, ${MAX_MAP_BYTES}], got ${mapBytes}`);
  }
  const view = new DataView(harness.buffer, harness.byteOffset, HARNESS_SIZE);
  const pds = Math.ceil(mapBytes / GIB);

  view.setBigUint64(PML4_GPA, BigInt(PDPT_GPA) | TABLE_ENTRY_FLAGS, true);
  for (let i = 1; i < 512; i++) view.setBigUint64(PML4_GPA + i * 8, 0n, true);

  for (let i = 0; i < 512; i++) {
    const entry = i < pds ? BigInt(PD_GPA + i * PAGE_SIZE) | TABLE_ENTRY_FLAGS : 0n;
    view.setBigUint64(PDPT_GPA + i * 8, entry, true);
  }

  for (let i = 0; i < pds; i++) {
    const pd = PD_GPA + i * PAGE_SIZE;
    for (let j = 0; j < 512; j++) {
      view.setBigUint64(pd + j * 8, BigInt((i * 512 + j) * LARGE_PAGE) | LARGE_PAGE_FLAGS, true);
    }
  }

  harness.fill(0, CODE_GPA, CODE_GPA + PAGE_SIZE);
  for (const { gpa, code } of WORKLOAD_CODE) harness.set(code, gpa);
}

/** CR0 of the harness: PE (protected mode) | ET | PG (paging). */
export const LONG_MODE_CR0 = 0x80000011n;
/** CR3 of the harness: the PML4 (no PCID, no PWT/PCD). */
export const LONG_MODE_CR3 = BigInt(PML4_GPA);
/** CR4 of the harness: PAE (long mode requires it). */
export const LONG_MODE_CR4 = 0x20n;
/** EFER of the harness: LME | LMA (long mode enabled and active). */
export const LONG_MODE_EFER = 0x500n;
/** Selectors of the flat segments (no GDT is read: KVM_SET_SREGS loads the hidden parts). */
export const CODE_SELECTOR = 0x08;
export const DATA_SELECTOR = 0x10;

function flatSegment(selector: number, code: boolean): Segment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    // code: execute/read, accessed (11); data: read/write, accessed (3)
    type: code ? 11 : 3,
    present: 1,
    dpl: 0,
    // a 64-bit code segment has L = 1 and D = 0; data segments are 32-bit (ignored in long mode)
    db: code ? 0 : 1,
    s: 1,
    l: code ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** gpa of the GDT loadImage() installs (harness page 4). */
export const GDT_GPA = 0x4000;
/** Its descriptors: null, 64-bit code (DPL 0, selector 0x08), data (selector 0x10). */
export const GDT_ENTRIES: readonly bigint[] = [0n, 0x00af_9b00_0000_ffffn, 0x00cf_9300_0000_ffffn];
/** CR0 of an image: PE | MP | ET | NE | WP | PG (MP and NE: SSE and x87 errors as a C guest expects). */
export const IMAGE_CR0 = 0x8001_0033n;
/** CR4 of an image: PAE | OSFXSR | OSXMMEXCPT (SSE instructions allowed). */
export const IMAGE_CR4 = 0x620n;
/** An image's page tables map at least 4 GiB, so the local APIC (0xfee00000) and IOAPIC (0xfec00000) are reachable. */
export const IMAGE_MIN_MAP_BYTES = 4 * GIB;

/**
 * Writes the GDT of GDT_ENTRIES at GDT_GPA into `harness` (a host view of gpa [0, 2 MiB)). The
 * harness's selectors then name real descriptors: an interrupt gate with selector 0x08 and
 * IRETQ (which reloads CS and SS from the stack) find what KVM_SET_SREGS loaded.
 */
export function installGdt(harness: Uint8Array): void {
  const view = new DataView(harness.buffer, harness.byteOffset, HARNESS_SIZE);
  harness.fill(0, GDT_GPA, GDT_GPA + PAGE_SIZE);
  GDT_ENTRIES.forEach((d, i) => view.setBigUint64(GDT_GPA + i * 8, d, true));
}

/** longModeSregs() for an image: the GDT above, SSE enabled (IMAGE_CR0, IMAGE_CR4), the IDT empty until the guest loads its own. */
export function imageSregs(sregs: Sregs): Sregs {
  return {
    ...longModeSregs(sregs),
    gdt: { base: BigInt(GDT_GPA), limit: GDT_ENTRIES.length * 8 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: IMAGE_CR0,
    cr4: IMAGE_CR4,
  };
}

/** A copy of `sregs` with CR0/CR3/CR4/EFER and flat 64-bit CS/DS/ES/FS/GS/SS set for the harness. */
export function longModeSregs(sregs: Sregs): Sregs {
  const data = flatSegment(DATA_SELECTOR, false);
  return {
    ...sregs,
    cs: flatSegment(CODE_SELECTOR, true),
    ds: { ...data },
    es: { ...data },
    fs: { ...data },
    gs: { ...data },
    ss: { ...data },
    tr: { ...sregs.tr },
    ldt: { ...sregs.ldt },
    gdt: { ...sregs.gdt },
    idt: { ...sregs.idt },
    cr0: LONG_MODE_CR0,
    cr3: LONG_MODE_CR3,
    cr4: LONG_MODE_CR4,
    efer: LONG_MODE_EFER,
    interruptBitmap: [...sregs.interruptBitmap],
  };
}

function checkPage(name: string, page: number): void {
  if (!Number.isSafeInteger(page) || page < HARNESS_PAGES || page >= MAX_MAP_BYTES / PAGE_SIZE) {
    throw new RangeError(`${name} must be a page in [${HARNESS_PAGES}, ${MAX_MAP_BYTES / PAGE_SIZE}), got ${page}`);
  }
}

function checkCount(name: string, n: number, min: number): void {
  if (!Number.isSafeInteger(n) || n < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${n}`);
}

/** The registers that start `spec` at epoch 1 (see the register table at the top). */
export function workloadRegs(spec: WorkloadSpec): Regs {
  const regs: Regs = {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
    rip: 0n,
    rflags: 2n, // bit 1 is reserved and always set; interrupts off
  };
  switch (spec.kind) {
    case 'stride': {
      checkPage('firstPage', spec.firstPage);
      checkCount('pages', spec.pages, 0);
      checkCount('stridePages', spec.stridePages, 0);
      if (spec.pages > 0) checkPage('last page', spec.firstPage + (spec.pages - 1) * spec.stridePages);
      regs.rip = BigInt(STRIDE_GPA);
      regs.rbx = 1n;
      regs.rdi = BigInt(spec.firstPage * PAGE_SIZE);
      regs.rsi = BigInt(spec.stridePages * PAGE_SIZE);
      regs.r8 = BigInt(spec.pages);
      return regs;
    }
    case 'random': {
      checkPage('firstPage', spec.firstPage);
      checkCount('spanPages', spec.spanPages, 1);
      checkCount('pagesPerEpoch', spec.pagesPerEpoch, 0);
      checkPage('last page', spec.firstPage + spec.spanPages - 1);
      if (typeof spec.seed !== 'bigint' || spec.seed < 0n || spec.seed >= 1n << 64n) {
        throw new RangeError(`seed must be a u64 bigint, got ${String(spec.seed)}`);
      }
      regs.rip = BigInt(RANDOM_GPA);
      regs.rbx = 1n;
      regs.rdi = BigInt(spec.firstPage * PAGE_SIZE);
      regs.r8 = BigInt(spec.pagesPerEpoch);
      regs.r9 = spec.seed === 0n ? 1n : spec.seed;
      regs.r10 = BigInt(spec.spanPages);
      return regs;
    }
    case 'counter': {
      checkPage('page', spec.page);
      regs.rip = BigInt(COUNTER_GPA);
      regs.rdi = BigInt(spec.page * PAGE_SIZE);
      return regs;
    }
    case 'spin':
      regs.rip = BigInt(SPIN_GPA);
      return regs;
    default:
      throw new TypeError(`unknown workload kind ${String((spec as { kind: unknown }).kind)}`);
  }
}

/** RFLAGS.AF (bit 4) and RFLAGS.OF (bit 11). */
export const RFLAGS_AF = 0x10n;
export const RFLAGS_OF = 0x800n;

/**
 * The RFLAGS bits that are architecturally undefined when a workload stops with `regs`: the
 * undefined flags of the last flag-setting instruction it executed (Intel SDM vol. 2 and
 * AMD APM vol. 3 agree on which are undefined; CPUs differ in what they leave there, and
 * on this host KVM's emulator runs each instruction on the host CPU, so the kernel reports
 * Intel's or AMD's values). The emulator reads every undefined flag as 0. The rest of
 * RFLAGS is defined and must be equal everywhere.
 *
 *   workload  stops at (rip)                 last flag-setting instruction    undefined
 *   stride    +0x0b, +0x0e (store)            test (first write: rcx == r8)    AF
 *                                             dec (later writes)               -
 *             +0x1a (after OUT)               test (r8 == 0) / dec             AF / -
 *             +0x00 (after jmp)               inc rbx (or none: as loaded)     -
 *   random    +0x32, +0x36 (store)            shl rdx, 12 (div before it)      AF, OF
 *             +0x08 (loop top)                test (rcx == r8) / dec           AF / -
 *             +0x3f (after OUT)               test (r8 == 0) / dec             AF / -
 *             +0x00 (after jmp)               inc rbx (or none)                -
 *   counter   anywhere                        inc rax (or none)                -
 *   spin      anywhere                        none (pause, jmp)                -
 *
 * At a rip the table does not list no workload stops (the emulator stops only at those; a
 * kick of the native guest may land anywhere, and is compared only where both stopped).
 */
export function undefinedRflags(regs: Regs): bigint {
  const rip = Number(regs.rip);
  const firstWrite = regs.rcx === regs.r8;
  if (rip >= STRIDE_GPA && rip < STRIDE_GPA + STRIDE_CODE.length) {
    const off = rip - STRIDE_GPA;
    if (off === 0x0b || off === 0x0e) return firstWrite ? RFLAGS_AF : 0n;
    if (off === 0x1a) return regs.r8 === 0n ? RFLAGS_AF : 0n;
    return 0n;
  }
  if (rip >= RANDOM_GPA && rip < RANDOM_GPA + RANDOM_CODE.length) {
    const off = rip - RANDOM_GPA;
    if (off === 0x32 || off === 0x36) return RFLAGS_AF | RFLAGS_OF;
    if (off === 0x08) return firstWrite ? RFLAGS_AF : 0n;
    if (off === 0x3f) return regs.r8 === 0n ? RFLAGS_AF : 0n;
    return 0n;
  }
  return 0n;
}

/** One step of the random workload's xorshift64 (x ^= x << 13; x ^= x >> 7; x ^= x << 17, mod 2^64). */
export function xorshift64(x: bigint): bigint {
  const mask = (1n << 64n) - 1n;
  x ^= (x << 13n) & mask;
  x ^= x >> 7n;
  x ^= (x << 17n) & mask;
  return x;
}
