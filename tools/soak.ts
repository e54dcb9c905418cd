// Soak checks (issue: reliability): no fd or memory growth over many VM lifecycles and
// harvested epochs, and no lost dirty page over many random writes, on ring and bitmap.
//
//   npm run soak [-- --backend native|emulator --lifecycles 10000 --epochs 1000000 --writes 1000000]
// The short versions run in npm test (test/soak.test.ts).
import { readFileSync, readdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DirtyBitmap, DirtyPages, ExitReason, MemFlag, Workload, openKvm, type Kvm, type BackendName } from '../lib';

const fds = () => readdirSync('/proc/self/fd').length;
const rssMiB = () => process.memoryUsage().rss / 2 ** 20;
/** The mappings a VM owns: guest memory (its memfd) and kvm_run/rings (anon_inode:kvm-vcpu). */
const kvmMappings = () => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => /anon_inode:kvm|\/memfd:kvm-dirty:guest/.test(l)).length;
/** Bytes of live ArrayBuffers (the emulator's guest memory and rings live there) and of V8's heap. */
const arrayBuffersMiB = () => process.memoryUsage().arrayBuffers / 2 ** 20;
const heapMiB = () => process.memoryUsage().heapUsed / 2 ** 20;
/** A full garbage collection, with or without --expose-gc (jest workers have no flag). */
const gc: () => void = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** A VM with one vCPU whose ring (ring mode) holds `runWrites` entries below its soft limit, from the host's limits. */
function guest(kvm: Kvm, mode: 'ring' | 'bitmap', dataPages: number, runWrites = 2048) {
  const vm = kvm.createVm();
  if (mode === 'ring') vm.enableDirtyRing(kvm.dirtyRingLimits().bytesFor(runWrites));
  const harness = vm.createMemory(2 << 20);
  const data = vm.createMemory(dataPages * 4096);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: harness });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 2 << 20, memory: data, flags: MemFlag.LogDirtyPages });
  return { vm, data, vcpu: vm.createVcpu(0) };
}

/**
 * Before/after a soak. fds, KVM mappings and ArrayBuffer bytes are exact counts of what a VM owns;
 * RSS also holds what the allocators keep after a free (glibc serves the emulator's 2 MiB
 * buffers from its heap once a freed one raised the mmap threshold): it moves by tens of MiB
 * between samples and plateaus, so it shows a leak only when the leak is large.
 */
export interface LeakReport {
  iterations: number;
  fdsBefore: number;
  fdsAfter: number;
  mappingsBefore: number;
  mappingsAfter: number;
  arrayBuffersBeforeMiB: number;
  arrayBuffersAfterMiB: number;
  heapBeforeMiB: number;
  heapAfterMiB: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
}

interface Sample { fds: number; mappings: number; arrayBuffersMiB: number; heapMiB: number; rssMiB: number }
const sample = (): Sample => ({ fds: fds(), mappings: kvmMappings(), arrayBuffersMiB: arrayBuffersMiB(), heapMiB: heapMiB(), rssMiB: rssMiB() });
const report = (iterations: number, a: Sample, b: Sample): LeakReport => ({
  iterations,
  fdsBefore: a.fds,
  fdsAfter: b.fds,
  mappingsBefore: a.mappings,
  mappingsAfter: b.mappings,
  arrayBuffersBeforeMiB: a.arrayBuffersMiB,
  arrayBuffersAfterMiB: b.arrayBuffersMiB,
  heapBeforeMiB: a.heapMiB,
  heapAfterMiB: b.heapMiB,
  rssBeforeMiB: a.rssMiB,
  rssAfterMiB: b.rssMiB,
});

/** Lets the event loop turn: Node-API runs the finalizers of collected native wrappers there. */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * n VM lifecycles (VM, ring, memory, vCPU, a workload loaded and run once, close). close()
 * releases the kernel resources at once; the small C++ wrappers go when their JS objects are
 * collected and the event loop turns, so the loop yields every 100 lifecycles as a program would.
 */
export async function soakLifecycles(kvm: Kvm, n: number): Promise<LeakReport> {
  // Warm up first: malloc arenas, the JIT and V8's heap settle over the first thousands
  // (a caller measuring a short run should run one unmeasured round first).
  for (let i = 0; i < 1000; i++) {
    guest(kvm, 'ring', 16, 16).vm.close();
    if (i % 100 === 99) await tick();
  }
  gc();
  await tick();
  const before = sample();
  for (let i = 0; i < n; i++) {
    const g = guest(kvm, 'ring', 16, 16);
    g.vcpu.load(Workload.stride({ firstPage: 512, pages: 4 }));
    g.vcpu.run();
    g.vm.close();
    if (i % 100 === 99) await tick();
  }
  gc();
  await tick();
  gc();
  return report(n, before, sample());
}

