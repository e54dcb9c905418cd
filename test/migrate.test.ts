// Pre-copy live migration on each backend and mode: the destination's memory equals the
// stopped source's, and both run the same next epoch.
import { ExitReason, Workload, type Vcpu } from '../lib';
import { createMachine, hasDirtyRing, type DirtyMode } from '../lib/checkpoint/machine';
import { migrate } from '../lib/checkpoint/migrate';
import { describeEachBackend } from './helpers/backends';

function runToExit(v: Vcpu) {
  // The checkpointer and migrate() leave no kick pending: the next KVM_RUN runs the guest.
  const e = v.run();
  expect(e.reason).not.toBe(ExitReason.Intr);
  return e;
}

describeEachBackend('live migration (pre-copy)', (b) => {
  test('every mode: rounds while the guest runs, then stop-and-copy; the destination continues the workload', async () => {
    const kvm = b.open();
    try {
      const modes: DirtyMode[] = hasDirtyRing(kvm) ? ['ring', 'bitmap', 'bitmap-clear'] : ['bitmap', 'bitmap-clear'];
      for (const mode of modes) {
        const src = createMachine(kvm, { dataPages: 2048, mode, workloads: Workload.stride({ firstPage: 600, pages: 64, stridePages: 20 }) });
        const r = await migrate({ source: src, destination: kvm, thresholdPages: 128, maxRounds: 6, roundMs: 10 });
        try {
          expect(r.memoryEqual).toBe(true);
          expect(r.rounds[0].round).toBe(0);
          expect(r.rounds.length).toBeGreaterThanOrEqual(3); // full copy, >= 1 pre-copy round, stop-and-copy
          // The stride rewrites the same 64 pages every epoch: one pre-copy round finds at most those, and converges.
          expect(r.converged).toBe('threshold');
          for (const round of r.rounds.slice(1)) expect(round.pages).toBeLessThanOrEqual(64);
          expect(r.downtimeMs).toBeGreaterThan(0);
          expect(r.destination.vcpus[0].getRegs()).toEqual(src.vcpus[0].getRegs());
          // Next epoch, on both: the same exit, every stride page holds its number, same memory.
          const a = runToExit(src.vcpus[0]);
          const d = runToExit(r.destination.vcpus[0]);
          expect(d).toEqual(a);
          expect(d.reason).toBe(ExitReason.Io);
          const epoch = r.destination.vcpus[0].getRegs().rbx;
          expect(Number(epoch & 0xffn)).toBe(d.io!.value);
          const data = r.destination.slots[1].bytes;
          for (let i = 0; i < 64; i++) expect(data.readBigUInt64LE((600 - 512 + i * 20) * 4096)).toBe(epoch);
          expect(data.equals(src.slots[1].bytes)).toBe(true);
        } finally {
          r.destination.close();
          src.close();
        }
      }
    } finally {
      kvm.close();
    }
  });

  test('a random workload over a wide span: many dirty pages per round, still exact', async () => {
    const kvm = b.open();
    try {
      const src = createMachine(kvm, { dataPages: 8192, workloads: Workload.random({ firstPage: 512, spanPages: 8192, pagesPerEpoch: 100, seed: 11 }) });
      const r = await migrate({ source: src, destination: kvm, thresholdPages: 50, maxRounds: 4, roundMs: 5 });
      expect(r.memoryEqual).toBe(true);
      // round 0, at most 4 pre-copy rounds, stop-and-copy (how many pages each finds depends on
      // how far the guest got: a loaded machine may barely run it)
      expect(r.rounds.length).toBeGreaterThanOrEqual(3);
      expect(r.rounds.length).toBeLessThanOrEqual(6);
      expect(runToExit(r.destination.vcpus[0])).toEqual(runToExit(src.vcpus[0]));
      expect(r.destination.slots[1].bytes.equals(src.slots[1].bytes)).toBe(true);
      r.destination.close();
      src.close();
    } finally {
      kvm.close();
    }
  });
}, { pml: true });
