// Every example runs to completion as a user would run it (node dist/examples/<name>.js, a child
// process), on the emulator and, for the examples that take --backend, on the native backend
// where it is available. Each example checks its own results and throws when they are wrong;
// here we also hold it to the lines that carry its point. dist/ comes from tsc (`npm test`
// runs it first, as pretest).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { backends } from './helpers/backends';

const DIST = join(__dirname, '..', 'dist', 'examples');

interface Example {
  file: string;
  /** true: takes --backend native|emulator; false: emulator only (the emulated arch's profile) */
  backends: boolean;
  args?: string[];
  /** lines that must appear; `BACKEND` stands for the backend's name */
  expect: RegExp[] | ((backend: string) => RegExp[]);
}

const EXAMPLES: Example[] = [
  {
    file: 'ring-harvest.js',
    backends: true,
    expect: (b) => [
      new RegExp(`^backend: ${b};`, 'm'),
      // sized from the host: a soft limit of at least 512 entries above its reserve
      /^ring: (1024 entries \(64 reserved, soft limit 960\)|2048 entries \(576 reserved, soft limit 1472\)) via KVM_CAP_DIRTY_LOG_RING_ACQ_REL$/m,
      /^epoch 1: 256 entries \(slot 1\), pages 1000, 1007, 1014, 1021, \.\.\. each holding 1$/m,
      /^200 epochs, 51200 entries harvested, every page checked; harvest \+ reset [\d.]+ µs per epoch$/m,
    ],
  },
  {
    // the demo on the emulated Intel host with PML: 576 reserved entries, a larger ring
    file: 'ring-harvest.js',
    backends: false,
    args: ['--backend', 'emulator', '--pml'],
    expect: [
      /^backend: emulator; host: .*576 reserved entries, an Intel host with PML/m,
      /^ring: 2048 entries \(576 reserved, soft limit 1472\) via KVM_CAP_DIRTY_LOG_RING_ACQ_REL$/m,
      /^200 epochs, 51200 entries harvested, every page checked/m,
    ],
  },
  {
    file: 'bitmap.js',
    backends: true,
    expect: (b) => [
      new RegExp(`^backend: ${b};`, 'm'),
      /^plain: get -> 10 dirty pages: 600 700 800 900 1000 1100 1200 1300 1400 1500$/m,
      /^ {2}get again -> 0 /m,
      /^manual protect: get -> 10 dirty pages: 600 700 800 900 1000 1100 1200 1300 1400 1500$/m,
      /^ {2}get again -> 10 /m,
      /^ {2}clear pages 600, 700 -> 8 left$/m,
    ],
  },
  {
    file: 'checkpoint-file.js',
    backends: true,
    expect: (b) => [
      new RegExp(`^backend ${b}, dirty tracking: ring$`, 'm'),
      /^checkpointed 200 epochs \(32 pages each\)/m,
      /^restored epoch 200: memory identical$/m,
      /^next epoch: copy OUT 201, original OUT 201; page 512 holds 201; memory still identical$/m,
    ],
  },
  {
    file: 'migrate.js',
    backends: true,
    expect: (b) => [
      new RegExp(`^backend ${b}, dirty tracking: ring$`, 'm'),
      /destination memory equals the source$/m,
      /^next epoch: source OUT (\d+), destination OUT \1 -> identical$/m,
    ],
  },
  {
    file: 'failover.js',
    backends: true,
    args: ['--kills', '2'],
    expect: (b) => [new RegExp(`^${b}: 2/2 failovers, 0 gaps, 0 duplicates; the client received \\d+ outputs, each exactly once, in order$`, 'm')],
  },
  {
    file: 'arm64-ring-with-bitmap.js',
    backends: false,
    expect: [
      /^backend: emulator, arch: arm64$/m,
      /^KVM_CHECK_EXTENSION: DIRTY_LOG_RING 0, DIRTY_LOG_RING_ACQ_REL 1048576, DIRTY_LOG_RING_WITH_BITMAP 1$/m,
      /^KVM_ENABLE_CAP\(KVM_CAP_DIRTY_LOG_RING\) on arm64: EINVAL/m,
      /^KVM_ENABLE_CAP\(KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP\) after a memory slot: EINVAL$/m,
      /^epoch 4: ring 20 entries \(slot 1\), pages 600, 610, 620 \.\. 790$/m,
      /^bitmap, slot 1 \(vCPU writes went to the ring\): 0 pages$/m,
      /^bitmap, slot 2 \(writes without a vCPU\): 5 pages: 2048, 2049, 2050, 2051, 2052$/m,
    ],
  },
  {
    file: 's390-cmma-migration.js',
    backends: false,
    expect: [/^s390x \(emulator\): 12288 pages in 3 memslots$/m, /^identical: all 12288 pages$/m],
  },
];

function run(file: string, args: string[]): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(DIST, file), ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    // the example picks its backend from --backend alone
    env: { ...process.env, KVM_DIRTY_BACKEND: undefined },
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

test('every example in examples/ is run here, and dist/examples holds it (tsc has run)', () => {
  const sources = readdirSync(join(__dirname, '..', 'examples')).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '.js'));
  expect([...new Set(EXAMPLES.map((e) => e.file))].sort()).toEqual(sources.sort());
  for (const e of EXAMPLES) expect([e.file, existsSync(join(DIST, e.file))]).toEqual([e.file, true]);
});

for (const b of backends()) {
  const cases = EXAMPLES.filter((e) => e.backends || b.name === 'emulator');
  const title = `examples [${b.name}]`;
  const body = (): void => {
    test.each(cases.map((e) => [[e.file, ...(e.args ?? [])].join(' '), e] as const))('%s', (_file, e) => {
      const args = [...(e.backends ? ['--backend', b.name] : []), ...(e.args ?? [])];
      const r = run(e.file, args);
      expect({ status: r.status, signal: r.signal, stderr: r.status === 0 ? '' : r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      for (const line of typeof e.expect === 'function' ? e.expect(b.name) : e.expect) expect(r.stdout).toMatch(line);
    });
  };
  if (b.skipReason && process.env.KVM_REQUIRED !== '1') describe.skip(`${title} (skipped: ${b.skipReason})`, body);
  else describe(title, body);
}
