// Native failures are lib/errors.ts KvmErrors built in C++ with the errno captured right after
// the call; opening a device that is missing or forbidden says what to check.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Cap, KvmError, openKvm, type Kvm } from '../lib';
import { openNativeBackend } from '../lib/native/backend';
import { unprivilegedLoadBlocker } from './helpers/backends';
import { describeNative } from './helpers/native';

const ROOT = path.resolve(__dirname, '..');

/**
 * openNativeBackend({ device }) in a child process running as `uid`, with lib/*.ts transpiled
 * on the fly; returns the error it threw (as plain data) or { opened: true }.
 */
function openAs(uid: number, device: string): Record<string, unknown> {
  const script = `
    const fs = require('fs');
    const ts = require(${JSON.stringify(require.resolve('typescript'))});
    require.extensions['.ts'] = (m, file) => m._compile(ts.transpileModule(fs.readFileSync(file, 'utf8'),
      { fileName: file, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText, file);
    const { openNativeBackend } = require(${JSON.stringify(path.join(ROOT, 'lib/native/backend.ts'))});
    let out;
    try { openNativeBackend({ device: process.argv[1] }).close(); out = { opened: true }; }
    catch (e) { out = { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, ioctl: e.ioctl, path: e.path, message: e.message }; }
    process.stdout.write(JSON.stringify(out));`;
  const child = spawnSync(process.execPath, ['-e', script, device], { uid, gid: uid, encoding: 'utf8', cwd: os.tmpdir() });
  if (child.status !== 0) throw new Error(`child failed: ${child.stderr}`);
  return JSON.parse(child.stdout) as Record<string, unknown>;
}

describeNative('native errors', (open) => {
  test('a missing device: KvmError ENOENT from open(), with the hint', () => {
    const device = '/nonexistent/kvm';
    let err: (KvmError & { path?: string }) | undefined;
    try {
      openNativeBackend({ device });
    } catch (e) {
      err = e as KvmError;
    }
    expect(err).toMatchObject({ name: 'KvmError', code: 'ENOENT', errno: -2, syscall: 'open', path: device });
    expect(err!.ioctl).toBeUndefined();
    expect(err!.message).toContain('Is KVM loaded and enabled?');
    expect(() => openKvm({ backend: 'native', device })).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'open' }));
  });

  test("backend 'auto' on a missing device falls back to the emulator and says why", () => {
    const kvm = openKvm({ backend: 'auto', device: '/nonexistent/kvm' });
    expect(kvm.backend).toBe('emulator');
    expect(kvm.fallbackReason).toMatch(/ENOENT.*Is KVM loaded and enabled\?/);
    kvm.close();
  });

  // As root the attempt is made as uid 65534, which must be able to load the package.
  const blocker = process.getuid!() === 0 ? unprivilegedLoadBlocker() : undefined;
  (blocker ? test.skip : test)(`a device without permission: KvmError EACCES from open(), with the hint${blocker ? ` (skipped: ${blocker})` : ''}`, () => {
    // A file nobody may open. As root (which may open anything) the attempt is made by a
    // child process running as nobody.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-'));
    const device = path.join(dir, 'kvm');
    fs.writeFileSync(device, '');
    fs.chmodSync(device, 0o000);
    fs.chmodSync(dir, 0o755);
    try {
      let err: Record<string, unknown>;
      if (process.getuid!() === 0) {
        err = openAs(65534, device);
      } else {
        try {
          openNativeBackend({ device });
          err = { opened: true };
        } catch (e) {
          err = { ...(e as object), name: (e as Error).name, message: (e as Error).message };
        }
      }
      expect(err).toMatchObject({ name: 'KvmError', code: 'EACCES', errno: -13, syscall: 'open', path: device });
      expect(err.ioctl).toBeUndefined();
      expect(err.message).toContain(`no access to ${device} (kvm group?)`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a failing ioctl throws the KvmError class of lib/errors.ts, errno as the kernel returned it', () => {
    const kvm: Kvm = open();
    const vm = kvm.createVm();
    vm.createVcpu(0);
    let err: unknown;
    try {
      vm.createVcpu(0);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KvmError); // the addon was handed this realm's class
    expect(err).toMatchObject({ name: 'KvmError', code: 'EEXIST', errno: -17, syscall: 'ioctl', ioctl: 'KVM_CREATE_VCPU' });
    expect((err as Error).message).toBe('EEXIST: file already exists, ioctl KVM_CREATE_VCPU');
    // ENOTTY from a request x86 does not know, made anyway
    expect(() => vm.getCmmaBits({ startGfn: 0, count: 1, peek: true })).toThrow(
      expect.objectContaining({ code: 'ENOTTY', errno: -25, ioctl: 'KVM_S390_GET_CMMA_BITS' }),
    );
    expect(() => vm.enableCap(Cap.DirtyLogRing, [2 << 20])).toThrow(expect.objectContaining({ code: 'E2BIG', ioctl: 'KVM_ENABLE_CAP' }));
    kvm.close();
  });
});
