// The workload models (lib/guest/model.ts) execute lib/guest/x86.ts's code: same pages, same
// order, same values, same registers at every exit, so a checkpoint of registers + memory
// continues in a new VM. Plus the vCPU's exits the models reach: MMIO, shutdown, emulation
// failure, EINTR, EFAULT.
//
//   gfn 0 .. 511       slot 0  harness (page tables + code)
//   gfn 512 .. 1535    slot 1  logged (test/helpers/guest.ts)
import fc from 'fast-check';
import { DirtyPages, ExitReason, MemFlag, Workload, openKvm, type Kvm, type Vcpu } from '../lib';
import { xorshift64Pair } from '../lib/guest/model';
import { COUNTER_GPA, RANDOM_GPA, STRIDE_GPA, xorshift64 } from '../lib/guest/x86';
import { SYNC_SPIN_MS } from '../lib/emulator/vcpu';
import { expectKvmError } from './helpers/backends';
import { DATA_GFN, makeGuest } from './helpers/guest';

const PAGE = 4096;
const GIB = 2 ** 30;

function harvestGfns(vcpu: Vcpu): number[] {
  const out = new DirtyPages(65536);
  vcpu.dirtyRing!.harvest(out);
  return Array.from(out.offsets.subarray(0, out.length), (o) => DATA_GFN + o);
}

