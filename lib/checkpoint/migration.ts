// Live migration to another process (another host): the source side, migrateTo().
//
//   setup        connect, Header, a Ping for the round-trip time; s390: migration mode on
//   round 0      arm the dirty log, start the guest (GuestRunner), send every page that may
//                hold data while it runs
//   round r      sync the dirty log (the runner harvests each vCPU's ring after every run and
//                now; or KVM_GET/CLEAR_DIRTY_LOG), re-arm, THEN copy what it found; each round
//                measures the bandwidth achieved (bytes / time to the destination's Ack) and
//                the dirty rate (pages found / time since the last sync)
//   converge     QEMU's rule: stop-and-copy once the pages found, at the measured bandwidth,
//                fit in downtimeLimitMs (default 300); a guest that dirties faster than the
//                link never gets there, so it is throttled (auto-converge: QEMU's growing
//                share of each 10 ms the vCPU is kept out of KVM_RUN; dirty-limit: a per-vCPU
//                DirtyLimit) and maxRounds ends it either way
//   stop-and-copy kick the vCPUs, finish a pending OUT, collect the last pages (arm64: the
//                WITH_BITMAP backup bitmap last of all), registers, End
//   handover     the destination resumes the guest and says Resumed; only then is the source
//                guest given up for good (the machine is closed) and Released sent, after
//                which the destination lets the guest's outputs out. Until Resumed arrives
//                the source keeps its guest, stopped: status 'failed' or 'cancelled', and
//                the caller may run it on.
//
// Downtime runs from the kick to the destination's guest running, measured across both
// sides without a common clock: the time to the Resumed frame, minus half the round trip,
// minus the destination's own delay before sending it.

import type { Socket } from 'node:net';
import { DirtyLimit } from '../dirtyrate/limit';
import { GuestRunner, type RunPolicy } from '../dirtyrate/runner';
import type { DirtyPages } from '../dirty-pages';
import type { Regs } from '../backend';
import { ControlKind, decodeControlFrame, type AttrRun } from './control';
import { FrameType, type Frame } from './format';
import { captureState, describeMachine, forEachNonZeroPage, type Machine } from './machine';
import { encodeStatePayload } from './state-frame';
import { Link, OutputTap, connectTo, drainStorageAttrs, parseTarget, type MigrationTarget } from './migration-link';
import { decodeErrorFrame, decodeU64Frame } from './records';
import { DirtyTracker, type PageSet } from './tracker';
import { warmUpStream } from './warm';
import { StreamWriter, type SlotSource, type StreamWriterOptions } from './writer';

export type MigrationStatus = 'completed' | 'failed' | 'cancelled';
export type ThrottleMode = 'none' | 'auto-converge' | 'dirty-limit';

export interface MigrateToOptions {
  /**
   * The runner that runs the guest now (a GuestRunner of this machine, started): the migration
   * adds its policies to it, so the guest does not pause when the migration starts, and after
   * a migration that did not complete it still runs (or runs again: start()) here. Without
   * one, the migration starts a runner of its own.
   */
  runner?: GuestRunner;
  /** stop-and-copy once the pages left fit in this many ms at the measured bandwidth (default 300, QEMU's) */
  downtimeLimitMs?: number;
  /** cap on the send rate in MB/s (10^6 bytes per second); default: none */
  maxBandwidthMBps?: number;
  /**
   * how a guest that dirties faster than the link is slowed (default 'auto-converge'; 'none':
   * it is not; 'dirty-limit': a DirtyLimit per vCPU, ring mode only, halved while it does not converge)
   */
  throttle?: ThrottleMode;
  /** pre-copy rounds after the full copy before stop-and-copy happens anyway (default 30) */
  maxRounds?: number;
  /**
   * delta-encode the pages (stream format extension 2: XBZRLE against what was sent of a page
   * before; default on, with StreamWriter's default cache); false: every page whole
   */
  delta?: StreamWriterOptions['delta'];
  /** least ms between two syncs of the dirty log (default 5) */
  minRoundMs?: number;
  /**
   * The guest's outputs: an OutputTap that numbers them and sends them on (to the output
   * client), on `runner` when there is one. Each round carries the outputs since the last, so
   * the destination can send the client what it has not confirmed. Default: a tap of port
   * 0x11 (the counter's) from 0, counted only.
   */
  outputs?: OutputTap;
  /** aborts the migration (status 'cancelled') until the final round is sent */
  signal?: AbortSignal;
  /** after each sync: where it stands (a progress bar) */
  onProgress?: (p: MigrationProgress) => void;
  /** called once the vCPUs are stopped, before the last collection: a VMM saves its device state here */
  onStopped?: (m: Machine) => void;
  /** called after each pre-copy round is sent, with the guest running (tests act as the guest here) */
  onRound?: (round: number, m: Machine) => void;
  connectTimeoutMs?: number;
  /** ms to wait for the destination's Resumed after the final round (default 30000) */
  handoverTimeoutMs?: number;
}

