// s390 CMMA migration on the emulator: the kernel selftest s390/cmma_test.c ported check for
// check, the worked examples of kernel-semantics.md rules 109-112, the ioctls' error order
// (rules 92-106, 114-117), ESSA (rules 91, 100) and a drain-loop property.
//
// Every suite runs twice: against EmulatedCmma directly (a memslot list kept by the test)
// and through the public API on the emulated s390x VM (openKvm({ backend: 'emulator',
// arch: 's390x' })), which delegates to the same model.
import fc from 'fast-check';
import {
  MemFlag,
  S390_CMMA_PEEK,
  S390_CMMA_SIZE_MAX,
  S390_VM_MEM_CLR_CMMA,
  S390_VM_MEM_CTRL,
  S390_VM_MEM_ENABLE_CMMA,
  S390_VM_MIGRATION,
  S390_VM_MIGRATION_START,
  S390_VM_MIGRATION_STATUS,
  S390_VM_MIGRATION_STOP,
} from '../lib/constants';
import { EssaOrc } from '../lib/emulator/cmma';
import { drivers, expectKvmError, type CmmaVm } from './helpers/cmma';

const LOG = MemFlag.LogDirtyPages;
const ALL_BITS = 0xffff_ffff_ffff_ffffn;

// cmma_test.c layout (rule 127)
const MAIN_PAGE_COUNT = 512;
const TEST_DATA_PAGE_COUNT = 512;
const TEST_DATA_MEMSLOT = 1;
const TEST_DATA_START_GFN = 4096;
const TEST_DATA_TWO_PAGE_COUNT = 256;
const TEST_DATA_TWO_MEMSLOT = 2;
const TEST_DATA_TWO_START_GFN = 8192;

