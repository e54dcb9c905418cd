// DirtyLimit on full-speed guests. vCPU 0 sweeps its span as fast as it can (a PacedWorkload
// at full speed, so the pages it dirtied are known from the pacer's log, apart from the
// limit's own accounting); where a second vCPU runs, it rewrites 256 fixed pages per epoch,
// unthrottled, and its speed is its epochs per second. The achieved rate is judged per period
// against the bound, 10 % of the limit or 1 MB/s, whichever is larger, from the 4th
// period on. A limit is a ceiling: the rate may never pass it; it must reach it whenever the
// vCPU could go faster, which the test knows from the runner: the limit kept the vCPU out of
// KVM_RUN for half the period or more (it had twice the rate to spare) and its waits did not
// end late (a host too busy to wake it on time: the runner's lateMs). A host so loaded that
// the guest falls below the limit on its own is thus no failure, and nothing depends on the
// machine's speed.
import { Workload, openKvm, type Kvm } from '../lib';
import { createMachine, type Machine } from '../lib/checkpoint/machine';
import { DirtyLimit, DirtyRateMeter, GuestRunner, PacedWorkload, dirtyRingBytes, type DirtyRateResult } from '../lib/dirtyrate';
import { describeEachBackend } from './helpers/backends';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SPAN = 32768;
const UNTHROTTLED_PAGES = 256;

function tolerance(limit: number): number {
  return Math.max(0.1 * limit, 1);
}

/** vCPU 0: a full-speed sweep (32 pages an epoch); vCPU 1: Workload.stride of 256 fixed pages. */
function limitMachine(kvm: Kvm): { machine: Machine; paced: PacedWorkload } {
  const paced = new PacedWorkload({ rateMBps: Infinity, spanPages: SPAN, maxPagesPerEpoch: 32 });
  const machine = createMachine(kvm, {
    dataPages: SPAN + UNTHROTTLED_PAGES, vcpus: 2, mode: 'ring', ringBytes: dirtyRingBytes(kvm, UNTHROTTLED_PAGES),
    workloads: [paced.workloads[0], Workload.stride({ firstPage: paced.firstPage + SPAN, pages: UNTHROTTLED_PAGES })],
  });
  return { machine, paced: paced.attach(machine) };
}

