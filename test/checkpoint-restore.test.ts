// Checkpoint to a file, read it back, rebuild the VM and let it run on: on each backend and in
// each dirty-tracking mode the kernel offers, with the same pages in every mode.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitReason, Workload, type Kvm, type Vcpu } from '../lib';
import { Checkpointer, type CheckpointSink, type EpochInfo } from '../lib/checkpoint/checkpointer';
import { FrameDecoder, FrameType } from '../lib/checkpoint/format';
import { createMachine, hasDirtyRing, restoreMachine, type DirtyMode } from '../lib/checkpoint/machine';
import { OutputCommit } from '../lib/checkpoint/output';
import { decodeEpoch } from '../lib/checkpoint/records';
import { FileSink, readCheckpointFile } from '../lib/checkpoint/transport';
import { describeEachBackend } from './helpers/backends';

const EPOCHS = 40;

function runToExit(v: Vcpu) {
  // The checkpointer and migrate() leave no kick pending: the next KVM_RUN runs the guest.
  const e = v.run();
  expect(e.reason).not.toBe(ExitReason.Intr);
  return e;
}

function modes(kvm: Kvm): DirtyMode[] {
  return hasDirtyRing(kvm) ? ['ring', 'bitmap', 'bitmap-clear'] : ['bitmap', 'bitmap-clear'];
}

/** Two vCPUs: random writes (pages repeat within an epoch: the ring may list them twice) and a stride. */
function workloads() {
  return [
    Workload.random({ firstPage: 512, spanPages: 128, pagesPerEpoch: 40, seed: 7 }),
    Workload.stride({ firstPage: 700, pages: 16, stridePages: 2 }),
  ];
}

/** The sorted gfns of each epoch of a stream file. */
async function pagesPerEpoch(path: string): Promise<string[]> {
  const bytes = require('node:fs').readFileSync(path) as Buffer;
  return new FrameDecoder().push(bytes)
    .filter((f) => f.type === FrameType.Epoch)
    .map((f) => decodeEpoch(f, 4096).gfns.sort((a, b) => a - b).join(','));
}

