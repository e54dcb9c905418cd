// Lifetime of the native resources: buffers detached before unmap, fds that never leak and
// never reach child processes, guest memory a VM still names never handed back to the process.
import { spawnSync } from 'node:child_process';
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { ExitReason, MemFlag, Workload, type Kvm } from '../lib';
import type { NativeMemory } from '../lib/native/binding';
import { makeGuest } from './helpers/guest';
import { describeNative } from './helpers/native';

/** fd -> what it is (readlink of /proc/self/fd/N). */
function openFds(): Map<number, string> {
  const fds = new Map<number, string>();
  for (const name of fs.readdirSync('/proc/self/fd')) {
    try {
      fds.set(Number(name), fs.readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // the fd readdir itself used, gone by now
    }
  }
  return fds;
}

/** The fds the library opens: /dev/kvm, the VM and vCPU inodes, guest memory's memfds. */
const isKvmFd = (target: string): boolean => target === '/dev/kvm' || target.startsWith('anon_inode:kvm') || target.startsWith('/memfd:kvm-dirty:guest');
const kvmFds = (): string[] => [...openFds().values()].filter(isKvmFd).sort();
/** kvm_run and ring mappings, and guest memory. */
const kvmMappings = (): string[] => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('kvm-vcpu') || l.includes('/memfd:kvm-dirty:guest'));

/** PROT_NONE regions of exactly `bytes` in /proc/self/maps. */
function inaccessibleRegions(bytes: number): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .map((l) => /^([0-9a-f]+)-([0-9a-f]+) ---p /.exec(l))
    .filter((m) => m !== null && parseInt(m[2], 16) - parseInt(m[1], 16) === bytes).length;
}

