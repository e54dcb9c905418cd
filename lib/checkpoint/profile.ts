// Where a checkpoint epoch's time goes: the duration of each phase of every epoch, taken with
// performance.now() only when the Checkpointer was given an EpochProfile (options.profile);
// without one the engine's only cost is a null check per phase.
//
//   run          resume -> the epoch's exit seen in JS (the guest's run, plus the hops to the
//                vCPU thread and back)
//   --- paused ---
//   completeIo   finishing a pending OUT (KVM_RUN with immediate_exit), where needed
//   collect      harvest every ring (or the bitmaps) and re-arm them
//   registers    KVM_GET_REGS of every vCPU
//   copy         the dirty pages into the epoch's buffer (writer.epoch)
//   resume       what is left of the pause: the output commit's books, handing the vCPUs back
//   pause        the whole pause (the sum of the five above)
//   --- the guest runs again ---
//   encode       delta encoding and checksums of the epoch's frames (writer.finish)
//   write        handing the frames to the sink (a socket write)
//   ack          the frames handed to the sink -> the sink's ack of that epoch

export const PROFILE_PHASES = ['run', 'completeIo', 'collect', 'registers', 'copy', 'resume', 'pause', 'encode', 'write', 'ack'] as const;
export type ProfilePhase = (typeof PROFILE_PHASES)[number];

/** One phase over the profiled epochs: the median and the mean in µs, and how many epochs had it. */
export interface PhaseFigures {
  p50Us: number;
  meanUs: number;
  epochs: number;
}

const SAMPLES = 1 << 16;

export class EpochProfile {
  readonly #samples = new Map<ProfilePhase, { values: Float64Array; count: number; sum: number }>();
  /** when each epoch still unacknowledged went to the sink (ms, performance.now()) */
  readonly #sentAt = new Float64Array(SAMPLES);
  #acked = -1;

  constructor() {
    for (const p of PROFILE_PHASES) this.#samples.set(p, { values: new Float64Array(SAMPLES), count: 0, sum: 0 });
  }

  /** Records `ms` milliseconds of `phase` for one epoch. */
  add(phase: ProfilePhase, ms: number): void {
    const s = this.#samples.get(phase)!;
    s.values[s.count++ % SAMPLES] = ms;
    s.sum += ms;
  }

  /** Epoch `epoch`'s frames went to the sink at `at` (performance.now()). */
  sent(epoch: number, at: number): void {
    this.#sentAt[epoch % SAMPLES] = at;
  }

  /** The sink acknowledged every epoch up to `epoch` at `at`: one ack latency per epoch it covers. */
  acked(epoch: number, at: number): void {
    for (let e = Math.max(this.#acked + 1, epoch - SAMPLES + 1); e <= epoch; e++) this.add('ack', at - this.#sentAt[e % SAMPLES]);
    this.#acked = Math.max(this.#acked, epoch);
  }

  /** Median and mean per phase, in µs (phases no epoch had are left out). */
  summary(): Partial<Record<ProfilePhase, PhaseFigures>> {
    const out: Partial<Record<ProfilePhase, PhaseFigures>> = {};
    for (const [phase, s] of this.#samples) {
      if (s.count === 0) continue;
      const n = Math.min(s.count, SAMPLES);
      const sorted = s.values.slice(0, n).sort();
      out[phase] = { p50Us: round2(sorted[n >> 1] * 1000), meanUs: round2((s.sum / s.count) * 1000), epochs: s.count };
    }
    return out;
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
