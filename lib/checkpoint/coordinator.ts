// Who is primary. A Coordinator hands out the lease of one VM: the primary releases guest
// outputs only while it holds it, and a backup takes over only once it holds it.
//
// Two implementations:
// - SocketCoordinator (the default, for one machine): the backup takes over when its primary's
//   connection ends without an End frame. Right when the primary died, which is all that can
//   happen between two processes of one host; wrong across machines, where a partition or a
//   paused host looks the same and both sides would run the guest.
// - EtcdCoordinator (etcd-coordinator.ts): a lease key in etcd with a TTL, renewed by the
//   primary, which fences itself (no output leaves, the guest pauses) before the lease could
//   have expired; a backup acquires the key only after it expired, and among several backups
//   the one with the newest acknowledged epoch wins.

import { monotonicMs } from './output';

export type LeaseState =
  /** the lease is valid past now + the margin: outputs may leave */
  | 'held'
  /** it could not be renewed in time: no output leaves and the guest is paused, until a renewal comes through */
  | 'fenced'
  /** it expired or another holder has it: this holder never resumes */
  | 'lost';

/** One holder's lease of the VM. */
export interface Lease {
  /** the fencing token: grows with every new holder (etcd: the lease key's create revision; 0 for the socket coordinator) */
  readonly token: number;
  readonly holder: string;
  readonly state: LeaseState;
  /** whether an output may leave at `now` (monotonicMs): held, and valid past `now` by the clock-safety margin */
  mayRelease(now?: number): boolean;
  /** undefined while held; while fenced, a promise that resolves once held again or rejects (LeaseLostError) */
  whenHeld(): Promise<void> | undefined;
  /** called on every change of state, with the reason */
  onChange(fn: (state: LeaseState, why: string) => void): void;
  /** ms the lease is known to be valid for from now, margin deducted (status lines); Infinity for the socket coordinator */
  remainingMs(): number;
  /** the VM finished cleanly: no backup may take over, and the lease ends */
  finish(): Promise<void>;
}

/** Where a backup's image stands: the stream it came from (lease and stream number) and its last committed epoch. */
export interface Position {
  token: number;
  stream: number;
  epoch: number;
}

/** Orders positions: newer lease, then newer stream of that lease, then newer epoch. */
export function comparePositions(a: Position, b: Position): number {
  return a.token - b.token || a.stream - b.stream || a.epoch - b.epoch;
}

export interface StandByOptions {
  /** the newest position the backup could resume from, or null while it has none */
  position(): Position | null;
  /**
   * The campaign starts (the lease expired): stop applying streams of leases up to `token`
   * (the expired one's), so that the position reported is final.
   */
  freeze(token: number): void;
  /** resolves when the primary's stream ended without End (the socket coordinator's signal that it died) */
  primaryLost: Promise<void>;
  /** aborts standing by */
  signal?: AbortSignal;
}

/** One acquisition, as the lease history records it. */
export interface LeaseRecord {
  token: number;
  holder: string;
  /** the position the holder resumed from (null: a fresh guest) */
  position: Position | null;
  /** CLOCK_MONOTONIC ms (monotonicMs) taken before the acquiring request was sent: the lease is not the holder's before this */
  requestedAt: number;
  /** wall-clock time of the acquisition (ISO 8601), for people */
  at: string;
}

export interface Coordinator {
  readonly kind: 'socket' | 'etcd';
  /** e.g. "etcd://127.0.0.1:2379/fleet/vm1 (TTL 5 s, margin 1000 ms)" */
  readonly description: string;
  /** The lease for a fresh guest. etcd refuses when the VM has run before (its lease history is not empty) or is held. */
  acquire(holder: string): Promise<Lease>;
  /** A backup stands by; resolves with the lease once it is this backup's turn to take over. */
  standBy(holder: string, options: StandByOptions): Promise<Lease>;
  /** Every acquisition so far, oldest first (empty for the socket coordinator, which has no history). */
  history(): Promise<LeaseRecord[]>;
  close(): Promise<void>;
}

export class LeaseLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseLostError';
  }
}

/** The socket coordinator's lease: always held, by the only primary a connection can have. */
class SocketLease implements Lease {
  readonly token = 0;
  readonly state: LeaseState = 'held';
  constructor(readonly holder: string) {}
  mayRelease(): boolean {
    return true;
  }
  whenHeld(): undefined {
    return undefined;
  }
  onChange(): void {}
  remainingMs(): number {
    return Infinity;
  }
  async finish(): Promise<void> {}
}

/** Today's behaviour: a backup takes over when the primary's stream ends without End (one machine only). */
export class SocketCoordinator implements Coordinator {
  readonly kind = 'socket';
  readonly description = 'socket (a backup takes over when its primary\'s connection drops: one machine only)';

  async acquire(holder: string): Promise<Lease> {
    return new SocketLease(holder);
  }

  async standBy(holder: string, o: StandByOptions): Promise<Lease> {
    const aborted = new Promise<never>((_, reject) => o.signal?.addEventListener('abort', () => reject(o.signal!.reason), { once: true }));
    await Promise.race([o.primaryLost, aborted]);
    o.freeze(0);
    if (!o.position()) throw new Error('the primary\'s connection dropped before its first epoch was committed: nothing to take over');
    return new SocketLease(holder);
  }

  async history(): Promise<LeaseRecord[]> {
    return [];
  }

  async close(): Promise<void> {}
}

/**
 * Checks a client's log against the lease history: every output arrived from the holder of
 * the lease it names; once an output of a newer lease arrived, none of an older one did; and
 * each output of lease T arrived before the next holder even asked for the lease (so it was
 * released, earlier still, inside T's period). Returns the violations found.
 */
export function checkLeasePeriods(
  log: readonly { firstSeq: number; count: number; token: number | null; holder: string | null; at: number }[],
  history: readonly LeaseRecord[],
): string[] {
  const out: string[] = [];
  const byToken = new Map(history.map((r, i) => [r.token, { r, next: history[i + 1] }]));
  let newest = -1;
  for (const a of log) {
    const what = `outputs ${a.firstSeq}..${a.firstSeq + a.count - 1} from ${a.holder ?? 'a host without a lease'}`;
    if (a.token === null) {
      out.push(`${what}: no lease named`);
      continue;
    }
    const h = byToken.get(a.token);
    if (!h) out.push(`${what}: lease ${a.token} is not in the history`);
    else {
      if (h.r.holder !== a.holder) out.push(`${what}: lease ${a.token} was held by ${h.r.holder}`);
      if (h.next && a.at >= h.next.requestedAt) {
        out.push(`${what}: arrived ${(a.at - h.next.requestedAt).toFixed(1)} ms after ${h.next.holder} asked for lease ${h.next.token}`);
      }
    }
    if (a.token < newest) out.push(`${what}: lease ${a.token} after outputs of lease ${newest}`);
    newest = Math.max(newest, a.token);
  }
  return out;
}

export { monotonicMs };
