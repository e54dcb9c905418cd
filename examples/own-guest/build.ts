// Builds the own-guest example (guest.c, start.S, guest.ld) with the machine's gcc into an ELF
// and a flat binary, then reads the disassembly back to refuse instructions this kind of host
// cannot run (unsupportedInstructions()). Used by run.ts and the tests; from the shell:
//
//   npm run build && node dist/examples/own-guest/build.js [outDir] [ticks]    (default build/own-guest, 100)

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface GuestBuild {
  /** the ELF64 executable (PT_LOAD segments at 2 MiB) */
  elf: string;
  /** the same as a flat binary (objcopy -O binary), loaded at 2 MiB */
  bin: string;
}

/** The freestanding flags: no libc, no red zone (interrupts push on the stack), no SSE/x87 from the compiler. */
export const GUEST_CFLAGS = [
  '-O2', '-ffreestanding', '-nostdlib', '-nostartfiles', '-static', '-no-pie', '-fno-pic',
  '-mno-red-zone', '-mgeneral-regs-only', '-fno-stack-protector', '-fcf-protection=none',
  '-fno-asynchronous-unwind-tables', '-Wall', '-Wextra', '-Werror',
];

const TOOLS = ['gcc', 'objcopy', 'objdump'] as const;

/** The directory holding guest.c: examples/own-guest of the package (this file may run from dist/). */
export function guestSourceDir(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'examples', 'own-guest');
    if (fs.existsSync(path.join(candidate, 'guest.c'))) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`examples/own-guest/guest.c not found above ${__dirname}`);
  }
}

/** Why the guest cannot be built here (a tool missing, not x86-64), or undefined when it can. */
export function guestBuildSkipReason(): string | undefined {
  if (process.arch !== 'x64') return `the guest is x86-64 code; this is ${process.arch}`;
  for (const tool of TOOLS) {
    const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    if (r.error !== undefined || r.status !== 0) return `${tool} is not installed (${r.error?.message ?? `exit ${r.status}`})`;
  }
  return undefined;
}

function run(tool: string, args: string[]): string {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error !== undefined) throw new Error(`${tool}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr}`);
  return r.stdout;
}

/**
 * Instructions KVM's instruction emulator failed on, probed on a nested kvm_pvm host where every
 * guest instruction is emulated (KVM_EXIT_INTERNAL_ERROR, suberror 1); movbe ended in #UD.
 * README "Your own guest" has the table.
 */
const UNSUPPORTED = new Set([
  'int3', 'int', 'into', 'ldmxcsr', 'stmxcsr', 'xsave', 'xsave64', 'xsaveopt', 'xsaveopt64', 'xsavec', 'xsavec64', 'xsaves', 'xsaves64',
  'xrstor', 'xrstor64', 'xrstors', 'xrstors64', 'xgetbv', 'xsetbv', 'cmpxchg16b', 'rdtscp', 'popcnt', 'movbe', 'crc32',
  'andn', 'bextr', 'blsi', 'blsmsk', 'blsr', 'bzhi', 'mulx', 'pdep', 'pext', 'rorx', 'sarx', 'shlx', 'shrx',
]);
/** Vector-register instructions that worked: plain 128-bit moves. */
const VECTOR_MOVES = new Set(['movdqu', 'movdqa', 'movups', 'movaps', 'movntdq', 'movntps']);
/** The x87/FXSAVE instructions that worked; every other x87 instruction (fld1 was probed) is refused. */
const X87_OK = new Set(['fninit', 'fxsave', 'fxsave64', 'fxrstor', 'fxrstor64']);
const PREFIXES = new Set(['lock', 'rep', 'repz', 'repnz', 'repe', 'repne', 'cs', 'ds', 'es', 'ss', 'fs', 'gs', 'data16', 'addr32', 'notrack', 'bnd']);

/**
 * The lines of an `objdump -d --no-show-raw-insn` listing (AT&T syntax) whose instruction this
 * host's KVM cannot run: every SSE/AVX/MMX or x87 instruction but the plain moves that worked,
 * and the instructions of UNSUPPORTED (int3, xrstor, cmpxchg16b, popcnt, ...).
 */
export function unsupportedInstructions(disassembly: string): string[] {
  const bad: string[] = [];
  for (const line of disassembly.split('\n')) {
    const m = /^\s*[0-9a-f]+:\t(.*)$/.exec(line);
    if (m === null) continue;
    const words = m[1].trim().split(/\s+/);
    let i = 0;
    while (i < words.length - 1 && PREFIXES.has(words[i])) i++;
    const mnemonic = words[i] ?? '';
    const operands = words.slice(i + 1).join(' ');
    const vector = /%(x|y|z)mm\d|%mm\d|%st\b|%st\(/.test(operands);
    const x87 = mnemonic.startsWith('f') && !X87_OK.has(mnemonic);
    // AT&T may add an operand-size suffix (crc32q)
    const listed = UNSUPPORTED.has(mnemonic) || UNSUPPORTED.has(mnemonic.replace(/[bwlq]$/, ''));
    if (listed || x87 || (vector && !VECTOR_MOVES.has(mnemonic))) bad.push(line.trim());
  }
  return bad;
}

/** The guest's timer steps by default (guest.c's TICKS): about 100 ms of guest time. */
export const DEFAULT_TICKS = 100;

/**
 * Compiles and links the guest into `outDir` (default: a new temporary directory) and checks
 * its code. Throws with the tool's output if a step fails, or listing the instructions this
 * host cannot run. `ticks`: the timer steps it runs (1 ms each), for a longer guest.
 */
export function buildGuest(outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-guest-')), options: { ticks?: number } = {}): GuestBuild {
  const ticks = options.ticks ?? DEFAULT_TICKS;
  if (!Number.isSafeInteger(ticks) || ticks < 1) throw new RangeError(`ticks must be a positive integer, got ${ticks}`);
  const src = guestSourceDir();
  fs.mkdirSync(outDir, { recursive: true });
  const elf = path.join(outDir, 'guest.elf');
  const bin = path.join(outDir, 'guest.bin');
  run('gcc', [
    ...GUEST_CFLAGS, `-DTICKS=${ticks}`,
    `-Wl,-T,${path.join(src, 'guest.ld')}`, '-Wl,--build-id=none', '-Wl,-z,max-page-size=4096', '-Wl,-z,noexecstack',
    '-o', elf, path.join(src, 'start.S'), path.join(src, 'guest.c'),
  ]);
  run('objcopy', ['-O', 'binary', elf, bin]);
  const bad = unsupportedInstructions(run('objdump', ['-d', '--no-show-raw-insn', elf]));
  if (bad.length > 0) throw new Error(`the guest uses instructions this host's KVM cannot emulate:\n  ${bad.join('\n  ')}`);
  return { elf, bin };
}

if (require.main === module) {
  const reason = guestBuildSkipReason();
  if (reason !== undefined) {
    console.error(`cannot build the guest: ${reason}`);
    process.exit(1);
  }
  // node build.js [outDir] [ticks]
  const out = buildGuest(process.argv[2] ?? path.join(guestSourceDir(), '..', '..', 'build', 'own-guest'), { ticks: process.argv[3] ? Number(process.argv[3]) : undefined });
  console.log(`${out.elf}\n${out.bin}`);
}
