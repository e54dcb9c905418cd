// The run loop of a machine's vCPUs, for measurement and throttling: one loop per vCPU that
// owns its runAsync(), asks the run policies before each KVM_RUN how long the vCPU must stay
// out (a dirty limit, a pacer), bounds the run with a kick when a policy wants a time slice,
// and, on a ring machine, harvests the vCPU's ring after every run and hands the entries to
// the policies (a dirty-rate meter, a dirty limit's accounting).
//
// Harvesting after every run is what keeps the ring safe on every host: the ring is empty
// when a run starts, and one run of a harness workload writes at most writesPerRun() pages,
// so no run can overfill it, even on a PVM host that does not stop a run at the soft limit
// (DESIGN §5). It costs one harvest + KVM_RESET_DIRTY_RINGS per run, ~10 µs here (the bench's
// overhead table: ~3 % of a 64-page epoch).

import type { DirtyRing } from '../ring';
import { ExitReason } from '../constants';
import { DirtyPages } from '../dirty-pages';
import type { Exit, Vcpu } from '../vcpu';
import { writesPerRun, type Machine } from '../checkpoint/machine';

/** The workload's end-of-epoch port (Workload.stride / random). */
export const EPOCH_PORT = 0x10;
/** The longest single wait: the policies are asked again after it (setTimeout takes no Infinity). */
const MAX_WAIT_MS = 1000;
/** A wait this much longer than asked is the host's doing, not the timer's resolution. */
const LATE_SLACK_MS = 5;

/** The runner running each machine now (a meter given a Machine joins its runner). */
const active = new WeakMap<Machine, GuestRunner>();

/**
 * What a loop asks before and tells after each KVM_RUN. Every method is optional and gets the
 * vCPU's id and performance.now(). A loop that is not a GuestRunner (a migration's, a
 * checkpointer's) can drive the same policies: call beforeRun until it returns 0 (sleeping
 * that long in between), prepareRun, run with a kick after sliceMs, then onDirty with the
 * vCPU's harvested entries and afterRun.
 */
export interface RunPolicy {
  /** ms the vCPU must stay out of KVM_RUN from now (0 or less: it may run). Asked again after the wait. */
  beforeRun?(vcpuId: number, now: number): number;
  /** the vCPU is about to enter KVM_RUN (a pacer sets the next epoch's registers here) */
  prepareRun?(vcpuId: number, now: number): void;
  /** the longest the next run may last, in ms, before the loop kicks it (Infinity: no bound) */
  sliceMs?(vcpuId: number, now: number): number;
  /** entries harvested from the vCPU's dirty ring (ring machines only; duplicates included) */
  onDirty?(vcpuId: number, pages: DirtyPages, now: number): void;
  /** KVM_RUN returned `exit` after `ranMs` (a device on the machine's bus may have handled it already) */
  afterRun?(vcpuId: number, exit: Exit, ranMs: number, now: number): void;
  /** a device of the machine produced output while handling the vCPU's exit (a serial byte: its port, size 1, the byte) */
  onOutput?(vcpuId: number, port: number, size: number, value: number): void;
  /**
   * the vCPU's ring was found completely full: entries may have been lost (a PVM host overfills
   * a ring when one run writes more than it holds, DESIGN §5); `pages` of onDirty are not all
   * the vCPU dirtied. The runner has resynced the ring with the kernel (DirtyRing.resync).
   */
  onOverfill?(vcpuId: number, now: number): void;
  /** called by the runner with its wake(): call it when a later beforeRun would answer less (a limit was raised); returns the unsubscribe */
  subscribe?(wake: () => void): () => void;
}

export interface VcpuRunStats {
  id: number;
  /** KVM_RUN calls */
  runs: number;
  /** epoch exits (OUT to port 0x10) */
  epochs: number;
  /** ms from runAsync() to its settlement */
  ranMs: number;
  /** ms kept out of KVM_RUN by the policies */
  heldMs: number;
  /**
   * ms that waits lasted beyond what the policies asked, counting only waits more than 5 ms late:
   * the event loop or the host was busy (Node's timers are otherwise up to ~1 ms late). A limit
   * cannot be reached while it grows.
   */
  lateMs: number;
  /** dirty-ring entries harvested (duplicates included) */
  entries: number;
  ringFullExits: number;
  /** runs ended by a kick (a time slice, a stop) */
  kicked: number;
}

interface Loop {
  vcpu: Vcpu;
  ring: DirtyRing | null;
  /** an overfill left the ring's fetch index out of step with the kernel's, until resync() finds it */
  desynced: boolean;
  stats: VcpuRunStats;
  lastExit: number;
  /** resolves the current policy wait early (wake()) */
  wakeUp: (() => void) | null;
}

/** Loops over a machine's vCPUs: start(), then stop(). One runner per machine at a time. */
export class GuestRunner {
  readonly machine: Machine;
  readonly #loops: Loop[];
  readonly #policies: RunPolicy[] = [];
  readonly #unsubscribe = new Map<RunPolicy, () => void>();
  readonly #batch: DirtyPages | null;
  #running: Promise<void>[] | null = null;
  #stopping = false;
  #error: unknown = null;
  #guestResult: number | null = null;

