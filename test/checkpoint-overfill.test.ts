// A ring found completely full at harvest may have lost entries (a PVM host overfills a ring
// when one run writes more pages than it holds, DESIGN §5): the epoch then carries every
// logged page that may hold data instead of an incomplete set, and the copy stays exact.
// The emulator's overfillRing hook overfills a ring as PVM does.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openKvm, Workload } from '../lib';
import { Checkpointer, type EpochInfo } from '../lib/checkpoint/checkpointer';
import { createMachine, DATA_GFN } from '../lib/checkpoint/machine';
import { DirtyTracker } from '../lib/checkpoint/tracker';
import { FileSink, readCheckpointFile } from '../lib/checkpoint/transport';

const DATA_PAGES = 512;

describe.each([false, true])('ring overfill (emulator, PML host: %s)', (pml) => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kvm-dirty-overfill-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the tracker takes every logged page when the ring it harvests is completely full', () => {
    const kvm = openKvm({ backend: 'emulator', pml });
    try {
      const limits = kvm.dirtyRingLimits();
      const m = createMachine(kvm, { dataPages: DATA_PAGES, mode: 'ring', ringBytes: limits.minBytes, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 4 }) });
      const t = new DirtyTracker(m);
      const set = t.newPageSet();
      t.collect(set);
      expect([set.count, t.lastOverfilled, t.overfills]).toEqual([0, false, 0]);
      // one page short of full: an ordinary collection
      const entries = limits.minBytes / 16;
      m.vm.emulator!.overfillRing(0, DATA_GFN * 4096, Math.min(entries - 1, DATA_PAGES), 7n);
      t.collect(set);
      expect([set.count, t.lastOverfilled]).toEqual([Math.min(entries - 1, DATA_PAGES), false]);
      set.clear();
      // past the ring's size (pages repeat: PVM logs every store): every entry DIRTY, some lost
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
      for (let i = 0; i < Math.ceil((entries + 10) / DATA_PAGES); i++) m.vm.emulator!.overfillRing(0, DATA_GFN * 4096, DATA_PAGES, 9n);
      t.collect(set);
      expect([t.lastOverfilled, t.overfills]).toEqual([true, 1]);
      // slot 0 (the harness) is not logged; every data page is in (the emulator's memory may hold data anywhere)
      expect(set.count).toBe(DATA_PAGES);
      expect(new Set(Array.from(set.slotIndex.subarray(0, set.count)))).toEqual(new Set([1]));
      // the ring was harvested and reset: the next collection is ordinary again
      set.clear();
      t.collect(set);
      expect([set.count, t.lastOverfilled, t.overfills]).toEqual([0, false, 1]);
      m.close();
      // the kernel's WARN_ON_ONCE for a push into a full ring (emulated), once
      expect(warn.mock.calls.map((c) => String(c[0])).filter((w) => w.includes('It should never get full'))).toHaveLength(1);
      warn.mockRestore();
    } finally {
      kvm.close();
    }
  });

  test('a checkpoint across an overfilled epoch: that epoch is a full copy, the replica equals the guest', async () => {
    const kvm = openKvm({ backend: 'emulator', pml });
    try {
      const limits = kvm.dirtyRingLimits();
      const entries = limits.minBytes / 16;
      const m = createMachine(kvm, { dataPages: DATA_PAGES * 8, mode: 'ring', ringBytes: limits.minBytes, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 8, stridePages: 3 }) });
      const path = join(dir, `overfill-${pml}.kdck`);
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined); // the emulated kernel WARN
      const epochs: EpochInfo[] = [];
      const ck = new Checkpointer({
        machine: m, sink: new FileSink(path), epochMs: 60_000,
        onEpoch: (e) => {
          epochs.push(e);
          // While paused after epoch 3: the host overfills the ring (more stores than entries, into other pages).
          if (e.epoch === 3) m.vm.emulator!.overfillRing(0, (DATA_GFN + 1000) * 4096, entries + 50, 0xabcdn);
        },
      });
      const stats = await ck.run({ epochs: 6 });
      expect(stats.overfills).toBe(1);
      expect(epochs.map((e) => e.overfilled)).toEqual([false, false, false, true, false, false]);
      expect(epochs[3].pages).toBe(DATA_PAGES * 8); // every page of the logged slot
      // after it, in step again: each epoch its 8 pages (the ring resynced, every page re-protected)
      expect(epochs.map((e) => e.pages)).toEqual([8, 8, 8, DATA_PAGES * 8, 8, 8]);
      const { image, error } = await readCheckpointFile(path);
      expect(error).toBeNull();
      m.slots.forEach((s, i) => expect(image.memory[i].equals(s.bytes)).toBe(true));
      expect(image.readU64((DATA_GFN + 1000 + entries + 49) * 4096)).toBe(0xabcdn);
      m.close();
      warn.mockRestore();
    } finally {
      kvm.close();
    }
  });
});
