// measureDirtyRate against guests whose true rate the host knows (PacedWorkload): the truth
// of a window is what the pacer let the guest write in it, by the same clock, so the
// comparison holds on a loaded machine (a slow host lowers both) and fails if the
// measurement counts wrong (a page counted per write instead of once, a page lost, a window
// mis-timed). No assertion depends on how fast the machine is.
import { Workload, openKvm } from '../lib';
import { createMachine } from '../lib/checkpoint/machine';
import {
  GuestRunner, DirtyRateMeter, PacedWorkload, createPacedMachine, dirtyRingBytes, measureDirtyRate,
  type DirtyRateResult, type TrueRate,
} from '../lib/dirtyrate';
import { describeEachBackend } from './helpers/backends';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The bound for the ring and bitmap modes. */
const TOLERANCE = 0.03;

function relErr(measured: number, truth: number): number {
  return Math.abs(measured / truth - 1);
}

/** Each vCPU's measured rate (and the VM's) within 3 % of the truth of the same window. */
function expectRingClose(r: DirtyRateResult, t: TrueRate): void {
  expect(r.vcpus).toHaveLength(t.vcpus.length);
  t.vcpus.forEach((v, i) => {
    expect(v.pages).toBeGreaterThan(0);
    expect({ vcpu: v.id, err: relErr(r.vcpus![i].MBps, v.MBps) < TOLERANCE }).toEqual({ vcpu: v.id, err: true });
  });
  expect(relErr(r.MBps, t.MBps)).toBeLessThan(TOLERANCE);
}

