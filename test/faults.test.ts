// Faults: a missing or unpermitted device. `auto` falls back to the emulator and says why;
// `native` forced fails with KvmError ENOENT / EACCES and a hint.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { openKvm } from '../lib';
import { backends, unprivilegedLoadBlocker } from './helpers/backends';

const native = backends().find((b) => b.name === 'native');
const d = native && !native.skipReason ? describe : describe.skip;

describe('device faults (any host)', () => {
  test('a missing device: auto falls back with the reason; native throws ENOENT with a hint', () => {
    const kvm = openKvm({ device: '/nonexistent/kvm' });
    try {
      expect(kvm.backend).toBe('emulator');
      expect(kvm.fallbackReason).toMatch(/ENOENT/);
      expect(kvm.fallbackReason).toMatch(/\/nonexistent\/kvm/);
    } finally {
      kvm.close();
    }
    let err: { name?: string; code?: string; errno?: number; syscall?: string; message?: string } = {};
    try {
      openKvm({ backend: 'native', device: '/nonexistent/kvm' });
    } catch (e) {
      err = e as typeof err;
    }
    // The addon may be absent on this host: then the loader's error stands in for ENOENT.
    if (native?.skipReason && !/ENOENT|EACCES/.test(native.skipReason)) return;
    expect({ name: err.name, code: err.code, syscall: err.syscall }).toEqual({ name: 'KvmError', code: 'ENOENT', syscall: 'open' });
    expect(err.errno).toBe(-2);
    expect(err.message).toMatch(/Is KVM loaded and enabled\?/);
  });

  test('KVM_DIRTY_BACKEND and KVM_DIRTY_DEVICE choose the defaults', () => {
    const script = `const { openKvm } = require(${JSON.stringify(join(__dirname, '..', 'dist', 'lib'))});
      const k = openKvm(); console.log(JSON.stringify({ backend: k.backend, reason: k.fallbackReason ?? null })); k.close();`;
    const run = (env: Record<string, string>) =>
      JSON.parse(spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env } }).stdout);
    expect(run({ KVM_DIRTY_BACKEND: 'emulator' })).toEqual({ backend: 'emulator', reason: null });
    const viaDevice = run({ KVM_DIRTY_BACKEND: 'auto', KVM_DIRTY_DEVICE: '/nonexistent/kvm' });
    expect(viaDevice.backend).toBe('emulator');
    expect(viaDevice.reason).toMatch(/ENOENT/);
  });

  test('other architectures run on the emulator; forcing native for them is a RangeError', () => {
    const kvm = openKvm({ arch: 's390x' });
    expect(kvm.backend).toBe('emulator');
    expect(kvm.arch).toBe('s390x');
    expect(kvm.fallbackReason).toMatch(/s390x requested/);
    kvm.close();
    expect(() => openKvm({ backend: 'native', arch: 's390x' })).toThrow(RangeError);
    expect(() => openKvm({ backend: 'bogus' as 'auto' })).toThrow(RangeError);
    expect(() => openKvm({ arch: 'mips' as 'arm64' })).toThrow(RangeError);
  });
});

d('device faults (native host)', () => {
  const blocker = process.getuid?.() === 0 ? unprivilegedLoadBlocker() : 'not running as root';
  const asNobody = blocker ? test.skip : test;
  asNobody(`an unpermitted device: native throws EACCES with a hint; auto falls back${blocker ? ` (skipped: ${blocker})` : ''}`, () => {
    const script = `const { openKvm } = require(${JSON.stringify(join(__dirname, '..', 'dist', 'lib'))});
      let out = {};
      try { openKvm({ backend: 'native' }); } catch (e) { out = { name: e.name, code: e.code, syscall: e.syscall, message: e.message }; }
      const k = openKvm(); out.auto = k.backend; out.reason = k.fallbackReason; k.close();
      console.log(JSON.stringify(out));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', uid: 65534, gid: 65534, cwd: '/' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ name: 'KvmError', code: 'EACCES', syscall: 'open', auto: 'emulator' });
    expect(out.message).toMatch(/kvm group/);
    expect(out.reason).toMatch(/EACCES/);
  });
});
