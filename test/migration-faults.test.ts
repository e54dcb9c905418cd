// A live migration between processes survives either side dying: SIGKILL the destination or
// the source at random moments. A counter guest sends every increment to an output client
// here, which must see 1, 2, 3, ... with no gap and no repeat across it all.
//
//   destination killed: before the handover the source reports 'failed' and its guest counts
//     on; after it the destination owned the guest (and took it with it)
//   source killed: before the handover the destination starts nothing and exits non-zero
//     with the reason; after it the destination's guest counts on
//
// npm test runs a few kills per side and backend; `npm run test:migration-faults` runs 20.
import { OutputClient } from '../lib/checkpoint/output';
import { describeEachBackend } from './helpers/backends';
import { killPeers, startPair, type Peer } from './helpers/migration';

const KILLS = Number(process.env.MIGRATION_KILLS ?? 3);

interface Outcome { side: 'destination' | 'source'; delayMs: number; handedOver: boolean; outputs: number }

async function trial(backend: string, side: Outcome['side'], delayMs: number): Promise<Outcome> {
  const client = new OutputClient();
  const port = await client.listen(0);
  try {
    // A counter and a vCPU rewriting 1,024 pages, sent at 20 MB/s with a 5 ms downtime limit:
    // about 2 s of rounds of a few MiB (max-rounds ends them); the kills fall before, during and after the handover.
    const { src, dst } = await startPair({
      backend, dataPages: 4096, outputClient: port, runMs: 50, resumeMs: 300,
      workloads: [{ kind: 'counter', page: 512 }, { kind: 'stride', firstPage: 1024, pages: 1024, stridePages: 3 }],
      downtimeLimitMs: 5, maxBandwidthMBps: 20, maxRounds: 6,
    }, {}, { acceptTimeoutMs: 5000 });
    await client.waitFor(5);
    await new Promise((r) => setTimeout(r, delayMs));
    const victim: Peer = side === 'destination' ? dst : src;
    const other: Peer = side === 'destination' ? src : dst;
    await victim.kill();
    let handedOver: boolean;
    if (side === 'destination') {
      const stats = await src.wait<{ stats: { status: string; error?: string } }>('stats');
      handedOver = stats.stats.status === 'completed';
      if (!handedOver) {
        expect(stats.stats.status).toBe('failed');
        expect(stats.stats.error).toMatch(/destination|cannot reach/);
        // the source's guest went on: more outputs after the kill, from the same counter
        const before = client.next;
        const resumed = await src.wait<{ check: { ok: boolean }; outputs: number }>('resumed-here');
        expect(resumed.check.ok).toBe(true);
        await client.waitFor(resumed.outputs);
        expect(client.next).toBeGreaterThan(before);
      }
    } else {
      await other.exited;
      handedOver = other.events.some((e) => e.ev === 'ran-on');
      if (!handedOver) {
        // nothing started: the destination said why and exited non-zero
        const failed = other.events.find((e) => e.ev === 'failed');
        expect(String(failed?.message)).toMatch(/source/);
        expect(other.exit?.code).toBe(1);
      }
    }
    await Promise.all([src.exited, dst.exited]);
    expect(client.violations).toEqual([]);
    const bad = client.values.findIndex((v, i) => v !== i + 1);
    expect(bad).toBe(-1);
    return { side, delayMs, handedOver, outputs: client.next };
  } finally {
    await killPeers();
    await client.close();
  }
}

describeEachBackend('live migration: either side killed at a random moment', (b) => {
  test.each(['destination', 'source'] as const)(`${KILLS} kills of the %s: no partial guest, no lost or repeated output`, async (side) => {
    const outcomes: Outcome[] = [];
    for (let k = 0; k < KILLS; k++) outcomes.push(await trial(b.name, side, Math.floor(Math.random() * 2500)));
    console.log(`${b.name}, ${side} killed: ${JSON.stringify(outcomes)}`);
    expect(outcomes).toHaveLength(KILLS);
  }, 60_000 + KILLS * 20_000);
});
