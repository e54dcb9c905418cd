// Pre-copy live migration, source and destination in one process.
//
//   round 0      the guest runs (runAsync in the background); arm the dirty log, copy every
//                non-zero page to the destination
//   round 1..n   the guest keeps running; after `roundMs` (or as soon as a vCPU's ring is
//                full), collect + re-arm the pages dirtied since the last round, THEN copy
//                them (tracker.ts: the order is what makes a copy taken under a running
//                guest correct), until a round's dirty set is under `thresholdPages` or
//                `maxRounds` rounds were made
//   stop-and-copy  kick the vCPUs, finish a pending OUT, collect the last dirty pages,
//                copy them with the registers: the destination is complete; downtime is
//                measured from the kick to the destination's registers being set
//
// The copy travels as the checkpoint stream (Header, one epoch per round, the final epoch
// with registers) into a ReplicaImage whose memory is the destination VM's guest memory.

import { ExitReason } from '../constants';
import type { Kvm } from '../kvm';
import { ReplicaImage } from './image';
import { describeMachine, forEachNonZeroPage, machineFromLayout, sameContents, setRegisters, type DirtyMode, type Machine } from './machine';
import { DirtyTracker } from './tracker';
import { StreamWriter, type SlotSource } from './writer';

export interface MigrateOptions {
  source: Machine;
  /** where the destination VM is made (may be the source's Kvm) */
  destination: Kvm;
  destinationMode?: DirtyMode | 'auto';
  /** stop-and-copy once a round dirtied fewer pages than this (default 256) */
  thresholdPages?: number;
  /** at most this many pre-copy rounds after the first full copy (default 8) */
  maxRounds?: number;
  /** how long the guest runs between rounds, ms (default 20) */
  roundMs?: number;
}

export interface MigrationRound {
  round: number;
  pages: number;
  ms: number;
}

export interface MigrationResult {
  destination: Machine;
  /** round 0 (the full copy), the pre-copy rounds, and last the stop-and-copy round */
  rounds: MigrationRound[];
  /** ms from stopping the source's vCPUs to the destination being complete */
  downtimeMs: number;
  /** why pre-copy ended */
  converged: 'threshold' | 'max-rounds';
  totalPages: number;
  bytes: number;
  /** the destination's memory equals the stopped source's, every slot, byte for byte */
  memoryEqual: boolean;
}

/**
 * Migrates the running guest of `source` to a new VM and returns it, stopped exactly where
 * the source stopped (the source stays stopped in the same state, for comparison).
 */
export async function migrate(o: MigrateOptions): Promise<MigrationResult> {
  const src = o.source;
  const threshold = o.thresholdPages ?? 256;
  const maxRounds = o.maxRounds ?? 8;
  const roundMs = o.roundMs ?? 20;
  const tracker = new DirtyTracker(src);
  const set = tracker.newPageSet();
  const slots: SlotSource[] = src.slots.map((s) => ({ gfn: s.layout.guestPhysAddr / 4096, bytes: s.bytes }));
  const writer = new StreamWriter(4096);
  let destination: Machine | null = null;
  const image = new ReplicaImage((layout) => {
    destination = machineFromLayout(o.destination, layout, o.destinationMode ?? 'auto');
    return destination.slots.map((s) => s.bytes);
  });
  let bytes = 0;
  const transfer = (buf: Buffer) => {
    bytes += buf.length;
    image.push(buf);
    writer.pool.release(buf);
  };
  const layout = describeMachine(src);
  transfer(writer.header(layout));

  // The guest runs in the background until told to stop; a vCPU with a full ring waits for the next round.
  let stopping = false;
  let ringFull: (() => void) | null = null;
  let ringFreed: Promise<void> = Promise.resolve();
  let freeRings: () => void = () => undefined;
  const newRound = () => (ringFreed = new Promise((r) => (freeRings = r)));
  newRound();
  const runners = src.vcpus.map(async (v) => {
    while (!stopping) {
      const exit = await v.runAsync();
      if (exit.reason === ExitReason.DirtyRingFull) {
        ringFull?.();
        await ringFreed;
      } else if (exit.reason !== ExitReason.Io && exit.reason !== ExitReason.Intr) {
        throw new Error(`vCPU ${v.id} stopped during migration: exit reason ${ExitReason[exit.reason] ?? exit.reason}`);
      }
    }
  });
  const failed = Promise.all(runners).then(() => undefined);
  failed.catch(() => undefined); // observed in the rounds' race and at the stop

  const rounds: MigrationRound[] = [];
  const round = (epoch: number, started: number, regs: { id: number; regs: import('../backend').Regs }[] = []) => {
    const buf = writer.finish(writer.epoch(epoch, regs, [], 0, set, slots, 0, 0));
    transfer(buf);
    rounds.push({ round: epoch, pages: set.count, ms: performance.now() - started });
  };

  let converged: MigrationResult['converged'] = 'max-rounds';
  try {
    // Round 0: arm the log, then copy every non-zero page (the guest writes on meanwhile).
    let t = performance.now();
    set.clear();
    tracker.collect(set);
    set.clear();
    src.slots.forEach((s, k) => forEachNonZeroPage(s, (p) => set.add(k, p)));
    round(0, t);
    for (let r = 1; r <= maxRounds; r++) {
      await Promise.race([new Promise((res) => setTimeout(res, roundMs)), new Promise<void>((res) => (ringFull = res)), failed]);
      ringFull = null;
      t = performance.now();
      set.clear();
      tracker.collect(set); // collect and re-arm; the contents are read below, after
      const release = freeRings;
      newRound();
      release();
      round(r, t);
      if (set.count < threshold) {
        converged = 'threshold';
        break;
      }
    }

    // Stop and copy.
    const stopAt = performance.now();
    stopping = true;
    for (const v of src.vcpus) v.kick();
    freeRings();
    await failed;
    // KVM_RUN with immediate_exit: completes an OUT the vCPU stopped on (as the checkpointer
    // does) and consumes the stop kick if it landed after the vCPU had stopped by itself.
    for (const v of src.vcpus) {
      v.kick();
      if (v.run().reason !== ExitReason.Intr) throw new Error(`vCPU ${v.id}: KVM_RUN with immediate_exit did not return EINTR`);
    }
    set.clear();
    tracker.collect(set);
    const regs = src.vcpus.map((v) => ({ id: v.id, regs: v.getRegs() }));
    round(rounds.length, stopAt, regs);
    image.end();
    const dest = destination as Machine | null;
    if (!dest || !image.restorable) throw new Error('the destination is incomplete');
    setRegisters(dest, image.layout!, image.regs);
    const downtimeMs = performance.now() - stopAt;
    const memoryEqual = src.slots.every((s, i) => sameContents(s, dest.slots[i]));
    return {
      destination: dest, rounds, downtimeMs, converged, bytes, memoryEqual,
      totalPages: rounds.reduce((n, r) => n + r.pages, 0),
    };
  } catch (e) {
    stopping = true;
    for (const v of src.vcpus) if (!v.closed) v.kick();
    freeRings();
    await failed.catch(() => undefined);
    (destination as Machine | null)?.close();
    throw e;
  }
}
