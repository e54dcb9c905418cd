// The stream's page coding run once per process on scratch memory, before any downtime. A
// migration encodes delta pages in two rounds only (round 0 and the final one, which the guest
// waits for) and its destination decodes them as seldom, so without this the final round runs
// the writer's and the reader's loops in V8's unoptimised tiers: measured here, finish() of 64
// pages took 350-600 µs cold against 80-150 µs warm, and the destination's decode 0.5-4 ms.
import type { MachineLayout } from './records';
import { ReplicaImage } from './image';
import { PageSet } from './tracker';
import { StreamWriter } from './writer';

/** Epochs and pages per epoch of the warm-up: enough loop iterations for V8 to optimise them. */
const WARM_EPOCHS = 48;
const WARM_PAGES = 64;
const WARM_SLOT_PAGES = 256;
const PAGE = 4096;

let warm = false;

/** Runs a short delta-encoded stream from a StreamWriter into a ReplicaImage, once per process. */
export function warmUpStream(): void {
  if (warm) return;
  warm = true;
  const bytes = Buffer.alloc(WARM_SLOT_PAGES * PAGE);
  const layout: MachineLayout = { pageSize: PAGE, arch: 'x86_64', slots: [{ slot: 0, guestPhysAddr: 0, size: bytes.length, logged: true }], vcpus: [] };
  const writer = new StreamWriter(PAGE, { delta: { cacheBytes: bytes.length } });
  const image = new ReplicaImage(() => [Buffer.alloc(bytes.length)]);
  image.push(writer.header(layout));
  const pages = new PageSet([WARM_SLOT_PAGES]);
  const slots = [{ gfn: 0, bytes }];
  for (let e = 0; e < WARM_EPOCHS; e++) {
    pages.clear();
    for (let i = 0; i < WARM_PAGES; i++) {
      const p = (i * 3 + e) % WARM_SLOT_PAGES;
      pages.add(0, p);
      // a few words changed per page, as a guest's stores leave it: deltas, with some whole and unchanged pages
      bytes.writeUInt32LE(e * WARM_PAGES + i + 1, p * PAGE + (e % 16) * 8);
      if (i % 16 === 0) bytes.fill(e, p * PAGE, (p + 1) * PAGE);
    }
    const buf = writer.finish(writer.epoch(e, [], new Uint32Array(0), 0, pages, slots, 0, 0));
    image.push(buf);
    writer.pool.release(buf);
  }
}