export interface MigrationRoundStats {
  round: number;
  pages: number;
  bytes: number;
  /** ms from the round's first byte sent to the destination's Ack of it */
  ms: number;
  /** pages this sync found, per second since the previous sync */
  dirtyPagesPerSec: number;
  /** MB/s the round achieved (bytes / ms) */
  bandwidthMBps: number;
  /** the throttle while the round ran, % of time out of KVM_RUN */
  throttlePercent: number;
  /** the pages this sync found, at the bandwidth measured so far (ms) */
  expectedDowntimeMs: number;
  /** a ring was found completely full: the round carried every logged page */
  overfilled: boolean;
}

export interface MigrationProgress {
  round: number;
  transferredBytes: number;
  remainingPages: number;
  dirtyPagesPerSec: number;
  bandwidthMBps: number;
  expectedDowntimeMs: number;
  throttlePercent: number;
}

/** What `query-migrate` says, for this migration. */
export interface MigrationStats {
  status: MigrationStatus;
  /** why it failed or was cancelled */
  error?: string;
  target: string;
  totalTimeMs: number;
  /** ms from the source's kick to the destination's guest running (completed only) */
  downtimeMs: number | null;
  /** ms to connect, send the Header and learn the round trip */
  setupTimeMs: number;
  transferredBytes: number;
  /** pages sent over all rounds */
  pages: number;
  rounds: MigrationRoundStats[];
  /** syncs of the dirty log (one per round) */
  dirtySyncCount: number;
  /** the throttle at the end (% of each period the vCPUs were kept out of KVM_RUN) */
  throttlePercent: number;
  /** the largest throttle applied */
  maxThrottlePercent: number;
  /** 'dirty-limit': the last quota each vCPU was held to, MiB/s (null: never limited) */
  dirtyLimitMBps: number | null;
  throttle: ThrottleMode;
  /** the last estimate before stop-and-copy */
  expectedDowntimeMs: number;
  downtimeLimitMs: number;
  maxBandwidthMBps: number | null;
  /** why stop-and-copy started: the pages fit in the downtime limit, or maxRounds */
  converged: 'downtime-limit' | 'max-rounds' | null;
  /** rounds that found a ring completely full (each a full copy of the logged slots) */
  overfills: number;
  /** s390 storage attribute values sent */
  storageAttrs: number;
  rttMs: number;
  mode: string;
  backend: string;
  arch: string;
  vcpus: number;
  /** output sequence number after the source's last output (the destination's first) */
  outputSeq: number;
}

/** Collects the pages the runner harvests after every run (ring mode) into the round's set. */
class RingCollector implements RunPolicy {
  overfilled = false;
  constructor(private readonly tracker: DirtyTracker, public set: PageSet) {}

  onDirty(_vcpuId: number, pages: DirtyPages): void {
    const set = this.set;
    for (let i = 0; i < pages.length; i++) {
      const k = this.tracker.slotIndexOf(pages.slots[i]);
      if (k !== undefined) set.add(k, pages.offsets[i]);
    }
  }

  onOverfill(): void {
    this.overfilled = true;
    this.tracker.takeAllLogged(this.set);
  }
}

