// Hostile arguments: random calls of every public method with wrong types, negative, huge,
// fractional and NaN numbers, absent and out-of-range slots, wrong-size or detached buffers,
// closed objects and invalid enum values. Every call must return or throw KvmError, TypeError
// or RangeError — never crash, hang or throw anything else — on both backends.
//
// FUZZ_CALLS=100000 runs longer (default 10,000 per backend).
import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import { DirtyBitmap, DirtyPages, MemFlag, Workload, type Kvm, type Vcpu, type Vm, type GuestMemory } from '../lib';
import { describeEachBackend } from './helpers/backends';

const CALLS = Number(process.env.FUZZ_CALLS ?? 10000);
const CALLS_PER_PROPERTY = 50;

interface World {
  kvm: Kvm;
  vms: Vm[];
  vcpus: Vcpu[];
  memories: GuestMemory[];
  stats: Record<string, number>;
}

/** A Uint8Array whose buffer was detached (byteLength 0 from now on). */
function detachedView(): Uint8Array {
  const v = new Uint8Array(64);
  structuredClone(v.buffer, { transfer: [v.buffer] });
  return v;
}

/** Values no method should choke on. */
const hostile: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 4200 }) },
  { weight: 2, arbitrary: fc.constantFrom(0, 1, 2, 3, 63, 64, 65, 192, 223, 228, 4096, 8192, 65536, 1 << 20, 1 << 21, 32764, 32767, 65537, 2 ** 31, 2 ** 32 - 1, 2 ** 32) },
  { weight: 2, arbitrary: fc.constantFrom(-1, -0, 0.5, -4096, NaN, Infinity, -Infinity, 2 ** 53, 2 ** 64, Number.MAX_VALUE, Number.EPSILON) },
  { weight: 1, arbitrary: fc.constantFrom(undefined, null, true, false, '1', '', 'x', {}, [], [1, 2], () => 0, Symbol('s'), new Date(0)) },
  { weight: 1, arbitrary: fc.bigInt({ min: -(1n << 70n), max: 1n << 70n }) },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 300 }).map((n) => new DirtyBitmap(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 300 }).map((n) => new DirtyPages(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 200 }).map((n) => new Uint8Array(n)) },
  { weight: 1, arbitrary: fc.constantFrom('detached', 'u32').map((k) => (k === 'detached' ? detachedView() : new Uint32Array(4))) },
);

const workload: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({ firstPage: hostile, pages: hostile, stridePages: hostile }).map((o) => () => Workload.stride(o as never)),
  fc.record({ firstPage: hostile, spanPages: hostile, pagesPerEpoch: hostile, seed: hostile }).map((o) => () => Workload.random(o as never)),
  fc.record({ page: hostile }).map((o) => () => Workload.counter(o as never)),
);

type Call = { name: string; run: (w: World) => unknown };

