// KVM_RUN on the vCPU's own thread (runAsync), the kick (immediate_exit + a real-time signal
// to that thread), and closing a vCPU whose run is in flight.
import * as fs from 'node:fs';

import { ExitReason, Workload, type Kvm } from '../lib';
import { makeGuest } from './helpers/guest';
import { describeNative } from './helpers/native';

const threads = (): number => fs.readdirSync('/proc/self/task').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeNative('native vCPU threads', (open) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = open()));
  afterEach(() => kvm.close());

  test('runAsync keeps the event loop running while Workload.spin runs; kick() returns Intr promptly', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    const before = threads();
    let settled = false;
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    const running = g.vcpu.runAsync().finally(() => (settled = true));
    await sleep(150);
    expect(threads()).toBe(before + 1); // the vCPU's own thread, not the libuv pool
    expect(settled).toBe(false);
    expect(ticks).toBeGreaterThanOrEqual(10);
    const t0 = process.hrtime.bigint();
    g.vcpu.kick();
    const exit = await running;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    clearInterval(timer);
    expect(exit).toEqual({ reason: ExitReason.Intr });
    expect(ms).toBeLessThan(100); // measured here: well under 1 ms
    // the guest resumes where it was (still spinning) and the thread is reused
    const again = g.vcpu.runAsync();
    await sleep(20);
    g.vcpu.kick();
    expect(await again).toEqual({ reason: ExitReason.Intr });
    expect(threads()).toBe(before + 1);
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
    const running = g.vcpu.runAsync();
    for (const [call, ioctl] of [
      [() => g.vcpu.run(), 'KVM_RUN'],
      [() => g.vcpu.getRegs(), 'KVM_GET_REGS'],
      [() => g.vcpu.getSregs(), 'KVM_GET_SREGS'],
      [() => g.vcpu.load(Workload.spin()), 'KVM_GET_SREGS'],
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
    const g = makeGuest(kvm, { ringBytes: 4096 });
    g.vcpu.load(Workload.spin());
    const before = threads();
    const running = g.vcpu.runAsync();
    await sleep(50);
    expect(threads()).toBe(before + 1);
    g.vcpu.close();
    expect(threads()).toBe(before); // joined inside close()
    expect(g.vcpu.runBuffer.byteLength).toBe(0);
    expect(await running).toEqual({ reason: ExitReason.Intr });
  });

  test('closing the VM (children first) during runAsync on several vCPUs settles every promise', async () => {
    const g = makeGuest(kvm, { vcpus: 3 });
    for (const v of g.vcpusAll) v.load(Workload.spin());
    const runs = g.vcpusAll.map((v) => v.runAsync());
    await sleep(50);
    g.vm.close();
    expect(await Promise.all(runs)).toEqual([{ reason: ExitReason.Intr }, { reason: ExitReason.Intr }, { reason: ExitReason.Intr }]);
  });
});
