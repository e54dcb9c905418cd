// A full copy (checkpoint base, migration round 0, restore) must not allocate the guest:
// reading an untouched page of shared memory makes the kernel allocate it, so a base copy
// that read every page of a 64 GiB guest would cost 64 GiB. GuestMemory.dataRanges() says
// where memory may hold data (native: the pages its memfd holds; emulator: all of it), and
// the copies read only there. The assertions hold on both backends: what memory holds after
// a copy is no more than before plus what the guest itself wrote.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitReason, Workload, type GuestMemory } from '../lib';
import { Checkpointer } from '../lib/checkpoint/checkpointer';
import { createMachine, DATA_GFN, DATA_SLOT_MAX_BYTES, HIGH_DATA_GFN, dataGfnFor, forEachNonZeroPage, restoreMachine, sameContents } from '../lib/checkpoint/machine';
import { migrate } from '../lib/checkpoint/migrate';
import { FileSink, readCheckpointFile } from '../lib/checkpoint/transport';
import { describeEachBackend } from './helpers/backends';

const PAGE = 4096;
/** Bytes memory may hold data in, by its own account. */
const held = (m: GuestMemory): number => {
  const r = m.dataRanges();
  let n = 0;
  for (let i = 0; i < r.length; i += 2) n += r[i + 1] - r[i];
  return n;
};