for (const driver of drivers()) {
  const title = (t: string) => `${t} [${driver.name}]`;
  const maybe = driver.skipReason ? describe.skip : describe;
  const newVm = (): CmmaVm => driver.newVm();

  // ---- the selftest's helpers, same names ----

  function createMemslots(vm: CmmaVm): void {
    vm.setSlot(0, 0, MAIN_PAGE_COUNT, 0);
    vm.setSlot(TEST_DATA_MEMSLOT, TEST_DATA_START_GFN, TEST_DATA_PAGE_COUNT, 0);
  }

  function createVmTwoMemslots(): CmmaVm {
    const vm = newVm();
    createMemslots(vm);
    return vm;
  }

  function enableCmma(vm: CmmaVm): void {
    vm.setAttr(S390_VM_MEM_CTRL, S390_VM_MEM_ENABLE_CMMA);
  }

  function enableDirtyTracking(vm: CmmaVm): void {
    vm.setFlags(0, LOG);
    vm.setFlags(TEST_DATA_MEMSLOT, LOG);
  }

  function enableMigrationMode(vm: CmmaVm): void {
    vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_START);
  }

  function isMigrationModeOn(vm: CmmaVm): boolean {
    const v = vm.getAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STATUS);
    expect(v === 0n || v === 1n).toBe(true);
    return v === 1n;
  }

  /** guest_do_one_essa: SET_STABLE on the first page of TEST_DATA and on the first page of its second MiB. */
  function guestDoOneEssa(vm: CmmaVm): void {
    vm.essa(TEST_DATA_START_GFN, EssaOrc.SetStable);
    vm.essa(TEST_DATA_START_GFN + 256, EssaOrc.SetStable);
  }

  /** guest_dirty_test_data: SET_STABLE on every TEST_DATA page. */
  function guestDirtyTestData(vm: CmmaVm): void {
    for (let gfn = TEST_DATA_START_GFN; gfn < TEST_DATA_START_GFN + TEST_DATA_PAGE_COUNT; gfn++) {
      vm.essa(gfn, EssaOrc.SetStable);
    }
  }

  const cmmaValueBuf = new Uint8Array(MAIN_PAGE_COUNT + TEST_DATA_PAGE_COUNT);

  function queryCmmaRange(vm: CmmaVm, startGfn: number, count: number, flags = 0) {
    cmmaValueBuf.fill(0xff);
    return vm.getCmmaBits(startGfn, count, flags, cmmaValueBuf);
  }

  /** assert_cmma_dirty, checking every value (the selftest checks buf[0] each time). */
  function assertCmmaDirty(firstDirtyGfn: number, dirtyGfnCount: number, log: { startGfn: number; count: number }): void {
    expect({ startGfn: log.startGfn, count: log.count }).toEqual({ startGfn: firstDirtyGfn, count: dirtyGfnCount });
    expect([...cmmaValueBuf.subarray(0, dirtyGfnCount)]).toEqual(new Array(dirtyGfnCount).fill(0)); // stable
    expect(cmmaValueBuf[dirtyGfnCount]).toBe(0xff); // not touched
  }

  function assertAllSlotsCmmaDirty(vm: CmmaVm): void {
    let log = queryCmmaRange(vm, 0, cmmaValueBuf.length);
    expect([log.count, log.remaining, log.startGfn]).toEqual([MAIN_PAGE_COUNT, TEST_DATA_PAGE_COUNT, 0]);
    expect(cmmaValueBuf.subarray(0, MAIN_PAGE_COUNT).every((v) => v === 0)).toBe(true);
    log = queryCmmaRange(vm, MAIN_PAGE_COUNT, cmmaValueBuf.length);
    expect([log.count, log.startGfn, log.remaining]).toEqual([TEST_DATA_PAGE_COUNT, TEST_DATA_START_GFN, 0]);
    expect(cmmaValueBuf.subarray(0, TEST_DATA_PAGE_COUNT).every((v) => v === 0)).toBe(true);
    log = queryCmmaRange(vm, TEST_DATA_START_GFN + TEST_DATA_PAGE_COUNT, cmmaValueBuf.length);
    expect([log.count, log.startGfn, log.remaining]).toEqual([0, 0, 0]);
  }

  function assertNoPagesCmmaDirty(vm: CmmaVm): void {
    const log = queryCmmaRange(vm, 0, cmmaValueBuf.length);
    expect([log.count, log.remaining, log.startGfn]).toEqual([0, 0, 0]);
    expect(cmmaValueBuf.every((v) => v === 0xff)).toBe(true);
  }

  maybe(title('s390/cmma_test.c'), () => {
    test('test_get_cmma_basic', () => {
      const vm = createVmTwoMemslots();
      // GET_CMMA_BITS without CMMA enabled should fail
      expectKvmError(() => queryCmmaRange(vm, 0, cmmaValueBuf.length), 'ENXIO', 'KVM_S390_GET_CMMA_BITS');
      enableCmma(vm);
      vm.createVcpu();
      guestDoOneEssa(vm);
      // GET_CMMA_BITS without migration mode and without peeking should fail
      expectKvmError(() => queryCmmaRange(vm, 0, cmmaValueBuf.length), 'EINVAL', 'KVM_S390_GET_CMMA_BITS');
      // ... and with peeking works: main memslot up to the hole at 512
      const peek = queryCmmaRange(vm, 0, cmmaValueBuf.length, S390_CMMA_PEEK);
      expect([peek.startGfn, peek.count, peek.remaining]).toEqual([0, MAIN_PAGE_COUNT, 0]);
      enableDirtyTracking(vm);
      enableMigrationMode(vm);
      // GET_CMMA_BITS with invalid flags
      expectKvmError(() => queryCmmaRange(vm, 0, cmmaValueBuf.length, 0xfeedc0fe), 'EINVAL', 'KVM_S390_GET_CMMA_BITS');
      vm.close();
    });

    test('test_migration_mode', () => {
      const vm = newVm();
      // enabling migration mode on a VM without memory should fail
      expectKvmError(() => enableMigrationMode(vm), 'EINVAL', 'KVM_SET_DEVICE_ATTR');
      expect(isMigrationModeOn(vm)).toBe(false);
      createMemslots(vm);
      enableCmma(vm);
      vm.createVcpu();
      guestDoOneEssa(vm); // without it the guest has no uses_cmm
      // migration mode when memslots have dirty tracking off should fail
      expectKvmError(() => enableMigrationMode(vm), 'EINVAL', 'KVM_SET_DEVICE_ATTR');
      expect(isMigrationModeOn(vm)).toBe(false);
      enableDirtyTracking(vm);
      enableMigrationMode(vm);
      expect(isMigrationModeOn(vm)).toBe(true);
      guestDoOneEssa(vm); // another ESSA goes fine
      // a new memslot with dirty tracking off turns migration mode off
      expect(isMigrationModeOn(vm)).toBe(true);
      vm.setSlot(TEST_DATA_TWO_MEMSLOT, TEST_DATA_TWO_START_GFN, TEST_DATA_TWO_PAGE_COUNT, 0);
      expect(isMigrationModeOn(vm)).toBe(false);
      guestDoOneEssa(vm);
      // dirty tracking on the new memslot: migration mode can come back
      vm.setFlags(TEST_DATA_TWO_MEMSLOT, LOG);
      enableMigrationMode(vm);
      expect(isMigrationModeOn(vm)).toBe(true);
      // dirty tracking off again with a flags-only change: migration mode goes off
      vm.setFlags(TEST_DATA_TWO_MEMSLOT, 0);
      expect(isMigrationModeOn(vm)).toBe(false);
      guestDoOneEssa(vm);
      vm.close();
    });

    test('test_get_initial_dirty', () => {
      const vm = createVmTwoMemslots();
      enableCmma(vm);
      vm.createVcpu();
      guestDoOneEssa(vm);
      enableDirtyTracking(vm);
      enableMigrationMode(vm);
      assertAllSlotsCmmaDirty(vm);
      // start from the beginning again: nothing else is dirty
      assertNoPagesCmmaDirty(vm);
      vm.close();
    });

    test('test_get_skip_holes', () => {
      const vm = createVmTwoMemslots();
      enableCmma(vm);
      vm.createVcpu();
      guestDirtyTestData(vm);
      enableDirtyTracking(vm);
      enableMigrationMode(vm);
      assertAllSlotsCmmaDirty(vm); // un-dirty all pages
      guestDirtyTestData(vm); // then dirty just TEST_DATA: [0, 0x200) dirty

      let gfnOffset = TEST_DATA_START_GFN;
      // one page from gfn 0: the main slot is clean, so the first TEST_DATA page
      let log = queryCmmaRange(vm, 0, 1);
      assertCmmaDirty(gfnOffset, 1, log);
      gfnOffset++;
      // 0x20 pages from past the end of TEST_DATA: wraps to TEST_DATA page 1
      log = queryCmmaRange(vm, TEST_DATA_START_GFN + TEST_DATA_PAGE_COUNT, 0x20);
      assertCmmaDirty(gfnOffset, 0x20, log);
      gfnOffset += 0x20;
      gfnOffset += 0x20; // skip 32 pages
      // the next 0x20: [0x21, 0x41) and [0x61, 0x200) stay dirty
      log = queryCmmaRange(vm, gfnOffset, 0x20);
      assertCmmaDirty(gfnOffset, 0x20, log);
      // one page from the start of TEST_DATA: page 0x21
      log = queryCmmaRange(vm, TEST_DATA_START_GFN, 1);
      assertCmmaDirty(TEST_DATA_START_GFN + 0x21, 1, log);
      // 15 pages from 0x23: [0x23, 0x32); 0x22 and 0x32 stay dirty
      gfnOffset = TEST_DATA_START_GFN + 0x23;
      log = queryCmmaRange(vm, gfnOffset, 15);
      assertCmmaDirty(gfnOffset, 15, log);
      // 17 pages from 0x22: [0x22, 0x33), the clean run between 0x22 and 0x32 included
      gfnOffset = TEST_DATA_START_GFN + 0x22;
      log = queryCmmaRange(vm, gfnOffset, 17);
      assertCmmaDirty(gfnOffset, 17, log);
      // 25 pages from 0x40: only 0x40, more than 16 clean pages follow it
      gfnOffset = TEST_DATA_START_GFN + 0x40;
      log = queryCmmaRange(vm, gfnOffset, 25);
      assertCmmaDirty(gfnOffset, 1, log);
      // [0x33, 0x40)
      gfnOffset = TEST_DATA_START_GFN + 0x33;
      log = queryCmmaRange(vm, gfnOffset, 0x40 - 0x33);
      assertCmmaDirty(gfnOffset, 0x40 - 0x33, log);
      // the rest, [0x61, 0x200)
      log = queryCmmaRange(vm, TEST_DATA_START_GFN, TEST_DATA_PAGE_COUNT - 0x61);
      assertCmmaDirty(TEST_DATA_START_GFN + 0x61, TEST_DATA_PAGE_COUNT - 0x61, log);
      assertNoPagesCmmaDirty(vm);
      vm.close();
    });
  });

  // ---- worked examples and edge rules ----

  /** A value per page so that clean values in a block are checked too: usage state page % 4, NODAT on odd quads. */
  const patternValue = (gfn: number): number => (gfn % 4) | ((gfn >> 2) % 2 ? 0x40 : 0);
  /** An ESSA that leaves value v as it is but, in migration mode, marks the page dirty. */
  const orcKeeping = (v: number): EssaOrc =>
    [EssaOrc.SetStableResident, EssaOrc.SetUnused, EssaOrc.SetPotVolatile, EssaOrc.SetVolatile][v & 3];

  /**
   * The cmma_test layout with logging on, every page holding patternValue, migration mode
   * on and nothing CMMA-dirty but `dirty` (gfns).
   */
  function vmWithDirty(dirty: readonly number[], slots: Array<[id: number, base: number, npages: number]> = [
    [0, 0, MAIN_PAGE_COUNT],
    [TEST_DATA_MEMSLOT, TEST_DATA_START_GFN, TEST_DATA_PAGE_COUNT],
  ]): CmmaVm {
    const vm = newVm();
    for (const [id, base, npages] of slots) vm.setSlot(id, base, npages, LOG);
    enableCmma(vm);
    vm.createVcpu();
    for (const [, base, npages] of slots) {
      const values = Uint8Array.from({ length: npages }, (_, i) => patternValue(base + i));
      vm.setCmmaBits(base, values, ALL_BITS); // also sets uses_cmm
    }
    enableMigrationMode(vm);
    drain(vm, 0, 4096);
    for (const gfn of dirty) vm.essa(gfn, orcKeeping(patternValue(gfn)));
    return vm;
  }

  /** The reference drain loop: GET until remaining is 0, from 0 again when a call finds nothing. */
  function drain(vm: CmmaVm, start: number, count: number, seen?: Map<number, number>): number {
    const buf = new Uint8Array(count);
    let calls = 0;
    for (;;) {
      const log = vm.getCmmaBits(start, count, 0, buf);
      calls++;
      for (let i = 0; i < log.count; i++) seen?.set(log.startGfn + i, buf[i]);
      if (log.remaining === 0) return calls;
      start = log.count > 0 ? log.startGfn + log.count : 0;
      if (calls > 1_000_000) throw new Error('drain loop does not end');
    }
  }

  const T = TEST_DATA_START_GFN;
  const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
  const pattern = (a: number, n: number) => range(a, a + n).map(patternValue);

  function get(vm: CmmaVm, startGfn: number, count: number) {
    const log = queryCmmaRange(vm, startGfn, count);
    return { startGfn: log.startGfn, count: log.count, remaining: log.remaining, values: [...cmmaValueBuf.subarray(0, log.count)], next: cmmaValueBuf[log.count] };
  }

  maybe(title('GET_CMMA_BITS: the 16-clean-values rule (rules 109, 110)'), () => {
    test('rule 110: dirty {0x22, 0x32, 0x33..0x3f}, GET(+0x22, 17) joins the 15 clean pages and stops before 0x33', () => {
      const vm = vmWithDirty([T + 0x22, T + 0x32, ...range(T + 0x33, T + 0x40)]);
      expect(get(vm, T + 0x22, 17)).toEqual({ startGfn: T + 0x22, count: 17, remaining: 13, values: pattern(T + 0x22, 17), next: 0xff });
      // 0x22 and 0x32 are clean now, 0x33 is next
      expect(get(vm, T, 1)).toMatchObject({ startGfn: T + 0x33, count: 1, remaining: 12 });
      vm.close();
    });

    test('rule 110: dirty {0x40, 0x61..0x1ff}, GET(+0x40, 25) returns 0x40 alone (33 pages to the next)', () => {
      const vm = vmWithDirty([T + 0x40, ...range(T + 0x61, T + 0x200)]);
      expect(get(vm, T + 0x40, 25)).toEqual({ startGfn: T + 0x40, count: 1, remaining: 0x200 - 0x61, values: pattern(T + 0x40, 1), next: 0xff });
      vm.close();
    });

    test('rule 110: dirty {0, 1, 40}, GET(+0, 100) emits 0, 1 and the trailing clean page 2', () => {
      const vm = vmWithDirty([T, T + 1, T + 40]);
      expect(get(vm, T, 100)).toEqual({ startGfn: T, count: 3, remaining: 1, values: pattern(T, 3), next: 0xff });
      expect(get(vm, T + 3, 100)).toEqual({ startGfn: T + 40, count: 1, remaining: 0, values: pattern(T + 40, 1), next: 0xff });
      vm.close();
    });

    test('rule 110: dirty {0, 1, 40}, GET(+0, 40) stops at 2 values: the next dirty page is at start + bufsize', () => {
      const vm = vmWithDirty([T, T + 1, T + 40]);
      expect(get(vm, T, 40)).toEqual({ startGfn: T, count: 2, remaining: 1, values: pattern(T, 2), next: 0xff });
      vm.close();
    });

    test('rule 109: from the first page S, N is joined iff N - S <= 16', () => {
      let vm = vmWithDirty([T, T + 16]);
      expect(get(vm, T, 100)).toMatchObject({ startGfn: T, count: 17, remaining: 0, values: pattern(T, 17) });
      vm.close();
      vm = vmWithDirty([T, T + 17]);
      expect(get(vm, T, 100)).toMatchObject({ startGfn: T, count: 1, remaining: 1 });
      vm.close();
    });

    test('rule 109: from a later dirty page P, N is joined iff N - P <= 17; else one trailing clean value P+1', () => {
      let vm = vmWithDirty([T, T + 1, T + 18]);
      expect(get(vm, T, 100)).toMatchObject({ startGfn: T, count: 19, remaining: 0, values: pattern(T, 19) });
      vm.close();
      vm = vmWithDirty([T, T + 1, T + 19]);
      expect(get(vm, T, 100)).toMatchObject({ startGfn: T, count: 3, remaining: 1, values: pattern(T, 3) });
      vm.close();
    });

    test('rule 109: no trailing value when the last dirty page is the last of memory (next >= mem_end)', () => {
      const vm = vmWithDirty([T, T + 1]);
      expect(get(vm, T, 100)).toMatchObject({ startGfn: T, count: 2, remaining: 0, values: pattern(T, 2) });
      vm.close();
    });

    test('rule 109: no trailing value when the buffer is full', () => {
      const vm = vmWithDirty([T, T + 1, T + 40]);
      expect(get(vm, T, 2)).toMatchObject({ startGfn: T, count: 2, remaining: 1, next: 0xff });
      vm.close();
    });

    test('rule 109: no trailing value when P + 1 is in a hole; an adjacent slot gives one', () => {
      const holes: Array<[number, number, number]> = [[0, 0, 512], [1, 4096, 512], [2, 8192, 256]];
      let vm = vmWithDirty([4606, 4607, 8200], holes);
      expect(get(vm, 4606, 1000)).toMatchObject({ startGfn: 4606, count: 2, remaining: 1, values: pattern(4606, 2) });
      vm.close();
      const adjacent: Array<[number, number, number]> = [[0, 0, 512], [1, 4096, 512], [2, 4608, 256]];
      vm = vmWithDirty([4606, 4607, 4700], adjacent);
      expect(get(vm, 4606, 1000)).toMatchObject({ startGfn: 4606, count: 3, remaining: 1, values: pattern(4606, 3) });
      vm.close();
    });

    test('rule 108: a block runs on across adjacent memslots', () => {
      const adjacent: Array<[number, number, number]> = [[0, 0, 512], [1, 4096, 512], [2, 4608, 256]];
      const vm = vmWithDirty([4600, 4605, 4610, 4620], adjacent);
      expect(get(vm, 4096, 1000)).toMatchObject({ startGfn: 4600, count: 21, remaining: 0, values: pattern(4600, 21) });
      vm.close();
    });
  });

  maybe(title('GET_CMMA_BITS: wrap-around and holes (rules 107, 111, 112)'), () => {
    test('rule 111: a start at or beyond the end of the highest slot wraps to the lowest', () => {
      const vm = vmWithDirty([10, T + 5]);
      expect(get(vm, T + TEST_DATA_PAGE_COUNT, 1)).toMatchObject({ startGfn: 10, count: 1, remaining: 1 });
      expect(get(vm, 1 << 40, 1)).toMatchObject({ startGfn: T + 5, count: 1, remaining: 0 });
      vm.close();
    });

    test('rule 111: a start in a hole below the top with nothing dirty above: count 0, start_gfn = mem_end, remaining > 0', () => {
      const vm = vmWithDirty([10]);
      expect(get(vm, 1000, 100)).toEqual({ startGfn: T + TEST_DATA_PAGE_COUNT, count: 0, remaining: 1, values: [], next: 0xff });
      // inside the highest slot, past its last dirty page: no wrap either
      expect(get(vm, T + 7, 100)).toMatchObject({ startGfn: T + TEST_DATA_PAGE_COUNT, count: 0, remaining: 1 });
      // the drain loop restarts from 0 and finds it
      expect(get(vm, 0, 100)).toMatchObject({ startGfn: 10, count: 1, remaining: 0, values: pattern(10, 1) });
      vm.close();
    });

    test('rule 107: a start in a hole scans from the slot above it', () => {
      const vm = vmWithDirty([T + 3]);
      expect(get(vm, 600, 100)).toMatchObject({ startGfn: T + 3, count: 1, remaining: 0 });
      vm.close();
    });

    test('rule 108: the walk wraps while looking for `next` and stops at the lowered gfn', () => {
      // last page of the highest slot dirty, and a page low in memory: one value, then stop
      const vm = vmWithDirty([5, T + TEST_DATA_PAGE_COUNT - 1]);
      expect(get(vm, T + TEST_DATA_PAGE_COUNT - 1, 1000)).toMatchObject({ startGfn: T + TEST_DATA_PAGE_COUNT - 1, count: 1, remaining: 1 });
      expect(get(vm, 0, 1000)).toMatchObject({ startGfn: 5, count: 1, remaining: 0 });
      vm.close();
    });
  });

  maybe(title('GET_CMMA_BITS: checks, peek and the returned struct (rules 102-106)'), () => {
    test('rule 103: ENXIO without CMMA comes before every other check', () => {
      const vm = createVmTwoMemslots();
      expectKvmError(() => queryCmmaRange(vm, 0, 10, 0xfeedc0fe), 'ENXIO', 'KVM_S390_GET_CMMA_BITS');
      expectKvmError(() => queryCmmaRange(vm, 0, 0, S390_CMMA_PEEK), 'ENXIO', 'KVM_S390_GET_CMMA_BITS');
      vm.close();
    });

    test('rule 103: flags are checked before migration mode; count 0 or no CMM use zero the whole struct', () => {
      const vm = createVmTwoMemslots();
      enableCmma(vm);
      expectKvmError(() => queryCmmaRange(vm, 0, 10, 2), 'EINVAL', 'KVM_S390_GET_CMMA_BITS');
      expectKvmError(() => queryCmmaRange(vm, 0, 0), 'EINVAL', 'KVM_S390_GET_CMMA_BITS'); // not peek, not migrating
      // the guest never used CMM: peek finds nothing, even past the memslots
      expect(queryCmmaRange(vm, 123456, 10, S390_CMMA_PEEK)).toMatchObject({ startGfn: 0, count: 0, remaining: 0 });
      vm.essa(7, EssaOrc.SetUnused);
      // bufsize 0: zeroed, flags included
      expect(queryCmmaRange(vm, 99, 0, S390_CMMA_PEEK)).toMatchObject({ startGfn: 0, count: 0, remaining: 0, ...driver.flagsOut(0) });
      expect(cmmaValueBuf.every((v) => v === 0xff)).toBe(true);
      vm.close();
    });

    test('rule 103: in migration mode with nothing dirty the struct is zeroed; without CMM use too', () => {
      const vm = createVmTwoMemslots();
      enableDirtyTracking(vm);
      enableCmma(vm);
      enableMigrationMode(vm); // every page dirty, but the guest never used CMM
      expect(queryCmmaRange(vm, 5, 100)).toMatchObject({ startGfn: 0, count: 0, remaining: 0 });
      expect(cmmaValueBuf.every((v) => v === 0xff)).toBe(true);
      vm.close();
    });

    test('rules 104, 106: peek reads from start_gfn, leaves dirty bits alone, stops at a hole, reports remaining only in migration mode', () => {
      const vm = vmWithDirty([T + 1, T + 2]);
      let log = queryCmmaRange(vm, 500, 100, S390_CMMA_PEEK);
      expect(log).toMatchObject({ startGfn: 500, count: 12, remaining: 2, ...driver.flagsOut(S390_CMMA_PEEK) });
      expect([...cmmaValueBuf.subarray(0, 13)]).toEqual([...pattern(500, 12), 0xff]);
      expectKvmError(() => queryCmmaRange(vm, 512, 100, S390_CMMA_PEEK), 'EFAULT', 'KVM_S390_GET_CMMA_BITS');
      expect(get(vm, T, 100)).toMatchObject({ startGfn: T + 1, count: 2, remaining: 0 }); // peek did not clean them
      vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STOP);
      vm.essa(T + 3, EssaOrc.SetStable);
      log = queryCmmaRange(vm, T, 8, S390_CMMA_PEEK);
      expect(log).toMatchObject({ startGfn: T, count: 8, remaining: 0 });
      expect([...cmmaValueBuf.subarray(0, 8)]).toEqual([...pattern(T, 3), 0, ...pattern(T + 4, 4)]);
      vm.close();
    });

    test('rule 104: values too short for the count: the walk has cleaned the pages, the copy fails (EFAULT)', () => {
      const vm = vmWithDirty([T + 1, T + 2, T + 3]);
      const short = new Uint8Array(2);
      if (driver.name === 'direct') {
        expectKvmError(() => vm.getCmmaBits(T, 100, 0, short), 'EFAULT', 'KVM_S390_GET_CMMA_BITS');
        expect(get(vm, 0, 100)).toMatchObject({ count: 0, remaining: 0 }); // gone: the kernel cleared them before copying
      } else {
        expect(() => vm.getCmmaBits(T, 100, 0, short)).toThrow(RangeError); // the public layer checks first
        expect(get(vm, 0, 100)).toMatchObject({ startGfn: T + 1, count: 3, remaining: 0 });
      }
      vm.close();
    });

    test('rule 108: no memslot left in migration mode: the kernel returns early, the struct keeps start and count', () => {
      const vm = vmWithDirty([T + 1]);
      vm.deleteSlot(0);
      vm.deleteSlot(TEST_DATA_MEMSLOT); // deleting does not stop migration mode (rule 97)
      const log = queryCmmaRange(vm, 5, 10);
      expect(log).toMatchObject({ startGfn: 5, count: 10, remaining: 1 });
      // the kernel copies its never-written buffer; the emulator's is zero
      expect([...cmmaValueBuf.subarray(0, 11)]).toEqual([...new Array(10).fill(0), 0xff]);
      vm.close();
    });

    test('rule 105: the value byte is (pgste >> 24) & 0x43', () => {
      const vm = createVmTwoMemslots();
      enableCmma(vm);
      vm.setCmmaBits(0, Uint8Array.of(0xff, 0x80, 0x3c, 0x41), ALL_BITS);
      queryCmmaRange(vm, 0, 4, S390_CMMA_PEEK);
      expect([...cmmaValueBuf.subarray(0, 5)]).toEqual([0x43, 0x00, 0x00, 0x41, 0xff]);
      vm.close();
    });

    test('rule 103: GET clamps count to 1048576 (KVM_S390_CMMA_SIZE_MAX)', () => {
      if (!driver.bigMemory) return; // a 4 GiB memslot: the direct model only
      const vm = newVm();
      const pages = S390_CMMA_SIZE_MAX + 256;
      vm.setSlot(0, 0, pages, LOG);
      enableCmma(vm);
      vm.essa(0, EssaOrc.SetStable);
      const buf = new Uint8Array(2_000_000).fill(0xff);
      let log = vm.getCmmaBits(0, 2_000_000, S390_CMMA_PEEK, buf);
      expect(log).toMatchObject({ startGfn: 0, count: S390_CMMA_SIZE_MAX, remaining: 0 });
      expect([buf[S390_CMMA_SIZE_MAX - 1], buf[S390_CMMA_SIZE_MAX]]).toEqual([0, 0xff]);
      enableMigrationMode(vm);
      log = vm.getCmmaBits(0, 2_000_000, 0, buf);
      expect(log).toMatchObject({ startGfn: 0, count: S390_CMMA_SIZE_MAX, remaining: 256 });
      log = vm.getCmmaBits(S390_CMMA_SIZE_MAX, 2_000_000, 0, buf);
      expect(log).toMatchObject({ startGfn: S390_CMMA_SIZE_MAX, count: 256, remaining: 0 });
      vm.close();
    });
  });

  maybe(title('KVM_S390_SET_CMMA_BITS (rules 101, 114-117)'), () => {
    test('rule 114: ENXIO, then flags, then count > 1048576 (EINVAL, GET clamps instead), then count 0 does nothing', () => {
      const vm = createVmTwoMemslots();
      expectKvmError(() => vm.setCmmaBits(0, new Uint8Array(1), ALL_BITS, 1), 'ENXIO', 'KVM_S390_SET_CMMA_BITS');
      enableCmma(vm);
      expectKvmError(() => vm.setCmmaBits(0, new Uint8Array(S390_CMMA_SIZE_MAX + 1), ALL_BITS, 1), 'EINVAL', 'KVM_S390_SET_CMMA_BITS');
      expectKvmError(() => vm.setCmmaBits(0, new Uint8Array(S390_CMMA_SIZE_MAX + 1), ALL_BITS), 'EINVAL', 'KVM_S390_SET_CMMA_BITS');
      vm.setCmmaBits(1 << 30, new Uint8Array(0), ALL_BITS); // nothing to do, not even a memslot check
      // count 0 did not set uses_cmm: a peek still finds nothing
      expect(queryCmmaRange(vm, 0, 4, S390_CMMA_PEEK)).toMatchObject({ count: 0 });
      vm.close();
    });

    test('rule 115: the mask is in PGSTE bit positions', () => {
      const vm = createVmTwoMemslots();
      enableCmma(vm);
      const peek = (gfn: number) => (queryCmmaRange(vm, gfn, 1, S390_CMMA_PEEK), cmmaValueBuf[0]);
      const cases: Array<[mask: bigint, before: number, value: number, after: number]> = [
        [0x43n, 0x00, 0x43, 0x00], // value-byte positions: nothing changes
        [ALL_BITS, 0x00, 0x43, 0x43], // what QEMU passes
        [0x4300_0000n, 0x00, 0x43, 0x43],
        [0x0300_0000n, 0x00, 0x43, 0x03], // usage state only
        [0x0300_0000n, 0x40, 0x01, 0x41], // ... NODAT kept
        [0x4000_0000n, 0x03, 0x40, 0x43], // NODAT only
        [0x4000_0000n, 0x43, 0x00, 0x03],
        [0xbc00_0000n, 0x00, 0xff, 0x00], // ZERO and the other bits are not settable
        [0xffff_ffff_00ff_ffffn, 0x02, 0x41, 0x02],
      ];
      cases.forEach(([mask, before, value, after], i) => {
        vm.setCmmaBits(i, Uint8Array.of(before), ALL_BITS);
        vm.setCmmaBits(i, Uint8Array.of(value), mask);
        expect({ mask, after: peek(i) }).toEqual({ mask, after });
      });
      vm.close();
    });

    test('rules 115, 116: a gfn outside the memslots stops with EFAULT after the pages before it, and uses_cmm is on', () => {
      const vm = createVmTwoMemslots();
      enableDirtyTracking(vm);
      enableCmma(vm);
      expectKvmError(() => vm.setCmmaBits(509, Uint8Array.of(1, 2, 3, 1, 1), ALL_BITS), 'EFAULT', 'KVM_S390_SET_CMMA_BITS');
      queryCmmaRange(vm, 508, 10, S390_CMMA_PEEK);
      expect([...cmmaValueBuf.subarray(0, 5)]).toEqual([0, 1, 2, 3, 0xff]);
      // uses_cmm: GET in migration mode now reports pages
      enableMigrationMode(vm);
      expect(get(vm, 0, 4)).toMatchObject({ startGfn: 0, count: 4, remaining: 1020 });
      vm.close();
    });

    test('rule 101: SET_CMMA_BITS marks nothing dirty', () => {
      const vm = vmWithDirty([T + 9]);
      vm.setCmmaBits(T + 100, Uint8Array.of(1, 2, 3), ALL_BITS);
      expect(get(vm, 0, 1000)).toMatchObject({ startGfn: T + 9, count: 1, remaining: 0 });
      vm.close();
    });
  });

  maybe(title('ESSA (rules 91, 100)'), () => {
    test('rule 100: each operation request code on a resident page', () => {
      const vm = createVmTwoMemslots();
      enableCmma(vm);
      // [orc, value before, value after]
      const cases: Array<[EssaOrc, number, number]> = [
        [EssaOrc.GetState, 0x42, 0x42],
        [EssaOrc.SetStable, 0x43, 0x00], // NODAT cleared too
        [EssaOrc.SetUnused, 0x40, 0x41],
        [EssaOrc.SetVolatile, 0x41, 0x43],
        [EssaOrc.SetPotVolatile, 0x00, 0x02], // resident: potentially volatile
        [EssaOrc.SetStableResident, 0x43, 0x40],
        [EssaOrc.SetStableIfResident, 0x42, 0x40], // resident: stable
        [EssaOrc.SetStableNodat, 0x03, 0x40],
      ];
      cases.forEach(([orc, before, after], gfn) => {
        vm.setCmmaBits(gfn, Uint8Array.of(before), ALL_BITS);
        expect(vm.essa(gfn, orc)).toBe(before);
        queryCmmaRange(vm, gfn, 1, S390_CMMA_PEEK);
        expect({ orc, after: cmmaValueBuf[0] }).toEqual({ orc, after });
      });
      vm.close();
    });

    test('rule 100: in migration mode a set operation marks the page once; GET_STATE marks nothing', () => {
      const vm = vmWithDirty([]);
      vm.essa(T + 1, EssaOrc.GetState);
      expect(get(vm, 0, 100)).toMatchObject({ count: 0, remaining: 0 });
      vm.essa(T + 1, EssaOrc.SetUnused);
      vm.essa(T + 1, EssaOrc.SetVolatile);
      expect(get(vm, 0, 100)).toMatchObject({ startGfn: T + 1, count: 1, remaining: 0, values: [0x03] });
      vm.close();
    });

    test('rule 91: an ESSA in migration mode does not switch on uses_cmm; one outside does', () => {
      const vm = createVmTwoMemslots();
      enableDirtyTracking(vm);
      enableCmma(vm);
      enableMigrationMode(vm);
      vm.essa(T, EssaOrc.SetUnused);
      expect(get(vm, 0, 100)).toMatchObject({ startGfn: 0, count: 0, remaining: 0 }); // zeroed: no CMM use yet
      vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STOP);
      vm.essa(T, EssaOrc.GetState); // intercepted once outside migration mode
      enableMigrationMode(vm);
      expect(get(vm, 0, 1024)).toMatchObject({ startGfn: 0, count: 512, remaining: 512 });
      vm.close();
    });

    test('ESSA without CMMA is an operation exception; a gfn outside the memslots or a bad orc is a RangeError', () => {
      const vm = createVmTwoMemslots();
      let err: unknown;
      try {
        vm.essa(0, EssaOrc.SetStable);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ name: 'S390ProgramInterruption', interruptionCode: 0x01 });
      enableCmma(vm);
      expect(() => vm.essa(512, EssaOrc.SetStable)).toThrow(RangeError);
      expect(() => vm.essa(0, 8)).toThrow(RangeError);
      expect(() => vm.essa(0, 1.5)).toThrow(RangeError);
      vm.close();
    });
  });

  maybe(title('device attributes and migration mode (rules 92-98)'), () => {
    test('rule 92: ENABLE_CMMA is EBUSY once a vCPU exists; CLR_CMMA needs CMMA and makes every page stable without NODAT', () => {
      let vm = createVmTwoMemslots();
      vm.createVcpu();
      expectKvmError(() => enableCmma(vm), 'EBUSY', 'KVM_SET_DEVICE_ATTR');
      expectKvmError(() => vm.setAttr(S390_VM_MEM_CTRL, S390_VM_MEM_CLR_CMMA), 'EINVAL', 'KVM_SET_DEVICE_ATTR');
      vm.close();
      vm = createVmTwoMemslots();
      enableCmma(vm);
      enableCmma(vm); // again: fine
      vm.setCmmaBits(T, Uint8Array.of(0x43, 0x41, 0x02, 0x40), ALL_BITS);
      vm.setAttr(S390_VM_MEM_CTRL, S390_VM_MEM_CLR_CMMA);
      queryCmmaRange(vm, T, 4, S390_CMMA_PEEK);
      expect([...cmmaValueBuf.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
      vm.close();
    });

    test('rules 95, 96: attributes that exist, and ENXIO for the rest', () => {
      const vm = createVmTwoMemslots();
      expect(vm.hasAttr(S390_VM_MEM_CTRL, S390_VM_MEM_ENABLE_CMMA)).toBe(true);
      expect(vm.hasAttr(S390_VM_MEM_CTRL, S390_VM_MEM_CLR_CMMA)).toBe(true);
      expect(vm.hasAttr(S390_VM_MEM_CTRL, 7)).toBe(false);
      for (const attr of [0, 1, 2, 3, 99]) expect(vm.hasAttr(S390_VM_MIGRATION, attr)).toBe(true);
      expect(vm.hasAttr(9, 0)).toBe(false);
      expectKvmError(() => vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STATUS), 'ENXIO', 'KVM_SET_DEVICE_ATTR');
      expectKvmError(() => vm.getAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_START), 'ENXIO', 'KVM_GET_DEVICE_ATTR');
      expectKvmError(() => vm.getAttr(S390_VM_MEM_CTRL, S390_VM_MEM_ENABLE_CMMA), 'ENXIO', 'KVM_GET_DEVICE_ATTR');
      expectKvmError(() => vm.setAttr(S390_VM_MEM_CTRL, 9), 'ENXIO', 'KVM_SET_DEVICE_ATTR');
      expectKvmError(() => vm.setAttr(9, 0), 'ENXIO', 'KVM_SET_DEVICE_ATTR');
      expect(vm.getAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STATUS)).toBe(0n);
      vm.close();
    });

    test('rule 93: without CMMA, START needs memslots but no dirty logging; START twice re-marks nothing; STOP is idempotent', () => {
      let vm = createVmTwoMemslots();
      vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STOP); // not on: fine
      enableMigrationMode(vm); // no CMMA: no bitmap needed
      expect(isMigrationModeOn(vm)).toBe(true);
      vm.close();
      vm = vmWithDirty([T + 1]);
      enableMigrationMode(vm); // already on: does not mark every page again
      expect(get(vm, 0, 100)).toMatchObject({ startGfn: T + 1, count: 1, remaining: 0 });
      vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STOP);
      vm.setAttr(S390_VM_MIGRATION, S390_VM_MIGRATION_STOP);
      expect(isMigrationModeOn(vm)).toBe(false);
      enableMigrationMode(vm); // off before: marks all again
      expect(get(vm, 0, 1024)).toMatchObject({ startGfn: 0, count: 512, remaining: 512 });
      vm.close();
    });

    test('rule 97: deleting a slot keeps migration mode (and its dirty pages in remaining); a logged move keeps the dirty bits', () => {
      const vm = vmWithDirty([T + 3, 8192 + 5], [[0, 0, 512], [1, T, 512], [2, 8192, 256]]);
      vm.moveSlot(TEST_DATA_MEMSLOT, 16384); // logged move: still migrating, bits move with the slot
      expect(isMigrationModeOn(vm)).toBe(true);
      expect(get(vm, 0, 1)).toMatchObject({ startGfn: 8192 + 5, count: 1, remaining: 1 });
      expect(get(vm, 0, 1)).toMatchObject({ startGfn: 16384 + 3, count: 1, remaining: 0 });
      vm.essa(8192 + 6, EssaOrc.SetStable);
      vm.deleteSlot(TEST_DATA_TWO_MEMSLOT);
      expect(isMigrationModeOn(vm)).toBe(true);
      // the deleted page still counts: GET finds nothing yet reports it
      expect(get(vm, 0, 100)).toMatchObject({ startGfn: 16384 + 512, count: 0, remaining: 1 });
      vm.close();
    });
  });

  maybe(title('property: the drain loop collects every page ESSAd in migration mode'), () => {
    // s390 memslots are whole MiBs (256 pages) on the public VM; the direct model takes any size
    const unit = driver.slotUnit;
    const layout = fc.array(fc.record({ gap: fc.integer({ min: 0, max: 3 }), size: fc.integer({ min: 1, max: unit === 1 ? 200 : 3 }) }), { minLength: 1, maxLength: 4 });
    const round = fc.record({
      essas: fc.array(fc.record({ at: fc.nat(), orc: fc.integer({ min: 0, max: 7 }) }), { maxLength: 40 }),
      getAt: fc.nat(),
      count: fc.integer({ min: 1, max: 300 }),
    });

    test('every page ESSAd while migrating is collected after its last ESSA, with the value it holds', () => {
      fc.assert(
        fc.property(layout, fc.array(round, { maxLength: 6 }), fc.integer({ min: 1, max: 400 }), (slots, rounds, drainCount) => {
          const vm = newVm();
          const gfns: number[] = [];
          const layoutPages: Array<[base: number, npages: number]> = [];
          let base = 0;
          slots.forEach(({ gap, size }, id) => {
            base += gap * unit * (unit === 1 ? 7 : 1);
            const npages = size * unit;
            vm.setSlot(id, base, npages, LOG);
            for (let i = 0; i < npages; i++) gfns.push(base + i);
            layoutPages.push([base, npages]);
            base += npages;
          });
          enableCmma(vm);
          vm.createVcpu();
          vm.essa(gfns[0], EssaOrc.SetStable); // the guest uses CMM
          enableMigrationMode(vm);
          let clock = 0;
          const collected = new Map<number, { at: number; value: number }>();
          const essad = new Map<number, number>();
          const record = (seen: Map<number, number>) => {
            for (const [gfn, value] of seen) collected.set(gfn, { at: ++clock, value });
          };
          const first = new Map<number, number>();
          drain(vm, 0, 512, first); // round 0: everything, as QEMU's first pass
          record(first);
          for (const r of rounds) {
            for (const e of r.essas) {
              const gfn = gfns[e.at % gfns.length];
              vm.essa(gfn, e.orc);
              if (e.orc !== EssaOrc.GetState) essad.set(gfn, ++clock);
            }
            const buf = new Uint8Array(r.count);
            const log = vm.getCmmaBits(gfns[r.getAt % gfns.length], r.count, 0, buf);
            const seen = new Map<number, number>();
            for (let i = 0; i < log.count; i++) seen.set(log.startGfn + i, buf[i]);
            record(seen);
          }
          const last = new Map<number, number>();
          const calls = drain(vm, 0, drainCount, last);
          record(last);
          expect(calls).toBeLessThanOrEqual(gfns.length + 2);
          // what a destination built from the collected values would lack or hold differently
          const wrong: string[] = [];
          for (const [base, npages] of layoutPages) {
            const held = new Uint8Array(npages);
            expect(vm.getCmmaBits(base, npages, S390_CMMA_PEEK, held).count).toBe(npages);
            held.forEach((value, i) => {
              const gfn = base + i;
              const c = collected.get(gfn);
              if (c === undefined) wrong.push(`${gfn}: never collected`);
              else if (c.value !== value) wrong.push(`${gfn}: collected ${c.value}, holds ${value}`);
              else if (c.at < (essad.get(gfn) ?? 0)) wrong.push(`${gfn}: ESSAd after its last collection`);
            });
          }
          const inSlots = new Set(gfns);
          for (const gfn of collected.keys()) if (!inSlots.has(gfn)) wrong.push(`${gfn}: collected outside the memslots`);
          expect(wrong).toEqual([]);
          vm.close();
        }),
        { numRuns: 300 },
      );
    });
  });
}
