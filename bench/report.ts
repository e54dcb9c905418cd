// The benchmark's results object (bench/results.json, `npm run bench -- --json`), the issue's
// targets checked against it, and the table `npm run bench` prints. Pure functions of the
// results, so tests can check them without running a guest.

/** Node and C figures for one comparison; null where a side could not run (see `errors`). */
export interface NodeVsC {
  node: number | null;
  c: number | null;
  /** node / c */
  ratio: number | null;
}

export type SizeModes = Record<'ring' | 'bitmap' | 'bitmap-clear', { node: number | null; c: number | null }>;

export interface CheckpointFigures {
  /** committed epochs per second */
  ring: number | null;
  bitmap: number | null;
  ringPauseP50Us?: number | null;
  ringPauseP99Us?: number | null;
  bitmapPauseP50Us?: number | null;
  bitmapPauseP99Us?: number | null;
  /** epochs per second of the same workload without checkpointing (the C reference's epoch loop, same K, guest and mode, same run) */
  ringBare?: number | null;
  bitmapBare?: number | null;
  /** committed / bare: the share of its speed the guest keeps under checkpointing */
  ringEfficiency?: number | null;
  bitmapEfficiency?: number | null;
  /** stream bytes per epoch after the base (delta-encoded), of the ring run and of the bitmap run */
  bytesPerEpoch?: number | null;
  bitmapBytesPerEpoch?: number | null;
}

/** Where a checkpoint epoch's time goes (benchCheckpoint with profile: lib/checkpoint/profile.ts), ring mode, 1 GiB. */
export interface CheckpointProfileFigures {
  committedPerSec: number;
  /** median µs per epoch of each phase (run, completeIo, collect, registers, copy, resume, pause, encode, write, ack) */
  phasesUs: Record<string, number>;
  /** CPU µs per committed epoch: the primary's main, vCPU and other threads, the replica process; wall µs per epoch */
  cpuUs: { main: number; vcpu: number; other: number; replica: number; wall: number } | null;
}

/** Checkpointing several vCPUs, each its own stride of K pages and its own ring (1 GiB, ring mode). */
export interface VcpuCountFigures {
  vcpus: number;
  k: number;
  committed: number | null;
  /** the C reference's bare loop of one vCPU, same K and guest */
  bare: number | null;
  /** committed / bare */
  efficiency: number | null;
  pauseP50Us: number | null;
  pauseP99Us: number | null;
  bytesPerEpoch: number | null;
}

/** checkpointEfficiency: { k16: { ring, bitmap }, ... }, from the checkpoint figures. */
export function efficiencyOf(rows: Record<string, CheckpointFigures> | null | undefined): Record<string, { ring: number | null; bitmap: number | null }> | null {
  if (!rows) return null;
  return Object.fromEntries(Object.entries(rows).map(([key, c]) => [key, { ring: c.ringEfficiency ?? null, bitmap: c.bitmapEfficiency ?? null }]));
}

export interface BenchError {
  what: string;
  reason: string;
}

export interface Target {
  what: string;
  value: number | null;
  /** the figure must be >= or <= the bound */
  op: '>=' | '<=';
  bound: number;
  met: boolean | null;
}