/** A full collection, so finalizers of collected buffers run. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

describeNative('native lifetime', (open) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = open()));
  afterEach(() => kvm.close());

  test('close detaches every buffer before unmapping: byteLength 0, views empty, no fault', () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    const memory = g.data.buffer;
    const run = g.vcpu.runBuffer;
    const ring = g.vcpu.dirtyRing!.buffer;
    const views = [new Uint8Array(memory), new Uint8Array(run), new BigUint64Array(ring)];
    const dv = new DataView(memory);
    views[0][0] = 7;
    g.vcpu.close();
    g.vm.close(); // closes the memories
    for (const b of [memory, run, ring]) expect(b.byteLength).toBe(0);
    for (const v of views) {
      expect(v.length).toBe(0);
      expect(v[0]).toBeUndefined();
    }
    expect(() => dv.getUint8(0)).toThrow(TypeError);
    // getters of closed objects: empty buffers
    expect(g.data.buffer.byteLength).toBe(0);
    expect(g.vcpu.runBuffer.byteLength).toBe(0);
    // the finalizers of the detached buffers only drop references: a GC now unmaps nothing twice
    views.length = 0;
    collectGarbage();
    expect(kvmMappings()).toEqual([]);
  });

  test('a buffer JS still holds keeps its mapping when the objects are collected without close()', () => {
    let buffer: ArrayBuffer | undefined;
    (() => {
      const vm = kvm.createVm();
      const mem = vm.createMemory(1 << 20);
      buffer = mem.buffer;
      new Uint8Array(buffer)[123] = 45;
    })();
    collectGarbage();
    expect(new Uint8Array(buffer!)[123]).toBe(45);
  });

  test('guest memory closed while its slot exists: the range stays reserved and the guest write lands nowhere', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 1 }));
    expect(g.vcpu.run().reason).toBe(ExitReason.Io);
    g.data.close();
    expect(g.data.buffer.byteLength).toBe(0);
    // Node allocating now cannot get the old range (it is a PROT_NONE reservation until the
    // VM goes), so the guest's next write cannot reach Node's memory. The kernel reports it:
    // upstream KVM_RUN fails with EFAULT; PVM hands the write to userspace as MMIO.
    const filler = Array.from({ length: 8 }, () => new Uint8Array(1 << 20).fill(0x5a));
    let outcome: unknown;
    try {
      outcome = g.vcpu.run();
    } catch (e) {
      outcome = e;
    }
    const mmio = { reason: ExitReason.Mmio, mmio: { physAddr: 600 * 4096, len: 8, isWrite: true, data: [2, 0, 0, 0, 0, 0, 0, 0] } };
    const efault = expect.objectContaining({ name: 'KvmError', code: 'EFAULT', ioctl: 'KVM_RUN' });
    expect([mmio, efault]).toContainEqual(outcome);
    expect(filler.every((f) => f.every((b) => b === 0x5a))).toBe(true);
    const reserved = inaccessibleRegions(g.data.size);
    expect(reserved).toBeGreaterThanOrEqual(1);
    g.vm.close(); // the last pin goes: the reservation is unmapped
    expect(inaccessibleRegions(g.data.size)).toBe(reserved - 1);
  });

  test('guest memory larger than one ArrayBuffer (4 GiB on Node 20): views instead of one buffer', () => {
    const vm = kvm.createVm();
    const size = 64 * 2 ** 30; // MAP_NORESERVE: costs only the pages touched
    const mem = vm.createMemory(size);
    const native = mem._handle as NativeMemory;
    if (size > bufferConstants.MAX_LENGTH) {
      // Node-API makes external ArrayBuffers through node::Buffer, capped at MAX_LENGTH
      expect(() => mem.buffer).toThrow(expect.objectContaining({ name: 'RangeError', message: expect.stringContaining('MAX_LENGTH') }));
    } else {
      expect(mem.buffer.byteLength).toBe(size);
    }
    const high = native.view(60 * 2 ** 30, 4096);
    const last = native.view(size - 4096, 4096);
    high[7] = 0x42;
    last[4095] = 0x43;
    expect(native.view(60 * 2 ** 30, 8)[7]).toBe(0x42); // views alias the same pages
    expect(native.view(size - 1, 1)[0]).toBe(0x43);
    expect(() => native.view(size - 4096, 4097)).toThrow(expect.objectContaining({ name: 'RangeError' }));
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 2 ** 32, memory: mem, flags: MemFlag.LogDirtyPages });
    vm.close();
    expect([high.length, last.length, high.buffer.byteLength]).toEqual([0, 0, 0]);
  });

  test('1,000 VM lifecycles leave /proc/self/fd and /proc/self/maps as they were', () => {
    const before = openFds();
    const mapsBefore = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').length;
    for (let i = 0; i < 1000; i++) {
      const vm = kvm.createVm();
      if (i % 2 === 0) vm.enableDirtyRing(kvm.dirtyRingLimits().minBytes);
      const mem = vm.createMemory(2 << 20);
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, flags: MemFlag.LogDirtyPages });
      const vcpu = vm.createVcpu(0);
      void vcpu.runBuffer;
      vm.close();
    }
    expect(openFds()).toEqual(before);
    // the same number of mappings, give or take what the JS heap itself grew by
    expect(Math.abs(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').length - mapsBefore)).toBeLessThan(20);
    expect(kvmMappings()).toEqual([]);
  });

  test('errors on the way (a vCPU id taken twice) close what they opened', () => {
    const vm = kvm.createVm();
    vm.enableDirtyRing(kvm.dirtyRingLimits().minBytes);
    vm.createVcpu(0);
    const fds = openFds();
    for (let i = 0; i < 50; i++) expect(() => vm.createVcpu(0)).toThrow(expect.objectContaining({ code: 'EEXIST', ioctl: 'KVM_CREATE_VCPU' }));
    expect(openFds()).toEqual(fds);
    vm.close();
  });

  test('every fd is O_CLOEXEC, and a child process inherits none', () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    const fds = [...openFds()].filter(([, t]) => isKvmFd(t));
    // harness and data memory: one memfd each
    const memfd = '/memfd:kvm-dirty:guest (deleted)';
    expect(fds.map(([, t]) => t).sort()).toEqual(['/dev/kvm', memfd, memfd, 'anon_inode:kvm-vcpu:0', 'anon_inode:kvm-vm']);
    for (const [fd] of fds) {
      const flags = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1];
      expect(parseInt(flags, 8) & 0o2000000).toBe(0o2000000); // O_CLOEXEC
    }
    const child = spawnSync('/bin/ls', ['-l', '/proc/self/fd/'], { encoding: 'utf8' });
    expect(child.status).toBe(0);
    expect(child.stdout).toMatch(/->/);
    expect(child.stdout).not.toMatch(/kvm/);
    g.vm.close();
    expect(kvmFds()).toEqual(['/dev/kvm']);
  });
});
