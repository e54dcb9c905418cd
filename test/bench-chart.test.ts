// The harvest-vs-guest-size chart (bench/chart.ts): the Vega spec carries the measured points on
// log scales, and vega renders it headless to an SVG with one line per series. vega 6 is ESM,
// which jest's CommonJS runtime cannot import(), so the rendering runs in a child node on the
// compiled chart (dist/, built by `npm test`'s pretest).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

import { chartPoints, harvestChartSpec, type HarvestPoint } from '../bench/chart';
import { packageRoot } from '../bench/reference';

const points: HarvestPoint[] = [];
for (const [g, ring, bitmap] of [[1, 5, 10], [4, 5, 30], [16, 6, 90], [64, 5, 470]]) {
  points.push({ guestGiB: g, mode: 'ring', impl: 'C', us: ring }, { guestGiB: g, mode: 'bitmap', impl: 'C', us: bitmap });
  points.push({ guestGiB: g, mode: 'ring', impl: 'Node', us: ring * 1.3 }, { guestGiB: g, mode: 'bitmap', impl: 'Node', us: bitmap * 2 });
}

test('the spec: log scales, guest sizes as ticks, the points as data, the machine in the subtitle', () => {
  const spec = harvestChartSpec(points, { pagesPerEpoch: 256, machine: '2 cores, test CPU' }) as {
    scales: { name: string; type: string }[];
    axes: { scale: string; values?: number[] }[];
    data: { values: (HarvestPoint & { series: string })[] }[];
    title: { text: string; subtitle: string };
  };
  expect(spec.scales.find((s) => s.name === 'x')?.type).toBe('log');
  expect(spec.scales.find((s) => s.name === 'y')?.type).toBe('log');
  expect(spec.axes.find((a) => a.scale === 'x')?.values).toEqual([1, 4, 16, 64]);
  expect(spec.data[0].values).toHaveLength(16);
  expect(spec.data[0].values[0]).toMatchObject({ guestGiB: 1, mode: 'ring', impl: 'C', us: 5, series: 'ring (C)' });
  expect(spec.title.text).toContain('256 dirty pages');
  expect(spec.title.subtitle).toBe('2 cores, test CPU');
});

test('chartPoints: ns per epoch to µs, one point per measured side, bitmap-clear labelled bitmap+clear', () => {
  const p = chartPoints({
    '1': { ring: { node: 6000, c: 5000 }, bitmap: { node: 20000, c: null }, 'bitmap-clear': { node: null, c: 9000 } },
  });
  expect(p).toEqual([
    { guestGiB: 1, mode: 'ring', impl: 'Node', us: 6 },
    { guestGiB: 1, mode: 'ring', impl: 'C', us: 5 },
    { guestGiB: 1, mode: 'bitmap', impl: 'Node', us: 20 },
    { guestGiB: 1, mode: 'bitmap+clear', impl: 'C', us: 9 },
  ]);
});

test('vega renders the spec to an SVG with one line per series and both legends', () => {
  const chart = path.join(packageRoot(__dirname), 'dist', 'bench', 'chart.js');
  const script = `require(${JSON.stringify(chart)}).renderSvg(require(${JSON.stringify(chart)}).harvestChartSpec(${JSON.stringify(points)}, { pagesPerEpoch: 256, machine: 'm' })).then((svg) => process.stdout.write(svg))`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  const svg = r.stdout;
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
  // 4 series (ring/bitmap x Node/C), each a line mark: a <path> in a "mark-line" group
  expect(svg.match(/class="mark-line role-mark"/g)).toHaveLength(4);
  for (const label of ['ring', 'bitmap', 'Node', 'C', 'tracking', 'implementation', 'guest RAM (GiB, log scale)']) expect(svg).toContain(`>${label}<`);
});
