// The checkpoint engine: an epoch loop over a running machine (Remus-style).
//
//   epoch e:  run the vCPUs (runAsync) until the epoch ends: the workload's epoch OUT
//             (port 0x10), a KVM_EXIT_DIRTY_RING_FULL, enough outputs, or the time budget
//             (vcpu.kick() from a timer)
//             --- the VM is paused from here ---
//             complete a pending OUT (KVM_RUN with immediate_exit: kick + run), so the
//             registers are the ones after the instruction (KVM api.rst, KVM_RUN)
//             collect the dirty pages (all rings, or the bitmaps), dedupe, re-arm
//             (KVM_RESET_DIRTY_RINGS / KVM_CLEAR_DIRTY_LOG), THEN copy their contents
//             (tracker.ts says why that order), read the registers (and, for a guest
//             image's machine, the full state: vCPUs, VM devices, VMM devices)
//             one buffer: Epoch frame(s) + Commit, one write to the sink
//             the epoch's guest outputs wait in the OutputCommit until the sink acks it
//             --- resume: epoch e + 1 runs while epoch e is in flight ---
//
// Epoch 0 is the base image: every non-zero page of every slot (the replica starts zeroed).

import { availableParallelism } from 'node:os';
import { Cap, ExitReason, SyncRegs } from '../constants';
import type { Vcpu } from '../vcpu';
import type { Machine } from './machine';
import { captureState, describeMachine, forEachNonZeroPage, writesPerRun } from './machine';
import { OutputCommit } from './output';
import { packOutput, type VcpuRegs } from './records';
import type { LeaseTag } from './lease-frame';
import { encodeStatePayload } from './state-frame';
import type { EpochProfile, ProfilePhase } from './profile';
import { DirtyTracker, type PageSet } from './tracker';
import { StreamWriter, type SlotSource, type StreamWriterOptions } from './writer';

/** The workload's end-of-epoch port (Workload.stride / random). */
export const EPOCH_PORT = 0x10;
/** The counter workload's output port. */
export const COUNTER_PORT = 0x11;
/** CheckpointerOptions.spinUs by default. */
const DEFAULT_SPIN_US = 0;

/** Where the checkpoint stream goes: a file, a socket to a replica, memory. */
export interface CheckpointSink {
  /** Writes whole frames; calls `done` once `buf` may be reused. Errors go to onFailure. */
  send(buf: Buffer, done: () => void): void;
  /** Set by the checkpointer: called with the newest epoch the far side has made durable (cumulative). */
  onAck: (epoch: number) => void;
  /** Set by the checkpointer: the sink broke (the replica rejected the stream, the connection dropped). */
  onFailure: (err: Error) => void;
  /** Flushes and closes; resolves once everything sent was acknowledged or failed. */
  close(): Promise<void>;
}

