// KVM_RUN on the vCPU's own thread (runAsync), the kick (immediate_exit + a real-time signal
// to that thread), and closing a vCPU whose run is in flight.
import * as fs from 'node:fs';

import { Cap, ExitReason, MemFlag, Workload, type Kvm } from '../lib';
import type { NativeMemory } from '../lib/native/binding';
import { makeGuest } from './helpers/guest';
import { describeNative } from './helpers/native';

/** Threads of this process named as the addon names a vCPU's thread ("kvm-vcpu:<id>"). */
function vcpuThreads(): string[] {
  return fs
    .readdirSync('/proc/self/task')
    .map((tid) => {
      try {
        return fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      } catch {
        return ''; // a thread that ended meanwhile
      }
    })
    .filter((name) => name.startsWith('kvm-vcpu:'))
    .sort();
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeNative('native vCPU threads', (open) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = open()));
  afterEach(() => kvm.close());

  test('runAsync keeps the event loop running while Workload.spin runs; kick() returns Intr promptly', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    expect(vcpuThreads()).toEqual([]);
    let settled = false;
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    const running = g.vcpu.runAsync().finally(() => (settled = true));
    let exit;
    try {
      await sleep(150);
      expect(vcpuThreads()).toEqual(['kvm-vcpu:0']); // the vCPU's own thread, not the libuv pool
      expect(settled).toBe(false);
      expect(ticks).toBeGreaterThan(0); // timers fired while the guest spun
    } finally {
      clearInterval(timer);
      g.vcpu.kick();
      exit = await running;
    }
    // spin never exits by itself: only the kick ends the run (its latency is a benchmark figure).
    expect(exit).toEqual({ reason: ExitReason.Intr });
    // the guest resumes where it was (still spinning) and the thread is reused
    const again = g.vcpu.runAsync();
    await sleep(20);
    g.vcpu.kick();
    expect(await again).toEqual({ reason: ExitReason.Intr });
    expect(vcpuThreads()).toEqual(['kvm-vcpu:0']);
  });

  test('a kick with no run in flight makes the next run return Intr at once, and only that one', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.counter({ page: 800 }));
    g.vcpu.kick();
    expect(g.vcpu.run()).toEqual({ reason: ExitReason.Intr });
    expect(g.vcpu.run().io?.value).toBe(1);
    g.vcpu.kick();
    expect(await g.vcpu.runAsync()).toEqual({ reason: ExitReason.Intr });
    expect((await g.vcpu.runAsync()).io?.value).toBe(2);
    expect(g.word(800)).toBe(2n);
  });

  test('while runAsync is in flight, the vCPU ioctls that would block the JS thread are EBUSY', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    const state = g.vcpu.getState();
    const xsaveGet = kvm.checkExtension(Cap.Xsave2) > 0 ? 'KVM_GET_XSAVE2' : 'KVM_GET_XSAVE';
    const running = g.vcpu.runAsync();
    for (const [call, ioctl] of [
      [() => g.vcpu.run(), 'KVM_RUN'],
      [() => g.vcpu.getRegs(), 'KVM_GET_REGS'],
      [() => g.vcpu.getSregs(), 'KVM_GET_SREGS'],
      [() => g.vcpu.load(Workload.spin()), 'KVM_GET_SREGS'],
      [() => g.vcpu.loadImage({ image: Uint8Array.of(0xf4) }), 'KVM_GET_SREGS'],
      [() => g.vcpu.completeIo(), 'KVM_RUN'],
      [() => g.vcpu.getState(), 'KVM_GET_REGS'],
      [() => g.vcpu.setState(state), 'KVM_SET_CPUID2'],
      [() => g.vcpu.getFpu(), 'KVM_GET_FPU'],
      [() => g.vcpu.getXsave(), xsaveGet],
      [() => g.vcpu.setXsave(state.xsave!), 'KVM_SET_XSAVE'],
      [() => g.vcpu.getXcrs(), 'KVM_GET_XCRS'],
      [() => g.vcpu.getMsrs([0x10]), 'KVM_GET_MSRS'],
      [() => g.vcpu.setMsrs([]), 'KVM_SET_MSRS'],
      [() => g.vcpu.getVcpuEvents(), 'KVM_GET_VCPU_EVENTS'],
      [() => g.vcpu.getDebugregs(), 'KVM_GET_DEBUGREGS'],
      [() => g.vcpu.getMpState(), 'KVM_GET_MP_STATE'],
      [() => g.vcpu.setMpState(0), 'KVM_SET_MP_STATE'],
      [() => g.vcpu.getCpuid2(), 'KVM_GET_CPUID2'],
      [() => g.vcpu.setCpuid2([]), 'KVM_SET_CPUID2'],
    ] as const) {
      expect(call).toThrow(expect.objectContaining({ name: 'KvmError', code: 'EBUSY', ioctl }));
    }
    // the ring and the VM stay usable meanwhile
    expect(g.vm.checkExtension(0)).toBeGreaterThanOrEqual(0);
    g.vcpu.kick();
    expect((await running).reason).toBe(ExitReason.Intr);
    expect(g.vcpu.getRegs().rip).toBeGreaterThan(0n);
  });

  test('closing a vCPU during runAsync kicks and joins its thread; the promise resolves with Intr', async () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    g.vcpu.load(Workload.spin());
    const running = g.vcpu.runAsync();
    await sleep(50);
    expect(vcpuThreads()).toEqual(['kvm-vcpu:0']);
    g.vcpu.close();
    expect(vcpuThreads()).toEqual([]); // joined inside close()
    expect(g.vcpu.runBuffer.byteLength).toBe(0);
    expect(await running).toEqual({ reason: ExitReason.Intr });
  });

  test('closing the VM (children first) during runAsync on several vCPUs settles every promise', async () => {
    const g = makeGuest(kvm, { vcpus: 3 });
    for (const v of g.vcpusAll) v.load(Workload.spin());
    const runs = g.vcpusAll.map((v) => v.runAsync());
    await sleep(50);
    expect(vcpuThreads()).toEqual(['kvm-vcpu:0', 'kvm-vcpu:1', 'kvm-vcpu:2']);
    g.vm.close();
    expect(vcpuThreads()).toEqual([]);
    expect(await Promise.all(runs)).toEqual([{ reason: ExitReason.Intr }, { reason: ExitReason.Intr }, { reason: ExitReason.Intr }]);
  });

  test('load() into one slot larger than an ArrayBuffer may be: the harness maps it all, the guest writes above 4 GiB', () => {
    const vm = kvm.createVm();
    vm.enableDirtyRing(kvm.dirtyRingLimits().minBytes);
    const size = 8 * 2 ** 30; // one slot from gpa 0: harness pages 0..511, then workload pages
    const mem = vm.createMemory(size);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, flags: MemFlag.LogDirtyPages });
    const vcpu = vm.createVcpu(0);
    const page = 7 * 2 ** 18 + 3; // gpa 7 GiB + 12 KiB
    vcpu.load(Workload.stride({ firstPage: page, pages: 2, stridePages: 1 }));
    expect(vcpu.run()).toMatchObject({ reason: ExitReason.Io, io: { port: 0x10, value: 1 } });
    const words = new BigUint64Array((mem._handle as NativeMemory).view(page * 4096, 8192).buffer);
    expect([words[0], words[512]]).toEqual([1n, 1n]);
    // the harness pages are host writes: only the two guest pages are in the ring
    const ring = new DataView(vcpu.dirtyRing!.buffer);
    expect([0, 1, 2].map((i) => [ring.getUint32(i * 16, true), Number(ring.getBigUint64(i * 16 + 8, true))])).toEqual([
      [1, page],
      [1, page + 1],
      [0, 0],
    ]);
    vm.close();
  });

  test('load() without a slot covering guest-physical [0, 2 MiB) is a RangeError that says what is missing', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(4 << 20);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 1 << 20, memory: mem });
    const vcpu = vm.createVcpu(0);
    expect(() => vcpu.load(Workload.spin())).toThrow(expect.objectContaining({ name: 'RangeError', message: expect.stringContaining('[0, 2 MiB)') }));
    vm.close();
  });
});
