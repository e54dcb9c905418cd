// The guest harness without KVM: page-table entries, long-mode registers, registers per
// workload, and the workloads' machine code executed by a small x86-64 interpreter that walks
// the harness's own page tables. (The same code on the real /dev/kvm: guest-native.test.ts.)
import type { Regs, Sregs, WorkloadSpec } from '../lib';
import {
  CODE_GPA,
  COUNTER_CODE,
  COUNTER_GPA,
  HARNESS_SIZE,
  installHarness,
  LARGE_PAGE_FLAGS,
  longModeSregs,
  MAX_MAP_BYTES,
  PD_COUNT,
  PD_GPA,
  PDPT_GPA,
  PML4_GPA,
  RANDOM_CODE,
  RANDOM_GPA,
  SPIN_CODE,
  SPIN_GPA,
  STRIDE_CODE,
  STRIDE_GPA,
  TABLE_ENTRY_FLAGS,
  WORKLOAD_CODE,
  workloadRegs,
  xorshift64,
} from '../lib/guest/x86';

const GIB = 2 ** 30;
const MIB2 = 2 ** 21;

function harness(mapBytes: number): Uint8Array {
  const h = new Uint8Array(HARNESS_SIZE);
  installHarness(h, mapBytes);
  return h;
}

function u64(h: Uint8Array, gpa: number): bigint {
  return new DataView(h.buffer, h.byteOffset).getBigUint64(gpa, true);
}

/** The page walk of a 4-level x86-64 MMU over the harness (2 MiB leaves); null if not present. */
function translate(h: Uint8Array, va: bigint, cr3 = BigInt(PML4_GPA)): { gpa: bigint; flags: bigint[] } | null {
  const addr = (e: bigint) => Number(e & 0x000f_ffff_ffff_f000n);
  const pml4e = u64(h, Number(cr3) + Number((va >> 39n) & 511n) * 8);
  if (!(pml4e & 1n)) return null;
  const pdpte = u64(h, addr(pml4e) + Number((va >> 30n) & 511n) * 8);
  if (!(pdpte & 1n)) return null;
  if (pdpte & 0x80n) throw new Error('1 GiB page: the harness uses 2 MiB pages');
  const pde = u64(h, addr(pdpte) + Number((va >> 21n) & 511n) * 8);
  if (!(pde & 1n)) return null;
  if (!(pde & 0x80n)) throw new Error('PD entry without PS: the harness has no page tables below PDs');
  return { gpa: (pde & 0x000f_ffff_ffe0_0000n) | (va & 0x1f_ffffn), flags: [pml4e & 0xfffn, pdpte & 0xfffn, pde & 0xfffn] };
}