describeEachBackend('full copies read only where memory holds data', (b) => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kvm-dirty-sparse-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('dataRanges: page-aligned ascending ranges covering every byte written; EBADF once closed', () => {
    const kvm = b.open();
    try {
      const vm = kvm.createVm();
      const mem = vm.createMemory(64 << 20);
      const bytes = new Uint8Array(mem.buffer);
      bytes[5 * PAGE + 17] = 1;
      bytes[6 * PAGE] = 2;
      bytes[9000 * PAGE + 4095] = 3;
      const r = [...mem.dataRanges()];
      expect(r.length % 2).toBe(0);
      for (let i = 0; i < r.length; i++) {
        expect(r[i] % PAGE).toBe(0);
        if (i > 0) expect(r[i]).toBeGreaterThanOrEqual(r[i - 1]);
      }
      const covered = (off: number) => r.some((_, i) => i % 2 === 0 && r[i] <= off && off < r[i + 1]);
      for (const off of [5 * PAGE + 17, 6 * PAGE, 9000 * PAGE + 4095]) expect(covered(off)).toBe(true);
      mem.close();
      expect(() => mem.dataRanges()).toThrow(expect.objectContaining({ code: 'EBADF' }));
      vm.close();
    } finally {
      kvm.close();
    }
  });

  test('a 1 GiB guest: the base copy, a restore and a migration hold no more pages than the guest wrote', async () => {
    const kvm = b.open();
    try {
      const k = 32;
      const m = createMachine(kvm, { dataPages: (1 << 30) / PAGE - DATA_GFN, workloads: Workload.stride({ firstPage: DATA_GFN + 100, pages: k, stridePages: 1000 }) });
      const data = m.slots[1];
      const before = held(data.memory);
      const path = join(dir, 'sparse.kdck');
      const stats = await new Checkpointer({ machine: m, sink: new FileSink(path), epochMs: 60_000 }).run({ epochs: 3 });
      expect(stats.committed).toBe(3);
      // The base read nothing it did not hold; the guest added at most its k pages.
      expect(held(data.memory)).toBeLessThanOrEqual(Math.min(before + k * PAGE, data.layout.size));
      let nonZero = 0;
      forEachNonZeroPage(data, () => nonZero++);
      expect(nonZero).toBe(k);

      const { image, error } = await readCheckpointFile(path);
      expect(error).toBeNull();
      // The image knows which pages epochs wrote: the restore copies those and scans nothing else.
      const written = image.slot(1).written;
      expect(written.length).toBe(data.layout.size / PAGE);
      expect(written.reduce((n, w) => n + w, 0)).toBe(k);
      for (let i = 0; i < k; i++) expect(written[100 + i * 1000]).toBe(1);
      expect(() => image.slot(2)).toThrow(RangeError);
      const copy = restoreMachine(kvm, image);
      try {
        expect(held(copy.slots[1].memory)).toBeLessThanOrEqual(held(data.memory));
        expect(sameContents(copy.slots[1], data)).toBe(true);
        expect(sameContents(copy.slots[1], image.memory[1])).toBe(true);
      } finally {
        copy.close();
      }

      const r = await migrate({ source: m, destination: kvm, thresholdPages: 2 * k, maxRounds: 3, roundMs: 5 });
      try {
        expect(r.memoryEqual).toBe(true);
        expect(r.rounds[0].pages).toBeLessThanOrEqual(k + DATA_GFN); // round 0: the written pages (and the harness)
        expect(held(r.destination.slots[1].memory)).toBeLessThanOrEqual(held(data.memory));
      } finally {
        r.destination.close();
      }
      m.close();
    } finally {
      kvm.close();
    }
  });

  test('sameContents: a page one side holds must be zero there; a page both hold is compared', () => {
    const kvm = b.open();
    try {
      const vm = kvm.createVm();
      const slot = (size: number) => {
        const memory = vm.createMemory(size);
        return { layout: { slot: 0, guestPhysAddr: 0, size, logged: false }, memory, bytes: Buffer.from(memory.buffer) };
      };
      const a = slot(1 << 20);
      const c = slot(1 << 20);
      expect(sameContents(a, c)).toBe(true);
      void a.bytes[10 * PAGE]; // read: the page may now be held, and is still zero
      expect(sameContents(a, c)).toBe(true);
      expect(sameContents(a, Buffer.alloc(1 << 20))).toBe(true);
      a.bytes[20 * PAGE + 5] = 7;
      expect(sameContents(a, c)).toBe(false);
      expect(sameContents(c, a)).toBe(false);
      c.bytes[20 * PAGE + 5] = 7;
      expect(sameContents(a, c)).toBe(true);
      c.bytes[20 * PAGE + 6] = 1;
      expect(sameContents(a, c)).toBe(false);
      expect(sameContents(a, slot(2 << 20))).toBe(false);
      vm.close();
    } finally {
      kvm.close();
    }
  });

  test('a 5 GiB guest: data from 4 GiB (clear of the APIC page) in 2 GiB slots, checkpointed, restored, running on', async () => {
    const kvm = b.open();
    try {
      const dataPages = (5 * 2 ** 30) / PAGE;
      expect(dataGfnFor(dataPages)).toBe(HIGH_DATA_GFN);
      expect(dataGfnFor((1 << 30) / PAGE)).toBe(DATA_GFN);
      // 48 pages, one every 27,000: they fall in all three data slots.
      // A workload still addressing gfn 512 would write outside the data: refused before any VM exists.
      expect(() => createMachine(kvm, { dataPages, workloads: Workload.counter({ page: DATA_GFN }) })).toThrow(
        new RangeError(`vCPU 0: its workload writes gfns 512..512; the data is gfns ${HIGH_DATA_GFN}..${HIGH_DATA_GFN + dataPages - 1}`),
      );
      expect(() => createMachine(kvm, { dataPages: 100, workloads: Workload.stride({ firstPage: DATA_GFN, pages: 2, stridePages: 100 }) })).toThrow(RangeError);
      const m = createMachine(kvm, { dataPages, workloads: Workload.stride({ firstPage: HIGH_DATA_GFN, pages: 48, stridePages: 27_000 }) });
      expect(m.slots.map((s) => [s.layout.slot, s.layout.guestPhysAddr / 2 ** 30, s.layout.size / 2 ** 30])).toEqual([
        [0, 0, 2 / 1024],
        [1, 4, DATA_SLOT_MAX_BYTES / 2 ** 30],
        [2, 6, 2],
        [3, 8, 1],
      ]);
      const path = join(dir, 'large.kdck');
      const stats = await new Checkpointer({ machine: m, sink: new FileSink(path), epochMs: 60_000 }).run({ epochs: 5 });
      expect(stats).toMatchObject({ committed: 5, pagesPerEpoch: 48 });
      const { image, error } = await readCheckpointFile(path);
      expect(error).toBeNull();
      const copy = restoreMachine(kvm, image);
      try {
        expect(copy.slots.map((s) => s.layout)).toEqual(m.slots.map((s) => s.layout));
        copy.slots.forEach((s, i) => expect(sameContents(s, m.slots[i])).toBe(true));
        // Both run the next epoch alike: every stride page, in whichever slot, holds epoch 6.
        const a = copy.vcpus[0].run();
        expect(a.reason).toBe(ExitReason.Io);
        expect(m.vcpus[0].run()).toEqual(a);
        for (let i = 0; i < 48; i++) {
          const gpa = (HIGH_DATA_GFN + i * 27_000) * PAGE;
          const s = copy.slots.find((x) => gpa >= x.layout.guestPhysAddr && gpa < x.layout.guestPhysAddr + x.layout.size)!;
          expect(s.bytes.readBigUInt64LE(gpa - s.layout.guestPhysAddr)).toBe(6n);
        }
      } finally {
        copy.close();
        m.close();
      }
    } finally {
      kvm.close();
    }
  });
});