describeEachBackend('dirty rate', (b) => {
  test('dirty-ring: each vCPU within 3 % of its true rate at 1, 10, 100 MB/s and full speed', async () => {
    const kvm = b.open();
    try {
      const rates = [1, 10, 100, Infinity];
      // Spans above a second's pages at 100 MB/s; the full-speed sweep wraps its span many times a second.
      const { machine, paced } = createPacedMachine(kvm, { rateMBps: rates, spanPages: 32768, mode: 'ring' });
      const runner = new GuestRunner(machine, [paced]);
      runner.start();
      let r: DirtyRateResult;
      try {
        await sleep(200);
        r = await measureDirtyRate(runner, { seconds: 1, mode: 'dirty-ring' });
      } finally {
        await runner.stop();
      }
      const t = paced.truth(r.startedAt, r.endedAt);
      expectRingClose(r, t);
      expect(r.mode).toBe('dirty-ring');
      expect(r.seconds).toBeGreaterThan(0.9);
      // Full speed rewrites its span within the window where the host is fast enough (here, both
      // backends, unless loaded): the ring then logged the pages again, the rate still counts each once.
      const full = t.vcpus[3];
      expect(full.pages).toBeLessThanOrEqual(32768);
      if (full.writes > full.pages) expect(r.vcpus![3].entries).toBeGreaterThan(r.vcpus![3].pages);
      expect(r.vcpus!.map((v) => v.id)).toEqual([0, 1, 2, 3]);
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('dirty-ring: a random workload, pages repeated within epochs and across them, within 3 %', async () => {
    const kvm = b.open();
    try {
      // A small span: the random writes repeat pages often (an epoch may write a page twice, logged twice on PVM).
      const { machine, paced } = createPacedMachine(kvm, { kind: 'random', rateMBps: [10, Infinity], spanPages: 4096, mode: 'ring' });
      const runner = new GuestRunner(machine, [paced]);
      runner.start();
      let r: DirtyRateResult;
      try {
        await sleep(100);
        r = await measureDirtyRate(runner, { seconds: 1, mode: 'dirty-ring' });
      } finally {
        await runner.stop();
      }
      const t = paced.truth(r.startedAt, r.endedAt);
      expectRingClose(r, t);
      for (const v of t.vcpus) expect(v.writes).toBeGreaterThan(v.pages); // repeats happened
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('dirty-bitmap: the VM within 3 % of the true rate at 1, 10, 100 MB/s and full speed', async () => {
    const kvm = b.open();
    try {
      const { machine, paced } = createPacedMachine(kvm, { rateMBps: 1, spanPages: 32768, mode: 'bitmap' });
      const runner = new GuestRunner(machine, [paced]);
      runner.start();
      const seen: { rate: number; r: DirtyRateResult; t: TrueRate }[] = [];
      try {
        for (const rate of [1, 10, 100, Infinity]) {
          paced.setRate(0, rate);
          await sleep(100);
          const r = await measureDirtyRate(runner, { seconds: 1, mode: 'dirty-bitmap' });
          seen.push({ rate, r, t: paced.truth(r.startedAt, r.endedAt) });
        }
      } finally {
        await runner.stop();
      }
      for (const { rate, r, t } of seen) {
        expect(t.pages).toBeGreaterThan(0);
        expect({ rate, ok: relErr(r.MBps, t.MBps) < TOLERANCE }).toEqual({ rate, ok: true });
        expect(r.vcpus).toBeUndefined();
      }
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('dirty-bitmap with manual protect (KVM_CLEAR_DIRTY_LOG), with periods: every period and the window within 3 %', async () => {
    const kvm = b.open();
    try {
      const { machine, paced } = createPacedMachine(kvm, { rateMBps: 20, spanPages: 4096, mode: 'bitmap-clear' });
      const runner = new GuestRunner(machine, [paced]);
      runner.start();
      const periods: DirtyRateResult[] = [];
      let r: DirtyRateResult;
      try {
        await sleep(100);
        r = await measureDirtyRate(runner, { seconds: 1.2, mode: 'dirty-bitmap', periodMs: 300, onPeriod: (p) => periods.push(p) });
      } finally {
        await runner.stop();
      }
      expect(r.periods).toEqual(periods);
      expect(periods.length).toBeGreaterThanOrEqual(3);
      for (const p of periods) expect(relErr(p.MBps, paced.truth(p.startedAt, p.endedAt).MBps)).toBeLessThan(TOLERANCE);
      // The window counts a page once: the 20 MB/s sweep over 16 MiB wraps within 1.2 s (unless a loaded host slowed it).
      const t = paced.truth(r.startedAt, r.endedAt);
      expect(relErr(r.MBps, t.MBps)).toBeLessThan(TOLERANCE);
      const sum = periods.reduce((a, p) => a + p.pages, 0);
      if (t.writes > t.pages) expect(r.pages).toBeLessThan(sum);
      else expect(r.pages).toBe(sum);
      expect(periods[0].startedAt).toBe(r.startedAt);
      expect(periods[periods.length - 1].endedAt).toBe(r.endedAt);
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('page-sampling: a uniform random workload over 1 GiB, the error within 4 standard errors, and reported', async () => {
    const kvm = b.open();
    try {
      const span = 262144; // 1 GiB
      const { machine, paced } = createPacedMachine(kvm, { kind: 'random', rateMBps: 100, spanPages: span, mode: 'none' });
      const runner = new GuestRunner(machine, [paced]);
      runner.start();
      let r: DirtyRateResult;
      try {
        await sleep(100);
        r = await measureDirtyRate(runner, { seconds: 1, mode: 'page-sampling', samplePagesPerGiB: 4096, seed: 7 });
      } finally {
        await runner.stop();
      }
      const t = paced.truth(r.startedAt, r.endedAt);
      expect(r.samplePages).toBe(4096);
      // The estimate of a fraction p from n samples of N pages: s.e. sqrt(p (1 - p) / n x (N - n) / (N - 1)).
      const p = t.pages / span;
      const n = r.samplePages!;
      const se = (span * Math.sqrt(((p * (1 - p)) / n) * ((span - n) / (span - 1)))) / r.seconds / 256;
      expect(t.pages).toBeGreaterThan(1000);
      expect(Math.abs(r.MBps - t.MBps)).toBeLessThan(4 * se);
      // The reported error is the same formula on the sample's own fraction.
      expect(r.stdErrMBps).toBeGreaterThan(se / 2);
      expect(r.stdErrMBps).toBeLessThan(se * 2);
      expect(r.sampleDirty).toBe(Math.round((r.pages / span) * n));
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('page-sampling of a sparse 4 GiB guest reads no page it does not hold', async () => {
    const kvm = b.open();
    try {
      const { machine, paced } = createPacedMachine(kvm, { kind: 'random', rateMBps: 2, spanPages: 1 << 20, mode: 'none' });
      const held = () => machine.slots.filter((s) => s.layout.logged).reduce((a, s) => {
        const d = s.memory.dataRanges();
        for (let i = 0; i < d.length; i += 2) a += d[i + 1] - d[i];
        return a;
      }, 0);
      const r = await measureDirtyRate(machine, { seconds: 0.5, mode: 'page-sampling', samplePagesPerGiB: 4096, seed: 3, policies: [paced] });
      expect(r.samplePages).toBe(16384);
      const written = paced.writes(0);
      expect(written).toBeGreaterThan(0);
      // The emulator reports all of its memory as data (DESIGN: dataRanges on the emulator); the kernel's memfd only what was written.
      if (b.name === 'native') expect(held()).toBeLessThanOrEqual(written * 4096);
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('measureDirtyRate(machine) runs the guest for the window when nothing runs it, and joins a runner that does', async () => {
    const kvm = b.open();
    try {
      const { machine, paced } = createPacedMachine(kvm, { rateMBps: 10, spanPages: 4096, mode: 'ring' });
      const alone = await measureDirtyRate(machine, { seconds: 0.3, mode: 'dirty-ring', policies: [paced] });
      expect(GuestRunner.of(machine)).toBeUndefined();
      expect(relErr(alone.MBps, paced.truth(alone.startedAt, alone.endedAt).MBps)).toBeLessThan(TOLERANCE);
      const runner = new GuestRunner(machine, [paced]);
      runner.start();
      try {
        const joined = await measureDirtyRate(machine, { seconds: 0.3, mode: 'dirty-ring' });
        expect(runner.running).toBe(true);
        expect(relErr(joined.MBps, paced.truth(joined.startedAt, joined.endedAt).MBps)).toBeLessThan(TOLERANCE);
      } finally {
        await runner.stop();
      }
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('the pacer\'s log replays exactly the pages the guest wrote (random, compared with the dirty bitmap)', () => {
    const kvm = b.open();
    try {
      const paced = new PacedWorkload({ kind: 'random', rateMBps: Infinity, spanPages: 512, maxPagesPerEpoch: 48, seed: 99 });
      const machine = createMachine(kvm, { dataPages: 512, mode: 'bitmap', workloads: paced.workloads });
      paced.attach(machine);
      machine.vm.getDirtyLog(1); // arm
      const t0 = performance.now();
      // The policy driven by hand, as a loop that is not a GuestRunner would.
      for (let e = 0; e < 20; e++) {
        paced.prepareRun(0, performance.now());
        const exit = machine.vcpus[0].run();
        paced.afterRun(0, exit, 0, performance.now());
      }
      const t = paced.truth(t0, performance.now() + 1);
      expect(t.writes).toBe(20 * 48);
      expect(t.pages).toBe(machine.vm.getDirtyLog(1).count());
      expect(t.pages).toBeLessThan(t.writes);
      machine.close();
    } finally {
      kvm.close();
    }
  });

  test('bad arguments: TypeError or RangeError before anything runs', async () => {
    const kvm = b.open();
    try {
      const { machine } = createPacedMachine(kvm, { rateMBps: 1, spanPages: 64, mode: 'ring' });
      await expect(measureDirtyRate(machine, { seconds: 0, mode: 'dirty-ring' })).rejects.toThrow(RangeError);
      await expect(measureDirtyRate(machine, { seconds: '1' as unknown as number, mode: 'dirty-ring' })).rejects.toThrow(TypeError);
      await expect(measureDirtyRate(machine, { seconds: 1, mode: 'dirty-bits' as 'dirty-ring' })).rejects.toThrow(/mode must be one of/);
      await expect(measureDirtyRate(machine, { seconds: 1, mode: 'dirty-bitmap' })).rejects.toThrow(/needs a machine without the dirty ring/);
      await expect(measureDirtyRate(machine, { seconds: 1, mode: 'dirty-ring', periodMs: -1 })).rejects.toThrow(RangeError);
      await expect(measureDirtyRate(machine, { seconds: 1, mode: 'page-sampling', samplePagesPerGiB: 0 })).rejects.toThrow(RangeError);
      expect(GuestRunner.of(machine)).toBeUndefined(); // the failed calls left nothing running
      expect(() => new DirtyRateMeter(machine, 'dirty-ring')).toThrow(/GuestRunner/);
      machine.close();
      const { machine: bitmap } = createPacedMachine(kvm, { rateMBps: 1, spanPages: 64, mode: 'bitmap' });
      expect(() => new DirtyRateMeter(bitmap, 'dirty-ring')).toThrow(/needs a machine with the dirty ring/);
      const meter = new DirtyRateMeter(bitmap, 'dirty-bitmap');
      expect(() => meter.lap()).toThrow(/start\(\) the meter first/);
      meter.start();
      meter.stop();
      expect(() => meter.lap()).toThrow(/measures one window/);
      bitmap.close();
      // A ring smaller than one run's pages could be overfilled on a PVM host: refused.
      const limits = kvm.dirtyRingLimits();
      const big = Workload.stride({ firstPage: 512, pages: limits.softLimit(limits.minBytes) + 1 });
      const m = createMachine(kvm, { dataPages: 4096, mode: 'ring', ringBytes: limits.minBytes, workloads: big });
      expect(() => new GuestRunner(m)).toThrow(/holds .* before the soft limit/);
      m.close();
      expect(() => new PacedWorkload({ rateMBps: -1, spanPages: 64 })).toThrow(RangeError);
      expect(() => new PacedWorkload({ rateMBps: 'fast' as unknown as number, spanPages: 64 })).toThrow(TypeError);
      expect(() => new PacedWorkload({ rateMBps: [1, 2], vcpus: 3, spanPages: 64 })).toThrow(/2 rates for 3 vCPUs/);
      expect(() => new PacedWorkload({ rateMBps: 1, spanPages: 64, maxPagesPerEpoch: 65 })).toThrow(RangeError);
      expect(() => new PacedWorkload({ rateMBps: 1, spanPages: 64, kind: 'sweep' as 'stride' })).toThrow(RangeError);
    } finally {
      kvm.close();
    }
  });
});

describe('dirty rate on an emulated Intel host with PML (576 ring entries reserved)', () => {
  test('rings sized from the host: dirty-ring within 3 %', async () => {
    const kvm = openKvm({ backend: 'emulator', pml: true });
    try {
      expect(dirtyRingBytes(kvm, 64)).toBe(16384); // 1024 entries: 448 above the reserve; 4 and 8 KiB are refused here
      const { machine, paced } = createPacedMachine(kvm, { rateMBps: [5, Infinity], spanPages: 8192, mode: 'ring' });
      expect(machine.ringBytes).toBe(16384);
      const r = await measureDirtyRate(machine, { seconds: 0.5, mode: 'dirty-ring', policies: [paced] });
      expectRingClose(r, paced.truth(r.startedAt, r.endedAt));
      machine.close();
    } finally {
      kvm.close();
    }
  });
});