describe('guest-physical layout', () => {
  test('PML4, PDPT and PDs identity-map [0, 1 GiB) with 2 MiB pages, A/D preset', () => {
    const h = harness(GIB);
    expect(u64(h, PML4_GPA)).toBe(BigInt(PDPT_GPA) | 0x23n);
    expect(TABLE_ENTRY_FLAGS).toBe(0x23n); // P | RW | A
    expect(LARGE_PAGE_FLAGS).toBe(0xe3n); // P | RW | A | D | PS
    for (let i = 1; i < 512; i++) expect(u64(h, PML4_GPA + 8 * i)).toBe(0n);
    expect(u64(h, PDPT_GPA)).toBe(BigInt(PD_GPA) | 0x23n);
    for (let i = 1; i < 512; i++) expect(u64(h, PDPT_GPA + 8 * i)).toBe(0n);
    for (let j = 0; j < 512; j++) expect(u64(h, PD_GPA + 8 * j)).toBe(BigInt(j * MIB2) | 0xe3n);
  });

  test('every byte outside the tables and the code is zero; code sits at its documented address', () => {
    const h = harness(3 * GIB);
    expect(WORKLOAD_CODE.map((w) => [w.kind, w.gpa])).toEqual([
      ['stride', 0x3000], ['random', 0x3080], ['counter', 0x3100], ['spin', 0x3180],
    ]);
    const expected = new Uint8Array(HARNESS_SIZE);
    const dv = new DataView(expected.buffer);
    dv.setBigUint64(PML4_GPA, BigInt(PDPT_GPA) | 0x23n, true);
    for (let i = 0; i < 3; i++) {
      dv.setBigUint64(PDPT_GPA + 8 * i, BigInt(PD_GPA + 4096 * i) | 0x23n, true);
      for (let j = 0; j < 512; j++) dv.setBigUint64(PD_GPA + 4096 * i + 8 * j, BigInt((512 * i + j) * MIB2) | 0xe3n, true);
    }
    expected.set(STRIDE_CODE, 0x3000);
    expected.set(RANDOM_CODE, 0x3080);
    expected.set(COUNTER_CODE, 0x3100);
    expected.set(SPIN_CODE, 0x3180);
    expect(Buffer.from(h).equals(Buffer.from(expected))).toBe(true);
    for (const w of WORKLOAD_CODE) expect(w.code.length).toBeLessThanOrEqual(0x80);
    expect(CODE_GPA + 4 * 0x80).toBeLessThanOrEqual(CODE_GPA + 4096);
  });

  test('the walk is the identity below the mapped GiBs and not present above', () => {
    const h = harness(64 * GIB + MIB2); // a 64 GiB guest slot above the 2 MiB harness
    for (const va of [0n, 0x1000n, 0x200000n, 0x3fff_ffffn, 0x4000_0000n, 0x0f_3456_7890n, 65n * 2n ** 30n - 8n]) {
      const t = translate(h, va)!;
      expect(t.gpa).toBe(va);
      // Accessed (and Dirty on the leaf) already set: the MMU has nothing to write back
      expect(t.flags.map((f) => f & 0x20n)).toEqual([0x20n, 0x20n, 0x20n]);
      expect(t.flags[2] & 0x40n).toBe(0x40n);
      expect(t.flags.every((f) => (f & 3n) === 3n)).toBe(true);
    }
    expect(translate(h, 65n * 2n ** 30n)).toBeNull();
    expect(translate(h, 2n ** 39n)).toBeNull(); // PML4 entry 1
  });

  test('idempotent; a larger mapBytes only adds PDPT entries and PD pages', () => {
    const small = harness(2 * GIB);
    const again = new Uint8Array(small);
    installHarness(again, 2 * GIB);
    expect(Buffer.from(again).equals(Buffer.from(small))).toBe(true);

    installHarness(again, MAX_MAP_BYTES);
    const changedElsewhere: number[] = [];
    for (let i = 0; i < HARNESS_SIZE; i++) {
      if (again[i] === small[i]) continue;
      const newPdptEntry = i >= PDPT_GPA + 16 && i < PDPT_GPA + 8 * PD_COUNT;
      const newPd = i >= PD_GPA + 2 * 4096 && i < PD_GPA + PD_COUNT * 4096;
      if (!newPdptEntry && !newPd) changedElsewhere.push(i);
    }
    expect(changedElsewhere).toEqual([]);
    expect(translate(again, BigInt(MAX_MAP_BYTES) - 1n)!.gpa).toBe(BigInt(MAX_MAP_BYTES) - 1n);
    expect(MAX_MAP_BYTES).toBe(256 * GIB);
    // and a smaller one after a larger one maps exactly the smaller range again
    installHarness(again, 2 * GIB);
    expect(Buffer.from(again.subarray(0, PD_GPA + 2 * 4096)).equals(Buffer.from(small.subarray(0, PD_GPA + 2 * 4096)))).toBe(true);
    expect(translate(again, BigInt(2 * GIB))).toBeNull();
  });

  test('mapBytes is rounded up to whole GiB', () => {
    const h = harness(GIB + 1);
    expect(translate(h, BigInt(2 * GIB) - 1n)!.gpa).toBe(BigInt(2 * GIB) - 1n);
    expect(translate(h, BigInt(2 * GIB))).toBeNull();
  });

  test('bad arguments are RangeErrors', () => {
    expect(() => installHarness(new Uint8Array(HARNESS_SIZE - 1), GIB)).toThrow(RangeError);
    expect(() => installHarness(new Uint8Array(HARNESS_SIZE), MAX_MAP_BYTES + 1)).toThrow(RangeError);
    expect(() => installHarness(new Uint8Array(HARNESS_SIZE), HARNESS_SIZE - 4096)).toThrow(RangeError);
    expect(() => installHarness(new Uint8Array(HARNESS_SIZE), 1.5 * GIB + 0.5)).toThrow(RangeError);
  });
});