export interface BenchResults {
  /** epochs per second of the ring epoch loop on a 16 GiB guest, K pages per epoch */
  epochLoop: Record<
    string,
    NodeVsC & {
      guestGiB: number;
      ringEntries: number;
      /** guest-physical address of the RAM slot (4 GiB where the stride at 2 MiB would write the APIC page) */
      ramGpa?: number;
      /** median ns per epoch in KVM_RUN (to the epoch's exit) and in harvest + reset */
      runNs?: { node: number | null; c: number | null };
      harvestNs?: { node: number | null; c: number | null };
    }
  >;
  /** ns per entry collecting a full 65,536-entry ring (the library's path; the TypeScript Atomics harvester apart) */
  harvestPerEntryNs: NodeVsC & { nodeAtomics: number | null; nodeAtomicsRatio: number | null; entries: number; batch: boolean | null };
  /** median harvest + re-arm per epoch in ns, by guest GiB, K = 256 */
  harvestPerEpochNs: Record<string, SizeModes>;
  /** bitmap harvest time / ring harvest time at g GiB (Node, the library's figures) */
  ringVsBitmap: Record<string, number | null>;
  /** the same ratio for the C reference */
  ringVsBitmapC: Record<string, number | null>;
  /** bytes the library's harvest calls allocated over one million entries */
  harvestHeapGrowthBytes: number | null;
  harvestHeap: Record<string, { entries: number; allocatedBytes: number; retainedBytes: number; batch: boolean } | null>;
  /** KVM_RUN round trip (one page, then the epoch's OUT): run() against C, runAsync() idle and with a busy event loop, kick() to settlement */
  vcpu?: {
    runNs: NodeVsC;
    runAsyncNs: number | null;
    runAsyncBusyNs: number | null;
    kickNsP50: number | null;
    kickNsP90: number | null;
  };
  /** full cycles per second on the emulator: model write, ring push, harvest, reset */
  emulatorEventsPerSec: number | null;
  checkpoint: Record<string, CheckpointFigures> | null;
  /** the same at K = 64, by guest GiB (1, 16, 64) */
  checkpointBySize?: Record<string, CheckpointFigures> | null;
  /** committed checkpoint epochs / the bare loop's epochs, by K (1 GiB), ring and bitmap */
  checkpointEfficiency?: Record<string, { ring: number | null; bitmap: number | null }> | null;
  /** the same by guest GiB, K = 64 */
  checkpointEfficiencyBySize?: Record<string, { ring: number | null; bitmap: number | null }> | null;
  /** where an epoch's time goes, by K (ring, 1 GiB), from a separate profiled run */
  checkpointProfile?: Record<string, CheckpointProfileFigures | null> | null;
  /** 1, 2 and 4 vCPUs (v1, v2, v4), K = 64 each */
  checkpointByVcpus?: Record<string, VcpuCountFigures> | null;
  targets: Record<string, Target>;
  errors: BenchError[];
  host: Record<string, unknown>;
}

function target(what: string, value: number | null, op: '>=' | '<=', bound: number): Target {
  return { what, value, op, bound, met: value === null ? null : op === '>=' ? value >= bound : value <= bound };
}

/** The targets for this machine, checked against the results. */
export function evaluateTargets(r: Omit<BenchResults, 'targets'>): Record<string, Target> {
  const heapPerEntry = r.harvestHeapGrowthBytes === null ? null : r.harvestHeapGrowthBytes / (r.harvestHeap.library?.entries || 1);
  return {
    epochLoopK16: target('Node epoch loop / C, K = 16, 16 GiB', r.epochLoop.k16?.ratio ?? null, '>=', 0.9),
    harvestPerEntry: target('Node harvest per entry / C', r.harvestPerEntryNs.ratio, '<=', 1.5),
    ringVsBitmap64: target('bitmap / ring harvest at 64 GiB, 256 pages', r.ringVsBitmap['64'] ?? null, '>=', 20),
    // "no heap growth proportional to entries": under one byte per harvested entry
    harvestHeapPerEntry: target('heap bytes allocated per harvested entry', heapPerEntry, '<=', 1),
    emulatorEvents: target('emulator dirty-page events per second', r.emulatorEventsPerSec, '>=', 5e6),
    checkpointK64: target('checkpoint efficiency, ring, K = 64, 1 GiB (committed / bare)', r.checkpointEfficiency?.k64?.ring ?? null, '>=', 0.8),
    checkpointK256: target('checkpoint efficiency, ring, K = 256, 1 GiB', r.checkpointEfficiency?.k256?.ring ?? null, '>=', 0.9),
    checkpointK16: target('checkpoint efficiency, ring, K = 16, 1 GiB', r.checkpointEfficiency?.k16?.ring ?? null, '>=', 0.5),
  };
}

/** The machine line of a report: cores, CPU vendor and model, kernel, KVM flavour, Node. */
export function describeHost(host: Record<string, unknown>): string {
  const h = host as { cores?: number; cpu?: string | null; cpuVendor?: string; kernel?: string; kvm?: { description?: string } | null; node?: string; date?: string };
  const cpu = [h.cpuVendor && !(h.cpu ?? '').startsWith(h.cpuVendor) ? h.cpuVendor : null, h.cpu ?? 'unknown CPU'].filter(Boolean).join(' ');
  return [`${h.cores ?? '?'} cores, ${cpu}`, `Linux ${h.kernel ?? '?'}`, h.kvm?.description ?? 'KVM unknown', `Node ${h.node ?? '?'}`, h.date?.slice(0, 10)].filter(Boolean).join('; ');
}

/** Formats a number for the table: 3 significant digits, thousands separated; '-' when absent. */
export function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 10 ** digits) return Math.round(x).toLocaleString('en-US');
  return Number(x.toPrecision(digits)).toLocaleString('en-US', { maximumFractionDigits: 6 });
}

export type ReportStyle = 'text' | 'markdown';

