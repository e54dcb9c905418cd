// The dirty ring's size rules from the host (kvm.dirtyRingLimits(), lib/ring-limits.ts), and
// the emulated Intel host with PML that stands in for one (openKvm({ pml: true })):
// kernel-semantics.md rules 6, 19, 20 and 45.
import { Cap, DirtyRingLimits, ExitReason, minRingBytes, openKvm, Workload } from '../lib';
import { probeRingLimits } from '../lib/ring-limits';
import { describeEachBackend, expectKvmError } from './helpers/backends';
import { makeGuest } from './helpers/guest';

const MIB = 1 << 20;

describe('DirtyRingLimits', () => {
  test('64 reserved entries (no PML): 4 KiB to 1 MiB, soft limit entries - 64', () => {
    const l = new DirtyRingLimits(64, MIB);
    expect(l.toJSON()).toEqual({ reservedEntries: 64, minBytes: 4096, maxBytes: MIB, source: 'backend' });
    expect(l.supported).toBe(true);
    expect([2048, 4096, 6144, 8192, MIB, 2 * MIB].map((b) => l.accepts(b))).toEqual([false, true, false, true, true, false]);
    expect(l.softLimit(4096)).toBe(192);
    expect(l.softLimit(MIB)).toBe(65472);
    expect([0, 192, 193, 448, 65472].map((n) => l.bytesFor(n))).toEqual([4096, 4096, 8192, 8192, MIB]);
    expect(() => l.bytesFor(65473)).toThrow(RangeError);
    expect(() => l.softLimit(2048)).toThrow(RangeError);
  });

  test('576 reserved entries (Intel PML): 16 KiB is the smallest ring, soft limit entries - 576', () => {
    const l = new DirtyRingLimits(576, MIB);
    expect(l.minBytes).toBe(16384);
    expect([4096, 8192, 16384].map((b) => l.accepts(b))).toEqual([false, false, true]);
    expect(l.softLimit(16384)).toBe(448);
    expect(l.softLimit(MIB)).toBe(64960);
    expect([1, 448, 449, 64960].map((n) => l.bytesFor(n))).toEqual([16384, 16384, 32768, MIB]);
    expect(() => l.bytesFor(64961)).toThrow(/exceed the largest dirty ring's soft limit here \(65536 entries, 576 reserved\)/);
  });

  test('minRingBytes: the smallest power of two >= max(4096, reserved * 16)', () => {
    expect([0, 64, 256, 257, 576, 1024, 1025].map(minRingBytes)).toEqual([4096, 4096, 4096, 8192, 16384, 16384, 32768]);
  });

  test('no ring: unsupported, and bytesFor says so', () => {
    const l = new DirtyRingLimits(64, 0);
    expect(l.supported).toBe(false);
    expect(l.accepts(4096)).toBe(false);
    expect(() => l.bytesFor(1)).toThrow(/no dirty ring/);
  });

  test('bad arguments are RangeErrors', () => {
    expect(() => new DirtyRingLimits(-1, MIB)).toThrow(RangeError);
    expect(() => new DirtyRingLimits(64, 1.5)).toThrow(RangeError);
    expect(() => new DirtyRingLimits(64, MIB).bytesFor(-1)).toThrow(RangeError);
  });
});

describe('probeRingLimits: the backend\'s word checked against the kernel\'s refusals', () => {
  const probe = (smallest: number, told: number | undefined, max = MIB) => {
    const tried: number[] = [];
    const limits = probeRingLimits({
      checkExtension: (cap) => (cap === Cap.DirtyLogRingAcqRel || cap === Cap.DirtyLogRing ? max : 0),
      reservedEntries: told,
      tryRing: (bytes) => (tried.push(bytes), bytes >= smallest),
    });
    return { limits: limits.toJSON(), tried };
  };

  test('they agree: the backend\'s reserve, after as few tries as the smallest ring takes', () => {
    expect(probe(4096, 64)).toEqual({ limits: { reservedEntries: 64, minBytes: 4096, maxBytes: MIB, source: 'backend' }, tried: [4096] });
    expect(probe(16384, 576)).toEqual({ limits: { reservedEntries: 576, minBytes: 16384, maxBytes: MIB, source: 'backend' }, tried: [4096, 8192, 16384] });
  });

  test('they disagree, or the backend cannot tell: the largest reserve the kernel\'s answers allow', () => {
    // told 64, but 4 and 8 KiB are refused: at most 1024 reserved (a soft limit never above the real one)
    expect(probe(16384, 64).limits).toEqual({ reservedEntries: 1024, minBytes: 16384, maxBytes: MIB, source: 'probed' });
    expect(probe(4096, undefined).limits).toEqual({ reservedEntries: 256, minBytes: 4096, maxBytes: MIB, source: 'probed' });
  });

  test('no ring cap: unsupported, no VM made', () => {
    expect(probe(4096, 64, 0)).toEqual({ limits: { reservedEntries: 64, minBytes: 4096, maxBytes: 0, source: 'backend' }, tried: [] });
  });
});

describe('openKvm({ pml: true }): the emulated Intel host with PML', () => {
  test('says which host it models; only for the emulator on x86_64', () => {
    const kvm = openKvm({ backend: 'emulator', pml: true });
    try {
      expect(kvm.hostInfo).toMatchObject({ flavour: 'emulator', pml: true });
      expect(kvm.hostInfo.description).toContain('576 reserved entries, an Intel host with PML');
      expect(kvm.dirtyRingLimits().toJSON()).toEqual({ reservedEntries: 576, minBytes: 16384, maxBytes: MIB, source: 'backend' });
    } finally {
      kvm.close();
    }
    expect(openKvm({ backend: 'emulator' }).hostInfo.pml).toBe(false);
    expect(() => openKvm({ backend: 'emulator', arch: 'arm64', pml: true })).toThrow(RangeError);
    expect(() => openKvm({ backend: 'native', pml: true })).toThrow(/modelled host/);
    expect(() => openKvm({ backend: 'emulator', pml: 1 as unknown as boolean })).toThrow(TypeError);
    const auto = openKvm({ pml: true });
    expect([auto.backend, auto.fallbackReason]).toEqual(['emulator', 'pml: true asks for the emulated Intel PML host']);
    auto.close();
  });

  test('4096 and 8192 bytes EINVAL, 16384 accepted; every other x86 answer unchanged', () => {
    const pml = openKvm({ backend: 'emulator', pml: true });
    const plain = openKvm({ backend: 'emulator' });
    try {
      for (const bytes of [4096, 8192]) expectKvmError(() => pml.createVm().enableDirtyRing(bytes), 'EINVAL', 'KVM_ENABLE_CAP');
      expect(pml.createVm().enableDirtyRing(16384)).toBe(Cap.DirtyLogRingAcqRel);
      for (const cap of [Cap.DirtyLogRing, Cap.DirtyLogRingAcqRel, Cap.DirtyLogRingWithBitmap, Cap.ManualDirtyLogProtect2, Cap.NrMemslots, Cap.MaxVcpus]) {
        expect([cap, pml.checkExtension(cap)]).toEqual([cap, plain.checkExtension(cap)]);
      }
      expect(pml.getVcpuMmapSize()).toBe(plain.getVcpuMmapSize());
    } finally {
      pml.close();
      plain.close();
    }
  });

  test.each([[16384, 448], [32768, 1472]])('a %i-byte ring exits DirtyRingFull at exactly %i entries, that store retired', (bytes, soft) => {
    const kvm = openKvm({ backend: 'emulator', pml: true });
    try {
      const g = makeGuest(kvm, { ringBytes: bytes, dataPages: 2048 });
      g.vcpu.load(Workload.stride({ firstPage: 512, pages: soft + 100 }));
      expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull);
      expect(g.vcpu.dirtyRing!.pending()).toBe(soft);
      expect([g.word(512 + soft - 1), g.word(512 + soft)]).toEqual([1n, 0n]);
      expect(g.vcpu.run().reason).toBe(ExitReason.DirtyRingFull); // no reset: at once, nothing pushed
      expect(g.vcpu.dirtyRing!.pending()).toBe(soft);
    } finally {
      kvm.close();
    }
  });
});

describeEachBackend('kvm.dirtyRingLimits()', (b) => {
  test('the backend\'s reserve, confirmed by the kernel: 64, or 64 + 512 where the host logs through PML', () => {
    const kvm = b.open();
    try {
      const l = kvm.dirtyRingLimits();
      expect(l.source).toBe('backend');
      expect(l.reservedEntries).toBe(64 + (kvm.hostInfo.pml ? 512 : 0));
      expect(l.maxBytes).toBe(kvm.checkExtension(Cap.DirtyLogRingAcqRel));
      expect(kvm.dirtyRingLimits()).toBe(l); // asked once
      expectKvmError(() => kvm.createVm().enableDirtyRing(l.minBytes / 2), 'EINVAL', 'KVM_ENABLE_CAP');
      expect(kvm.createVm().enableDirtyRing(l.minBytes)).toBe(Cap.DirtyLogRingAcqRel);
      kvm.close();
      expectKvmError(() => kvm.dirtyRingLimits(), 'EBADF');
    } finally {
      kvm.close();
    }
  });
}, { pml: true });
