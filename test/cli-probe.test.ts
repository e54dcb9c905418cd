// `kvm-dirty probe`: the capability report, as a table and as JSON.
import { spawnSync } from 'node:child_process';
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
  });

  test('table: one line per capability with its kernel name and number', () => {
    const r = run('probe', '--backend', b.name);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^backend\\s+${b.name}`, 'm'));
    expect(r.stdout).toMatch(/^KVM_CAP_DIRTY_LOG_RING \(192\)\s+1048576 \(ring up to 65536 entries of 16 bytes\)$/m);
    expect(r.stdout).toMatch(/^KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP \(228\)\s+0 \(absent\)$/m);
  });
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
