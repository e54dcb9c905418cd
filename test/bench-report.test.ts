// The benchmark's arithmetic and report (bench/stats.ts, bench/report.ts): pure functions,
// checked on made-up results. No timing is asserted anywhere.
import { describeHost, efficiencyOf, evaluateTargets, fmt, formatReport, type BenchResults } from '../bench/report';
import { median, ratio, Samples } from '../bench/stats';

describe('median', () => {
  test('odd, even (the upper middle, as the C reference), unsorted, empty', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(3);
    expect(median(new Float64Array([10, -5, 7, 7, 100]))).toBe(7);
    expect(median([])).toBeNaN();
  });

  test('does not reorder its input', () => {
    const xs = [3, 1, 2];
    median(xs);
    expect(xs).toEqual([3, 1, 2]);
  });
});

describe('Samples', () => {
  test('grows past its initial capacity and keeps every sample in order', () => {
    const s = new Samples(2);
    for (let i = 0; i < 1000; i++) s.push(i);
    expect(s.length).toBe(1000);
    expect(Array.from(s.values().subarray(0, 3))).toEqual([0, 1, 2]);
    expect(s.values()[999]).toBe(999);
    expect(s.median()).toBe(500);
  });
});

describe('ratio', () => {
  test('a / b, null for a missing side or a zero divisor', () => {
    expect(ratio(6, 3)).toBe(2);
    expect(ratio(null, 3)).toBeNull();
    expect(ratio(3, undefined)).toBeNull();
    expect(ratio(3, 0)).toBeNull();
    expect(ratio(NaN, 1)).toBeNull();
  });
});

function results(): Omit<BenchResults, 'targets'> {
  const modes = (ring: number, bitmap: number) => ({ ring: { node: ring, c: ring / 2 }, bitmap: { node: bitmap, c: bitmap / 2 }, 'bitmap-clear': { node: bitmap, c: null } });
  return {
    epochLoop: {
      k16: { node: 9000, c: 10000, ratio: 0.9, guestGiB: 16, ringEntries: 256 },
      k256: { node: 1000, c: 1100, ratio: 1000 / 1100, guestGiB: 16, ringEntries: 1024 },
      k4096: { node: 150, c: null, ratio: null, guestGiB: 16, ringEntries: 65536, runNs: { node: 31_000, c: null }, harvestNs: { node: 140_000, c: null } },
    },
    harvestPerEntryNs: { node: 3, c: 2, ratio: 1.5, nodeAtomics: 20, nodeAtomicsRatio: 10, entries: 65000, batch: true },
    harvestPerEpochNs: { '1': modes(5000, 20000), '64': modes(5000, 1_000_000) },
    ringVsBitmap: { '1': 4, '64': 200 },
    ringVsBitmapC: { '1': 4, '64': 200 },
    harvestHeapGrowthBytes: 0,
    harvestHeap: { library: { entries: 1_040_000, allocatedBytes: 0, retainedBytes: 1000, batch: true }, atomics: null },
    emulatorEventsPerSec: 4e6,
    checkpoint: null,
    errors: [{ what: 'epoch loop K=4096 (C)', reason: 'the APIC page' }],
    host: {},
  };
}

describe('evaluateTargets', () => {
  test('checks each bound, inclusive, and says null where a figure is missing', () => {
    const t = evaluateTargets(results());
    expect(t.epochLoopK16).toMatchObject({ value: 0.9, op: '>=', bound: 0.9, met: true });
    expect(t.harvestPerEntry).toMatchObject({ value: 1.5, met: true });
    expect(t.ringVsBitmap64).toMatchObject({ value: 200, met: true });
    expect(t.harvestHeapPerEntry).toMatchObject({ value: 0, met: true });
    expect(t.emulatorEvents).toMatchObject({ value: 4e6, met: false });

    const r = results();
    r.epochLoop.k16 = { ...r.epochLoop.k16, node: null, ratio: null };
    r.harvestHeapGrowthBytes = 2_080_000; // 2 bytes per entry: growth proportional to entries
    r.harvestPerEntryNs = { ...r.harvestPerEntryNs, ratio: 1.51 };
    const u = evaluateTargets(r);
    expect(u.epochLoopK16.met).toBeNull();
    expect(u.harvestHeapPerEntry).toMatchObject({ value: 2, met: false });
    expect(u.harvestPerEntry.met).toBe(false);
  });
});

