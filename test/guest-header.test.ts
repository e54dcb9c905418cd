// bench/guest-code.h (the C reference's view of the guest harness) holds exactly the bytes
// and constants of lib/guest/x86.ts, and is what scripts/gen-guest-header.js generates now.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as g from '../lib/guest/x86';

const ROOT = path.join(__dirname, '..');
const HEADER = path.join(ROOT, 'bench', 'guest-code.h');
const gen = require('../scripts/gen-guest-header.js') as { render(): string };

const header = fs.readFileSync(HEADER, 'utf8');

function cArray(name: string): number[] {
  const m = new RegExp(`static const uint8_t ${name}\\[(\\d+)\\] = \\{([^}]*)\\};`).exec(header);
  if (!m) throw new Error(`${name} not in the header`);
  const bytes = m[2].split(',').map((s) => s.trim()).filter(Boolean).map((s) => Number.parseInt(s, 16));
  expect(bytes.length).toBe(Number(m[1]));
  return bytes;
}

function cDefine(name: string): bigint {
  const m = new RegExp(`^#define ${name}\\s+(0x[0-9a-f]+)ull`, 'm').exec(header);
  if (!m) throw new Error(`${name} not in the header`);
  return BigInt(m[1]);
}

test('the header is what the generator writes from the current lib/guest/x86.ts', () => {
  expect(gen.render()).toBe(header);
});

test.each([
  ['guest_stride_code', g.STRIDE_CODE],
  ['guest_random_code', g.RANDOM_CODE],
  ['guest_counter_code', g.COUNTER_CODE],
  ['guest_spin_code', g.SPIN_CODE],
])('%s equals the TypeScript bytes', (name, bytes) => {
  expect(cArray(name)).toEqual([...bytes]);
});

test('layout, paging flags and long-mode registers equal the TypeScript constants', () => {
  const sregs = g.longModeSregs({
    cs: {} as never, ds: {} as never, es: {} as never, fs: {} as never, gs: {} as never, ss: {} as never,
    tr: {} as never, ldt: {} as never, gdt: { base: 0n, limit: 0 }, idt: { base: 0n, limit: 0 },
    cr0: 0n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0n, interruptBitmap: [],
  });
  expect({
    page: cDefine('GUEST_PAGE_SIZE'), harness: cDefine('GUEST_HARNESS_SIZE'), harnessPages: cDefine('GUEST_HARNESS_PAGES'),
    pml4: cDefine('GUEST_PML4_GPA'), pdpt: cDefine('GUEST_PDPT_GPA'), code: cDefine('GUEST_CODE_GPA'),
    pd: cDefine('GUEST_PD_GPA'), pdCount: cDefine('GUEST_PD_COUNT'),
    table: cDefine('GUEST_TABLE_ENTRY_FLAGS'), large: cDefine('GUEST_LARGE_PAGE_FLAGS'),
    cr0: cDefine('GUEST_CR0'), cr3: cDefine('GUEST_CR3'), cr4: cDefine('GUEST_CR4'), efer: cDefine('GUEST_EFER'),
    cs: cDefine('GUEST_CODE_SELECTOR'), ds: cDefine('GUEST_DATA_SELECTOR'),
    stride: cDefine('GUEST_STRIDE_GPA'), random: cDefine('GUEST_RANDOM_GPA'),
    counter: cDefine('GUEST_COUNTER_GPA'), spin: cDefine('GUEST_SPIN_GPA'),
    epochPort: cDefine('GUEST_EPOCH_PORT'), counterPort: cDefine('GUEST_COUNTER_PORT'),
  }).toEqual({
    page: 4096n, harness: BigInt(g.HARNESS_SIZE), harnessPages: 512n,
    pml4: BigInt(g.PML4_GPA), pdpt: BigInt(g.PDPT_GPA), code: BigInt(g.CODE_GPA),
    pd: BigInt(g.PD_GPA), pdCount: BigInt(g.PD_COUNT),
    table: g.TABLE_ENTRY_FLAGS, large: g.LARGE_PAGE_FLAGS,
    cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer,
    cs: BigInt(sregs.cs.selector), ds: BigInt(sregs.ds.selector),
    stride: BigInt(g.workloadRegs({ kind: 'stride', firstPage: 512, pages: 1, stridePages: 1 }).rip),
    random: BigInt(g.workloadRegs({ kind: 'random', firstPage: 512, spanPages: 1, pagesPerEpoch: 1, seed: 1n }).rip),
    counter: BigInt(g.workloadRegs({ kind: 'counter', page: 512 }).rip),
    spin: BigInt(g.workloadRegs({ kind: 'spin' }).rip),
    epochPort: 0x10n, counterPort: 0x11n,
  });
});

// The reference compiles warning-free against the header (where a C compiler exists).
const cc = ['cc', 'gcc', 'clang'].find((c) => {
  try {
    execFileSync(c, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});
(cc ? test : test.skip)(`bench/reference.c compiles with -Wall -Werror (${cc ?? 'no C compiler'})`, () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-ref-')), 'reference');
  execFileSync(cc!, ['-O2', '-Wall', '-Wextra', '-Werror', '-o', out, path.join(ROOT, 'bench', 'reference.c')], { stdio: 'pipe' });
  expect(fs.statSync(out).size).toBeGreaterThan(0);
  fs.rmSync(path.dirname(out), { recursive: true });
});
