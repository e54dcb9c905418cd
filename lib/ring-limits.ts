// The dirty ring's size rules on this host: how many entries the kernel keeps in reserve, the
// smallest and largest ring it takes, and a ring's soft limit. Nothing here is a constant of
// the project: a host with Intel PML reserves 64 + 512 entries and refuses 4 and 8 KiB rings
// that a host without PML takes (kernel-semantics.md rules 6, 19, 20, 45).

import { Cap, DIRTY_GFN_SIZE, PAGE_SIZE } from './constants';

/** How the reserved entries were learned: told by the backend, or read off the kernel's refusals. */
export type ReservedSource = 'backend' | 'probed';

/**
 * The dirty ring's geometry on one KVM: `reservedEntries` = KVM_DIRTY_RING_RSVD_ENTRIES (64)
 * + kvm_cpu_dirty_log_size() (512 with Intel PML, else 0); `minBytes` = the smallest power of
 * two with bytes >= max(4096, reservedEntries * 16); `maxBytes` = KVM_CHECK_EXTENSION of the
 * ring cap (0: no ring). A ring of `bytes` has bytes / 16 entries and its vCPU exits with
 * KVM_EXIT_DIRTY_RING_FULL once `softLimit(bytes)` = entries - reservedEntries are pushed and
 * not yet reset.
 */
export class DirtyRingLimits {
  readonly reservedEntries: number;
  readonly minBytes: number;
  readonly maxBytes: number;
  /** 'backend': the backend knows its reserve (emulator profile, host module parameters) and the kernel agreed; 'probed': derived from the smallest ring the kernel took. */
  readonly source: ReservedSource;

  constructor(reservedEntries: number, maxBytes: number, source: ReservedSource = 'backend') {
    if (!Number.isSafeInteger(reservedEntries) || reservedEntries < 0) throw new RangeError(`reservedEntries must be a non-negative integer, got ${reservedEntries}`);
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`maxBytes must be a non-negative integer, got ${maxBytes}`);
    this.reservedEntries = reservedEntries;
    this.maxBytes = maxBytes;
    this.minBytes = minRingBytes(reservedEntries);
    this.source = source;
  }

  /** The host has a dirty ring at all, and one it can size (minBytes <= maxBytes). */
  get supported(): boolean {
    return this.maxBytes > 0 && this.minBytes <= this.maxBytes;
  }

  /** Whether KVM_ENABLE_CAP takes a ring of `bytes` (a power of two from minBytes to maxBytes). */
  accepts(bytes: number): boolean {
    return Number.isSafeInteger(bytes) && bytes >= this.minBytes && bytes <= this.maxBytes && (bytes & (bytes - 1)) === 0;
  }

  /** Entries a ring of `bytes` can hold before its vCPU exits DirtyRingFull: bytes / 16 - reservedEntries. */
  softLimit(bytes: number): number {
    if (!this.accepts(bytes)) throw new RangeError(`${bytes} is not a ring size this host takes (a power of two from ${this.minBytes} to ${this.maxBytes} bytes)`);
    return bytes / DIRTY_GFN_SIZE - this.reservedEntries;
  }

  /**
   * The smallest ring this host takes whose soft limit is at least `entries` (at least
   * minBytes). RangeError when even the largest ring holds fewer.
   */
  bytesFor(entries: number): number {
    if (!Number.isSafeInteger(entries) || entries < 0) throw new RangeError(`entries must be a non-negative integer, got ${entries}`);
    if (!this.supported) throw new RangeError('this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING is 0)');
    let bytes = this.minBytes;
    while (bytes / DIRTY_GFN_SIZE - this.reservedEntries < entries && bytes < this.maxBytes) bytes *= 2;
    if (bytes / DIRTY_GFN_SIZE - this.reservedEntries < entries) {
      throw new RangeError(`${entries} entries exceed the largest dirty ring's soft limit here (${this.maxBytes / DIRTY_GFN_SIZE} entries, ${this.reservedEntries} reserved)`);
    }
    return bytes;
  }

  toJSON(): { reservedEntries: number; minBytes: number; maxBytes: number; source: ReservedSource } {
    return { reservedEntries: this.reservedEntries, minBytes: this.minBytes, maxBytes: this.maxBytes, source: this.source };
  }
}

/** The smallest ring size the kernel takes with `reservedEntries` in reserve: a power of two >= max(4096, reserved * 16). */
export function minRingBytes(reservedEntries: number): number {
  let bytes = PAGE_SIZE;
  while (bytes < reservedEntries * DIRTY_GFN_SIZE) bytes *= 2;
  return bytes;
}

/** What the limits are derived from: the capability, the backend's own word, and the kernel's answer to ring sizes. */
export interface RingProbe {
  checkExtension(cap: number): number;
  /** The reserve the backend knows of (undefined when it cannot tell). */
  reservedEntries: number | undefined;
  /** Tries KVM_ENABLE_CAP(ring, bytes) on a fresh VM with no vCPU: true if the kernel took it. */
  tryRing(bytes: number): boolean;
}

/**
 * Derives the limits from a probe: the smallest ring the kernel takes is asked (KVM_ENABLE_CAP
 * on scratch VMs, from 4 KiB up, until one is taken) and compared with the reserve the
 * backend reports. They agree on every known host; where
 * they do not (an unknown host, a kernel with another PML size), the largest reserve
 * consistent with the kernel's refusals is taken: a soft limit computed from it is never
 * above the real one, so a ring sized with bytesFor() never fills early.
 */
export function probeRingLimits(p: RingProbe): DirtyRingLimits {
  const maxBytes = Math.max(p.checkExtension(Cap.DirtyLogRingAcqRel), p.checkExtension(Cap.DirtyLogRing));
  const told = p.reservedEntries;
  if (maxBytes === 0) return new DirtyRingLimits(told ?? 64, 0, told === undefined ? 'probed' : 'backend');
  let smallest = 0;
  for (let bytes = PAGE_SIZE; bytes <= maxBytes; bytes *= 2) {
    if (p.tryRing(bytes)) {
      smallest = bytes;
      break;
    }
  }
  if (smallest === 0) return new DirtyRingLimits(maxBytes / DIRTY_GFN_SIZE + 1, maxBytes, 'probed');
  if (told !== undefined && minRingBytes(told) === smallest) return new DirtyRingLimits(told, maxBytes, 'backend');
  // The kernel took `smallest` and refused half of it: reserved * 16 <= smallest, and (above 4 KiB) > smallest / 2.
  return new DirtyRingLimits(smallest / DIRTY_GFN_SIZE, maxBytes, 'probed');
}