export interface CheckpointerOptions {
  machine: Machine;
  sink: CheckpointSink;
  /** time budget of one epoch in ms (enforced with vcpu.kick()); default 50 */
  epochMs?: number;
  /** an epoch also ends once a vCPU has emitted this many outputs (default: no limit) */
  outputsPerEpoch?: number;
  /** epochs sent but not yet acknowledged before the VM waits (default 8) */
  maxInFlight?: number;
  /** receives the guest's outputs once their epoch is acknowledged (the output-commit rule) */
  outputs?: OutputCommit;
  /**
   * I/O ports whose OUTs are guest output (default 0x10 and 0x11; a guest image's machine: its
   * exit port, and its devices' output comes through machine.deviceOutput)
   */
  outputPorts?: number[];
  /** output sequence number of the first output (default 0; after a failover, the restored one) */
  outputSeq?: number;
  /** delta-encode the pages (stream format extension 2; default: on, with StreamWriter's default cache); false: plain Epoch frames */
  delta?: StreamWriterOptions['delta'];
  /** called after each epoch is sent */
  onEpoch?: (e: EpochInfo) => void;
  /**
   * Outputs before `outputSeq` that the client has not confirmed, when a primary starts a new
   * stream (a backup joined or came back): the base epoch carries them, so that a backup can
   * resend them after a failover; those from `released` on had not been released yet and are
   * released with the base epoch's ack.
   */
  carried?: { firstSeq: number; packed: Uint32Array; count: number; released: number };
  /** the lease this stream is written under (a Lease frame after the Header: stream format extension 1) */
  lease?: LeaseTag;
  /** awaited, with the guest paused, before each epoch runs when it returns a promise (a fenced primary waits for its lease) */
  beforeEpoch?: () => Promise<void> | undefined;
  /** records where each epoch's time goes (profile.ts); off (and free) without one */
  profile?: EpochProfile;
  /**
   * µs the loop watches for the epoch's exit (vcpu.spinForExit) once its own work for the
   * last epoch is done, instead of sleeping in the event loop, which wakes ~100 µs late on a
   * nested host. Default 0 (sleep at once): on a 2-core host with the replica beside it the
   * core it takes is the replica's, and the bench measured no gain; with a core to spare,
   * 500 cut an in-process epoch loop from about 970 to 580-730 µs here.
   */
  spinUs?: number;
  /**
   * µs each vCPU's thread watches for the next epoch's run after an exit (vcpu.setRunWatch)
   * while the loop pauses the guest; restored when run() ends. Default 200 (the vCPU's own)
   * where the host has a core beyond the vCPUs, Node's main thread and a replica on the same
   * host, else 0: the watch would take that core from the replica. Measured on 2 cores
   * (`kvm-dirty checkpoint`, 1 vCPU): with a loopback replica 0 committed 3-15 % more epochs/s
   * than 200 at 16 and 64 pages; writing to a file, 200 committed 5-7 % more.
   */
  runWatchUs?: number;
}

export interface EpochInfo {
  epoch: number;
  pages: number;
  /** ring entries harvested (duplicates included; 0 in bitmap modes) */
  ringEntries: number;
  /** µs the VM was paused for this epoch */
  pauseUs: number;
  bytes: number;
  outputs: number;
  /** why the epoch ended ('guest-exit': the guest wrote its result to the machine's exit port) */
  reason: 'epoch' | 'ring-full' | 'budget' | 'outputs' | 'guest-exit';
  /** a ring was found completely full (entries may have been lost): the epoch holds every logged page that may hold data */
  overfilled: boolean;
}

export interface CheckpointStats {
  epochs: number;
  committed: number;
  seconds: number;
  epochsPerSec: number;
  committedPerSec: number;
  pagesPerEpoch: number;
  pauseP50Us: number;
  pauseP99Us: number;
  pauseMaxUs: number;
  bytes: number;
  /** stream bytes per epoch after the base (the Header, Lease and base epoch are not counted) */
  bytesPerEpoch: number;
  outputs: number;
  basePages: number;
  /** epochs sent as a full copy of the logged slots because a ring was found completely full */
  overfills: number;
  /** ms to scan and send the base epoch (not in `seconds`) */
  baseMs: number;
  mode: string;
  backend: string;
  /** the guest's result (its OUT to the machine's exit port), or null if it did not end */
  guestResult: number | null;
}

interface VcpuState {
  vcpu: Vcpu;
  lastExit: number;
  outputs: number;
}

const PAUSE_SAMPLES = 1 << 20;