/** The paths to every leaf (number, bigint, Uint8Array, ...) of a struct's typed form. */
function leafPaths(o: unknown, path: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> {
  if (typeof o === 'object' && o !== null && !(o instanceof Uint8Array)) {
    for (const [k, v] of Object.entries(o)) leafPaths(v, [...path, Array.isArray(o) ? Number(k) : k], out);
  } else out.push(path);
  return out;
}

/** A copy of `value` with one leaf (the pick-th, cyclically) replaced; pick beyond the leaves deletes the object's first key. */
function mutated(value: unknown, pick: number, replacement: unknown): unknown {
  const copy = structuredClone(value) as Record<string | number, unknown>;
  const paths = leafPaths(copy);
  if (paths.length === 0 || typeof copy !== 'object' || copy === null) return replacement;
  const path = paths[pick % paths.length];
  if (path.length === 0) return replacement;
  let at: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>;
  if (pick % 7 === 6) delete at[path[path.length - 1]];
  else at[path[path.length - 1]] = replacement;
  return copy;
}

/** The vCPU state pieces with a getter and a setter, for get-mutate-set calls. */
const VCPU_PIECES = ['Fpu', 'Xsave', 'Xcrs', 'Lapic', 'VcpuEvents', 'Debugregs', 'Cpuid2', 'State'] as const;
const VM_PIECES = ['Pit2', 'Clock', 'State'] as const;
const pick = <T>(xs: T[], i: number): T | undefined => (xs.length ? xs[i % xs.length] : undefined);

const callArb: fc.Arbitrary<Call> = fc.oneof(
  fc.tuple(hostile).map(([cap]) => ({ name: 'kvm.checkExtension', run: (w: World) => w.kvm.checkExtension(cap as number) })),
  fc.constant({ name: 'kvm.createVm', run: (w: World) => { if (w.vms.length < 4) w.vms.push(w.kvm.createVm()); } }),
  fc.tuple(fc.nat(), hostile).map(([i, cap]) => ({ name: 'vm.checkExtension', run: (w: World) => pick(w.vms, i)?.checkExtension(cap as number) })),
  fc.tuple(fc.nat(), hostile, fc.array(hostile, { maxLength: 5 }), hostile).map(([i, cap, args, flags]) => ({ name: 'vm.enableCap', run: (w: World) => pick(w.vms, i)?.enableCap(cap as number, args as number[], flags as number) })),
  fc.tuple(fc.nat(), hostile).map(([i, b]) => ({ name: 'vm.enableDirtyRing', run: (w: World) => pick(w.vms, i)?.enableDirtyRing(b as number) })),
  fc.tuple(fc.nat(), hostile).map(([i, f]) => ({ name: 'vm.enableManualDirtyLogProtect', run: (w: World) => pick(w.vms, i)?.enableManualDirtyLogProtect(f as number) })),
  fc.tuple(fc.nat()).map(([i]) => ({ name: 'vm.enableDirtyRingWithBitmap', run: (w: World) => pick(w.vms, i)?.enableDirtyRingWithBitmap() })),
  fc.tuple(fc.nat(), fc.oneof(hostile, fc.constantFrom(4096, 2 << 20, 1 << 30, 2 ** 50))).map(([i, size]) => ({
    name: 'vm.createMemory',
    run: (w: World) => { const m = pick(w.vms, i)?.createMemory(size as number); if (m) w.memories.push(m); },
  })),
  fc.tuple(fc.nat(), fc.nat(), hostile, hostile, hostile, fc.constantFrom('mem', 'null', 'hostile'), hostile, hostile).map(([i, j, slot, gpa, flags, memKind, size, off]) => ({
    name: 'vm.setUserMemoryRegion',
    run: (w: World) => pick(w.vms, i)?.setUserMemoryRegion({
      slot: slot as number, guestPhysAddr: gpa as number, flags: flags as number,
      memory: (memKind === 'mem' ? pick(w.memories, j) ?? null : memKind === 'null' ? null : size) as GuestMemory,
      ...(memKind === 'mem' && j % 3 === 0 ? { memorySize: size as number, memoryOffset: off as number } : {}),
    }),
  })),
  fc.tuple(fc.nat(), hostile).map(([i, id]) => ({ name: 'vm.createVcpu', run: (w: World) => { const v = pick(w.vms, i)?.createVcpu(id as number); if (v) w.vcpus.push(v); } })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, slot, into]) => ({ name: 'vm.getDirtyLog', run: (w: World) => pick(w.vms, i)?.getDirtyLog(slot as number, into as DirtyBitmap) })),
  fc.tuple(fc.nat(), hostile, hostile, hostile, hostile).map(([i, s, f, n, m]) => ({ name: 'vm.clearDirtyLog', run: (w: World) => pick(w.vms, i)?.clearDirtyLog(s as number, f as number, n as number, m as DirtyBitmap) })),
  fc.tuple(fc.nat()).map(([i]) => ({ name: 'vm.resetDirtyRings', run: (w: World) => pick(w.vms, i)?.resetDirtyRings() })),
  fc.tuple(fc.nat(), hostile, hostile, hostile, hostile, hostile).map(([i, start, count, peek, flags, values]) => ({
    name: 'vm.getCmmaBits', run: (w: World) => pick(w.vms, i)?.getCmmaBits({ startGfn: start as number, count: count as number, peek: peek as boolean, flags: flags as number, values: values as Uint8Array }),
  })),
  fc.tuple(fc.nat(), hostile, hostile, hostile, hostile).map(([i, start, values, mask, flags]) => ({
    name: 'vm.setCmmaBits', run: (w: World) => pick(w.vms, i)?.setCmmaBits({ startGfn: start as number, values: values as Uint8Array, mask: mask as number, flags: flags as number }),
  })),
  fc.tuple(fc.nat(), hostile).map(([i, on]) => ({ name: 'vm.setMigrationMode', run: (w: World) => pick(w.vms, i)?.setMigrationMode(on as boolean) })),
  fc.tuple(fc.nat()).map(([i]) => ({ name: 'vm.getMigrationMode', run: (w: World) => pick(w.vms, i)?.getMigrationMode() })),
  fc.tuple(fc.nat(), hostile, hostile, hostile).map(([i, a, b, c]) => ({
    name: 'vm.emulator',
    run: (w: World) => { const e = pick(w.vms, i)?.emulator; if (e) { e.guestWrite(a as number, b as number, c as number); e.essa(a as number, b as number); } },
  })),
  fc.tuple(fc.nat(), workload).map(([i, make]) => ({ name: 'vcpu.load', run: (w: World) => pick(w.vcpus, i)?.load((make as () => Workload)()) })),
  fc.tuple(fc.nat(), hostile).map(([i, x]) => ({ name: 'vcpu.load(hostile)', run: (w: World) => pick(w.vcpus, i)?.load(x as Workload) })),
  fc.tuple(fc.nat(), fc.dictionary(fc.constantFrom('rax', 'rip', 'rflags', 'r15', 'bogus'), hostile)).map(([i, regs]) => ({ name: 'vcpu.setRegs', run: (w: World) => pick(w.vcpus, i)?.setRegs(regs as never) })),
  fc.tuple(fc.nat(), hostile).map(([i, s]) => ({ name: 'vcpu.setSregs(hostile)', run: (w: World) => pick(w.vcpus, i)?.setSregs(s as never) })),
  fc.tuple(fc.nat()).map(([i]) => ({ name: 'vcpu.getRegs+getSregs', run: (w: World) => { const v = pick(w.vcpus, i); v?.getRegs(); return v?.getSregs(); } })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, out, max]) => ({ name: 'ring.harvest', run: (w: World) => pick(w.vcpus, i)?.dirtyRing?.harvest(out as DirtyPages, max as number) })),
  fc.tuple(fc.nat()).map(([i]) => ({ name: 'ring.pending', run: (w: World) => pick(w.vcpus, i)?.dirtyRing?.pending() })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, off, len]) => ({ name: 'memory.view', run: (w: World) => pick(w.memories, i)?.view(off as number, len as number) })),
  // the full-state calls: raw hostile values, and real values with one field made hostile
  fc.constantFrom('getMsrIndexList', 'getSupportedCpuid').map((m) => ({ name: `kvm.${m}`, run: (w: World) => w.kvm[m]() })),
  fc.tuple(fc.nat(), fc.constantFrom('createIrqchip', 'getPit2', 'getClock', 'getState', 'stateSkipped')).map(([i, m]) => ({ name: `vm.${m}`, run: (w: World) => pick(w.vms, i)?.[m]() })),
  fc.tuple(fc.nat(), fc.constantFrom('createPit2', 'setTssAddr', 'setIdentityMapAddr', 'getIrqchip', 'setPit2', 'setClock', 'setState'), hostile).map(([i, m, x]) => ({
    name: `vm.${m}(hostile)`, run: (w: World) => (pick(w.vms, i)?.[m] as ((x: unknown) => unknown) | undefined)?.call(pick(w.vms, i), x),
  })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, irq, level]) => ({ name: 'vm.irqLine', run: (w: World) => pick(w.vms, i)?.irqLine(irq as number, level as number) })),
  fc.tuple(fc.nat(), fc.constantFrom(0, 1, 2), fc.nat(), hostile).map(([i, chip, n, x]) => ({
    name: 'vm.setIrqchip(mutated)',
    run: (w: World) => { const vm = pick(w.vms, i); if (vm) vm.setIrqchip(chip, mutated(vm.getIrqchip(chip), n, x) as never); },
  })),
  fc.tuple(fc.nat(), fc.constantFrom(...VM_PIECES), fc.nat(), hostile).map(([i, piece, n, x]) => ({
    name: `vm.set${piece}(mutated)`,
    run: (w: World) => { const vm = pick(w.vms, i); if (vm) (vm[`set${piece}`] as (s: unknown) => void).call(vm, mutated((vm[`get${piece}`] as () => unknown).call(vm), n, x)); },
  })),
  fc.tuple(fc.nat(), fc.constantFrom('getFpu', 'getXsave', 'getXcrs', 'getLapic', 'getVcpuEvents', 'getDebugregs', 'getMpState', 'getCpuid2', 'getState', 'stateSkipped', 'completeIo', 'xsaveSize')).map(([i, m]) => ({
    name: `vcpu.${m}`, run: (w: World) => { const v = pick(w.vcpus, i); return m === 'xsaveSize' ? v?.xsaveSize : (v?.[m] as (() => unknown) | undefined)?.call(v); },
  })),
  fc.tuple(fc.nat(), fc.constantFrom('setFpu', 'setXsave', 'setXcrs', 'setLapic', 'setVcpuEvents', 'setDebugregs', 'setMpState', 'setCpuid2', 'setState', 'getMsrs', 'setMsrs', 'loadImage'), hostile).map(([i, m, x]) => ({
    name: `vcpu.${m}(hostile)`, run: (w: World) => { const v = pick(w.vcpus, i); return (v?.[m] as ((x: unknown) => unknown) | undefined)?.call(v, x); },
  })),
  fc.tuple(fc.nat(), fc.constantFrom(...VCPU_PIECES), fc.nat(), hostile).map(([i, piece, n, x]) => ({
    name: `vcpu.set${piece}(mutated)`,
    run: (w: World) => { const v = pick(w.vcpus, i); if (v) (v[`set${piece}`] as (s: unknown) => void).call(v, mutated((v[`get${piece}`] as () => unknown).call(v), n, x)); },
  })),
  fc.tuple(fc.nat(), fc.array(hostile, { maxLength: 4 }), fc.nat(), hostile).map(([i, idx, n, x]) => ({
    name: 'vcpu.getMsrs/setMsrs(mutated)',
    run: (w: World) => { const v = pick(w.vcpus, i); if (v) v.setMsrs(mutated(v.getMsrs(idx as number[]), n, x) as never); },
  })),
  fc.tuple(fc.nat(), hostile, hostile, hostile, hostile).map(([i, image, gpa, entry, stackTop]) => ({
    name: 'vcpu.loadImage({...hostile})', run: (w: World) => pick(w.vcpus, i)?.loadImage({ image: image as Uint8Array, gpa: gpa as number, entry: entry as number, stackTop: stackTop as number }),
  })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, off, bytes]) => ({ name: 'memory.write', run: (w: World) => pick(w.memories, i)?.write(off as number, bytes as Uint8Array) })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, off, len]) => ({ name: 'memory.dmaWrite', run: (w: World) => pick(w.memories, i)?.dmaWrite(off as number, len as number, (v) => v.fill(1)) })),
  fc.tuple(fc.nat(), hostile, hostile).map(([i, off, len]) => ({ name: 'memory.markVmmDirty', run: (w: World) => pick(w.memories, i)?.markVmmDirty(off as number, len as number) })),
  fc.tuple(fc.nat(), hostile).map(([i, into]) => ({ name: 'memory.takeVmmDirty', run: (w: World) => pick(w.memories, i)?.takeVmmDirty(into as DirtyBitmap) })),
  fc.tuple(fc.nat()).map(([i]) => ({ name: 'memory.dataRanges', run: (w: World) => pick(w.memories, i)?.dataRanges() })),
  fc.tuple(fc.nat(), fc.constantFrom('vcpu', 'vm', 'memory')).map(([i, what]) => ({
    name: `${what}.close`,
    run: (w: World) => (what === 'vcpu' ? pick(w.vcpus, i) : what === 'vm' ? pick(w.vms, i) : pick(w.memories, i))?.close(),
  })),
);

