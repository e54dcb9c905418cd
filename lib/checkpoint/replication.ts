// Where a primary's stream goes besides one TcpSink: several backups with a quorum, or none
// at all (running unprotected, said out loud).

import type { CheckpointSink } from './checkpointer';
import { countCommits, type TcpSink } from './transport';

interface Member {
  name: string;
  sink: TcpSink;
  acked: number;
  failed: Error | null;
}

export interface QuorumSinkOptions {
  /** backups whose ack an epoch needs before its outputs are released (default: all) */
  quorum?: number;
  /**
   * Give up on backups that have not acknowledged an epoch sent this long ago (ms): they count
   * as failed, and with fewer than the quorum left the stream fails. Default: wait, as output
   * commit requires (the guest pauses once too many epochs are unacknowledged).
   */
  ackTimeoutMs?: number;
  /** a backup failed while a quorum still stands */
  onDegraded?: (name: string, err: Error, live: number) => void;
}

/** One stream to N backups: an epoch counts as acknowledged once `quorum` of them acknowledged it. */
export class QuorumSink implements CheckpointSink {
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  readonly quorum: number;
  readonly #members: Member[];
  readonly #o: QuorumSinkOptions;
  #sent = -1;
  #acked = -1;
  #progressAt = performance.now();
  #failed = false;
  readonly #watchdog: NodeJS.Timeout | null = null;

  constructor(sinks: { name: string; sink: TcpSink }[], options: QuorumSinkOptions = {}) {
    const quorum = options.quorum ?? sinks.length;
    if (!Number.isSafeInteger(quorum) || quorum < 1 || quorum > sinks.length) throw new RangeError(`a quorum of ${quorum} of ${sinks.length} backups`);
    this.quorum = quorum;
    this.#o = options;
    this.#members = sinks.map(({ name, sink }) => ({ name, sink, acked: -1, failed: null }));
    for (const m of this.#members) {
      m.sink.onAck = (e) => this.#ack(m, e);
      m.sink.onFailure = (err) => this.#memberFailed(m, err);
    }
    if (options.ackTimeoutMs !== undefined) {
      const limit = options.ackTimeoutMs;
      this.#watchdog = setInterval(() => {
        if (this.#acked >= this.#sent || performance.now() - this.#progressAt < limit) return;
        for (const m of this.#live()) {
          if (m.acked < this.#sent) {
            m.sink.destroy();
            this.#memberFailed(m, new Error(`backup ${m.name} acknowledged nothing for ${limit} ms`));
          }
        }
      }, Math.max(10, Math.min(100, limit / 4)));
    }
  }

  /** Backups still streaming. */
  get live(): number {
    return this.#live().length;
  }

  send(buf: Buffer, done: () => void): void {
    // the ack clock starts with the oldest epoch in flight
    if (this.#acked >= this.#sent) this.#progressAt = performance.now();
    this.#sent += countCommits(buf);
    const live = this.#live();
    let left = live.length;
    if (!left) return done();
    for (const m of live) m.sink.send(buf, () => --left === 0 && done());
  }

  async close(): Promise<void> {
    if (this.#watchdog) clearInterval(this.#watchdog);
    await Promise.all(this.#members.map((m) => (m.failed ? Promise.resolve() : m.sink.close())));
  }

  /** Drops every connection at once. */
  destroy(): void {
    if (this.#watchdog) clearInterval(this.#watchdog);
    for (const m of this.#members) m.sink.destroy();
  }

  #live(): Member[] {
    return this.#members.filter((m) => !m.failed);
  }

  #ack(m: Member, epoch: number): void {
    m.acked = Math.max(m.acked, epoch);
    const acks = this.#live().map((x) => x.acked).sort((a, b) => b - a);
    const q = acks.length >= this.quorum ? acks[this.quorum - 1] : -1;
    if (q > this.#acked) {
      this.#acked = q;
      this.#progressAt = performance.now();
      this.onAck(q);
    }
  }

  #memberFailed(m: Member, err: Error): void {
    if (m.failed) return;
    m.failed = err;
    const live = this.live;
    if (live >= this.quorum) return this.#o.onDegraded?.(m.name, err, live);
    if (this.#failed) return;
    this.#failed = true;
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.onFailure(new Error(`${live} of ${this.#members.length} backups left, quorum ${this.quorum}: ${err.message}`));
  }
}

/** No backup: every epoch counts as acknowledged at once (Remus's "failover to unprotected"). */
export class UnprotectedSink implements CheckpointSink {
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  #epochs = -1;

  send(buf: Buffer, done: () => void): void {
    done();
    const n = countCommits(buf);
    if (n) {
      const e = (this.#epochs += n);
      queueMicrotask(() => this.onAck(e));
    }
  }

  async close(): Promise<void> {}
}