describeEachBackend('checkpoint to a file and restore', (b) => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kvm-dirty-ckpt-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('every mode: the file rebuilds the VM exactly, and the rebuilt VM runs the next epoch as the original does', async () => {
    const kvm = b.open();
    const seen: Record<string, string[]> = {};
    try {
      for (const mode of modes(kvm)) {
        const m = createMachine(kvm, { dataPages: 512, vcpus: 2, mode, workloads: workloads() });
        const path = join(dir, `${mode}.kdck`);
        // No time budget to speak of: every epoch ends at the workload's own OUT, on any host load.
        // plain Epoch frames, whose pages this test lists (pagesPerEpoch)
        const stats = await new Checkpointer({ machine: m, sink: new FileSink(path), epochMs: 60_000, delta: false }).run({ epochs: EPOCHS });
        expect(stats).toMatchObject({ epochs: EPOCHS, committed: EPOCHS, mode });

        const { image, error } = await readCheckpointFile(path);
        expect(error).toBeNull();
        expect(image.finished).toBe(true);
        expect(image.epoch).toBe(EPOCHS);
        m.slots.forEach((s, i) => expect(image.memory[i].equals(s.bytes)).toBe(true));
        expect(image.regs.map((r) => r.regs)).toEqual(m.vcpus.map((v) => v.getRegs()));

        const r = restoreMachine(kvm, image, mode);
        try {
          expect(r.vcpus.map((v) => v.getRegs())).toEqual(m.vcpus.map((v) => v.getRegs()));
          // One more epoch on both: the same exits and the same memory.
          for (let i = 0; i < 2; i++) expect(runToExit(r.vcpus[i])).toEqual(runToExit(m.vcpus[i]));
          r.slots.forEach((s, i) => expect(s.bytes.equals(m.slots[i].bytes)).toBe(true));
          expect(r.slots[1].bytes.readBigUInt64LE((700 - 512) * 4096)).toBe(BigInt(EPOCHS + 1));
        } finally {
          r.close();
          m.close();
        }
        seen[mode] = await pagesPerEpoch(path);
      }
      // Ring (deduplicated), bitmap and bitmap with manual protect: the same pages every epoch.
      const [first, ...rest] = Object.values(seen);
      expect(first).toHaveLength(EPOCHS + 1);
      for (const other of rest) expect(other).toEqual(first);
    } finally {
      kvm.close();
    }
  });

  test('how epochs end: the time budget (kick), an output count, the ring filling up', async () => {
    const kvm = b.open();
    try {
      const run = async (workload: Workload, opts: { epochMs?: number; outputsPerEpoch?: number }, epochs: number) => {
        const m = createMachine(kvm, { dataPages: 16, workloads: workload });
        const seen: EpochInfo[] = [];
        const path = join(dir, 'ends.kdck');
        await new Checkpointer({ machine: m, sink: new FileSink(path), ...opts, onEpoch: (e) => seen.push(e) }).run({ epochs });
        const { image } = await readCheckpointFile(path);
        return { m, seen, image };
      };
      // spin never exits by itself: every epoch is ended by vcpu.kick() from the budget timer.
      const spin = await run(Workload.spin(), { epochMs: 5 }, 4);
      expect(spin.seen.map((e) => [e.reason, e.pages, e.outputs])).toEqual(Array(4).fill(['budget', 0, 0]));
      spin.m.close();
      // counter: an epoch ends after 7 outputs; the image's counter is 7 per epoch.
      const counted = await run(Workload.counter({ page: 512 }), { outputsPerEpoch: 7, epochMs: 60_000 }, 5);
      expect(counted.seen.map((e) => [e.reason, e.pages, e.outputs])).toEqual(Array(5).fill(['outputs', 1, 7]));
      expect(counted.image.readU64(512 * 4096)).toBe(35n);
      counted.m.close();
      // counter with no output limit: the budget ends the epoch, or the ring does first where the
      // host logs every write (DESIGN §5: then one page fills the ring, KVM_EXIT_DIRTY_RING_FULL).
      const long = await run(Workload.counter({ page: 512 }), { epochMs: 20 }, 3);
      const softLimit = (long.m.vcpus[0].dirtyRing?.entries ?? Infinity) - 64;
      for (const e of long.seen) {
        // One page, or none when the budget's kick came before the guest's first write (a busy host).
        expect(e.pages).toBeLessThanOrEqual(1);
        if (e.outputs > 0) expect(e.pages).toBe(1);
        if (e.reason === 'ring-full') expect(e.ringEntries).toBeGreaterThanOrEqual(softLimit);
        else expect([e.reason, e.ringEntries < softLimit]).toEqual(['budget', true]);
      }
      const total = long.seen.reduce((n, e) => n + e.outputs, 0);
      expect(long.image.readU64(512 * 4096)).toBe(BigInt(total));
      long.m.close();
    } finally {
      kvm.close();
    }
  });

  test('after stop() the vCPUs are left ready: no kick is pending, the next KVM_RUN runs the guest, their run watch is theirs again', async () => {
    const kvm = b.open();
    try {
      for (let i = 0; i < 5; i++) {
        const m = createMachine(kvm, { dataPages: 64, workloads: Workload.stride({ firstPage: 512, pages: 8 }) });
        m.vcpus[0].setRunWatch(30 + i);
        const ck = new Checkpointer({ machine: m, sink: new FileSink(join(dir, 'stop.kdck')), epochMs: 1, runWatchUs: i });
        setTimeout(() => ck.stop(), 3 + i);
        const stats = await ck.run();
        expect(m.vcpus[0].setRunWatch(200)).toBe(30 + i);
        const exit = m.vcpus[0].run();
        expect(exit.reason).toBe(ExitReason.Io);
        expect(m.slots[1].bytes.readBigUInt64LE(0)).toBe(m.vcpus[0].getRegs().rbx);
        expect(stats.epochs).toBeGreaterThan(0);
        m.close();
      }
    } finally {
      kvm.close();
    }
  });

  test('a ring smaller than one run of the workload is refused', () => {
    const kvm = b.open();
    try {
      if (!hasDirtyRing(kvm)) return;
      // the host's smallest ring (256 entries, 64 reserved; with PML 1024 and 576) and a workload writing past its soft limit
      const limits = kvm.dirtyRingLimits();
      const pages = limits.softLimit(limits.minBytes) + 1;
      const m = createMachine(kvm, { dataPages: 2048, mode: 'ring', ringBytes: limits.minBytes, workloads: Workload.stride({ firstPage: 512, pages }) });
      expect(() => new Checkpointer({ machine: m, sink: new FileSink(join(dir, 'small.kdck')) }))
        .toThrow(`writes up to ${pages} pages; its ring has ${limits.minBytes / 16} entries (${limits.reservedEntries} reserved)`);
      m.close();
    } finally {
      kvm.close();
    }
  });

  test('a truncated file restores its last complete epoch', async () => {
    const kvm = b.open();
    try {
      const m = createMachine(kvm, { dataPages: 256, workloads: Workload.stride({ firstPage: 512, pages: 8 }) });
      const path = join(dir, 'cut.kdck');
      await new Checkpointer({ machine: m, sink: new FileSink(path), epochMs: 60_000 }).run({ epochs: 10 });
      const fs = require('node:fs') as typeof import('node:fs');
      fs.truncateSync(path, fs.statSync(path).size - 100); // into epoch 10's Commit
      const { image, error } = await readCheckpointFile(path);
      expect(error?.code).toBe('ETRUNCATED');
      expect(image.epoch).toBe(9);
      const r = restoreMachine(kvm, image);
      const exit = runToExit(r.vcpus[0]);
      expect(exit.io).toMatchObject({ port: 0x10, value: 10 });
      expect(r.slots[1].bytes.readBigUInt64LE(0)).toBe(10n);
      r.close();
      m.close();
    } finally {
      kvm.close();
    }
  });

  test('output commit: the guest\'s outputs leave only after their epoch is acknowledged, in order', async () => {
    const kvm = b.open();
    try {
      const m = createMachine(kvm, { dataPages: 16, workloads: Workload.counter({ page: 512 }) });
      /** A sink that acknowledges only when told to. */
      const acks: (() => void)[] = [];
      let auto = false;
      let epochs = -1;
      const sink: CheckpointSink = {
        onAck: () => undefined,
        onFailure: () => undefined,
        send(buf, done) {
          done();
          for (let at = 0; at < buf.length; at += 36 + buf.readUInt32LE(at + 12)) {
            if (buf[at + 6] === FrameType.Commit) {
              const e = ++epochs;
              if (auto) queueMicrotask(() => sink.onAck(e));
              else acks.push(() => sink.onAck(e));
            }
          }
        },
        close: async () => undefined,
      };
      const released: number[] = [];
      const commit = new OutputCommit((first, packed, count) => {
        expect(first).toBe(released.length);
        for (let i = 0; i < count; i++) released.push(packed[2 * i + 1]);
      });
      const ck = new Checkpointer({ machine: m, sink, outputs: commit, outputsPerEpoch: 5, maxInFlight: 3, epochMs: 60_000 });
      const run = ck.run({ epochs: 6 });
      // base + epochs 1..3 sent and none acknowledged: more than maxInFlight, so the VM waits.
      await until(() => acks.length === 4);
      await new Promise((r) => setTimeout(r, 50));
      expect(ck.epoch).toBe(3);
      expect(acks).toHaveLength(4);
      expect(released).toEqual([]);
      expect(commit.waiting).toBe(15);
      acks[0]();
      acks[1]();
      await until(() => released.length === 5);
      expect(released).toEqual([1, 2, 3, 4, 5]);
      auto = true; // from now on every epoch is acknowledged as soon as it is sent
      acks.splice(0).forEach((ack) => ack());
      const stats = await run;
      expect(stats.outputs).toBe(30);
      expect(released).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      expect(m.slots[1].bytes.readBigUInt64LE(0)).toBe(30n);
      m.close();
    } finally {
      kvm.close();
    }
  });
}, { pml: true });

async function until(cond: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 1));
  }
}