/**
 * QEMU's CPU throttle (cpu_throttle_set): at p %, each vCPU is kept out of KVM_RUN for
 * p / (100 - p) of every 10 ms it runs, which leaves it (100 - p) % of the time.
 */
class CpuThrottle implements RunPolicy {
  percent = 0;
  static readonly SLICE_MS = 10;
  readonly #ran = new Map<number, { ms: number; until: number }>();

  beforeRun(vcpuId: number, now: number): number {
    const s = this.#ran.get(vcpuId);
    if (!s || this.percent === 0) return 0;
    if (now < s.until) return s.until - now;
    if (s.ms < CpuThrottle.SLICE_MS) return 0;
    s.until = now + (s.ms * this.percent) / (100 - this.percent);
    s.ms = 0;
    return s.until - now;
  }

  sliceMs(): number {
    return this.percent > 0 ? CpuThrottle.SLICE_MS : Infinity;
  }

  afterRun(vcpuId: number, _exit: unknown, ranMs: number): void {
    const s = this.#ran.get(vcpuId) ?? { ms: 0, until: 0 };
    s.ms += ranMs;
    this.#ran.set(vcpuId, s);
  }
}

/** QEMU's auto-converge defaults (migration/options.c): trigger 50 %, initial 20 %, increment 10 %, at most 99 %. */
const AUTO_CONVERGE = { trigger: 0.5, initial: 20, increment: 10, max: 99 };

/**
 * Migrates the running guest of `machine` to a destination listening with receiveMigration()
 * (or `kvm-dirty incoming`). Starts the guest (it must not be running), returns the figures.
 * 'completed': the destination runs the guest and the source machine is closed. 'failed' or
 * 'cancelled': the machine is the caller's again, its guest stopped where it stopped.
 */
