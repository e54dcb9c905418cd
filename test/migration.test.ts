// Live migration between two processes over loopback TCP (lib/checkpoint/migration.ts and
// incoming.ts), on each backend and on the emulated PML host: the destination's machine,
// complete and before it resumes, equals the source's stopped one (every non-zero page,
// every register), and its guest then runs on.
import { describeEachBackend } from './helpers/backends';
import { describeNative } from './helpers/native';
import { killPeers, startPair, type PeerState } from './helpers/migration';

const stride = (firstPage: number, pages: number, stridePages = 1) => ({ kind: 'stride', firstPage, pages, stridePages });
const random = (firstPage: number, spanPages: number, pagesPerEpoch: number, seed: number) => ({ kind: 'random', firstPage, spanPages, pagesPerEpoch, seed });

describeEachBackend('live migration between processes', (b) => {
  const common = { backend: b.name, pml: b.pml ?? false };
  afterEach(() => killPeers());

  test.each([
    ['1 vCPU, stride', [stride(512, 64, 30)]],
    ['2 vCPUs, random and stride', [random(512, 2000, 100, 9), stride(3000, 32, 4)]],
    ['4 vCPUs', [stride(512, 16), stride(1000, 16, 2), random(1500, 500, 40, 3), stride(2500, 8, 8)]],
  ])('%s: the destination equals the stopped source, then runs on', async (_name, workloads) => {
    const { src, dst } = await startPair({ ...common, dataPages: 4096, workloads, runMs: 100 });
    const [stopped, complete, stats, ran] = await Promise.all([
      src.wait<{ state: PeerState }>('stopped'), dst.wait<{ state: PeerState }>('complete'),
      src.wait<{ stats: { status: string; rounds: unknown[]; downtimeMs: number } }>('stats'), dst.wait<{ check: { ok: boolean; problems: string[] } }>('ran-on'),
    ]);
    expect(stats.stats.status).toBe('completed');
    expect(complete.state).toEqual(stopped.state);
    expect(stopped.state.regs).toHaveLength(workloads.length);
    expect(ran.check).toMatchObject({ ok: true, problems: [] });
    expect(stats.stats.downtimeMs).toBeGreaterThan(0);
    await Promise.all([src.exited, dst.exited]);
    expect([src.exit, dst.exit]).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
  });
}, { pml: true });

describe('live migration between processes, emulated architectures', () => {
  afterEach(() => killPeers());

  test('arm64 with KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: writes made without a vCPU arrive through the backup bitmap, read last', async () => {
    const { src, dst } = await startPair({ backend: 'emulator', arch: 'arm64', dataPages: 2048, workloads: [stride(512, 32, 8), random(1200, 600, 30, 5)], deviceWrites: true });
    const [stopped, complete, stats, ran] = await Promise.all([
      src.wait<{ state: PeerState }>('stopped'), dst.wait<{ state: PeerState }>('complete'),
      src.wait<{ stats: { status: string; mode: string; arch: string } }>('stats'), dst.wait<{ check: { ok: boolean } }>('ran-on'),
    ]);
    expect(stats.stats).toMatchObject({ status: 'completed', mode: 'ring', arch: 'arm64' });
    expect(complete.state).toEqual(stopped.state);
    expect(ran.check.ok).toBe(true);
  });

  test('s390x: the CMMA storage attributes travel beside the pages (migration mode, GET drained each round, SET at the destination)', async () => {
    const { src, dst } = await startPair({ backend: 'emulator', arch: 's390x', dataPages: 2048, workloads: [stride(512, 32, 8)], essa: true, runMs: 50 });
    const [stopped, complete, stats, ran] = await Promise.all([
      src.wait<{ state: PeerState }>('stopped'), dst.wait<{ state: PeerState }>('complete'),
      src.wait<{ stats: { status: string; mode: string; storageAttrs: number } }>('stats'), dst.wait<{ check: { ok: boolean } }>('ran-on'),
    ]);
    expect(stats.stats).toMatchObject({ status: 'completed', mode: 'bitmap' });
    // migration mode marks every page CMMA-dirty: the first drain alone sends them all
    expect(stats.stats.storageAttrs).toBeGreaterThanOrEqual((2 << 20) / 4096 + 2048);
    expect(stopped.state.attrs).toMatch(/^[0-9a-f]{64}$/);
    expect(complete.state).toEqual(stopped.state);
    expect(ran.check.ok).toBe(true);
  });
});