/** n epochs of 16 pages, each harvested and reset, on one VM: heap and fds must stay flat. */
export function soakEpochs(kvm: Kvm, n: number): LeakReport & { entries: number } {
  const g = guest(kvm, 'ring', 64);
  const ring = g.vcpu.dirtyRing!;
  const out = new DirtyPages(ring.entries);
  g.vcpu.load(Workload.stride({ firstPage: 520, pages: 16 }));
  const epoch = () => {
    g.vcpu.run();
    out.clear();
    const k = ring.harvest(out);
    g.vm.resetDirtyRings();
    return k;
  };
  for (let i = 0; i < 1000; i++) epoch(); // warm up the JIT
  gc();
  const before = sample();
  let entries = 0;
  for (let i = 0; i < n; i++) entries += epoch();
  gc();
  const r = { ...report(n, before, sample()), entries };
  g.vm.close();
  return r;
}

/** pagesChecked: (epoch, page) pairs the guest wrote, each checked against the harvest. */
export interface LostPageReport { mode: string; epochs: number; pagesChecked: number; misses: number; falseEntries: number }

/**
 * Random workloads until `writes` page writes were checked; after each epoch, every page of the span holding this epoch's number
 * (the guest memory is the witness of what was written) must be in the epoch's harvested set.
 */
export function soakNoLostPages(kvm: Kvm, mode: 'ring' | 'bitmap', writes: number, seed = 1): LostPageReport {
  const span = 4096;
  const perEpoch = 1000; // a ring whose soft limit holds 2,000 entries: room for the host's duplicates too (DESIGN §5)
  const g = guest(kvm, mode, span, 2 * perEpoch);
  const words = new BigUint64Array(g.data.buffer);
  const ring = g.vcpu.dirtyRing;
  const out = new DirtyPages(ring?.entries ?? 1);
  const bitmap = new DirtyBitmap(span);
  const seen = new Uint8Array(span);
  let epochs = 0;
  let misses = 0;
  let falseEntries = 0;
  let pagesChecked = 0;
  let rng = seed;
  while (pagesChecked < writes) {
    // A new random workload every 50 epochs: other spans, rates and seeds.
    if (epochs % 50 === 0) {
      rng = (rng * 1103515245 + 12345) >>> 0;
      const first = 512 + (rng % 1024);
      const spanPages = 1 + (rng % (span - (first - 512)));
      g.vcpu.load(Workload.random({ firstPage: first, spanPages, pagesPerEpoch: 1 + (rng % perEpoch), seed: BigInt(rng) }));
      words.fill(0n); // load() restarts at epoch 1: forget older epochs' numbers
    }
    const exit = g.vcpu.run();
    if (exit.reason !== ExitReason.Io) throw new Error(`unexpected exit ${ExitReason[exit.reason]}`);
    const e = BigInt(exit.io!.value); // low byte of the epoch; epochs per load stay below 256
    epochs++;
    seen.fill(0);
    if (ring) {
      out.clear();
      ring.harvest(out);
      g.vm.resetDirtyRings();
      for (let i = 0; i < out.length; i++) seen[out.offsets[i]] = 1;
    } else {
      g.vm.getDirtyLog(1, bitmap).forEach((p) => (seen[p] = 1));
    }
    for (let p = 0; p < span; p++) {
      const written = words[p * 512] === e;
      if (written) pagesChecked++;
      if (written && !seen[p]) misses++;
      if (!written && seen[p]) falseEntries++;
    }
  }
  g.vm.close();
  return { mode, epochs, pagesChecked, misses, falseEntries };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
  const backends = (opt('--backend', 'native,emulator').split(',') as BackendName[]);
  for (const backend of backends) {
    const kvm = openKvm({ backend });
    const report = {
      backend: kvm.backend,
      lifecycles: await soakLifecycles(kvm, Number(opt('--lifecycles', '10000'))),
      epochs: soakEpochs(kvm, Number(opt('--epochs', '1000000'))),
      noLostPages: (['ring', 'bitmap'] as const).map((m) => soakNoLostPages(kvm, m, Number(opt('--writes', '1000000')))),
    };
    kvm.close();
    console.log(JSON.stringify(report, null, 2));
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