export async function migrateTo(machine: Machine, target: MigrationTarget, options: MigrateToOptions = {}): Promise<MigrationStats> {
  const o = checkOptions(options);
  const started = performance.now();
  const where = isSocket(target) ? `${target.remoteAddress}:${target.remotePort}` : (() => {
    const t = parseTarget(target);
    return `${t.host}:${t.port}`;
  })();
  const tracker = new DirtyTracker(machine);
  // Two page sets, in turn: one fills (the runner harvests into it after every run) while the other is sent.
  let set = tracker.newPageSet();
  let spare = tracker.newPageSet();
  const slots: SlotSource[] = machine.slots.map((s) => ({ gfn: s.layout.guestPhysAddr / 4096, bytes: s.bytes }));
  const writer = new StreamWriter(4096, { delta: o.delta });
  if (o.delta !== false) warmUpStream(); // the final round's encoding optimised before the guest waits for it
  const tap = o.outputs ?? new OutputTap(machine.exitPort !== null ? [machine.exitPort] : [0x11], 0, { released: true });
  if (!(tap instanceof OutputTap)) throw new TypeError('outputs must be an OutputTap');
  const collector = machine.mode === 'ring' ? new RingCollector(tracker, set) : null;
  const throttle = new CpuThrottle();
  if (o.throttle === 'dirty-limit' && machine.mode !== 'ring') throw new RangeError(`throttle 'dirty-limit' needs the dirty ring, which says which vCPU dirtied a page (this machine tracks with '${machine.mode}')`);
  const limit = o.throttle === 'dirty-limit' ? new DirtyLimit(machine, { periodMs: 100 }) : null;
  // The caller's tap is on the caller's runner already.
  const policies: RunPolicy[] = [...(o.outputs && o.runner ? [] : [tap]), throttle, ...(collector ? [collector] : []), ...(limit ? [limit] : [])];
  if (o.runner !== undefined && (!(o.runner instanceof GuestRunner) || o.runner.machine !== machine)) throw new TypeError('runner must be a GuestRunner of this machine');
  const runner = o.runner ?? new GuestRunner(machine);
  const ownRunner = o.runner === undefined;
  const stats: MigrationStats = {
    status: 'failed', target: where, totalTimeMs: 0, downtimeMs: null, setupTimeMs: 0, transferredBytes: 0, pages: 0, rounds: [],
    dirtySyncCount: 0, throttlePercent: 0, maxThrottlePercent: 0, dirtyLimitMBps: null, throttle: o.throttle, expectedDowntimeMs: 0,
    downtimeLimitMs: o.downtimeLimitMs, maxBandwidthMBps: o.maxBandwidthMBps ?? null, converged: null, overfills: 0,
    storageAttrs: 0, rttMs: 0, mode: machine.mode, backend: machine.kvm.backend, arch: machine.kvm.arch, vcpus: machine.vcpus.length,
    outputSeq: tap.seq,
  };

  // The return path: Acks of rounds, the Pong, Resumed, or the destination's Error.
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  let acked = -1;
  let pong = -1;
  let resumed: { epoch: number; delayNs: number; at: number } | null = null;
  const kick = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const onFrame = (f: Frame) => {
    switch (f.type) {
      case FrameType.Ack:
        acked = decodeU64Frame(f, 'Ack');
        break;
      case FrameType.Error: {
        const { code, message } = decodeErrorFrame(f);
        failure = new Error(`the destination refused the stream (${code}): ${message}`);
        break;
      }
      case FrameType.Control: {
        const c = decodeControlFrame(f);
        if (c.kind === ControlKind.Pong) pong = c.a;
        else if (c.kind === ControlKind.Resumed) resumed = { epoch: c.a, delayNs: c.b, at: performance.now() };
        break;
      }
      default:
        failure = new Error(`the destination sent a ${FrameType[f.type] ?? f.type} frame`);
    }
    kick();
  };
  const until = async (what: string, ready: () => boolean, timeoutMs = Infinity): Promise<void> => {
    const deadline = performance.now() + timeoutMs;
    while (!ready()) {
      if (failure) throw failure;
      if (o.signal?.aborted) throw new Cancelled();
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`the destination did not ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, Math.min(left, 1000));
      });
    }
    if (failure) throw failure;
  };
  const onAbort = () => kick();
  o.signal?.addEventListener('abort', onAbort);

  let link: Link | null = null;
  let finalSent = false;
  try {
    const socket = isSocket(target) ? target : await connectTo(parseTarget(target).host, parseTarget(target).port, o.connectTimeoutMs);
    link = new Link(socket, onFrame, (e) => {
      failure ??= new Error(`the connection to the destination ${where} broke: ${e.message}`);
      kick();
    });
    const l = link;
    const send = async (buf: Buffer): Promise<void> => {
      if (failure) throw failure;
      stats.transferredBytes += buf.length;
      try {
        await paced(l, buf, o.maxBandwidthMBps, () => failure !== null || o.signal?.aborted === true);
      } catch (e) {
        if (o.signal?.aborted && !failure) throw new Cancelled();
        throw failure ?? new Error(`the connection to the destination ${where} broke: ${(e as Error).message}`);
      }
    };
    await send(writer.header(describeMachine(machine)));
    // The first Pong comes once the destination has built its VM; the round trip is the least of the next three.
    stats.rttMs = Infinity;
    for (let nonce = 1; nonce <= 4; nonce++) {
      const pingAt = performance.now();
      await send(writer.control({ kind: ControlKind.Ping, a: nonce, b: 0 }));
      await until('answer the Ping', () => pong === nonce, o.connectTimeoutMs);
      if (nonce > 1) stats.rttMs = Math.min(stats.rttMs, performance.now() - pingAt);
    }
    stats.setupTimeMs = performance.now() - started;
    /** Bytes per ms a round achieved, its round trip taken out; null for a round too small to say (< 16 KiB). */
    const throughput = (r: { bytes: number; ms: number }): number | null => (r.bytes < 16384 ? null : r.bytes / Math.max(r.ms - stats.rttMs, 0.05));

    const attrsCursor = { gfn: 0 };
    if (machine.cmma) machine.vm.setMigrationMode(true); // every page CMMA-dirty
    /**
     * One epoch of the stream; resolves once the destination acknowledged it. The final one
     * (with the registers) goes out with the End frame in the same write, and resolves once
     * it is sent: the destination resumes the guest at End and says so with Resumed.
     */
    const round = async (epoch: number, pages: PageSet, regs: { id: number; regs: Regs }[], attrs: AttrRun[], state?: Buffer): Promise<{ bytes: number; ms: number }> => {
      const out = tap.take();
      const buf = writer.finish(writer.epoch(epoch, regs, out.packed, out.count, pages, slots, tap.seq, tap.clientAcked, attrs.length ? attrs : undefined, state));
      const t = performance.now();
      await send(regs.length ? Buffer.concat([buf, writer.end(epoch)]) : buf);
      writer.pool.release(buf);
      if (!regs.length) await until(`acknowledge round ${epoch}`, () => acked >= epoch);
      stats.pages += pages.count;
      stats.storageAttrs += attrs.reduce((n, a) => n + a.values.length, 0);
      return { bytes: buf.length, ms: performance.now() - t };
    };

    // Round 0: arm the log (collect and forget), run the guest, copy every page that may
    // hold data while the runner collects what the guest dirties meanwhile into `set`.
    for (const p of policies) runner.addPolicy(p);
    if (runner.running) runner.harvestAll();
    else {
      tracker.collect(set);
      runner.start();
    }
    if (machine.mode !== 'ring') tracker.collect(set);
    set.clear();
    let lastSync = performance.now();
    const base = spare;
    base.clear();
    machine.slots.forEach((s, k) => forEachNonZeroPage(s, (p) => base.add(k, p)));
    const attrs0 = machine.cmma ? drainStorageAttrs(machine.vm, attrsCursor) : [];
    const r0 = await round(0, base, [], attrs0);
    let bandwidth = throughput(r0) ?? r0.bytes / Math.max(r0.ms, 1e-3); // bytes per ms
    stats.rounds.push(roundStats(0, base.count, r0, 0, bandwidth, throttle.percent, 0, false));
    let highDirtyRounds = 0;
    let epoch = 0;

    // Pre-copy rounds.
    for (;;) {
      const waitMs = o.minRoundMs - (performance.now() - lastSync);
      if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
      if (failure) throw failure;
      if (o.signal?.aborted) throw new Cancelled();
      if (runner.error) throw runner.error;
      // Sync: collect and re-arm, then (in round()) read. What the runner harvests from here
      // on goes to the other set: the next round's.
      const found = set;
      const syncAt = performance.now();
      if (collector) {
        runner.harvestAll();
        spare.clear();
        collector.set = spare;
        tracker.collectVmmDirty(found); // the VMM's own writes (device DMA), which no ring sees
      } else tracker.collect(found);
      set = spare;
      spare = found;
      const sinceMs = syncAt - lastSync;
      lastSync = syncAt;
      stats.dirtySyncCount++;
      const attrs = machine.cmma ? drainStorageAttrs(machine.vm, attrsCursor) : [];
      const dirtyRate = (found.count / Math.max(sinceMs, 1e-3)) * 1000;
      const expected = (found.count * 4096) / bandwidth;
      stats.expectedDowntimeMs = expected;
      o.onProgress?.({
        round: epoch + 1, transferredBytes: stats.transferredBytes, remainingPages: found.count, dirtyPagesPerSec: dirtyRate,
        bandwidthMBps: bandwidth / 1000, expectedDowntimeMs: expected, throttlePercent: throttle.percent,
      });
      if (expected <= o.downtimeLimitMs || epoch >= o.maxRounds) {
        stats.converged = expected <= o.downtimeLimitMs ? 'downtime-limit' : 'max-rounds';
        // found's pages and attrs go with the final round
        return await stopAndCopy(found, attrs);
      }
      epoch++;
      const overfilled = collector?.overfilled ?? tracker.lastOverfilled;
      if (collector) collector.overfilled = false;
      const r = await round(epoch, found, [], attrs);
      bandwidth = throughput(r) ?? bandwidth;
      stats.rounds.push(roundStats(epoch, found.count, r, dirtyRate, r.bytes / Math.max(r.ms, 1e-3), throttle.percent, expected, overfilled));
      // Dirtying more than half of what the round moved, twice in a row (QEMU's trigger), slows the guest:
      // auto-converge raises the CPU throttle; dirty-limit holds each vCPU to a share of half the
      // link at first, then to half its last quota.
      const dirtiedBytes = (dirtyRate * 4096 * r.ms) / 1000;
      highDirtyRounds = dirtiedBytes > AUTO_CONVERGE.trigger * r.bytes ? highDirtyRounds + 1 : 0;
      if (highDirtyRounds >= 2 && o.throttle !== 'none') {
        highDirtyRounds = 0;
        if (limit) {
          const quota = Math.max(1, stats.dirtyLimitMBps === null ? (bandwidth * 1000 * AUTO_CONVERGE.trigger) / 2 ** 20 / machine.vcpus.length : stats.dirtyLimitMBps / 2);
          for (const v of machine.vcpus) limit.set(v.id, quota);
          stats.dirtyLimitMBps = quota;
        } else {
          throttle.percent = throttle.percent === 0 ? AUTO_CONVERGE.initial : Math.min(AUTO_CONVERGE.max, throttle.percent + AUTO_CONVERGE.increment);
          stats.maxThrottlePercent = Math.max(stats.maxThrottlePercent, throttle.percent);
        }
      }
      stats.throttlePercent = throttle.percent;
      o.onRound?.(epoch, machine);
    }

    async function stopAndCopy(found: PageSet, attrs: AttrRun[]): Promise<MigrationStats> {
      const kickAt = performance.now();
      // stop() kicks the vCPUs, finishes a pending OUT (its registers are then those after it) and harvests the rings a last time.
      await runner.stop();
      o.onStopped?.(machine);
      // Everything dirtied since the sync: the runner harvested it into `set` (stop() last of all), or the bitmaps hold it.
      if (collector) {
        found.addAll(set);
        tracker.collectVmmDirty(found);
      } else tracker.collect(found);
      tracker.collectBackupBitmap(found); // arm64: writes made without a vCPU, read last
      const lastAttrs = machine.cmma ? [...attrs, ...drainStorageAttrs(machine.vm, attrsCursor)] : [];
      const regs = machine.vcpus.map((v) => ({ id: v.id, regs: v.getRegs() }));
      epoch++;
      // a guest image's machine: the full state (vCPUs, VM devices, VMM devices) goes with the registers
      const state = machine.fullState ? encodeStatePayload(epoch, captureState(machine)) : undefined;
      finalSent = true; // from here on the destination may resume: no cancel
      const r = await round(epoch, found, regs, lastAttrs, state);
      stats.outputSeq = tap.seq;
      await until('resume the guest', () => resumed !== null, o.handoverTimeoutMs);
      const rs = resumed!;
      // the final round's time runs to the destination's Resumed (its Ack comes just before)
      const final = { bytes: r.bytes, ms: rs.at - kickAt };
      stats.rounds.push(roundStats(epoch, found.count, final, 0, final.bytes / Math.max(final.ms, 1e-3), throttle.percent, stats.expectedDowntimeMs, collector?.overfilled ?? tracker.lastOverfilled));
      if (rs.epoch !== epoch) throw new Error(`the destination resumed from epoch ${rs.epoch}, not ${epoch}`);
      stats.downtimeMs = Math.max(0, rs.at - kickAt - stats.rttMs / 2 - rs.delayNs / 1e6);
      // The destination runs the guest: give ours up for good, then let it release outputs.
      if (machine.cmma) machine.vm.setMigrationMode(false);
      machine.close();
      await tap.channel?.close(); // the output client takes the destination's connection only once ours has ended
      await send(writer.control({ kind: ControlKind.Released, a: epoch, b: 0 }));
      l.finish();
      stats.status = 'completed';
      return stats;
    }
  } catch (e) {
    stats.status = e instanceof Cancelled ? 'cancelled' : 'failed';
    stats.error = e instanceof Error ? e.message : String(e);
    if (finalSent && stats.status === 'cancelled') stats.status = 'failed';
    link?.destroy();
    // The guest stays here: it runs on in the caller's runner (stopped if stop-and-copy had
    // begun: the caller may start it again); a runner of our own is stopped.
    if (ownRunner) await runner.stop().catch(() => undefined);
    if (!machine.vm.closed && machine.cmma) machine.vm.setMigrationMode(false);
    return stats;
  } finally {
    for (const p of policies) runner.removePolicy(p);
    o.signal?.removeEventListener('abort', onAbort);
    stats.totalTimeMs = performance.now() - started;
    stats.overfills = tracker.overfills;
    stats.throttlePercent = throttle.percent;
  }
}

class Cancelled extends Error {
  constructor() {
    super('cancelled');
  }
}

function roundStats(
  round: number, pages: number, r: { bytes: number; ms: number }, dirtyRate: number, bandwidth: number, throttle: number, expected: number, overfilled: boolean,
): MigrationRoundStats {
  return {
    round, pages, bytes: r.bytes, ms: r.ms, dirtyPagesPerSec: Math.round(dirtyRate), bandwidthMBps: bandwidth / 1000,
    throttlePercent: throttle, expectedDowntimeMs: expected, overfilled,
  };
}

/**
 * Writes `buf`, no faster than `mbps` MB/s when given (in slices, waiting between them; a
 * cancel or a failure, `stop()`, ends it between two slices).
 */
async function paced(link: Link, buf: Buffer, mbps: number | undefined, stop: () => boolean): Promise<void> {
  if (!mbps) return link.write(buf);
  const SLICE = 64 * 1024;
  const bytesPerMs = mbps * 1000;
  const start = performance.now();
  for (let at = 0; at < buf.length; at += SLICE) {
    if (stop()) throw new Error('stopped');
    const due = start + at / bytesPerMs;
    const wait = due - performance.now();
    if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
    await link.write(buf.subarray(at, Math.min(buf.length, at + SLICE)));
  }
  const end = start + buf.length / bytesPerMs - performance.now();
  if (end >= 1) await new Promise((r) => setTimeout(r, end));
}

function isSocket(t: MigrationTarget): t is Socket {
  return typeof t === 'object' && t !== null && typeof (t as Socket).write === 'function' && typeof (t as Socket).on === 'function';
}

type Checked = Required<Pick<MigrateToOptions, 'downtimeLimitMs' | 'throttle' | 'maxRounds' | 'minRoundMs' | 'connectTimeoutMs' | 'handoverTimeoutMs'>> & MigrateToOptions;

function checkOptions(options: MigrateToOptions): Checked {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  const o: Checked = {
    ...options,
    downtimeLimitMs: options.downtimeLimitMs ?? 300, throttle: options.throttle ?? 'auto-converge', maxRounds: options.maxRounds ?? 30,
    minRoundMs: options.minRoundMs ?? 5,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000, handoverTimeoutMs: options.handoverTimeoutMs ?? 30_000,
  };
  const positive = (name: string, v: unknown, integer = false) => {
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v) || (integer && !Number.isInteger(v))) throw new RangeError(`${name} must be a positive ${integer ? 'integer' : 'number'}, got ${String(v)}`);
  };
  positive('downtimeLimitMs', o.downtimeLimitMs);
  if (o.maxBandwidthMBps !== undefined) positive('maxBandwidthMBps', o.maxBandwidthMBps);
  positive('maxRounds', o.maxRounds, true);
  positive('connectTimeoutMs', o.connectTimeoutMs);
  positive('handoverTimeoutMs', o.handoverTimeoutMs);
  if (typeof o.minRoundMs !== 'number' || !(o.minRoundMs >= 0)) throw new RangeError(`minRoundMs must be a number >= 0, got ${String(o.minRoundMs)}`);
  if (!['none', 'auto-converge', 'dirty-limit'].includes(o.throttle)) throw new RangeError(`throttle must be 'none', 'auto-converge' or 'dirty-limit', got ${JSON.stringify(o.throttle)}`);
  return o;
}

