// The emulator's rule for RFLAGS bits the architecture leaves undefined (lib/guest/model.ts:
// they read 0) and the per-exit mask the cross-backend comparisons use (undefinedRflags in
// lib/guest/x86.ts). A CPU that leaves other values there (AMD sets AF after `shl rdx, 12`
// where Intel clears it) must compare equal; a difference in any defined bit must not.
import { ExitReason, Workload, openKvm, type Regs } from '../lib';
import { RANDOM_GPA, RFLAGS_AF, RFLAGS_OF, STRIDE_GPA, undefinedRflags } from '../lib/guest/x86';
import { DATA_GFN, makeGuest } from './helpers/guest';
import { expectSameRegs } from './helpers/regs';

const CF = 0x1n, PF = 0x4n, AF = 0x10n, ZF = 0x40n, SF = 0x80n, OF = 0x800n;
const ARITH = [CF, PF, AF, ZF, SF, OF];

/** The registers after each of `runs` runs of `w` on a fresh emulated guest of 1024 data pages. */
function exits(w: Workload, runs: number): Array<{ reason: number; regs: Regs }> {
  const kvm = openKvm({ backend: 'emulator' });
  try {
    const g = makeGuest(kvm, { ringBytes: kvm.dirtyRingLimits().bytesFor(64) });
    g.vcpu.load(w);
    return Array.from({ length: runs }, () => ({ reason: g.vcpu.run().reason, regs: g.vcpu.getRegs() }));
  } finally {
    kvm.close();
  }
}

const cases: Array<[string, Workload, number, (r: Regs) => bigint]> = [
  // every store of the last 4 pages is past the slot's end: an MMIO exit after `shl rdx, 12`
  ['random, MMIO store after shl', Workload.random({ firstPage: DATA_GFN + 1000, spanPages: 300, pagesPerEpoch: 12, seed: 3n }), 20,
    (r) => (r.rip === BigInt(RANDOM_GPA + 0x36) ? AF | OF : 0n)],
  ['stride, OUT after dec', Workload.stride({ firstPage: 600, pages: 10, stridePages: 7 }), 3, () => 0n],
  ['stride, OUT after test (no pages)', Workload.stride({ firstPage: 600, pages: 0 }), 2, () => AF],
  // every page is past the slot's end: the first store exits right after `test rcx, rcx`, later ones after `dec`
  ['stride, MMIO store after test / dec', Workload.stride({ firstPage: DATA_GFN + 1024, pages: 4 }), 6,
    (r) => (r.rip === BigInt(STRIDE_GPA + 0x0e) && r.rcx === r.r8 ? AF : 0n)],
  ['counter, OUT after inc', Workload.counter({ page: 700 }), 5, () => 0n],
];

describe.each(cases)('%s', (_name, workload, runs, expectedMask) => {
  const seen = exits(workload, runs);

  test('the mask is exactly the undefined flags of the last flag-setting instruction', () => {
    expect(seen.map((e) => undefinedRflags(e.regs).toString(16))).toEqual(seen.map((e) => expectedMask(e.regs).toString(16)));
  });

  test('the emulator reads every undefined flag as 0', () => {
    for (const e of seen) expect((e.regs.rflags & undefinedRflags(e.regs)).toString(16)).toBe('0');
  });

  test('another CPU\'s values in the undefined bits compare equal; any defined bit differing does not', () => {
    for (const { regs } of seen) {
      const mask = undefinedRflags(regs);
      for (const bit of ARITH) {
        const other = { ...regs, rflags: regs.rflags ^ bit };
        if (mask & bit) expectSameRegs(other, regs);
        else expect(() => expectSameRegs(other, regs)).toThrow();
      }
    }
  });
});

test('the cases meet the exits they name', () => {
  const masks = (w: Workload, n: number) => exits(w, n).map((e) => `${ExitReason[e.reason]} ${undefinedRflags(e.regs).toString(16)}`);
  expect(masks(cases[0][1], 20)).toContain(`Mmio ${(RFLAGS_AF | RFLAGS_OF).toString(16)}`);
  expect(masks(cases[3][1], 6)).toEqual(['Mmio 10', 'Mmio 0', 'Mmio 0', 'Mmio 0', 'Io 0', 'Mmio 10']);
});
