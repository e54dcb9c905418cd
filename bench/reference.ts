// The C side of the benchmark: builds bench/reference.c when its binary is missing or older
// than its sources, and runs it. The binary prints one JSON object per run (see its --help).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** What the C reference prints for one run (the epoch modes; harvest-per-entry adds the per-entry fields). */
export interface ReferenceResult {
  mode: string;
  guestGiB: number;
  k: number;
  epochs: number;
  seconds: number;
  epochsPerSec: number;
  harvestNsPerEpoch: number;
  pagesPerEpoch: number;
  ringEntries: number;
  runNsPerEpoch?: number;
  harvestNsPerEntry?: number;
  resetNsPerEntry?: number;
}

export type ReferenceMode = 'ring' | 'bitmap' | 'bitmap-clear' | 'harvest-per-entry';

export interface ReferenceRun {
  mode: ReferenceMode;
  guestGiB?: number;
  k?: number;
  epochs?: number;
  seconds?: number;
  ringEntries?: number;
  /** entries the host's kernel reserves (kvm.dirtyRingLimits().reservedEntries; default: the reference learns it) */
  ringReserved?: number;
  /** guest-physical address of the RAM slot (only where the reference takes --ram-gpa) */
  ramGpa?: number;
  device?: string;
}

/** The package root: the nearest directory above `from` holding kvm-dirty's package.json. */
export function packageRoot(from = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'kvm-dirty') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no kvm-dirty package.json above ${from}`);
  }
}

/** The command line of one reference run, in the option spelling of bench/reference.c. */
export function referenceArgs(run: ReferenceRun): string[] {
  const args = ['--mode', run.mode];
  if (run.guestGiB !== undefined) args.push('--guest-gib', String(run.guestGiB));
  if (run.k !== undefined) args.push('--k', String(run.k));
  if (run.epochs !== undefined) args.push('--epochs', String(run.epochs));
  else if (run.seconds !== undefined) args.push('--seconds', String(run.seconds));
  if (run.ringEntries !== undefined) args.push('--ring-entries', String(run.ringEntries));
  if (run.ringReserved !== undefined) args.push('--ring-reserved', String(run.ringReserved));
  if (run.ramGpa !== undefined) args.push('--ram-gpa', String(run.ramGpa));
  if (run.device !== undefined) args.push('--device', run.device);
  return args;
}

/** Parses the reference's stdout: the last non-empty line is its JSON object. */
export function parseReferenceOutput(stdout: string): ReferenceResult {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new Error('the C reference printed nothing');
  const r = JSON.parse(lines[lines.length - 1]) as ReferenceResult;
  if (typeof r.epochsPerSec !== 'number' || typeof r.harvestNsPerEpoch !== 'number') {
    throw new Error(`the C reference printed an unexpected object: ${lines[lines.length - 1]}`);
  }
  return r;
}

export class Reference {
  readonly binary: string;
  readonly source: string;

  constructor(root = packageRoot()) {
    this.binary = path.join(root, 'build', 'kvm-dirty-reference');
    this.source = path.join(root, 'bench', 'reference.c');
  }

  /** Builds the binary with `cc -O2` when it is missing or older than reference.c / guest-code.h. Returns whether it built. */
  ensureBuilt(log: (line: string) => void = () => {}): boolean {
    const sources = [this.source, path.join(path.dirname(this.source), 'guest-code.h')];
    const built = fs.existsSync(this.binary) ? fs.statSync(this.binary).mtimeMs : -1;
    if (built >= 0 && sources.every((s) => fs.statSync(s).mtimeMs <= built)) return false;
    fs.mkdirSync(path.dirname(this.binary), { recursive: true });
    const cmd = ['-O2', '-Wall', '-o', this.binary, this.source];
    log(`building the C reference: cc ${cmd.join(' ')}`);
    const r = spawnSync('cc', cmd, { encoding: 'utf8' });
    if (r.error) throw new Error(`cc: ${r.error.message} (a C compiler is needed for the reference)`);
    if (r.status !== 0) throw new Error(`cc failed (status ${r.status}):\n${r.stderr}`);
    return true;
  }

  /** Whether the reference's --help lists `option` (e.g. '--ram-gpa'). */
  supportsOption(option: string): boolean {
    const r = spawnSync(this.binary, ['--help'], { encoding: 'utf8' });
    return r.status === 0 && new RegExp(`${option}\\b`).test(r.stdout);
  }

  /** Runs the reference once; throws with its stderr when it fails (it checks every ioctl and count). */
  run(run: ReferenceRun): ReferenceResult {
    const args = referenceArgs(run);
    const r = spawnSync(this.binary, args, { encoding: 'utf8', timeout: 120_000 });
    if (r.error) throw new Error(`${this.binary}: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`C reference ${args.join(' ')} failed (status ${r.status}): ${r.stderr.trim()}`);
    return parseReferenceOutput(r.stdout);
  }
}
