// Short versions of `npm run soak`: no fd growth, no heap growth proportional to entries
// harvested, no lost dirty page (the guest's memory is the witness), ring and bitmap.
import { soakEpochs, soakLifecycles, soakNoLostPages } from '../tools/soak';
import { describeEachBackend } from './helpers/backends';

describeEachBackend('soak (short)', (b) => {
  test('2,000 VM lifecycles: fds, mappings and buffers flat, RSS not growing with them', async () => {
    const kvm = b.open();
    try {
      await soakLifecycles(kvm, 2000); // an unmeasured round: the heap and allocators settle first
      const r = await soakLifecycles(kvm, 2000);
      // Exact: what one lifecycle owns (fds, KVM mappings, the emulator's ArrayBuffers) all returned.
      expect(r.fdsAfter).toBe(r.fdsBefore);
      expect(r.mappingsAfter).toBe(r.mappingsBefore);
      // One leaked guest memory per lifecycle would be 2000 x 2 MiB.
      expect(r.arrayBuffersAfterMiB - r.arrayBuffersBeforeMiB).toBeLessThan(1);
      expect(r.heapAfterMiB - r.heapBeforeMiB).toBeLessThan(4);
      // RSS also holds what malloc keeps after frees (up to ~33 MiB measured on the emulator,
      // then a plateau); a leak of the pages each lifecycle touches would be over 64 MiB.
      expect(r.rssAfterMiB - r.rssBeforeMiB).toBeLessThan(64);
    } finally {
      kvm.close();
    }
  });

  test('20,000 harvested epochs: fds flat, heap not growing with entries', () => {
    const kvm = b.open();
    try {
      const r = soakEpochs(kvm, 20000);
      expect(r.entries).toBeGreaterThanOrEqual(20000 * 16);
      expect(r.fdsAfter).toBe(r.fdsBefore);
      // 320,000 entries: any per-entry allocation would be tens of MiB.
      expect(r.heapAfterMiB - r.heapBeforeMiB).toBeLessThan(4);
    } finally {
      kvm.close();
    }
  });

});

// On the emulated Intel host with PML too: its rings reserve 576 entries and are sized from that.
describeEachBackend('soak (short): no lost page', (b) => {
  test.each(['ring', 'bitmap'] as const)('no lost dirty page over 50,000 page writes (%s)', (mode) => {
    const kvm = b.open();
    try {
      const r = soakNoLostPages(kvm, mode, 50000);
      expect(r.pagesChecked).toBeGreaterThanOrEqual(50000);
      expect({ misses: r.misses, falseEntries: r.falseEntries }).toEqual({ misses: 0, falseEntries: 0 });
    } finally {
      kvm.close();
    }
  });
}, { pml: true });
