// `kvm-dirty probe`: the capability report, as a table and as JSON.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeEachBackend } from './helpers/backends';

const cli = join(__dirname, '..', 'dist', 'bin', 'kvm-dirty.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describeEachBackend('kvm-dirty probe', (b) => {
  test('--json: backend, host, API version and every dirty-tracking capability', () => {
    const r = run('probe', '--json', '--backend', b.name);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ backend: b.name, arch: 'x86_64', apiVersion: 12, dirtyRing: { maxBytes: 1048576, maxEntries: 65536, acquireRelease: true, withBitmap: false } });
    const caps = Object.fromEntries(report.capabilities.map((c: { name: string; value: number }) => [c.name, c.value]));
    expect(caps).toMatchObject({
      KVM_CAP_DIRTY_LOG_RING: 1048576,
      KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 1048576,
      KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: 0,
      KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: 3,
      KVM_CAP_S390_CMMA_MIGRATION: 0,
      KVM_CAP_NR_MEMSLOTS: 32764,
    });
    expect(typeof report.host.flavour).toBe('string');
    // the CPU, as /proc/cpuinfo names it (Intel and AMD hosts behave differently in places)
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    expect(cpuinfo).toContain(report.host.cpu.model);
    expect(report.host.cpu.vendor).toBe(({ GenuineIntel: 'Intel', AuthenticAMD: 'AMD' } as Record<string, string>)[/^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1] ?? ''] ?? report.host.cpu.vendor);
    expect(report.dirtyRing.reservedEntries).toBe(report.host.pml ? 576 : 64);
    expect(report.dirtyRing.minBytes).toBe(report.host.pml ? 16384 : 4096);
  });

  test('table: one line per capability with its kernel name and number', () => {
    const r = run('probe', '--backend', b.name);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^backend\\s+${b.name}`, 'm'));
    expect(r.stdout).toMatch(/^KVM_CAP_DIRTY_LOG_RING \(192\)\s+1048576 \(ring up to 65536 entries of 16 bytes\)$/m);
    expect(r.stdout).toMatch(/^KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP \(228\)\s+0 \(absent\)$/m);
    expect(r.stdout).toMatch(/^CPU\s+\S+: .+$/m);
    expect(r.stdout).toMatch(/^dirty ring sizes\s+(4096|16384) \.\. 1048576 bytes; (64|576) entries reserved/m);
  });
});

test('--pml: the emulated Intel host with PML reserves 576 entries; 16 KiB is its smallest ring', () => {
  const r = run('probe', '--json', '--pml');
  expect(r.status).toBe(0);
  const report = JSON.parse(r.stdout);
  expect(report).toMatchObject({ backend: 'emulator', host: { pml: true }, dirtyRing: { reservedEntries: 576, minBytes: 16384, maxBytes: 1048576 } });
  expect(report.host.description).toMatch(/576 reserved entries, an Intel host with PML/);
  expect(run('probe', '--pml', '--backend', 'native').stderr).toMatch(/pml is a modelled host/);
});

test('probe of another architecture runs on the emulator', () => {
  const r = run('probe', '--json', '--arch', 's390x');
  expect(r.status).toBe(0);
  const report = JSON.parse(r.stdout);
  expect(report).toMatchObject({ backend: 'emulator', arch: 's390x', fallbackReason: expect.stringMatching(/s390x/) });
  expect(report.capabilities.find((c: { cap: number }) => c.cap === 145).value).toBe(1);
});

test('a bad option value is refused with a message', () => {
  const r = run('probe', '--backend', 'bogus');
  expect(r.status).not.toBe(0);
  expect(r.stderr).toMatch(/bogus/);
});