export class Checkpointer {
  readonly machine: Machine;
  readonly writer: StreamWriter;
  readonly #o: Required<Omit<CheckpointerOptions, 'outputs' | 'onEpoch' | 'machine' | 'sink' | 'carried' | 'lease' | 'beforeEpoch' | 'delta' | 'profile' | 'runWatchUs'>> & CheckpointerOptions;
  readonly #tracker: DirtyTracker;
  readonly #set: PageSet;
  readonly #slots: SlotSource[];
  readonly #vcpus: VcpuState[];
  readonly #outputPorts: Set<number>;
  readonly #commit: OutputCommit;
  #outputs = new Uint32Array(2 * 256);
  #outputCount = 0;
  #outputSeq: number;
  #epoch = 0;
  #acked = -1;
  #inFlight = 0;
  #failure: Error | null = null;
  #ackWaiter: (() => void) | null = null;
  #stopping = false;
  #started = false;
  readonly #pauses = new Float64Array(PAUSE_SAMPLES);
  #pauseCount = 0;
  #pages = 0;
  #bytes = 0;
  #basePages = 0;
  #baseBytes = 0;
  #baseMs = 0;
  #kickTimer: NodeJS.Timeout | null = null;
  /** the vCPU whose exit the devices are handling (their output is its) */
  #current: VcpuState | null = null;
  #guestResult: number | null = null;
  readonly #prof: EpochProfile | null;
  readonly #syncRegs: boolean;
  /** when the running epoch's vCPUs were handed back, and when the last epoch's copy ended (profile only) */
  #resumedAt = 0;
  #copiedAt = 0;

