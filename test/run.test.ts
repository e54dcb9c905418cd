// vcpu.run / runAsync / kick, on both backends.
import { ExitReason, Workload, type Kvm } from '../lib';
import { describeEachBackend } from './helpers/backends';
import { makeGuest } from './helpers/guest';

describeEachBackend('vCPU execution', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  test('runAsync + kick on a spinning guest: the event loop keeps running, the run returns Intr', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const running = g.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 200));
    const seen = ticks;
    g.vcpu.kick();
    const exit = await running;
    clearInterval(timer);
    expect(seen).toBeGreaterThanOrEqual(5);
    expect(exit.reason).toBe(ExitReason.Intr);
    // The guest still spins: run it again and kick it again.
    const again = g.vcpu.runAsync();
    setTimeout(() => g.vcpu.kick(), 20);
    expect((await again).reason).toBe(ExitReason.Intr);
  });

  test('spinForExit: false with no run pending; true once a native run\'s exit is posted (the emulator: false); RangeError for a bad bound; EBADF after close', async () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 8 }));
    expect(g.vcpu.spinForExit(100)).toBe(false);
    const running = g.vcpu.runAsync();
    // one stride epoch takes well under a second: the exit is posted while the loop watches
    const seen = g.vcpu.spinForExit(1e6);
    expect(seen).toBe(b.name === 'native');
    expect((await running).io?.value).toBe(1);
    expect(g.vcpu.spinForExit(100)).toBe(false);
    for (const bad of [-1, NaN, 1e6 + 1, '5' as unknown as number]) expect(() => g.vcpu.spinForExit(bad)).toThrow(RangeError);
    g.vcpu.close();
    expect(() => g.vcpu.spinForExit(1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  test('setRunWatch: returns the previous watch (200 µs by default); runs go on with none and with the longest; a close during a watch returns at once; RangeError for a bad value; EBADF after close', async () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 8 }));
    expect(g.vcpu.setRunWatch(0)).toBe(200);
    expect((await g.vcpu.runAsync()).io?.value).toBe(1);
    expect((await g.vcpu.runAsync()).io?.value).toBe(2);
    expect(g.vcpu.setRunWatch(1e6)).toBe(0);
    expect((await g.vcpu.runAsync()).io?.value).toBe(3);
    expect((await g.vcpu.runAsync()).io?.value).toBe(4);
    expect(g.word(607)).toBe(4n);
    for (const bad of [-1, NaN, 1e6 + 1, '5' as unknown as number]) expect(() => g.vcpu.setRunWatch(bad)).toThrow(RangeError);
    expect(g.vcpu.setRunWatch(1e6)).toBe(1e6);
    // The thread now watches for up to a second for a run that never comes: close ends it
    // (the close joins the thread, so a watch that ran to its end would take the second).
    const t0 = performance.now();
    g.vcpu.close();
    expect(performance.now() - t0).toBeLessThan(500);
    expect(() => g.vcpu.setRunWatch(0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  test('runAsync of a stride workload resolves at its epoch exit', async () => {
    const g = makeGuest(kvm, { ringFor: 16 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 8 }));
    for (let epoch = 1; epoch <= 3; epoch++) {
      const exit = await g.vcpu.runAsync();
      expect(exit.reason).toBe(ExitReason.Io);
      expect(exit.io?.value).toBe(epoch);
    }
    expect(g.word(607)).toBe(3n);
  });

  test('one runAsync at a time: a second is EBUSY', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    const first = g.vcpu.runAsync();
    await expect(g.vcpu.runAsync()).rejects.toMatchObject({ code: 'EBUSY' });
    g.vcpu.kick();
    expect((await first).reason).toBe(ExitReason.Intr);
  });

  test('closing a vCPU during runAsync kicks and joins it; the promise settles', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    const running = g.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 50));
    g.vcpu.close();
    const settled = await running.then((e) => e.reason, (e: { code: string }) => e.code);
    expect([ExitReason.Intr, 'EBADF']).toContain(settled);
  });

  test('closing the Kvm during runAsync settles the promise', async () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    const running = g.vcpu.runAsync();
    await new Promise((r) => setTimeout(r, 50));
    kvm.close();
    const settled = await running.then((e) => e.reason, (e: { code: string }) => e.code);
    expect([ExitReason.Intr, 'EBADF']).toContain(settled);
  });

  test('load() needs a slot covering [0, 2 MiB); registers round-trip', () => {
    const vm = kvm.createVm();
    const v = vm.createVcpu(0);
    expect(() => v.load(Workload.spin())).toThrow(RangeError);
    expect(() => v.load({} as Workload)).toThrow(TypeError);
    v.setRegs({ rax: 0x1234_5678_9abc_def0n, rflags: 2n });
    const r = v.getRegs();
    expect(r.rax).toBe(0x1234_5678_9abc_def0n);
    expect(r.rflags).toBe(2n);
    expect(() => v.setRegs({ rax: 'x' as unknown as bigint })).toThrow(TypeError);
    const s = v.getSregs();
    v.setSregs(s);
    expect(v.getSregs().cr0).toBe(s.cr0);
    expect(() => v.setSregs({ ...s, cs: { ...s.cs, type: 16 } })).toThrow(/sregs.cs.type/);
    expect(() => v.setSregs({ ...s, gdt: undefined } as never)).toThrow(TypeError);
    expect(() => v.setSregs({ ...s, interruptBitmap: [0n] })).toThrow(TypeError);
    expect(() => v.setSregs({ ...s, cr3: 1n << 64n } as never)).toThrow(RangeError);
  });
});
