// KVM_CAP_SYNC_REGS: with SyncRegs.X86Regs in kvm_run.kvm_valid_regs, every KVM_RUN leaves the
// general registers in kvm_run.s.regs, and getSyncedRegs() reads them without KVM_GET_REGS.
// The same suite on both backends (the emulator offers the general registers only).
import { Cap, ExitReason, SyncRegs, Workload, type Kvm } from '../lib';
import { describeEachBackend } from './helpers/backends';
import { makeGuest } from './helpers/guest';

describeEachBackend('sync regs (KVM_CAP_SYNC_REGS)', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  function guest() {
    const g = makeGuest(kvm);
    g.vcpu.load(Workload.stride({ firstPage: 600, pages: 4 }));
    return g;
  }

  test('the registers each KVM_RUN stored are KVM_GET_REGS\'s at that moment: at the OUT, then after the immediate exit that completes it', async () => {
    const g = guest();
    expect(g.vm.checkExtension(Cap.SyncRegs) & SyncRegs.X86Regs).toBe(SyncRegs.X86Regs);
    g.vcpu.setSyncRegs(SyncRegs.X86Regs);
    for (let epoch = 1; epoch <= 3; epoch++) {
      expect((await g.vcpu.runAsync()).reason).toBe(ExitReason.Io);
      const atOut = g.vcpu.getSyncedRegs();
      expect(atOut).toEqual(g.vcpu.getRegs());
      expect(atOut.rbx).toBe(BigInt(epoch)); // the stride's epoch counter
      // KVM_RUN with immediate_exit completes the OUT and stops: what it stored is KVM_GET_REGS's again
      g.vcpu.kick();
      expect(g.vcpu.run().reason).toBe(ExitReason.Intr);
      expect(g.vcpu.getSyncedRegs()).toEqual(g.vcpu.getRegs());
    }
  });

  test('refused: bits the kernel does not offer, reading before a run or without the bit, a closed vCPU', () => {
    const g = guest();
    const offered = g.vm.checkExtension(Cap.SyncRegs);
    expect(() => g.vcpu.getSyncedRegs()).toThrow(RangeError);
    expect(() => g.vcpu.setSyncRegs(0x80)).toThrow(RangeError);
    expect(() => g.vcpu.setSyncRegs(offered | 0x100)).toThrow(RangeError);
    expect(() => g.vcpu.setSyncRegs(-1)).toThrow(RangeError);
    expect(() => g.vcpu.setSyncRegs('1' as unknown as number)).toThrow(TypeError);
    g.vcpu.setSyncRegs(SyncRegs.X86Regs);
    expect(() => g.vcpu.getSyncedRegs()).toThrow(/no KVM_RUN has returned/);
    g.vcpu.run();
    expect(g.vcpu.getSyncedRegs().rbx).toBe(1n);
    g.vcpu.setSyncRegs(0);
    expect(() => g.vcpu.getSyncedRegs()).toThrow(RangeError);
    g.vcpu.close();
    expect(() => g.vcpu.getSyncedRegs()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => g.vcpu.setSyncRegs(1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  test('KVM_RUN itself refuses kvm_valid_regs bits the kernel does not offer (EINVAL), written into kvm_run directly', () => {
    const g = guest();
    new DataView(g.vcpu.runBuffer).setUint32(288, 0x80, true);
    expect(() => g.vcpu.run()).toThrow(expect.objectContaining({ code: 'EINVAL', ioctl: 'KVM_RUN' }));
  });
});