describeEachBackend('dirty limit', (b) => {
  test('holds a full-speed vCPU at 1, 10 and 100 MB/s, within 10 % (or 1 MB/s) from the 4th period; set, changed and cleared while it runs', async () => {
    const kvm = b.open();
    try {
      const paced = new PacedWorkload({ rateMBps: Infinity, spanPages: SPAN, maxPagesPerEpoch: 32 });
      const machine = createMachine(kvm, { dataPages: SPAN, mode: 'ring', ringBytes: dirtyRingBytes(kvm, 32), workloads: paced.workloads });
      paced.attach(machine);
      const periodMs = 400;
      const limit = new DirtyLimit(machine, { periodMs });
      const runner = new GuestRunner(machine, [paced, limit]);
      const meter = new DirtyRateMeter(runner, 'dirty-ring');
      const results: { limit: number; period: number; measured: number; truth: number; held: number; late: number }[] = [];
      let heldCleared = NaN;
      runner.start();
      try {
        await sleep(100);
        meter.start();
        for (const L of [1, 10, 100]) {
          limit.set(0, L); // the first time from no limit, then a change of a running limit
          meter.lap();
          for (let period = 0; period < 6; period++) {
            const { heldMs, lateMs } = runner.stats[0];
            await sleep(periodMs);
            const r = meter.lap();
            const now = runner.stats[0];
            results.push({
              limit: L, period, measured: r.vcpus![0].MBps, truth: paced.truth(r.startedAt, r.endedAt).vcpus[0].MBps,
              held: now.heldMs - heldMs, late: now.lateMs - lateMs,
            });
          }
        }
        limit.clear(0);
        expect(limit.get(0)).toBeNull();
        await sleep(50); // a wait under way when the limit went ends at once (wake), or at its second at most
        const before = runner.stats[0].heldMs;
        await sleep(periodMs);
        heldCleared = runner.stats[0].heldMs - before;
        meter.stop();
      } finally {
        await runner.stop();
      }
      const steady = results.filter((r) => r.period >= 3);
      const spare = (x: (typeof results)[number]) => x.held >= periodMs / 2 && x.late <= periodMs * 0.05;
      for (const x of steady) {
        const tol = tolerance(x.limit);
        // Never above the limit; at it (by the meter and by the pacer's log) when the vCPU had time to spare.
        const ok = x.measured <= x.limit + tol && x.truth <= x.limit + tol && (!spare(x) || (x.measured >= x.limit - tol && x.truth >= x.limit - tol));
        expect({ ...x, ok }).toEqual({ ...x, ok: true });
      }
      // Of nine steady periods, one at least came with time to spare (a limit that held too long, or a runner that overslept, never would).
      expect(steady.filter(spare).length).toBeGreaterThan(0);
      // Cleared: never held again.
      expect(heldCleared).toBe(0);
      // The limit's own periods (same clock, its own page sets) are under the limit too.
      const own = limit.periods(0).filter((p) => p.limitMBps === 10);
      expect(own.length).toBeGreaterThanOrEqual(4);
      for (const p of own.slice(1)) expect(p.MBps).toBeLessThanOrEqual(10 + tolerance(10));
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('a second, unthrottled vCPU keeps at least 90 % of its speed while the first is held at 100 MB/s', async () => {
    const kvm = b.open();
    try {
      const { machine, paced } = limitMachine(kvm);
      const limit = new DirtyLimit(machine, { periodMs: 250 });
      const runner = new GuestRunner(machine, [paced, limit]);
      const pages = { limited: 0, unlimited: 0 };
      const ms = { limited: 0, unlimited: 0 };
      let touched = 0;
      runner.start();
      try {
        // The baseline is the same run with vCPU 0 unlimited (both at full speed). The phases
        // alternate every 50 ms for 3 s, so the host's other load, which moves a 200 ms
        // window's speed by tens of %, falls on both alike. On 2 cores the two vCPU threads and
        // the event loop compete: vCPU 1 can only gain once vCPU 0 is held (measured here:
        // 1.0-1.03 native, 1.3-1.4 on the emulator, whose vCPUs share one thread).
        for (let i = 0; i < 30; i++) {
          for (const phase of ['unlimited', 'limited'] as const) {
            if (phase === 'limited') limit.set(0, 100);
            else limit.clear(0);
            const { epochs, heldMs, kicked } = runner.stats[1];
            const t0 = performance.now();
            await sleep(50);
            const s1 = runner.stats[1];
            pages[phase] += (s1.epochs - epochs) * UNTHROTTLED_PAGES;
            ms[phase] += performance.now() - t0;
            touched += s1.heldMs - heldMs + s1.kicked - kicked;
          }
        }
      } finally {
        await runner.stop();
      }
      // The limit never held nor kicked vCPU 1, and it kept its speed.
      expect(touched).toBe(0);
      expect(pages.unlimited).toBeGreaterThan(0);
      expect(pages.limited / ms.limited / (pages.unlimited / ms.unlimited)).toBeGreaterThanOrEqual(0.9);
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('long runs (4096 pages an epoch) are cut by time slices: the rate still holds', async () => {
    const kvm = b.open();
    try {
      const K = 4096;
      const paced = new PacedWorkload({ rateMBps: Infinity, spanPages: SPAN, maxPagesPerEpoch: K });
      const machine = createMachine(kvm, { dataPages: SPAN, mode: 'ring', ringBytes: dirtyRingBytes(kvm, K), workloads: paced.workloads });
      paced.attach(machine);
      const limit = new DirtyLimit(machine, { periodMs: 500 });
      const runner = new GuestRunner(machine, [paced, limit]);
      const meter = new DirtyRateMeter(runner, 'dirty-ring');
      let r: DirtyRateResult;
      let held = 0;
      let late = 0;
      runner.start();
      try {
        limit.set(0, 50);
        await sleep(500);
        const s0 = runner.stats[0];
        meter.start();
        await sleep(2000);
        r = meter.stop();
        held = runner.stats[0].heldMs - s0.heldMs;
        late = runner.stats[0].lateMs - s0.lateMs;
      } finally {
        await runner.stop();
      }
      // The native vCPU needs ~20 ms for an epoch here: only kicks keep its runs to the balance.
      // The emulator runs 16,384 writes between looks at a kick (lib/emulator/vcpu.ts), more than
      // an epoch: there a whole epoch (4096 pages, 8 MB/s of a 2 s window) is the finest step.
      const step = b.name === 'native' ? 0 : K / 256 / r.seconds;
      if (b.name === 'native') expect(runner.stats[0].kicked).toBeGreaterThan(0);
      // A ceiling always; the limit itself when the vCPU had time to spare (as in the test above).
      expect(r.vcpus![0].MBps).toBeLessThanOrEqual(50 + tolerance(50) + step);
      if (held >= 1000 && late <= 100) expect(r.vcpus![0].MBps).toBeGreaterThanOrEqual(50 - tolerance(50) - step);
      machine.close();
    } finally {
      kvm.close();
    }
  });
});

describe('DirtyLimit, driven by hand with its own clock (a loop that is not a GuestRunner)', () => {
  let kvm: Kvm;
  let machine: Machine;
  let now = 0;
  const clock = () => now;
  beforeAll(() => {
    kvm = openKvm({ backend: 'emulator' });
    machine = createMachine(kvm, { dataPages: 64, vcpus: 2, mode: 'ring', ringBytes: dirtyRingBytes(kvm, 64) });
  });
  afterAll(() => kvm.close());

  test('a debt is waited off at the quota; unlimited vCPUs never wait', () => {
    now = 1000;
    const limit = new DirtyLimit(machine, { periodMs: 1000, clock });
    expect(limit.beforeRun(0)).toBe(0);
    expect(limit.sliceMs(0)).toBe(Infinity);
    limit.set(0, 1); // 256 pages/s
    expect(limit.get(0)).toBe(1);
    expect(limit.beforeRun(0)).toBe(0); // no debt yet
    expect(limit.sliceMs(0)).toBe(1); // speed unknown: the finest slice
    limit.prepareRun(0);
    limit.account(0, 128);
    limit.afterRun(0, { reason: 0 }, 2);
    expect(limit.beforeRun(0)).toBeCloseTo(500, 6); // 128 pages at 256/s
    now += 250;
    expect(limit.beforeRun(0)).toBeCloseTo(250, 6);
    now += 250;
    expect(limit.beforeRun(0)).toBe(0);
    // 64 pages per ms seen: with 2 % of a period's quota saved (5.12 pages) the slice is 0.08 ms, at least 1.
    now += 1000;
    expect(limit.sliceMs(0)).toBe(1);
    limit.account(1, 1_000_000); // vCPU 1 has no limit
    expect(limit.beforeRun(1)).toBe(0);
    // A change keeps the credit (5.12 pages, under the new cap of 10.24): 512 pages leave 506.88 owed at 512/s.
    limit.set(0, 2);
    limit.account(0, 512);
    expect(limit.beforeRun(0)).toBeCloseTo(990, 6);
    limit.clear();
    expect(limit.beforeRun(0)).toBe(0);
    expect(limit.get(0)).toBeNull();
  });

  test('periods: each page charged once per period, the figures kept', () => {
    now = 0;
    const limit = new DirtyLimit(machine, { periodMs: 100, clock });
    limit.set(1, 10);
    const batch = { length: 3, slots: new Uint32Array([1, 1, 1]), offsets: new Float64Array([5, 5, 6]), capacity: 3, room: 0, clear() {} };
    limit.onDirty(1, batch as never);
    limit.onDirty(1, batch as never);
    expect(limit.currentPages(1)).toBe(2); // page 5 twice in one batch, both pages again: charged once
    now = 150;
    limit.onDirty(1, batch as never); // a new period: charged again
    expect(limit.currentPages(1)).toBe(2);
    now = 450;
    const periods = limit.periods(1);
    expect(periods.map((p) => [p.startedAt, p.endedAt, p.pages])).toEqual([[0, 100, 2], [100, 200, 2]]);
    expect(periods[0].MBps).toBeCloseTo(2 / 256 / 0.1, 9);
    expect(periods[0].limitMBps).toBe(10);
    expect(limit.currentPages(1)).toBe(0);
  });

  test('bad arguments', () => {
    expect(() => new DirtyLimit(machine, { periodMs: 0 })).toThrow(RangeError);
    expect(() => new DirtyLimit(null as never)).toThrow(TypeError);
    const bitmap = createMachine(kvm, { dataPages: 64, mode: 'bitmap' });
    expect(() => new DirtyLimit(bitmap)).toThrow(/needs the dirty ring/);
    bitmap.close();
    const limit = new DirtyLimit(machine);
    expect(() => limit.set(0, 0)).toThrow(RangeError);
    expect(() => limit.set(0, Infinity)).toThrow(RangeError);
    expect(() => limit.set(0, '10' as never)).toThrow(TypeError);
    expect(() => limit.set(7, 10)).toThrow(/no vCPU 7/);
    expect(() => limit.account(0, -1)).toThrow(RangeError);
    expect(() => limit.get('0' as never)).toThrow(TypeError);
  });
});