export function table(style: ReportStyle, header: string[], rows: string[][]): string {
  if (style === 'markdown') {
    const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
    return [line(header), `|${header.map((_, i) => (i === 0 ? '---' : '--:')).join('|')}|`, ...rows.map(line)].join('\n');
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The human-readable report: one table per measurement, then the targets and any errors; as text or as Markdown (for the README). */
export function formatReport(r: BenchResults, style: ReportStyle = 'text'): string {
  const out: string[] = [`Measured on: ${describeHost(r.host)}`];
  // a partial run (bench --only checkpoint) has only the checkpoint engine's figures
  const partial = Object.keys(r.epochLoop).length === 0 && r.harvestPerEntryNs.entries === 0;
  if (!partial) formatHarvest(r, style, out);
  formatCheckpoint(r, style, out);
  return out.join('\n');
}

/** The harvest, epoch-loop and vCPU tables (the library against its C reference), and the emulator's rate. */
function formatHarvest(r: BenchResults, style: ReportStyle, out: string[]): void {
  const title = (text: string) => (style === 'markdown' ? `**${text}**\n` : text);
  const label = (text: string) => (style === 'markdown' ? `**${text}:**` : `${text}:`);
  const us = (ns: number | null) => (ns === null ? null : ns / 1e3);
  out.push('', title('Harvest + re-arm per epoch, 256 dirty pages (median µs)'));
  out.push(
    table(
      style,
      ['guest', 'ring Node', 'ring C', 'bitmap Node', 'bitmap C', 'bitmap+clear Node', 'bitmap+clear C', 'bitmap/ring Node', 'bitmap/ring C'],
      Object.entries(r.harvestPerEpochNs).map(([g, m]) => [
        `${g} GiB`,
        fmt(us(m.ring.node)),
        fmt(us(m.ring.c)),
        fmt(us(m.bitmap.node)),
        fmt(us(m.bitmap.c)),
        fmt(us(m['bitmap-clear'].node)),
        fmt(us(m['bitmap-clear'].c)),
        fmt(r.ringVsBitmap[g]),
        fmt(r.ringVsBitmapC[g]),
      ]),
    ),
  );
  out.push('', title('Epoch loop, dirty ring, 16 GiB guest (epochs/s, median; µs per epoch in KVM_RUN and in harvest + reset)'));
  out.push(
    table(
      style,
      ['K', 'ring entries', 'Node', 'C', 'Node/C', 'run Node', 'run C', 'harvest Node', 'harvest C'],
      Object.entries(r.epochLoop).map(([k, e]) => [
        k.slice(1),
        String(e.ringEntries),
        fmt(e.node),
        fmt(e.c),
        fmt(e.ratio),
        fmt(us(e.runNs?.node ?? null)),
        fmt(us(e.runNs?.c ?? null)),
        fmt(us(e.harvestNs?.node ?? null)),
        fmt(us(e.harvestNs?.c ?? null)),
      ]),
    ),
  );
  const h = r.harvestPerEntryNs;
  out.push('', title(`Harvest per entry, full 65,536-entry ring, ${h.entries} entries (ns, median)`));
  out.push(
    table(
      style,
      ['path', 'ns/entry', 'vs C'],
      [
        [`Node, the library (${h.batch ? 'native batch harvest' : 'TypeScript Atomics'})`, fmt(h.node), fmt(h.ratio)],
        ['Node, TypeScript Atomics harvester', fmt(h.nodeAtomics), fmt(h.nodeAtomicsRatio)],
        ['C reference', fmt(h.c), '1'],
      ],
    ),
  );
  out.push('', title('Heap growth over one million harvested entries (bytes)'));
  out.push(
    table(
      style,
      ['path', 'entries', 'allocated in harvest()', 'retained after GC'],
      Object.entries(r.harvestHeap).map(([path, v]) => [path, fmt(v?.entries, 7), fmt(v?.allocatedBytes, 7), fmt(v?.retainedBytes, 7)]),
    ),
  );
  if (r.vcpu) {
    out.push('', title('vCPU round trips (µs, median): one page written, then the epoch\'s OUT'));
    out.push(
      table(
        style,
        ['call', 'Node', 'C'],
        [
          ['run(): KVM_RUN on the calling thread', fmt(us(r.vcpu.runNs.node)), fmt(us(r.vcpu.runNs.c))],
          ['runAsync(), event loop idle (the host wakes Node\'s thread)', fmt(us(r.vcpu.runAsyncNs)), '-'],
          ['runAsync(), event loop busy', fmt(us(r.vcpu.runAsyncBusyNs)), '-'],
          ['kick() to the settled runAsync() of a spinning guest, p50 / p90', `${fmt(us(r.vcpu.kickNsP50))} / ${fmt(us(r.vcpu.kickNsP90))}`, '-'],
        ],
      ),
    );
  }
  out.push('', `${label('Emulator')} dirty-page events per second (model write, ring push, harvest, reset): ${fmt(r.emulatorEventsPerSec)}`);
}

/** The checkpoint engine's tables, then the targets and any errors. */
function formatCheckpoint(r: BenchResults, style: ReportStyle, out: string[]): void {
  const title = (text: string) => (style === 'markdown' ? `**${text}**\n` : text);
  const label = (text: string) => (style === 'markdown' ? `**${text}:**` : `${text}:`);
  /** One row per configuration: committed epochs/s and pauses, ring and bitmap. */
  const checkpointTable = (first: string, rows: Record<string, CheckpointFigures>, name: (key: string) => string) =>
    table(
      style,
      [first, 'ring', 'bare ring (C)', 'ring / bare', 'bitmap', 'bare bitmap (C)', 'bitmap / bare', 'ring pause p50/p99 µs', 'bitmap pause p50/p99 µs', 'bytes/epoch'],
      Object.entries(rows).map(([key, c]) => [
        name(key),
        fmt(c.ring),
        fmt(c.ringBare),
        fmt(c.ringEfficiency),
        fmt(c.bitmap),
        fmt(c.bitmapBare),
        fmt(c.bitmapEfficiency),
        `${fmt(c.ringPauseP50Us)} / ${fmt(c.ringPauseP99Us)}`,
        `${fmt(c.bitmapPauseP50Us)} / ${fmt(c.bitmapPauseP99Us)}`,
        fmt(c.bytesPerEpoch ?? c.bitmapBytesPerEpoch),
      ]),
    );
  if (r.checkpoint !== null) {
    out.push('', title('Checkpoint engine, 1 GiB: committed epochs per second against the same guest without checkpointing (bare: the C reference\'s epoch loop)'));
    out.push(checkpointTable('K', r.checkpoint, (k) => k.slice(1)));
  } else {
    out.push('', `${label('Checkpoint engine')} not measured (see errors)`);
  }
  if (r.checkpointBySize) {
    out.push('', title('Checkpoint engine by guest size, K = 64: committed epochs per second against the bare loop'));
    out.push(checkpointTable('guest', r.checkpointBySize, (g) => `${g} GiB`));
  }
  if (r.checkpointByVcpus) {
    out.push('', title('Checkpoint engine by vCPU count, ring, 1 GiB, each vCPU its own stride of K pages and its own ring (bare: one vCPU\'s C loop)'));
    out.push(
      table(
        style,
        ['vCPUs', 'K per vCPU', 'committed/s', 'bare (C, 1 vCPU)', 'committed / bare', 'pause p50/p99 µs', 'bytes/epoch'],
        Object.values(r.checkpointByVcpus).map((v) => [String(v.vcpus), String(v.k), fmt(v.committed), fmt(v.bare), fmt(v.efficiency), `${fmt(v.pauseP50Us)} / ${fmt(v.pauseP99Us)}`, fmt(v.bytesPerEpoch)]),
      ),
    );
  }
  if (r.checkpointProfile) {
    const rows = Object.entries(r.checkpointProfile).filter((e): e is [string, CheckpointProfileFigures] => e[1] !== null);
    const phases = ['run', 'completeIo', 'collect', 'registers', 'copy', 'resume', 'pause', 'encode', 'write', 'ack'];
    out.push('', title('Where a checkpoint epoch\'s time goes, ring, 1 GiB (median µs per epoch, a profiled run; CPU µs per committed epoch by thread)'));
    out.push(
      table(
        style,
        ['K', 'committed/s', ...phases, 'CPU main', 'CPU vCPU', 'CPU other', 'CPU replica', 'wall'],
        rows.map(([k, p]) => [k.slice(1), fmt(p.committedPerSec), ...phases.map((ph) => fmt(p.phasesUs[ph])), fmt(p.cpuUs?.main), fmt(p.cpuUs?.vcpu), fmt(p.cpuUs?.other), fmt(p.cpuUs?.replica), fmt(p.cpuUs?.wall)]),
      ),
    );
  }
  out.push('', title('Targets'));
  out.push(
    table(
      style,
      ['target', 'value', 'bound', 'met'],
      Object.values(r.targets).map((t) => [t.what, fmt(t.value), `${t.op} ${fmt(t.bound)}`, t.met === null ? 'not measured' : t.met ? 'yes' : 'NO']),
    ),
  );
  if (r.errors.length > 0) {
    out.push('', title('Not measured'));
    for (const e of r.errors) out.push(`${style === 'markdown' ? '-' : ' '} ${e.what}: ${e.reason}`);
  }
}
