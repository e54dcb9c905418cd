// Which backends a test run covers, and why one is skipped.
//
// Every suite in test/suite/ is written once and run per backend by the *.test.ts files.
// The emulator always runs. The native backend runs where the addon loads and /dev/kvm
// opens; elsewhere its suites are skipped with the reason in the title, or fail when
// KVM_REQUIRED=1 (CI on KVM runners). KVM_DIRTY_TEST_BACKENDS=native|emulator limits a run.
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { openKvm, type Kvm, type OpenOptions } from '../../lib';

export interface BackendCase {
  name: 'native' | 'emulator';
  /** The emulated Intel host with PML (576 reserved ring entries), for suites that ask for it. */
  pml?: boolean;
  /** Opens a fresh Kvm on this backend (x86_64 unless `arch` says otherwise). */
  open(options?: Omit<OpenOptions, 'backend'>): Kvm;
  /** Why this backend cannot run here; undefined when it can. */
  skipReason?: string;
}

/** The title of a case: its backend, and the modelled host where it is not the default one. */
function caseTitle(b: BackendCase): string {
  return b.pml ? `${b.name}, Intel PML host` : b.name;
}

let nativeProbe: string | undefined | null = null;

function nativeSkipReason(): string | undefined {
  if (nativeProbe !== null) return nativeProbe;
  try {
    openKvm({ backend: 'native' }).close();
    nativeProbe = undefined;
  } catch (e) {
    nativeProbe = (e as Error).message;
  }
  return nativeProbe;
}

export function backends(): BackendCase[] {
  const only = process.env.KVM_DIRTY_TEST_BACKENDS;
  const all: BackendCase[] = [
    { name: 'native', open: (o) => openKvm({ ...o, backend: 'native' }), skipReason: nativeSkipReason() },
    { name: 'emulator', open: (o) => openKvm({ ...o, backend: 'emulator' }) },
  ];
  return all.filter((b) => !only || only.split(',').includes(b.name));
}

/**
 * Runs `suite` once per backend inside a describe block. A backend that cannot run is
 * skipped with its reason, unless KVM_REQUIRED=1 makes that a failure. With `pml`, also on
 * the emulated Intel host with PML (openKvm({ pml: true }): 576 reserved ring entries, 4 and
 * 8 KiB rings refused), as no development machine has one: suites that size rings run there.
 */
export function describeEachBackend(title: string, suite: (b: BackendCase) => void, options: { pml?: boolean } = {}): void {
  const cases = backends();
  if (options.pml && cases.some((b) => b.name === 'emulator')) {
    cases.push({ name: 'emulator', pml: true, open: (o) => openKvm({ ...o, backend: 'emulator', pml: true }) });
  }
  for (const b of cases) {
    const name = caseTitle(b);
    if (b.skipReason && process.env.KVM_REQUIRED !== '1') {
      describe.skip(`${title} [${name}] (skipped: ${b.skipReason})`, () => suite(b));
    } else if (b.skipReason) {
      describe(`${title} [${name}]`, () => {
        test('backend is available (KVM_REQUIRED=1)', () => {
          throw new Error(`native backend required but unavailable: ${b.skipReason}`);
        });
      });
    } else {
      describe(`${title} [${name}]`, () => suite(b));
    }
  }
}

/** Expects `fn` to throw a KvmError with this code (and ioctl, when given). */
export function expectKvmError(fn: () => unknown, code: string, ioctl?: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeDefined();
  const err = thrown as { name?: string; code?: string; ioctl?: string; errno?: number; message?: string };
  expect({ name: err.name, code: err.code, ...(ioctl ? { ioctl: err.ioctl } : {}) }).toEqual({
    name: 'KvmError',
    code,
    ...(ioctl ? { ioctl } : {}),
  });
  expect(err.errno).toBeLessThan(0);
}

/**
 * Why a child process running as an unprivileged user (uid 65534, for the EACCES tests run as
 * root) cannot load this package from where it lies, or undefined when it can: every
 * directory above it must be searchable by others (a clone inside a mode-700 mktemp -d is not).
 */
export function unprivilegedLoadBlocker(root = resolve(__dirname, '..', '..')): string | undefined {
  for (let dir = root; ; dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o777;
    if ((mode & 0o001) === 0) return `${dir} is not searchable by other users (mode ${mode.toString(8)})`;
    if (dir === dirname(dir)) return undefined;
  }
}