const OK_ERRORS = new Set(['KvmError', 'TypeError', 'RangeError']);

describeEachBackend('hostile arguments', (b) => {
  test(`${CALLS} random calls end in a value, KvmError, TypeError or RangeError`, () => {
    const fdsBefore = readdirSync('/proc/self/fd').length;
    const stats: Record<string, number> = {};
    let calls = 0;
    fc.assert(
      fc.property(fc.array(callArb, { minLength: CALLS_PER_PROPERTY, maxLength: CALLS_PER_PROPERTY }), (seq) => {
        const kvm = b.open();
        const w: World = { kvm, vms: [], vcpus: [], memories: [], stats };
        // A standard VM among the fuzzed ones, so calls reach deep states too.
        const vm = kvm.createVm();
        vm.enableDirtyRing(kvm.dirtyRingLimits().bytesFor(256));
        const mem = vm.createMemory(4 << 20);
        vm.setUserMemoryRegion({ slot: 0, memory: mem, flags: MemFlag.LogDirtyPages });
        w.vms.push(vm);
        w.memories.push(mem);
        w.vcpus.push(vm.createVcpu(0));
        try {
          for (const call of seq) {
            calls++;
            try {
              call.run(w);
              stats.ok = (stats.ok ?? 0) + 1;
            } catch (e) {
              const name = (e as Error)?.name;
              if (!OK_ERRORS.has(name)) throw new Error(`${call.name} threw ${String(e)} (${name})`);
              expect(typeof (e as Error).message).toBe('string');
              expect((e as Error).message.length).toBeGreaterThan(0);
              if (name === 'KvmError') expect((e as { errno: number }).errno).toBeLessThan(0);
              stats[name] = (stats[name] ?? 0) + 1;
            }
          }
        } finally {
          kvm.close();
        }
      }),
      { numRuns: Math.ceil(CALLS / CALLS_PER_PROPERTY) },
    );
    expect(calls).toBeGreaterThanOrEqual(CALLS);
    expect(readdirSync('/proc/self/fd').length).toBe(fdsBefore);
    // Every outcome occurred: the fuzzer reached both successful and refused calls.
    expect(stats.ok).toBeGreaterThan(0);
    expect(stats.TypeError).toBeGreaterThan(0);
    expect(stats.RangeError).toBeGreaterThan(0);
    expect(stats.KvmError).toBeGreaterThan(0);
  });
});