describeEachBackend('live migration of a guest that dirties faster than the link', (b) => {
  afterEach(() => killPeers());
  // 8 MiB of random writes at full speed, sent whole (no delta encoding: these workloads change
  // 8 bytes of a page, real guests more) at 40 MB/s with a 100 ms downtime limit: every round
  // finds the whole span dirty again (about 200 ms of sending) unless the guest is slowed.
  const config = (throttle: string, maxRounds: number) => ({
    backend: b.name, dataPages: 4096, runMs: 100, throttle, maxRounds, downtimeLimitMs: 100, maxBandwidthMBps: 40, delta: false,
    workloads: [random(512, 2048, 256, 5)],
  });
  const run = async (throttle: string, maxRounds: number) => {
    const { src, dst } = await startPair(config(throttle, maxRounds));
    const [{ stats }, ran] = await Promise.all([
      src.wait<{ stats: { status: string; converged: string; maxThrottlePercent: number; dirtyLimitMBps: number | null; rounds: { pages: number }[] } }>('stats'),
      dst.wait<{ check: { ok: boolean } }>('ran-on'),
    ]);
    expect(stats.status).toBe('completed');
    expect(ran.check.ok).toBe(true);
    return stats;
  };

  test('without a throttle it never converges: max-rounds ends it', async () => {
    const s = await run('none', 12);
    expect([s.converged, s.maxThrottlePercent, s.dirtyLimitMBps]).toEqual(['max-rounds', 0, null]);
  });

  test('auto-converge: the CPU throttle grows until the pages left fit the downtime limit', async () => {
    const s = await run('auto-converge', 40);
    expect(s.converged).toBe('downtime-limit');
    expect(s.maxThrottlePercent).toBeGreaterThanOrEqual(20);
  });

  test('dirty-limit: each vCPU held to a quota until the pages left fit the downtime limit', async () => {
    const s = await run('dirty-limit', 40);
    expect(s.converged).toBe('downtime-limit');
    expect(s.dirtyLimitMBps).toBeGreaterThan(0);
  });
});

describe('live migration across a ring overfill (emulator, as a PVM host overfills)', () => {
  afterEach(() => killPeers());
  test.each([false, true])('PML host %s: the round that found the ring full is a full copy; the destination equals the source', async (pml) => {
    const { src, dst } = await startPair({ backend: 'emulator', pml, dataPages: 4096, workloads: [stride(512, 64, 30)], overfill: true, downtimeLimitMs: 0.001, maxRounds: 4 });
    const [stopped, complete, { stats }] = await Promise.all([
      src.wait<{ state: PeerState }>('stopped'), dst.wait<{ state: PeerState }>('complete'),
      src.wait<{ stats: { status: string; overfills: number; rounds: { round: number; overfilled: boolean; pages: number }[] } }>('stats'),
    ]);
    expect(stats.status).toBe('completed');
    expect(stats.overfills).toBe(1);
    const full = stats.rounds.filter((r) => r.overfilled);
    expect(full).toHaveLength(1);
    expect(full[0].pages).toBe(4096); // every page of the logged slot (the emulator's memory may hold data anywhere)
    expect(complete.state).toEqual(stopped.state);
  });
});

describeNative('live migration of a large, sparse guest', () => {
  afterEach(() => killPeers());
  test('64 GiB that holds 100 MiB: about 100 MiB cross, and neither process holds much more than that', async () => {
    const pages = 25_600; // 100 MiB, spread over all 64 GiB
    const { src, dst } = await startPair({ backend: 'native', dataPages: 64 * 262_144 - 512, workloads: [stride(2 ** 20, 64, 4096)], prefillPages: pages, runMs: 100 });
    const [stopped, complete, s, d] = await Promise.all([
      src.wait<{ state: PeerState }>('stopped'), dst.wait<{ state: PeerState }>('complete'),
      src.wait<{ stats: { status: string; transferredBytes: number; pages: number }; rssMiB: number }>('stats'),
      dst.wait<{ check: { ok: boolean }; rssMiB: number }>('ran-on'),
    ]);
    expect(s.stats.status).toBe('completed');
    expect(complete.state).toEqual(stopped.state);
    expect(d.check.ok).toBe(true);
    // the pages that hold data (a few collide: fewer than asked), the stride's 64 and the harness's: sent about once
    expect(stopped.state.pages).toBeGreaterThan(pages * 0.99);
    expect(s.stats.transferredBytes).toBeGreaterThan(stopped.state.pages * 4096);
    expect(s.stats.transferredBytes).toBeLessThan(1.2 * (stopped.state.pages + 64 * 4) * 4096);
    expect(s.rssMiB).toBeLessThan(600);
    expect(d.rssMiB).toBeLessThan(600);
    console.log(`64 GiB guest, ${stopped.state.pages} pages of data: ${(s.stats.transferredBytes / 2 ** 20).toFixed(1)} MiB sent; RSS source ${s.rssMiB.toFixed(0)} MiB, destination ${d.rssMiB.toFixed(0)} MiB`);
  });
});
