// The Node side of the benchmark (bench/loops.ts) does what it claims: every loop runs the
// stride workload, harvests exactly the pages it wrote and checks them. Small guests and a few
// epochs; functional checks only, never timings.
import { describeEachBackend } from './helpers/backends';
import { DirtyPages, DirtyRingLimits } from '../lib';
import {
  BenchGuest,
  defaultRingEntries,
  emulatorEvents,
  epochLoop,
  GIB,
  harvestHeapGrowth,
  harvestPerEntry,
  HARNESS_BYTES,
  makeHarvester,
  runEpoch,
  strideWritesGpa,
  vcpuLatency,
  type HarvestMode,
} from '../bench/loops';

const MIB = 1024 * 1024;

describe('layout arithmetic', () => {
  test('defaultRingEntries: the C reference\'s rule (the smallest ring the host takes with a soft limit >= 2K, at most 65536)', () => {
    const noPml = new DirtyRingLimits(64, 1 << 20);
    expect(defaultRingEntries(16, noPml)).toBe(256);
    expect(defaultRingEntries(96, noPml)).toBe(256);
    expect(defaultRingEntries(97, noPml)).toBe(512);
    expect(defaultRingEntries(256, noPml)).toBe(1024);
    expect(defaultRingEntries(4096, noPml)).toBe(16384);
    expect(defaultRingEntries(60000, noPml)).toBe(65536);
    // an Intel host with PML reserves 576 entries: nothing below 1024 entries (16 KiB)
    const pml = new DirtyRingLimits(576, 1 << 20);
    expect(defaultRingEntries(1, pml)).toBe(1024);
    expect(defaultRingEntries(224, pml)).toBe(1024);
    expect(defaultRingEntries(225, pml)).toBe(2048);
    expect(defaultRingEntries(60000, pml)).toBe(65536);
  });

  test('strideWritesGpa: K = 4096 over 16 GiB at 2 MiB writes the APIC page 0xfee00000; at 4 GiB it does not', () => {
    expect(strideWritesGpa({ ramGpa: HARNESS_BYTES, guestBytes: 16 * GIB, k: 4096 }, 0xfee00000)).toBe(true);
    expect(strideWritesGpa({ ramGpa: 4 * GIB, guestBytes: 16 * GIB, k: 4096 }, 0xfee00000)).toBe(false);
    expect(strideWritesGpa({ ramGpa: HARNESS_BYTES, guestBytes: 16 * GIB, k: 16 }, 0xfee00000)).toBe(false);
    expect(strideWritesGpa({ ramGpa: HARNESS_BYTES, guestBytes: 16 * GIB, k: 16 }, HARNESS_BYTES + 15 * GIB)).toBe(true);
    expect(strideWritesGpa({ ramGpa: HARNESS_BYTES, guestBytes: 16 * GIB, k: 15 }, HARNESS_BYTES + 15 * GIB)).toBe(false);
  });
});

describeEachBackend('bench loops', (b) => {
  const backend = b.name;

  test.each<HarvestMode>(['ring', 'bitmap', 'bitmap-clear'])('epochLoop %s: K pages per epoch, every epoch checked', (mode) => {
    const r = epochLoop({ backend, mode, guestBytes: 64 * MIB, k: 16, epochs: 5 });
    expect(r).toMatchObject({ mode, guestGiB: 64 / 1024, k: 16, epochs: 5, ringEntries: mode === 'ring' ? 256 : 0 });
    expect(r.epochsPerSec).toBeGreaterThan(0);
    expect(r.harvestNsPerEpoch).toBeGreaterThan(0);
    expect(r.runNsPerEpoch).toBeGreaterThan(0);
  });

  test('epochLoop with RAM above 4 GiB and a 65,536-entry ring', () => {
    const r = epochLoop({ backend, mode: 'ring', guestBytes: 16 * MIB, k: 64, epochs: 3, ringEntries: 65536, ramGpa: 4 * GIB });
    expect(r).toMatchObject({ epochs: 3, k: 64, ringEntries: 65536 });
  });

  test('the harvester collects exactly the stride pages, and the next epoch finds them re-armed', () => {
    for (const mode of ['ring', 'bitmap', 'bitmap-clear'] as HarvestMode[]) {
      const g = new BenchGuest({ backend, mode, guestBytes: 8 * MIB, ringEntries: 256 });
      try {
        g.loadStride(10, 7);
        const out = new DirtyPages(256);
        const harvest = makeHarvester(g, out);
        for (let epoch = 1; epoch <= 3; epoch++) {
          out.clear();
          runEpoch(g, epoch, out);
          harvest();
          expect(Array.from(out.offsets.subarray(0, out.length)).sort((x, y) => x - y)).toEqual([0, 7, 14, 21, 28, 35, 42, 49, 56, 63]);
          expect(Array.from(out.slots.subarray(0, out.length))).toEqual(new Array(10).fill(1));
          g.checkStridePages(out, 10, 7);
          expect(g.epochAt(63)).toBe(epoch);
        }
        out.offsets[3] = 5; // not a stride page
        expect(() => g.checkStridePages(out, 10, 7)).toThrow(/page 5: not one of the 10 pages/);
      } finally {
        g.close();
      }
    }
  });

  test('runEpoch rejects an epoch number the guest did not report', () => {
    const g = new BenchGuest({ backend, mode: 'ring', guestBytes: 8 * MIB, ringEntries: 256 });
    try {
      g.loadStride(4, 1);
      expect(() => runEpoch(g, 2, new DirtyPages(256))).toThrow(/unexpected I\/O exit in epoch 2/);
    } finally {
      g.close();
    }
  });

  test.each(['library', 'atomics'] as const)('harvestPerEntry (%s): one run fills the ring, harvest counted per entry', (path) => {
    const r = harvestPerEntry({ backend, entries: 3000, repeats: 2, guestBytes: 16 * MIB, path });
    expect(r).toMatchObject({ path, entries: 3000, repeats: 2, batch: path === 'library' && backend === 'native' });
    expect(r.harvestNsPerEntry).toBeGreaterThan(0);
  });

  test('harvestPerEntry refuses a fill that reaches the soft limit', () => {
    expect(() => harvestPerEntry({ backend, entries: 65472, guestBytes: 16 * MIB })).toThrow(RangeError);
  });

  test('harvestHeapGrowth harvests at least the entries asked for and reports the heap', () => {
    const h = harvestHeapGrowth({ backend, entries: 2000, totalEntries: 5000, guestBytes: 16 * MIB });
    expect(h.entries).toBe(6000);
    expect(h.allocatedBytes).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(h.retainedBytes)).toBe(true);
  });

  test('vcpuLatency: every run ends at the epoch OUT, every kicked run with Intr (it throws otherwise)', async () => {
    const r = await vcpuLatency({ backend, runs: 200, kicks: 5 });
    expect(r).toMatchObject({ runs: 200, kicks: 5 });
    for (const x of [r.runNs, r.runAsyncNs, r.runAsyncBusyNs, r.kickNsP50, r.kickNsP90]) expect(x).toBeGreaterThan(0);
    expect(r.kickNsP90).toBeGreaterThanOrEqual(r.kickNsP50);
  });
});

describe('emulatorEvents', () => {
  test('counts harvested entries of full write/push/harvest/reset cycles', () => {
    const r = emulatorEvents({ seconds: 0.2, k: 512, guestBytes: 8 * MIB });
    expect(r.epochs).toBeGreaterThan(0);
    expect(r.events).toBe(r.epochs * 512);
    expect(r.eventsPerSec).toBeCloseTo(r.events / r.seconds, 6);
  });
});