describe('formatReport', () => {
  test('prints every figure, the targets and the errors', () => {
    const r = results();
    const text = formatReport({ ...r, targets: evaluateTargets(r) });
    expect(text).toContain('64 GiB');
    expect(text).toMatch(/64 GiB\s+5\s+2\.5\s+1,000\s+500/); // µs: ring Node, ring C, bitmap Node, bitmap C
    expect(text).toMatch(/^16\s+256\s+9,000\s+10,000\s+0\.9\s+-\s+-\s+-\s+-$/m);
    expect(text).toMatch(/^4096\s+65536\s+150\s+-\s+-\s+31\s+-\s+140\s+-$/m);
    expect(text).toContain('native batch harvest');
    expect(text).toContain('Checkpoint engine: not measured');
    expect(text).toMatch(/emulator dirty-page events per second\s+4,000,000\s+>= 5,000,000\s+NO/);
    expect(text).toContain('epoch loop K=4096 (C): the APIC page');
    expect(text).not.toContain('by guest size');
  });

  test('checkpoint figures by K and by guest size', () => {
    const r = results();
    r.checkpoint = { k64: { ring: 2600, bitmap: 2500, ringPauseP50Us: 70, ringPauseP99Us: 400, bitmapPauseP50Us: 80, bitmapPauseP99Us: 500, ringBare: 4000, ringEfficiency: 0.65, bitmapBare: 3125, bitmapEfficiency: 0.8, bytesPerEpoch: 2010 } };
    r.checkpointBySize = { '64': { ring: 2700, bitmap: 750, ringPauseP50Us: 71, ringPauseP99Us: 390, bitmapPauseP50Us: 846, bitmapPauseP99Us: 1401 } };
    const text = formatReport({ ...r, targets: evaluateTargets(r) });
    expect(text).toMatch(/^64\s+2,600\s+4,000\s+0\.65\s+2,500\s+3,125\s+0\.8\s+70 \/ 400\s+80 \/ 500\s+2,010$/m);
    expect(text).toContain('Checkpoint engine by guest size, K = 64');
    // a run without the bare loop's figures shows dashes there
    expect(text).toMatch(/^64 GiB\s+2,700\s+-\s+-\s+750\s+-\s+-\s+71 \/ 390\s+846 \/ 1,401\s+-$/m);
    expect(efficiencyOf(r.checkpoint)).toEqual({ k64: { ring: 0.65, bitmap: 0.8 } });
    expect(efficiencyOf(r.checkpointBySize)).toEqual({ '64': { ring: null, bitmap: null } });
    expect(efficiencyOf(null)).toBeNull();
    const t = evaluateTargets({ ...r, checkpointEfficiency: efficiencyOf(r.checkpoint) });
    expect(t.checkpointK64).toMatchObject({ value: 0.65, op: '>=', bound: 0.8, met: false });
    expect(t.checkpointK256.met).toBeNull();
  });

  test('checkpoint figures by vCPU count, and where an epoch\'s time goes', () => {
    const r = results();
    r.checkpointByVcpus = {
      v1: { vcpus: 1, k: 64, committed: 2000, bare: 3000, efficiency: 2 / 3, pauseP50Us: 60, pauseP99Us: 300, bytesPerEpoch: 2000 },
      v4: { vcpus: 4, k: 64, committed: 500, bare: 3000, efficiency: 1 / 6, pauseP50Us: 150, pauseP99Us: 900, bytesPerEpoch: 8100 },
    };
    r.checkpointProfile = {
      k64: { committedPerSec: 2000, phasesUs: { run: 300, completeIo: 10, collect: 8, registers: 5, copy: 20, resume: 3, pause: 46, encode: 120, write: 30, ack: 900 }, cpuUs: { main: 250, vcpu: 300, other: 40, replica: 200, wall: 500 } },
      k16: null,
    };
    const text = formatReport({ ...r, targets: evaluateTargets(r) });
    expect(text).toMatch(/^1\s+64\s+2,000\s+3,000\s+0\.667\s+60 \/ 300\s+2,000$/m);
    expect(text).toMatch(/^4\s+64\s+500\s+3,000\s+0\.167\s+150 \/ 900\s+8,100$/m);
    expect(text).toMatch(/^64\s+2,000\s+300\s+10\s+8\s+5\s+20\s+3\s+46\s+120\s+30\s+900\s+250\s+300\s+40\s+200\s+500$/m);
    expect(text).not.toMatch(/^16\s+-/m);
  });

  test('vCPU round trips in µs, C only where it was measured', () => {
    const r = results();
    r.vcpu = { runNs: { node: 11_200, c: 10_500, ratio: 11.2 / 10.5 }, runAsyncNs: 84_900, runAsyncBusyNs: 28_100, kickNsP50: 44_500, kickNsP90: 61_600 };
    const text = formatReport({ ...r, targets: evaluateTargets(r) });
    expect(text).toMatch(/^run\(\): KVM_RUN on the calling thread\s+11\.2\s+10\.5$/m);
    expect(text).toMatch(/^runAsync\(\), event loop idle .*\s+84\.9\s+-$/m);
    expect(text).toMatch(/^runAsync\(\), event loop busy\s+28\.1\s+-$/m);
    expect(text).toMatch(/^kick\(\) to the settled .*\s+44\.5 \/ 61\.6\s+-$/m);
  });

  test('as Markdown: the same figures in pipe tables, bold titles, errors as a list', () => {
    const r = results();
    const md = formatReport({ ...r, targets: evaluateTargets(r) }, 'markdown');
    expect(md).toContain('**Harvest + re-arm per epoch, 256 dirty pages (median µs)**');
    expect(md).toContain('| guest | ring Node | ring C |');
    expect(md).toContain('|---|--:|--:|');
    expect(md).toMatch(/^\| 64 GiB \| 5 \| 2\.5 \| 1,000 \| 500 \|/m);
    expect(md).toContain('**Emulator:** dirty-page events per second');
    expect(md).toContain('- epoch loop K=4096 (C): the APIC page');
  });

  test('the report names the machine, its CPU vendor and model first', () => {
    const r = results();
    r.host = { cores: 2, cpu: 'AMD EPYC', cpuVendor: 'AMD', kernel: '6.18.44', kvm: { description: 'kvm_pvm (nested)' }, node: 'v20.20.2', date: '2026-12-02T03:00:00Z' };
    expect(formatReport({ ...r, targets: evaluateTargets(r) }).split('\n')[0]).toBe('Measured on: 2 cores, AMD EPYC; Linux 6.18.44; kvm_pvm (nested); Node v20.20.2; 2026-12-02');
    // the vendor is named once: before a model that does not start with it
    expect(describeHost({ cores: 2, cpu: 'Intel(R) Xeon(R) CPU', cpuVendor: 'Intel' })).toBe('2 cores, Intel(R) Xeon(R) CPU; Linux ?; KVM unknown; Node ?');
    expect(describeHost({ cores: 4, cpu: 'EPYC 9B14', cpuVendor: 'AMD' })).toBe('4 cores, AMD EPYC 9B14; Linux ?; KVM unknown; Node ?');
  });

  test('fmt: significant digits, separators, dashes for missing figures', () => {
    expect(fmt(3.14159)).toBe('3.14');
    expect(fmt(123456.7)).toBe('123,457');
    expect(fmt(0.000123456)).toBe('0.000123');
    expect(fmt(null)).toBe('-');
    expect(fmt(Infinity)).toBe('-');
  });
});
