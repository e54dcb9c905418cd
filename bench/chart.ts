// The harvest-cost-vs-guest-size chart (docs/harvest-vs-guest-size.svg): a Vega spec rendered
// headless to SVG. vega 6 is ESM-only; module node16 keeps the dynamic import() below as a real
// import(), which a CommonJS module may use.

import type { BenchResults } from './report';

/** One point: the median harvest cost per epoch of one mode, one implementation, one guest size. */
export interface HarvestPoint {
  guestGiB: number;
  mode: 'ring' | 'bitmap' | 'bitmap+clear';
  impl: 'Node' | 'C';
  /** harvest + re-arm per epoch, microseconds */
  us: number;
}

export interface ChartMeta {
  pagesPerEpoch: number;
  /** the machine, one short line per element, e.g. ['2 cores, Intel Xeon', 'kvm_pvm (nested)'] */
  machine: string | string[];
}

/** The chart's points: harvest cost per epoch for each mode and side. */
export function chartPoints(sizes: BenchResults['harvestPerEpochNs']): HarvestPoint[] {
  const points: HarvestPoint[] = [];
  for (const [g, modes] of Object.entries(sizes)) {
    for (const [mode, label] of [['ring', 'ring'], ['bitmap', 'bitmap'], ['bitmap-clear', 'bitmap+clear']] as const) {
      const m = modes[mode];
      if (m.node !== null) points.push({ guestGiB: Number(g), mode: label, impl: 'Node', us: m.node / 1e3 });
      if (m.c !== null) points.push({ guestGiB: Number(g), mode: label, impl: 'C', us: m.c / 1e3 });
    }
  }
  return points;
}

/** The Vega spec: log-scale axes, one line per (mode, implementation), colour = mode, dash = implementation. */
export function harvestChartSpec(points: readonly HarvestPoint[], meta: ChartMeta): Record<string, unknown> {
  const sizes = [...new Set(points.map((p) => p.guestGiB))].sort((a, b) => a - b);
  return {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    description: 'kvm-dirty: harvest cost per epoch against guest size, dirty ring vs dirty bitmap, Node vs C',
    width: 560,
    height: 360,
    padding: 8,
    background: 'white',
    title: {
      text: `Harvest + re-arm per epoch, ${meta.pagesPerEpoch} dirty pages (median)`,
      subtitle: meta.machine,
      anchor: 'start',
    },
    data: [{ name: 'points', values: points.map((p) => ({ ...p, series: `${p.mode} (${p.impl})` })) }],
    scales: [
      { name: 'x', type: 'log', base: 2, domain: [sizes[0] ?? 1, sizes[sizes.length - 1] ?? 64], range: 'width' },
      { name: 'y', type: 'log', domain: { data: 'points', field: 'us' }, range: 'height', nice: true, zero: false },
      { name: 'color', type: 'ordinal', domain: ['ring', 'bitmap', 'bitmap+clear'], range: ['#1b9e77', '#d95f02', '#7570b3'] },
      { name: 'dash', type: 'ordinal', domain: ['Node', 'C'], range: [[1, 0], [6, 4]] },
    ],
    axes: [
      { orient: 'bottom', scale: 'x', title: 'guest RAM (GiB, log scale)', values: sizes, format: 'd', grid: true },
      { orient: 'left', scale: 'y', title: 'µs per epoch (log scale)', grid: true, format: '~s' },
    ],
    legends: [
      { stroke: 'color', title: 'tracking', orient: 'right', symbolType: 'stroke' },
      { strokeDash: 'dash', title: 'implementation', orient: 'right', symbolType: 'stroke' },
    ],
    marks: [
      {
        type: 'group',
        from: { facet: { name: 'series', data: 'points', groupby: ['mode', 'impl'] } },
        marks: [
          {
            type: 'line',
            from: { data: 'series' },
            sort: { field: 'datum.guestGiB' },
            encode: {
              enter: {
                x: { scale: 'x', field: 'guestGiB' },
                y: { scale: 'y', field: 'us' },
                stroke: { scale: 'color', field: 'mode' },
                strokeDash: { scale: 'dash', field: 'impl' },
                strokeWidth: { value: 2 },
              },
            },
          },
          {
            type: 'symbol',
            from: { data: 'series' },
            encode: {
              enter: {
                x: { scale: 'x', field: 'guestGiB' },
                y: { scale: 'y', field: 'us' },
                fill: { scale: 'color', field: 'mode' },
                size: { value: 30 },
                tooltip: { signal: "datum.series + ': ' + format(datum.us, '.1f') + ' µs at ' + datum.guestGiB + ' GiB'" },
              },
            },
          },
        ],
      },
    ],
  };
}

/** Renders a Vega spec to an SVG string, headless (no canvas, no browser). */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const vega = await import('vega');
  const view = new vega.View(vega.parse(spec as import('vega').Spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