  constructor(options: CheckpointerOptions) {
    const m = options.machine;
    const outputPorts = m.exitPort !== null ? [m.exitPort] : [EPOCH_PORT, COUNTER_PORT];
    this.#o = { epochMs: 50, outputsPerEpoch: Infinity, maxInFlight: 8, outputPorts, outputSeq: 0, spinUs: DEFAULT_SPIN_US, ...options };
    this.machine = m;
    m.deviceOutput = (port, size, value) => this.#addOutput(port, size, this.#current!.vcpu.id, value, this.#current!);
    if (m.mode === 'ring') {
      // One KVM_RUN must not write more pages than its ring holds (DESIGN §5: a host that
      // does not stop the vCPU at the soft limit inside a run loses entries).
      const limits = m.kvm.dirtyRingLimits();
      m.vcpus.forEach((v, i) => {
        const writes = writesPerRun(m.workloads[i]);
        const room = v.dirtyRing ? v.dirtyRing.entries - limits.reservedEntries : Infinity;
        if (writes > room) {
          throw new RangeError(`vCPU ${v.id}: one run of its workload writes up to ${writes} pages; its ring has ${v.dirtyRing!.entries} entries (${limits.reservedEntries} reserved)`);
        }
      });
    }
    this.#tracker = new DirtyTracker(m);
    this.#set = this.#tracker.newPageSet();
    this.#slots = m.slots.map((s) => ({ gfn: s.layout.guestPhysAddr / 4096, bytes: s.bytes }));
    this.#vcpus = m.vcpus.map((vcpu) => ({ vcpu, lastExit: -1, outputs: 0 }));
    // KVM stores each vCPU's registers in kvm_run as its KVM_RUN ends: no KVM_GET_REGS per epoch
    this.#syncRegs = (m.vm.checkExtension(Cap.SyncRegs) & SyncRegs.X86Regs) !== 0;
    if (this.#syncRegs) for (const v of m.vcpus) v.setSyncRegs(SyncRegs.X86Regs);
    this.#outputPorts = new Set(this.#o.outputPorts);
    this.#outputSeq = this.#o.outputSeq;
    this.#commit = options.outputs ?? new OutputCommit();
    this.#prof = options.profile ?? null;
    const c = options.carried;
    if (c && (c.firstSeq + c.count !== this.#outputSeq || c.released < c.firstSeq || c.released > this.#outputSeq || c.packed.length < 2 * c.count)) {
      throw new RangeError(`carried outputs ${c.firstSeq}..${c.firstSeq + c.count - 1} (released up to ${c.released}) must end where outputSeq ${this.#outputSeq} starts`);
    }
    this.#commit.start(c ? c.released : this.#outputSeq, c ? c.firstSeq : this.#outputSeq);
    this.writer = new StreamWriter(4096, { delta: options.delta });
    const sink = options.sink;
    sink.onAck = (epoch) => this.#onAck(epoch);
    sink.onFailure = (err) => this.#fail(err);
  }

  /** The last epoch sent. */
  get epoch(): number {
    return this.#epoch;
  }

  /** The sequence number of the guest's next output (outputs so far, from the start of the run). */
  get outputSeq(): number {
    return this.#outputSeq;
  }

  /** The newest epoch the sink acknowledged (-1 before the first). */
  get acked(): number {
    return this.#acked;
  }

  /** Ends the loop after the current epoch (run() then sends End and resolves). */
  stop(): void {
    this.#stopping = true;
    this.#kickAll();
  }

  /** Ends the running epoch now (the guest pauses at once; beforeEpoch decides when it runs on). */
  interrupt(): void {
    this.#kickAll();
  }

  /**
   * Sends the Header and the base epoch, then checkpoints epoch after epoch until `epochs`
   * epochs (after the base) were sent, `seconds` passed, or stop(); then sends End, waits for
   * the last ack, closes the sink and returns the figures.
   */
  async run(limits: { epochs?: number; seconds?: number } = {}): Promise<CheckpointStats> {
    if (this.#started) throw new Error('a Checkpointer runs once');
    this.#started = true;
    const maxEpochs = limits.epochs ?? Infinity;
    const sink = this.#o.sink;
    let started = performance.now();
    let deadline = Infinity;
    const vcpus = this.machine.vcpus;
    const watch = this.#o.runWatchUs ?? (availableParallelism() > vcpus.length + 2 ? 200 : 0);
    const watched = vcpus.map((v) => v.setRunWatch(watch));
    try {
      this.#send(this.writer.header(describeMachine(this.machine)), false);
      if (this.#o.lease) this.#send(this.writer.lease(this.#o.lease), false);
      this.#sendBase();
      // The figures (and `seconds`) count from here: the base copy is reported apart (baseMs).
      this.#baseMs = performance.now() - started;
      this.#baseBytes = this.#bytes;
      started = performance.now();
      this.#resumedAt = started;
      if (limits.seconds !== undefined) deadline = started + limits.seconds * 1000;
      // Epoch e's frame is checksummed and sent while epoch e + 1 runs: the guest is paused
      // only while its dirty pages are collected and copied.
      let running = this.#more(maxEpochs, deadline) ? this.#runEpoch(deadline) : null;
      while (running) {
        this.#watchForExits();
        const reason = await running;
        const pausedAt = performance.now();
        this.#prof?.add('run', pausedAt - this.#resumedAt);
        this.#completePendingIo();
        if (this.#prof) this.#lap('completeIo', pausedAt);
        // Taken even when the sink failed: the epoch's outputs are then held (outputSeq, and
        // the OutputCommit, count them), and a new stream from this guest carries them on.
        const buf = this.#checkpoint(reason, pausedAt);
        this.#throwIfFailed();
        running = null;
        let sent = false;
        if (this.#more(maxEpochs, deadline)) {
          if (this.#inFlight > this.#o.maxInFlight) {
            // Too many epochs unacknowledged: the guest stays paused until the backup catches up.
            this.#sealAndSend(buf);
            sent = true;
            await this.#waitForRoom(this.#o.maxInFlight + 1);
          }
          const wait = this.#o.beforeEpoch?.();
          if (wait) {
            if (!sent) this.#sealAndSend(buf);
            sent = true;
            await wait;
            this.#throwIfFailed();
          }
          // The pause ends as the vCPUs are handed back (their KVM_RUN may start at once, on
          // the other core or in place of this thread).
          this.#recordPause(pausedAt);
          running = this.#runEpoch(deadline);
        } else this.#recordPause(pausedAt);
        if (!sent) this.#sealAndSend(buf);
      }
      this.#throwIfFailed();
      this.#settle();
      this.#send(this.writer.end(this.#epoch), false);
      await this.#waitForRoom(1);
      await sink.close();
      this.#throwIfFailed();
    } catch (e) {
      await sink.close().catch(() => undefined);
      throw e;
    } finally {
      if (this.#kickTimer) clearTimeout(this.#kickTimer);
      vcpus.forEach((v, i) => v.closed || v.setRunWatch(watched[i]));
    }
    return this.stats((performance.now() - started) / 1000);
  }

  stats(seconds: number): CheckpointStats {
    const n = Math.min(this.#pauseCount, PAUSE_SAMPLES);
    const sorted = this.#pauses.slice(0, n).sort();
    const q = (f: number) => (n ? sorted[Math.min(n - 1, Math.floor(f * n))] : 0);
    return {
      epochs: this.#epoch,
      committed: this.#acked < 0 ? 0 : this.#acked,
      seconds,
      epochsPerSec: this.#epoch / seconds,
      committedPerSec: Math.max(0, this.#acked) / seconds,
      pagesPerEpoch: this.#epoch ? this.#pages / this.#epoch : 0,
      pauseP50Us: round1(q(0.5)),
      pauseP99Us: round1(q(0.99)),
      pauseMaxUs: round1(n ? sorted[n - 1] : 0),
      bytes: this.#bytes,
      bytesPerEpoch: this.#epoch ? Math.round((this.#bytes - this.#baseBytes) / this.#epoch) : 0,
      outputs: this.#outputSeq - this.#o.outputSeq,
      basePages: this.#basePages,
      overfills: this.#tracker.overfills,
      baseMs: round1(this.#baseMs),
      mode: this.machine.mode,
      backend: this.machine.kvm.backend,
      guestResult: this.#guestResult,
    };
  }

  /** Epoch 0: arm the log, then every non-zero page of every slot, in parts. */
  #sendBase(): void {
    // Collect and forget what is dirty now (collect re-arms), so epoch 1 holds exactly the
    // pages written after the copy below started.
    const set = this.#set;
    set.clear();
    this.#tracker.collect(set);
    set.clear();
    const regs = this.#regs(false);
    // Reads only the pages the memory holds (dataRanges): the rest are zero, and reading them would allocate them.
    this.machine.slots.forEach((s, k) => forEachNonZeroPage(s, (p) => set.add(k, p)));
    this.#basePages = set.count;
    // One buffer of as many Epoch parts as needed (PART_PAGES pages each), then the Commit.
    const c = this.#o.carried;
    const buf = c
      ? this.writer.epoch(0, regs, c.packed, c.count, set, this.#slots, this.#outputSeq, this.#commit.clientAcked, undefined, this.#state(0))
      : this.writer.epoch(0, regs, this.#outputs, 0, set, this.#slots, this.#outputSeq, this.#commit.clientAcked, undefined, this.#state(0));
    this.#prof?.sent(0, performance.now());
    this.#send(this.writer.finish(buf), true);
    if (c) this.#commit.hold(0, c.released, c.packed.subarray(2 * (c.released - c.firstSeq)), this.#outputSeq - c.released);
    else this.#commit.hold(0, this.#outputSeq, this.#outputs, 0);
    this.#inFlight++;
    set.clear();
  }

  async #runEpoch(deadline: number): Promise<EpochInfo['reason']> {
    const budget = Math.min(this.#o.epochMs, Math.max(0, deadline - performance.now()));
    this.#outputCount = 0;
    for (const s of this.#vcpus) s.outputs = 0;
    if (Number.isFinite(budget)) this.#kickTimer = setTimeout(() => this.#kickAll(), Math.max(1, budget));
    try {
      const reasons = await Promise.all(this.#vcpus.map((s) => this.#runVcpu(s)));
      // The epoch's reason: the first vCPU's, unless another one filled its ring.
      return reasons.includes('ring-full') ? 'ring-full' : reasons[0];
    } finally {
      if (this.#kickTimer) clearTimeout(this.#kickTimer);
      this.#kickTimer = null;
    }
  }

  async #runVcpu(s: VcpuState): Promise<EpochInfo['reason']> {
    const devices = this.machine.devices;
    for (;;) {
      const exit = await s.vcpu.runAsync();
      s.lastExit = exit.reason;
      if (devices) {
        // the VMM's devices first: an access to a port or MMIO range they claim (never the exit port)
        this.#current = s;
        if (devices.handle(s.vcpu, exit)) {
          if (s.outputs >= this.#o.outputsPerEpoch) return 'outputs';
          if (this.#stopping) return 'budget';
          continue;
        }
      }
      switch (exit.reason) {
        case ExitReason.Io: {
          const io = exit.io!;
          if (io.direction !== 'out') throw new Error(`vCPU ${s.vcpu.id}: unexpected IN from port ${hex(io.port)}`);
          if (io.port === this.machine.exitPort) {
            // The guest ended: its result is the last output, and this the last epoch.
            this.#addOutput(io.port, io.size, s.vcpu.id, io.value, s);
            this.#guestResult = io.value >>> 0;
            this.#stopping = true;
            return 'guest-exit';
          }
          if (this.#outputPorts.has(io.port)) this.#addOutput(io.port, io.size, s.vcpu.id, io.value, s);
          if (io.port === EPOCH_PORT) return 'epoch';
          if (s.outputs >= this.#o.outputsPerEpoch) return 'outputs';
          if (this.#stopping) return 'budget';
          continue;
        }
        case ExitReason.DirtyRingFull:
          return 'ring-full';
        case ExitReason.Intr:
          return 'budget';
        default:
          throw new Error(`vCPU ${s.vcpu.id} stopped: exit reason ${ExitReason[exit.reason] ?? exit.reason}`);
      }
    }
  }

  #addOutput(port: number, size: number, vcpu: number, value: number, s: VcpuState): void {
    if (2 * this.#outputCount + 2 > this.#outputs.length) {
      const grown = new Uint32Array(this.#outputs.length * 2);
      grown.set(this.#outputs);
      this.#outputs = grown;
    }
    this.#outputs[2 * this.#outputCount] = packOutput(port, size, vcpu);
    this.#outputs[2 * this.#outputCount + 1] = value >>> 0;
    this.#outputCount++;
    s.outputs++;
  }

  /**
   * A vCPU that stopped on an I/O exit has the OUT half done: KVM finishes it (and moves rip
   * past it) on the next KVM_RUN. Enter once with immediate_exit (kick, then run: returns
   * Intr at once) so the saved registers are consistent and a restored VM does not repeat
   * the OUT.
   */
  #completePendingIo(): void {
    for (const s of this.#vcpus) {
      if (s.lastExit !== ExitReason.Io && s.lastExit !== ExitReason.Mmio) continue;
      s.vcpu.kick();
      const exit = s.vcpu.run();
      if (exit.reason !== ExitReason.Intr) throw new Error(`vCPU ${s.vcpu.id}: KVM_RUN with immediate_exit returned exit ${exit.reason}, not EINTR`);
      s.lastExit = ExitReason.Intr;
    }
  }

  /** Watches each vCPU's run for its exit a while (spinUs): the epoch's end is usually near. */
  #watchForExits(): void {
    const us = this.#o.spinUs;
    if (us > 0) for (const s of this.#vcpus) if (!s.vcpu.spinForExit(us)) return;
  }

  #more(maxEpochs: number, deadline: number): boolean {
    return !this.#stopping && !this.#failure && this.#epoch < maxEpochs && performance.now() < deadline;
  }

  /** Collects, copies and frames the epoch that just ended (not yet encoded: see writer.finish). */
  /**
   * Leaves the vCPUs ready to run on: a kick that landed after a vCPU had already stopped
   * (the budget timer racing the epoch's own end, or stop()) would otherwise make the
   * caller's next KVM_RUN return EINTR at once. kick + run consumes it, or returns EINTR
   * without running the guest when there was none.
   */
  #settle(): void {
    if (this.#kickTimer) clearTimeout(this.#kickTimer);
    for (const s of this.#vcpus) {
      s.vcpu.kick();
      s.vcpu.run();
    }
  }

  #checkpoint(reason: EpochInfo['reason'], pausedAt: number): Buffer {
    const set = this.#set;
    const prof = this.#prof;
    let t = prof ? performance.now() : 0;
    set.clear();
    this.#tracker.collect(set);
    if (prof) t = this.#lap('collect', t);
    const regs = this.#regs();
    if (prof) t = this.#lap('registers', t);
    const epoch = ++this.#epoch;
    const count = this.#outputCount;
    this.#outputSeq += count;
    const buf = this.writer.epoch(epoch, regs, this.#outputs, count, set, this.#slots, this.#outputSeq, this.#commit.clientAcked, undefined, this.#state(epoch));
    if (prof) this.#copiedAt = this.#lap('copy', t);
    this.#commit.hold(epoch, this.#outputSeq - count, this.#outputs, count);
    this.#inFlight++;
    this.#pages += set.count;
    this.#o.onEpoch?.({
      epoch, pages: set.count, ringEntries: this.#tracker.lastRingEntries, pauseUs: (performance.now() - pausedAt) * 1000,
      bytes: buf.length, outputs: count, reason, overfilled: this.#tracker.lastOverfilled,
    });
    return buf;
  }

  /** The State payload of the epoch, where the machine records its full state (read with the guest paused). */
  #state(epoch: number): Buffer | undefined {
    return this.machine.fullState ? encodeStatePayload(epoch, captureState(this.machine)) : undefined;
  }

  /** Every vCPU's registers; after a run, as KVM_RUN left them in kvm_run where the kernel has KVM_CAP_SYNC_REGS. */
  #regs(afterRun = true): VcpuRegs[] {
    const synced = afterRun && this.#syncRegs;
    return this.#vcpus.map((s) => ({ id: s.vcpu.id, regs: synced ? s.vcpu.getSyncedRegs() : s.vcpu.getRegs() }));
  }

  /** Encodes (delta) and checksums the epoch's frames, with the guest running again, and sends them. */
  #sealAndSend(buf: Buffer): void {
    const prof = this.#prof;
    if (!prof) return this.#send(this.writer.finish(buf), true);
    const t = performance.now();
    const sealed = this.writer.finish(buf);
    const encoded = this.#lap('encode', t);
    prof.sent(this.#epoch, encoded);
    this.#send(sealed, true);
    this.#lap('write', encoded);
  }

  /** Profile only: records the time since `since` as `phase`; returns now. */
  #lap(phase: ProfilePhase, since: number): number {
    const now = performance.now();
    this.#prof!.add(phase, now - since);
    return now;
  }

  #send(buf: Buffer, pooled: boolean): void {
    this.#bytes += buf.length;
    this.#o.sink.send(buf, () => pooled && this.writer.pool.release(buf));
  }

  #recordPause(pausedAt: number): void {
    const now = performance.now();
    this.#pauses[this.#pauseCount++ % PAUSE_SAMPLES] = (now - pausedAt) * 1000;
    this.#resumedAt = now;
    if (this.#prof) {
      this.#prof.add('resume', now - this.#copiedAt);
      this.#prof.add('pause', now - pausedAt);
    }
  }

  #onAck(epoch: number): void {
    if (epoch <= this.#acked) return;
    if (epoch > this.#epoch) {
      this.#fail(new Error(`the replica acknowledged epoch ${epoch}, beyond the last one sent (${this.#epoch})`));
      return;
    }
    this.#inFlight -= epoch - this.#acked;
    this.#prof?.acked(epoch, performance.now());
    this.#acked = epoch;
    this.#commit.ack(epoch);
    this.#wake();
  }

  #fail(err: Error): void {
    if (!this.#failure) this.#failure = err;
    this.#kickAll();
    this.#wake();
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure;
  }

  #wake(): void {
    const w = this.#ackWaiter;
    this.#ackWaiter = null;
    w?.();
  }

  /** Waits (the VM stays paused) until fewer than `limit` epochs are unacknowledged. */
  async #waitForRoom(limit: number): Promise<void> {
    while (this.#inFlight >= limit && !this.#failure) {
      await new Promise<void>((resolve) => (this.#ackWaiter = resolve));
    }
    this.#throwIfFailed();
  }

  #kickAll(): void {
    for (const s of this.#vcpus) if (!s.vcpu.closed) s.vcpu.kick();
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
