// The C side of the benchmark (bench/reference.ts): command lines, output parsing, building the
// reference with cc when it is missing or stale, and (where /dev/kvm opens) one real run.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { backends } from './helpers/backends';
import { defaultRingEntries, ringLimits } from '../bench/loops';
import { packageRoot, parseReferenceOutput, Reference, referenceArgs } from '../bench/reference';

const root = packageRoot(__dirname);

test('packageRoot finds kvm-dirty\'s package.json from a nested directory', () => {
  expect(fs.existsSync(path.join(root, 'bench', 'reference.c'))).toBe(true);
  expect(packageRoot(path.join(root, 'bench'))).toBe(root);
});

test('referenceArgs spells the options as bench/reference.c takes them', () => {
  expect(referenceArgs({ mode: 'ring', guestGiB: 16, k: 4096, seconds: 2, ringEntries: 65536 })).toEqual([
    '--mode', 'ring', '--guest-gib', '16', '--k', '4096', '--seconds', '2', '--ring-entries', '65536',
  ]);
  // --epochs wins over --seconds, as in the reference
  expect(referenceArgs({ mode: 'harvest-per-entry', k: 65000, epochs: 9, seconds: 3 })).toEqual(['--mode', 'harvest-per-entry', '--k', '65000', '--epochs', '9']);
  expect(referenceArgs({ mode: 'bitmap', ramGpa: 4 * 2 ** 30, device: '/dev/kvm' })).toEqual(['--mode', 'bitmap', '--ram-gpa', '4294967296', '--device', '/dev/kvm']);
  expect(referenceArgs({ mode: 'ring', k: 16, ringReserved: 576 })).toEqual(['--mode', 'ring', '--k', '16', '--ring-reserved', '576']);
});

test('parseReferenceOutput takes the last JSON line and rejects anything else', () => {
  const line = '{"mode":"ring","guestGiB":1,"k":16,"epochs":3,"seconds":0.1,"epochsPerSec":30,"harvestNsPerEpoch":500,"pagesPerEpoch":16,"ringEntries":256}';
  expect(parseReferenceOutput(`${line}\n`)).toMatchObject({ mode: 'ring', epochs: 3, harvestNsPerEpoch: 500 });
  expect(() => parseReferenceOutput('')).toThrow(/printed nothing/);
  expect(() => parseReferenceOutput('{"mode":"ring"}\n')).toThrow(/unexpected object/);
  expect(() => parseReferenceOutput('not json\n')).toThrow(SyntaxError);
});

describe('building the reference', () => {
  let dir: string;
  beforeAll(() => {
    // A copy of the sources in a scratch tree, so the real build/ is left alone.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-bench-'));
    fs.mkdirSync(path.join(dir, 'bench'));
    for (const f of ['reference.c', 'guest-code.h']) fs.copyFileSync(path.join(root, 'bench', f), path.join(dir, 'bench', f));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('builds with cc when missing, not again when fresh, again when a source is newer', () => {
    const ref = new Reference(dir);
    const logged: string[] = [];
    expect(ref.ensureBuilt((l) => logged.push(l))).toBe(true);
    expect(logged[0]).toMatch(/^building the C reference: cc -O2 -Wall -o .*build\/kvm-dirty-reference .*bench\/reference\.c$/);
    expect(fs.statSync(ref.binary).mode & 0o111).not.toBe(0);
    expect(ref.ensureBuilt()).toBe(false);
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(path.join(dir, 'bench', 'guest-code.h'), later, later);
    expect(ref.ensureBuilt()).toBe(true);
  });

  test('supportsOption reads the reference\'s --help', () => {
    const ref = new Reference(dir);
    ref.ensureBuilt();
    expect(ref.supportsOption('--ring-entries')).toBe(true);
    expect(ref.supportsOption('--no-such-option')).toBe(false);
  });

  test('a failing run throws with the reference\'s own message', () => {
    const ref = new Reference(dir);
    ref.ensureBuilt();
    expect(() => ref.run({ mode: 'ring', k: 16, ringEntries: 300 })).toThrow(/failed \(status 1\): kvm-dirty-reference: --ring-entries 300 is not a power of two/);
  });

  const native = backends().find((b) => b.name === 'native');
  (native && !native.skipReason ? test : test.skip)('one real run on /dev/kvm parses to the epochs asked for', () => {
    const ref = new Reference(dir);
    ref.ensureBuilt();
    // its own ring sizing, from the smallest ring the kernel takes, agrees with the library's
    const r = ref.run({ mode: 'ring', guestGiB: 1, k: 16, epochs: 20 });
    expect(r).toMatchObject({ mode: 'ring', guestGiB: 1, k: 16, epochs: 20, pagesPerEpoch: 16, ringEntries: defaultRingEntries(16, ringLimits('native')) });
    // told that the host reserves 576 entries (Intel PML), it sizes as for such a host: 1024 entries
    expect(ref.run({ mode: 'ring', guestGiB: 1, k: 16, epochs: 5, ringReserved: 576 })).toMatchObject({ ringEntries: 1024, epochs: 5 });
    expect(() => ref.run({ mode: 'ring', guestGiB: 1, k: 500, epochs: 5, ringEntries: 1024, ringReserved: 576 })).toThrow(/k 500 exceeds the ring's soft limit \(448 entries\)/);
    const e = ref.run({ mode: 'harvest-per-entry', k: 2000, epochs: 2 });
    expect(e).toMatchObject({ mode: 'harvest-per-entry', k: 2000, epochs: 2, ringEntries: 65536 });
    expect(e.harvestNsPerEntry).toBeGreaterThan(0);
  });
});