describe('emulator workload models', () => {
  let kvm: Kvm;
  beforeEach(() => (kvm = openKvm({ backend: 'emulator' })));
  afterEach(() => kvm.close());

  test('xorshift64 on u32 pairs is the BigInt xorshift64 of x86.ts', () => {
    const out = new Uint32Array(2);
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: (1n << 64n) - 1n }), (x) => {
        xorshift64Pair(Number(x & 0xffff_ffffn), Number(x >> 32n), out);
        return ((BigInt(out[1]) << 32n) | BigInt(out[0])) === xorshift64(x);
      }),
      { numRuns: 2000 },
    );
  });

  test('stride: registers at the epoch exit are the x86 code\'s (the OUT completed, rip past it)', () => {
    const g = makeGuest(kvm, { ringBytes: 65536 });
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 10, stridePages: 3 }));
    expect(g.vcpu.run().io).toEqual({ port: 0x10, direction: 'out', size: 1, count: 1, value: 1 });
    expect(g.vcpu.getRegs()).toMatchObject({
      rip: BigInt(STRIDE_GPA + 0x1a), rbx: 1n, rax: 1n, rcx: 0n, rdx: BigInt((600 + 30) * PAGE), rdi: BigInt(600 * PAGE), rsi: BigInt(3 * PAGE), r8: 10n,
    });
    // kvm_run: io.direction/size/port/count/data_offset, the byte on the PIO page
    const run = new DataView(g.vcpu.runBuffer);
    expect([run.getUint32(8, true), run.getUint8(32), run.getUint8(33), run.getUint16(34, true), run.getUint32(36, true), run.getBigUint64(40, true)])
      .toEqual([ExitReason.Io, 1, 1, 0x10, 1, 4096n]);
    expect(run.getUint8(4096)).toBe(1);
    expect(g.vcpu.run().io?.value).toBe(2);
    expect(g.vcpu.getRegs().rbx).toBe(2n);
  });

  test('random: the spec\'s page sequence across epochs, first writes per protect cycle, registers exact', () => {
    const g = makeGuest(kvm, { ringBytes: 65536 });
    const seed = 0x9e37_79b9_7f4a_7c15n;
    g.vcpu.load(Workload.random({ firstPage: 600, spanPages: 300, pagesPerEpoch: 50, seed }));
    let x = seed;
    for (let epoch = 1; epoch <= 3; epoch++) {
      const pages: number[] = [];
      for (let i = 0; i < 50; i++) {
        x = xorshift64(x);
        pages.push(600 + Number(x % 300n));
      }
      expect(g.vcpu.run().io?.value).toBe(epoch);
      expect(harvestGfns(g.vcpu)).toEqual([...new Set(pages)]); // a repeat in the epoch is not logged again
      expect(g.vm.resetDirtyRings()).toBe(new Set(pages).size);
      for (const p of pages) expect(g.word(p)).toBe(BigInt(epoch));
      expect(g.vcpu.getRegs()).toMatchObject({ rip: BigInt(RANDOM_GPA + 0x3f), r9: x, rdx: (x % 300n) << 12n, rax: BigInt(epoch), rcx: 0n, r10: 300n });
    }
  });

  test('random with a span above 2^21 pages (BigInt division path): MMIO exits in the spec\'s order', () => {
    const vm = kvm.createVm();
    const harness = vm.createMemory(2 * 1024 * 1024);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: harness });
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 16 * GIB, memory: vm.createMemory(PAGE) }); // maps 17 GiB
    const v = vm.createVcpu(0);
    const span = 3_000_001;
    v.load(Workload.random({ firstPage: 512, spanPages: span, pagesPerEpoch: 20, seed: 7n }));
    let x = 7n;
    for (let i = 0; i < 20; i++) {
      x = xorshift64(x);
      const exit = v.run();
      expect(exit.reason).toBe(ExitReason.Mmio);
      expect(exit.mmio).toEqual({ physAddr: (512 + Number(x % BigInt(span))) * PAGE, len: 8, isWrite: true, data: [1, 0, 0, 0, 0, 0, 0, 0] });
      expect(v.getRegs().rax).toBe(x / BigInt(span));
    }
    expect(v.run().io?.value).toBe(1);
  });

  test('a checkpoint of registers + memory continues in a new VM', () => {
    const spec = Workload.random({ firstPage: 600, spanPages: 400, pagesPerEpoch: 64, seed: 99n });
    const a = makeGuest(kvm, { ringBytes: 65536 });
    a.vcpu.load(spec);
    for (let e = 1; e <= 3; e++) a.vcpu.run();
    const regs = a.vcpu.getRegs();
    const sregs = a.vcpu.getSregs();
    const b = makeGuest(kvm, { ringBytes: 65536 });
    new Uint8Array(b.harness.buffer).set(new Uint8Array(a.harness.buffer));
    new Uint8Array(b.data.buffer).set(new Uint8Array(a.data.buffer));
    b.vcpu.setSregs(sregs);
    b.vcpu.setRegs(regs);
    expect(a.vcpu.run().io?.value).toBe(4);
    expect(b.vcpu.run().io?.value).toBe(4);
    harvestGfns(a.vcpu);
    expect(b.vcpu.getRegs()).toEqual(a.vcpu.getRegs());
    expect(Buffer.compare(Buffer.from(b.data.buffer), Buffer.from(a.data.buffer))).toBe(0);
  });

  test('MMIO: a store outside every slot exits after the store; the run goes on with the next page', () => {
    const g = makeGuest(kvm, { dataPages: 4, ringBytes: 4096 });
    g.vcpu.load(Workload.stride({ firstPage: DATA_GFN + 2, pages: 4 }));
    for (const p of [DATA_GFN + 4, DATA_GFN + 5]) {
      const exit = g.vcpu.run();
      expect(exit.mmio).toEqual({ physAddr: p * PAGE, len: 8, isWrite: true, data: [1, 0, 0, 0, 0, 0, 0, 0] });
      expect(g.vcpu.getRegs().rip).toBe(BigInt(STRIDE_GPA + 0x0e));
      const run = new DataView(g.vcpu.runBuffer);
      expect([run.getUint32(8, true), Number(run.getBigUint64(32, true)), run.getUint32(48, true), run.getUint8(52)]).toEqual([ExitReason.Mmio, p * PAGE, 8, 1]);
    }
    expect(g.vcpu.run().io?.value).toBe(1);
    expect(harvestGfns(g.vcpu)).toEqual([DATA_GFN + 2, DATA_GFN + 3]);
  });

  test('counter: a load from MMIO completes with kvm_run.mmio.data on the next run', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.counter({ page: 5000 })); // no RAM at gfn 5000
    const read = g.vcpu.run();
    expect(read.mmio).toMatchObject({ physAddr: 5000 * PAGE, len: 8, isWrite: false });
    expect(g.vcpu.getRegs().rip).toBe(BigInt(COUNTER_GPA));
    new DataView(g.vcpu.runBuffer).setBigUint64(40, 0x1_ffff_ffffn, true); // the device's answer
    const write = g.vcpu.run();
    expect(write.mmio).toEqual({ physAddr: 5000 * PAGE, len: 8, isWrite: true, data: [0, 0, 0, 0, 2, 0, 0, 0] });
    expect(g.vcpu.run().io).toEqual({ port: 0x11, direction: 'out', size: 4, count: 1, value: 0 });
    expect(g.vcpu.run().mmio?.isWrite).toBe(false);
  });

  test('a store above what the harness page tables map is a triple fault: KVM_EXIT_SHUTDOWN', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 3 * GIB / PAGE, pages: 1 })); // maps only the first GiB
    g.vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 3 * GIB, memory: g.vm.createMemory(PAGE), flags: MemFlag.LogDirtyPages });
    expect(g.vcpu.run().reason).toBe(ExitReason.Shutdown);
    expect(g.vcpu.getRegs().rip).toBe(BigInt(STRIDE_GPA + 0x0b));
    g.vcpu.load(Workload.stride({ firstPage: 3 * GIB / PAGE, pages: 1 })); // now mapped
    expect(g.vcpu.run().io?.value).toBe(1);
    expect(g.vm.getDirtyLog(2).toArray()).toEqual([0]);
  });

  test('nothing loaded, or other code: KVM_EXIT_INTERNAL_ERROR (emulation failure)', () => {
    const g = makeGuest(kvm);
    const exit = g.vcpu.run(); // real mode at the reset vector
    expect(exit).toEqual({ reason: ExitReason.InternalError, detail: 1n });
    expect(new DataView(g.vcpu.runBuffer).getUint32(32, true)).toBe(1); // internal.suberror
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 1 }));
    new Uint8Array(g.harness.buffer)[STRIDE_GPA + 0x0b] = 0x90; // the guest's code changed under it
    expect(g.vcpu.run().reason).toBe(ExitReason.InternalError);
  });

  test('a kick before the run, or kvm_run.immediate_exit, returns Intr at once', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 1 }));
    g.vcpu.kick();
    expect(g.vcpu.run().reason).toBe(ExitReason.Intr);
    expect(g.word(600)).toBe(0n);
    new DataView(g.vcpu.runBuffer).setUint8(1, 1);
    expect(g.vcpu.run().reason).toBe(ExitReason.Intr);
    expect(g.vcpu.run().reason).toBe(ExitReason.Intr);
    new DataView(g.vcpu.runBuffer).setUint8(1, 0);
    expect(g.vcpu.run().io?.value).toBe(1);
  });

  test(`a synchronous run of spin returns Intr after ${SYNC_SPIN_MS} ms`, () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.spin());
    const t0 = Date.now();
    expect(g.vcpu.run().reason).toBe(ExitReason.Intr);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(SYNC_SPIN_MS - 5);
  });

  test('guest memory closed under a slot: KVM_RUN fails with EFAULT', () => {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 1 }));
    g.data.close();
    expectKvmError(() => g.vcpu.run(), 'EFAULT', 'KVM_RUN');
  });

  test('guestWrite names an existing vCPU; length 0 writes nothing', () => {
    const g = makeGuest(kvm, { ringBytes: 4096 });
    expect(() => g.vm.emulator!.guestWrite(7, 600 * PAGE)).toThrow(RangeError);
    g.vm.emulator!.guestWrite(0, 600 * PAGE, 0);
    g.vm.emulator!.guestWrite(0, 600 * PAGE - 4, 8); // two pages
    expect(harvestGfns(g.vcpu)).toEqual([599, 600]);
  });
});