  constructor(machine: Machine, policies: RunPolicy[] = []) {
    if (typeof machine !== 'object' || machine === null || !Array.isArray(machine.vcpus)) {
      throw new TypeError('machine must be a Machine (createMachine())');
    }
    this.machine = machine;
    let ringEntries = 0;
    if (machine.mode === 'ring') {
      const limits = machine.kvm.dirtyRingLimits();
      machine.vcpus.forEach((v, i) => {
        if (!v.dirtyRing) throw new RangeError(`vCPU ${v.id} has no dirty ring (enable it before creating the vCPUs)`);
        // Every run starts with the ring empty (harvested after the last run), so a run that
        // writes at most the soft limit never fills it: no DirtyRingFull mid-epoch upstream,
        // no overfill on a PVM host.
        const room = v.dirtyRing.entries - limits.reservedEntries;
        const writes = writesPerRun(machine.workloads[i]);
        if (writes > room) {
          throw new RangeError(`vCPU ${v.id}: one run of its workload writes up to ${writes} pages; its ring of ${v.dirtyRing.entries} entries holds ${room} before the soft limit (size it with dirtyRingBytes())`);
        }
        ringEntries = Math.max(ringEntries, v.dirtyRing.entries);
      });
    }
    this.#batch = ringEntries ? new DirtyPages(ringEntries) : null;
    this.#loops = machine.vcpus.map((vcpu) => ({
      vcpu, ring: vcpu.dirtyRing, desynced: false, lastExit: -1, wakeUp: null,
      stats: { id: vcpu.id, runs: 0, epochs: 0, ranMs: 0, heldMs: 0, lateMs: 0, entries: 0, ringFullExits: 0, kicked: 0 },
    }));
    for (const p of policies) this.addPolicy(p);
  }

  /** The runner running `machine` now, if one is. */
  static of(machine: Machine): GuestRunner | undefined {
    return active.get(machine);
  }

  get running(): boolean {
    return this.#running !== null && !this.#stopping;
  }

  /** The error that stopped the loops, or null. */
  get error(): unknown {
    return this.#error;
  }

  /** The guest's result, once it wrote it to the machine's exit port (its vCPU's loop then ended), else null. */
  get guestResult(): number | null {
    return this.#guestResult;
  }

  /** Settles when every loop has ended (stop(), or a failure: see error). */
  done(): Promise<void> {
    return this.#running ? Promise.all(this.#running).then(() => undefined) : Promise.resolve();
  }

  /** Per-vCPU counters since the runner was made. */
  get stats(): VcpuRunStats[] {
    return this.#loops.map((l) => ({ ...l.stats }));
  }

  /** Adds a policy (also while running); returns a function that removes it. */
  addPolicy(policy: RunPolicy): () => void {
    if (typeof policy !== 'object' || policy === null) throw new TypeError('policy must be a RunPolicy object');
    if (this.#policies.includes(policy)) throw new RangeError('this policy is already on the runner');
    this.#policies.push(policy);
    const off = policy.subscribe?.(() => this.wake());
    if (off) this.#unsubscribe.set(policy, off);
    this.wake();
    return () => this.removePolicy(policy);
  }

  removePolicy(policy: RunPolicy): void {
    const i = this.#policies.indexOf(policy);
    if (i < 0) return;
    this.#policies.splice(i, 1);
    this.#unsubscribe.get(policy)?.();
    this.#unsubscribe.delete(policy);
    this.wake();
  }

  /** Starts every vCPU's loop. */
  start(): void {
    if (this.#running) throw new Error('the runner is running already');
    if (active.has(this.machine)) throw new Error('another GuestRunner runs this machine');
    active.set(this.machine, this);
    this.#stopping = false;
    this.#error = null;
    // Entries left from before belong to no one's period: collect and drop them.
    this.harvestAll(false);
    this.#running = this.#loops.map((l) => this.#loop(l));
  }

  /**
   * Stops every loop (kicking the vCPUs in KVM_RUN), completes a pending OUT so the
   * registers are those after it, collects the rings a last time and returns the counters.
   * Rethrows the error that stopped a loop, if one did.
   */
  async stop(): Promise<VcpuRunStats[]> {
    const running = this.#running;
    if (!running) return this.stats;
    this.#stopping = true;
    for (const l of this.#loops) {
      if (!l.vcpu.closed) l.vcpu.kick();
      l.wakeUp?.();
    }
    await Promise.all(running);
    this.#running = null;
    active.delete(this.machine);
    // KVM finishes an OUT on the next KVM_RUN; kick + run does that without running the guest
    // on, and consumes a kick that landed after the vCPU had stopped (kernel api.rst, KVM_RUN).
    for (const l of this.#loops) {
      if (l.vcpu.closed) continue;
      l.vcpu.kick();
      l.vcpu.run();
    }
    this.harvestAll();
    if (this.#error !== null) throw this.#error;
    return this.stats;
  }

  /** Re-asks the policies of every vCPU that waits (a limit was raised or cleared). */
  wake(): void {
    for (const l of this.#loops) l.wakeUp?.();
  }

  /**
   * Harvests every vCPU's ring now, also those in KVM_RUN (the ring is made for that), hands
   * the entries to the policies (unless `deliver` is false) and re-arms the pages. A meter
   * calls it at a period's end so the period holds every page written before it.
   */
  harvestAll(deliver = true): void {
    if (!this.#batch) return;
    const now = performance.now();
    let any = false;
    for (const l of this.#loops) any = this.#harvest(l, now, deliver) || any;
    if (any) this.machine.vm.resetDirtyRings();
  }

  /** Collects one vCPU's ring into the batch, in pieces of the batch's capacity; true if it held entries. */
  #harvest(l: Loop, now: number, deliver: boolean): boolean {
    const ring = l.ring;
    const batch = this.#batch;
    if (!ring || !batch || l.vcpu.closed) return false;
    if (l.desynced) {
      if (ring.resync() < 0) return false; // nothing pushed since the overfill
      l.desynced = false;
    }
    let total = 0;
    let overfilled = false;
    for (;;) {
      batch.clear();
      const n = ring.harvest(batch);
      if (n === 0) break;
      // Every entry DIRTY: the kernel may have pushed past the ring's size.
      if (total === 0 && n === ring.entries) overfilled = l.desynced = true;
      total += n;
      if (deliver) for (const p of this.#policies) p.onDirty?.(l.vcpu.id, batch, now);
      if (n < batch.capacity) break;
    }
    l.stats.entries += total;
    if (overfilled) for (const p of this.#policies) p.onOverfill?.(l.vcpu.id, now);
    return total > 0;
  }

  async #loop(l: Loop): Promise<void> {
    const { vcpu, stats } = l;
    const id = vcpu.id;
    const devices = this.machine.devices;
    const output = (port: number, size: number, value: number): void => {
      for (const p of this.#policies) p.onOutput?.(id, port, size, value);
    };
    try {
      for (;;) {
        await this.#hold(l);
        if (this.#stopping) return;
        let now = performance.now();
        let slice = Infinity;
        for (const p of this.#policies) {
          p.prepareRun?.(id, now);
          if (p.sliceMs) slice = Math.min(slice, p.sliceMs(id, now));
        }
        // Node's timers have 1 ms resolution: that is the finest slice.
        const timer = slice < Infinity ? setTimeout(() => vcpu.kick(), Math.max(1, slice)) : null;
        const started = performance.now();
        let exit: Exit;
        try {
          exit = await vcpu.runAsync();
        } finally {
          if (timer) clearTimeout(timer);
        }
        now = performance.now();
        stats.runs++;
        stats.ranMs += now - started;
        l.lastExit = exit.reason;
        // A lone harvest resets the rings at once: the next run starts with an empty ring.
        if (this.#harvest(l, now, true)) this.machine.vm.resetDirtyRings();
        // The VMM's devices take the accesses they claim (their output goes to the policies).
        this.machine.deviceOutput = output;
        const handled = devices?.handle(vcpu, exit) ?? false;
        for (const p of this.#policies) p.afterRun?.(id, exit, now - started, now);
        if (handled) continue;
        switch (exit.reason) {
          case ExitReason.Io:
            if (exit.io?.direction !== 'out') throw new Error(`vCPU ${id}: unexpected IN from port 0x${exit.io?.port.toString(16)}`);
            if (exit.io.port === this.machine.exitPort) {
              // The guest ended: its vCPU stays out of KVM_RUN (stop() completes the OUT).
              this.#guestResult = exit.io.value >>> 0;
              return;
            }
            if (exit.io.port === EPOCH_PORT) stats.epochs++;
            break;
          case ExitReason.DirtyRingFull:
            stats.ringFullExits++; // harvested and reset above: the vCPU may go on
            break;
          case ExitReason.Intr:
            stats.kicked++;
            if (this.#stopping) return;
            break;
          default:
            throw new Error(`vCPU ${id} stopped: exit reason ${ExitReason[exit.reason] ?? exit.reason}`);
        }
      }
    } catch (e) {
      // One loop's failure ends them all; stop() rethrows it.
      if (this.#error === null) this.#error = e;
      this.#stopping = true;
      for (const o of this.#loops) {
        if (!o.vcpu.closed) o.vcpu.kick();
        o.wakeUp?.();
      }
    }
  }

  /** Waits while a policy keeps the vCPU out of KVM_RUN. */
  async #hold(l: Loop): Promise<void> {
    for (;;) {
      if (this.#stopping) return;
      const now = performance.now();
      let delay = 0;
      for (const p of this.#policies) if (p.beforeRun) delay = Math.max(delay, p.beforeRun(l.vcpu.id, now));
      if (!(delay > 0)) return;
      const asked = Math.min(delay, MAX_WAIT_MS);
      let woken = false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, asked);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        l.wakeUp = () => {
          woken = true;
          done();
        };
      });
      l.wakeUp = null;
      const waited = performance.now() - now;
      l.stats.heldMs += waited;
      if (!woken && waited - asked > LATE_SLACK_MS) l.stats.lateMs += waited - asked;
    }
  }
}