describe('long-mode registers', () => {
  const seg = { base: 7n, limit: 0xffff, selector: 0, type: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0 };
  const reset: Sregs = {
    cs: { ...seg, selector: 0xf000, type: 11 }, ds: { ...seg }, es: { ...seg }, fs: { ...seg }, gs: { ...seg }, ss: { ...seg },
    tr: { ...seg, type: 11 }, ldt: { ...seg, type: 2 },
    gdt: { base: 0n, limit: 0xffff }, idt: { base: 0n, limit: 0xffff },
    cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n,
    interruptBitmap: [0n, 0n, 0n, 0n],
  };

  test('CR0/CR3/CR4/EFER and flat 64-bit segments; the rest copied, the input untouched', () => {
    const before = JSON.stringify(reset, (_, v) => (typeof v === 'bigint' ? `${v}n` : v));
    const s = longModeSregs(reset);
    expect(JSON.stringify(reset, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))).toBe(before);
    expect({ cr0: s.cr0, cr3: s.cr3, cr4: s.cr4, efer: s.efer }).toEqual({ cr0: 0x80000011n, cr3: 0x1000n, cr4: 0x20n, efer: 0x500n });
    expect(s.cs).toEqual({ base: 0n, limit: 0xffffffff, selector: 8, type: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 });
    for (const k of ['ds', 'es', 'fs', 'gs', 'ss'] as const) {
      expect(s[k]).toEqual({ base: 0n, limit: 0xffffffff, selector: 16, type: 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
    }
    expect({ tr: s.tr, ldt: s.ldt, gdt: s.gdt, idt: s.idt, apicBase: s.apicBase, cr2: s.cr2, cr8: s.cr8 }).toEqual({
      tr: reset.tr, ldt: reset.ldt, gdt: reset.gdt, idt: reset.idt, apicBase: reset.apicBase, cr2: 0n, cr8: 0n,
    });
    expect(s.tr).not.toBe(reset.tr);
    expect(s.interruptBitmap).not.toBe(reset.interruptBitmap);
  });
});

describe('registers per workload', () => {
  const zero: Regs = {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0n, rflags: 2n,
  };
  test.each<[string, WorkloadSpec, Partial<Regs>]>([
    ['stride', { kind: 'stride', firstPage: 600, pages: 10, stridePages: 3 }, { rip: 0x3000n, rbx: 1n, rdi: 600n * 4096n, rsi: 3n * 4096n, r8: 10n }],
    ['random', { kind: 'random', firstPage: 1000, spanPages: 300, pagesPerEpoch: 20, seed: 12345n }, { rip: 0x3080n, rbx: 1n, rdi: 1000n * 4096n, r8: 20n, r9: 12345n, r10: 300n }],
    ['random, seed 0 taken as 1', { kind: 'random', firstPage: 512, spanPages: 1, pagesPerEpoch: 1, seed: 0n }, { rip: 0x3080n, rbx: 1n, rdi: 512n * 4096n, r8: 1n, r9: 1n, r10: 1n }],
    ['counter', { kind: 'counter', page: 700 }, { rip: 0x3100n, rdi: 700n * 4096n }],
    ['spin', { kind: 'spin' }, { rip: 0x3180n }],
  ])('%s', (_name, spec, regs) => {
    expect(workloadRegs(spec)).toEqual({ ...zero, ...regs });
  });

  test('pages inside the harness or beyond the 256 GiB map are RangeErrors', () => {
    expect(() => workloadRegs({ kind: 'stride', firstPage: 511, pages: 1, stridePages: 1 })).toThrow(RangeError);
    expect(() => workloadRegs({ kind: 'counter', page: 0 })).toThrow(RangeError);
    expect(() => workloadRegs({ kind: 'stride', firstPage: 512, pages: 3, stridePages: 2 ** 25 })).toThrow(RangeError);
    expect(() => workloadRegs({ kind: 'random', firstPage: 2 ** 26 - 10, spanPages: 11, pagesPerEpoch: 1, seed: 1n })).toThrow(RangeError);
    expect(() => workloadRegs({ kind: 'random', firstPage: 512, spanPages: 0, pagesPerEpoch: 1, seed: 1n })).toThrow(RangeError);
    expect(workloadRegs({ kind: 'random', firstPage: 2 ** 26 - 10, spanPages: 10, pagesPerEpoch: 1, seed: 1n }).r10).toBe(10n);
  });
});

// ---------------------------------------------------------------------------------------
// A tiny x86-64 interpreter: the instruction forms the workloads use, decoded from their
// REX/opcode/ModRM/SIB bytes (Intel SDM vol. 2), fetching and storing through the harness's
// page tables. Guest RAM above the harness is a sparse map of u64 words.

interface Out { port: number; size: number; value: number }
const MASK64 = (1n << 64n) - 1n;

class Cpu {
  r: bigint[] = new Array<bigint>(16).fill(0n);
  rip = 0n;
  zf = false;
  writes: { gpa: bigint; value: bigint }[] = [];
  ram = new Map<bigint, bigint>();

  constructor(readonly h: Uint8Array, regs: Regs) {
    const order = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
    order.forEach((n, i) => (this.r[i] = regs[n]));
    this.rip = regs.rip;
  }

  private phys(va: bigint): bigint {
    const t = translate(this.h, va);
    if (!t) throw new Error(`page fault at ${va.toString(16)}`);
    return t.gpa;
  }
  private fetch(): number {
    const gpa = this.phys(this.rip++);
    if (gpa >= BigInt(HARNESS_SIZE)) throw new Error('fetch outside the harness');
    return this.h[Number(gpa)];
  }
  private load(va: bigint): bigint {
    const gpa = this.phys(va);
    if (gpa < BigInt(HARNESS_SIZE)) return u64(this.h, Number(gpa));
    return this.ram.get(gpa) ?? 0n;
  }
  private store(va: bigint, value: bigint): void {
    const gpa = this.phys(va);
    if (gpa < BigInt(HARNESS_SIZE)) throw new Error(`guest write into the harness at ${gpa.toString(16)}`);
    if (gpa % 8n) throw new Error('unaligned store');
    this.ram.set(gpa, value);
    this.writes.push({ gpa, value });
  }

  /** Runs to the next OUT (or `limit` instructions, then null). */
  run(limit = 1_000_000): Out | null {
    for (let n = 0; n < limit; n++) {
      const out = this.step();
      if (out) return out;
    }
    return null;
  }

  step(): Out | null {
    let b = this.fetch();
    if (b === 0xf3 && this.h[Number(this.phys(this.rip))] === 0x90) { this.rip++; return null; } // pause
    let rex = 0;
    if ((b & 0xf0) === 0x40) { rex = b; b = this.fetch(); }
    const w = (rex & 8) !== 0;
    const width = (v: bigint) => (w ? v & MASK64 : v & 0xffff_ffffn);
    const rel8 = () => { const d = this.fetch(); return BigInt(d < 128 ? d : d - 256); };
    const modrm = () => {
      const m = this.fetch();
      const mod = m >> 6, reg = ((m >> 3) & 7) | ((rex & 4) << 1);
      let rm = m & 7;
      if (mod === 3) return { reg, rm: rm | ((rex & 1) << 3), mem: null as bigint | null };
      if (mod !== 0 || rm === 5) throw new Error(`addressing mode ${m.toString(16)} not used by the workloads`);
      let addr: bigint;
      if (rm === 4) {
        const sib = this.fetch();
        const base = (sib & 7) | ((rex & 1) << 3), index = ((sib >> 3) & 7) | ((rex & 2) << 2);
        if ((sib & 7) === 5) throw new Error('SIB without base');
        addr = this.r[base] + (index === 4 ? 0n : this.r[index] << BigInt(sib >> 6));
      } else {
        rm |= (rex & 1) << 3;
        addr = this.r[rm];
      }
      return { reg, rm: -1, mem: addr & MASK64 };
    };
    const get = (o: { rm: number; mem: bigint | null }) => (o.mem === null ? width(this.r[o.rm]) : w ? this.load(o.mem) : this.load(o.mem) & 0xffff_ffffn);
    const set = (o: { rm: number; mem: bigint | null }, v: bigint) => {
      v = width(v);
      this.zf = v === 0n;
      if (o.mem === null) this.r[o.rm] = v; // 32-bit results zero-extend
      else if (w) this.store(o.mem, v);
      else throw new Error('32-bit store not used by the workloads');
    };
    switch (b) {
      case 0x89: { const o = modrm(); const z = this.zf; set(o, this.r[o.reg]); this.zf = z; return null; } // mov r/m, r
      case 0x8b: { const o = modrm(); this.r[o.reg] = get(o); return null; } // mov r, r/m
      case 0x01: { const o = modrm(); set(o, get(o) + this.r[o.reg]); return null; } // add
      case 0x31: { const o = modrm(); set(o, get(o) ^ this.r[o.reg]); return null; } // xor
      case 0x85: { const o = modrm(); this.zf = width(get(o) & this.r[o.reg]) === 0n; return null; } // test
      case 0xff: { const o = modrm(); if (o.reg > 1) throw new Error('ff /' + o.reg); set(o, get(o) + (o.reg === 0 ? 1n : -1n)); return null; } // inc/dec
      case 0xc1: { const o = modrm(); const n = BigInt(this.fetch()); // shl /4, shr /5
        if (o.reg === 4) set(o, get(o) << n); else if (o.reg === 5) set(o, get(o) >> n); else throw new Error('c1 /' + o.reg);
        return null; }
      case 0xf7: { const o = modrm(); if (o.reg !== 6 || !w) throw new Error('f7 /' + o.reg); // div r/m64
        const d = get(o); const dividend = (this.r[2] << 64n) | this.r[0];
        if (d === 0n || dividend / d > MASK64) throw new Error('#DE');
        this.r[0] = dividend / d; this.r[2] = dividend % d; return null; }
      case 0x74: { const d = rel8(); if (this.zf) this.rip += d; return null; }
      case 0x75: { const d = rel8(); if (!this.zf) this.rip += d; return null; }
      case 0xeb: { const d = rel8(); this.rip += d; return null; }
      case 0xe6: return { port: this.fetch(), size: 1, value: Number(this.r[0] & 0xffn) };
      case 0xe7: return { port: this.fetch(), size: 4, value: Number(this.r[0] & 0xffff_ffffn) };
      default: throw new Error(`opcode ${b.toString(16)} at ${(this.rip - 1n).toString(16)} not used by the workloads`);
    }
  }
}

function boot(spec: WorkloadSpec, mapBytes = 4 * GIB): Cpu {
  return new Cpu(harness(mapBytes), workloadRegs(spec));
}

/** The spec's xorshift64, written out independently of lib/guest/x86.ts. */
function* xorshift(seed: bigint): Generator<bigint> {
  let x = seed === 0n ? 1n : seed;
  for (;;) {
    x = BigInt.asUintN(64, x ^ (x << 13n));
    x ^= x >> 7n;
    x = BigInt.asUintN(64, x ^ (x << 17n));
    yield x;
  }
}

describe('workload machine code (interpreted)', () => {
  test('stride: each epoch writes the epoch to each page once, in order, then OUT 0x10 with its low byte', () => {
    const cpu = boot({ kind: 'stride', firstPage: 600, pages: 10, stridePages: 3 });
    for (let epoch = 1n; epoch <= 258n; epoch++) {
      cpu.writes = [];
      expect(cpu.run()).toEqual({ port: 0x10, size: 1, value: Number(epoch & 0xffn) });
      expect(cpu.writes).toEqual(Array.from({ length: 10 }, (_, i) => ({ gpa: BigInt((600 + 3 * i) * 4096), value: epoch })));
    }
  });

  test('stride with stridePages 0 rewrites one page; with pages 0 it only exits', () => {
    let cpu = boot({ kind: 'stride', firstPage: 512, pages: 4, stridePages: 0 });
    cpu.run();
    expect(cpu.writes).toEqual(new Array(4).fill({ gpa: 512n * 4096n, value: 1n }));
    cpu = boot({ kind: 'stride', firstPage: 512, pages: 0, stridePages: 1 });
    expect([cpu.run(), cpu.run()]).toEqual([{ port: 0x10, size: 1, value: 1 }, { port: 0x10, size: 1, value: 2 }]);
    expect(cpu.writes).toEqual([]);
  });

  test('stride reaches the top of a 64 GiB guest', () => {
    const top = (2 * MIB2 + 64 * GIB) / 4096 - 1;
    const cpu = boot({ kind: 'stride', firstPage: 512, pages: 2, stridePages: top - 512 }, 64 * GIB + MIB2);
    cpu.run();
    expect(cpu.writes.map((x) => x.gpa)).toEqual([512n * 4096n, BigInt(top) * 4096n]);
  });

  test.each([
    [12345n, 1000, 300, 20],
    [0n, 1000, 7, 5],
    [MASK64, 512, 2 ** 25 + 12345, 8],
    [0x9e3779b97f4a7c15n, 4096, 1, 3],
  ])('random seed %s: pages follow xorshift64 mod span across epochs', (seed, firstPage, spanPages, perEpoch) => {
    const cpu = boot({ kind: 'random', firstPage, spanPages, pagesPerEpoch: perEpoch, seed }, MAX_MAP_BYTES);
    const xs = xorshift(seed);
    for (let epoch = 1n; epoch <= 4n; epoch++) {
      cpu.writes = [];
      expect(cpu.run()).toEqual({ port: 0x10, size: 1, value: Number(epoch) });
      const expected = Array.from({ length: perEpoch }, () => ({
        gpa: (BigInt(firstPage) + xs.next().value % BigInt(spanPages)) * 4096n,
        value: epoch,
      }));
      expect(cpu.writes).toEqual(expected);
    }
  });

  test('xorshift64 (exported for the model) matches the spec', () => {
    const xs = xorshift(1n);
    let x = 1n;
    for (let i = 0; i < 100; i++) expect((x = xorshift64(x))).toBe(xs.next().value);
    expect(xorshift64(1n)).toBe(0x40822041n);
  });

  test('counter: increments the u64 at its page, OUT 0x11 with the low 32 bits (4 bytes)', () => {
    const cpu = boot({ kind: 'counter', page: 700 });
    for (let v = 1; v <= 5; v++) expect(cpu.run()).toEqual({ port: 0x11, size: 4, value: v });
    expect(cpu.writes.map((x) => x.value)).toEqual([1n, 2n, 3n, 4n, 5n]);
    expect(new Set(cpu.writes.map((x) => x.gpa))).toEqual(new Set([700n * 4096n]));
    cpu.ram.set(700n * 4096n, 0xffff_ffffn); // the host changes it: the guest reads it back
    expect(cpu.run()).toEqual({ port: 0x11, size: 4, value: 0 });
    expect(cpu.ram.get(700n * 4096n)).toBe(0x1_0000_0000n);
  });

  test('spin: never writes, never exits, stays in its code', () => {
    const cpu = boot({ kind: 'spin' });
    expect(cpu.run(10_000)).toBeNull();
    expect(cpu.writes).toEqual([]);
    expect(cpu.rip >= BigInt(SPIN_GPA) && cpu.rip < BigInt(SPIN_GPA + SPIN_CODE.length)).toBe(true);
  });

  test('state lives in registers: a stop after any instruction resumes to the same writes', () => {
    const spec: WorkloadSpec = { kind: 'random', firstPage: 600, spanPages: 50, pagesPerEpoch: 7, seed: 99n };
    const a = boot(spec);
    a.run(); a.run();
    const b = boot(spec);
    // step one instruction at a time, as a run interrupted after every instruction would
    let outs = 0;
    while (outs < 2) if (b.step()) outs++;
    expect(b.writes).toEqual(a.writes);
    expect(b.rip).toBe(a.rip);
    expect(STRIDE_GPA).toBe(CODE_GPA);
    expect(RANDOM_GPA).toBe(CODE_GPA + 0x80);
    expect(COUNTER_GPA).toBe(CODE_GPA + 0x100);
  });
});
