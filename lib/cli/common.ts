// Shared pieces of the checkpoint commands: the backend, the guest and its workload from the
// command line, percentiles for progress lines.

import { InvalidArgumentError } from 'commander';
import { openKvm, type OpenOptions } from '../index';
import type { Kvm } from '../kvm';
import { Workload } from '../workload';
import { DATA_GFN, createMachine, dataGfnFor, type DirtyMode, type Machine } from '../checkpoint/machine';

export interface BackendFlags {
  backend?: OpenOptions['backend'];
  arch?: OpenOptions['arch'];
  device?: string;
  pml?: boolean;
}

export interface GuestFlags extends BackendFlags {
  workload: 'stride' | 'random' | 'counter';
  /** stride/random: pages written per epoch; counter: outputs per epoch */
  pages: number;
  guestMib: number;
  mode: DirtyMode | 'auto';
}

export function open(flags: BackendFlags): Kvm {
  return openKvm({ backend: flags.backend, arch: flags.arch, device: flags.device, pml: flags.pml });
}

export function positiveInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return n;
  };
}

export function positiveNumber(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number`);
    return n;
  };
}

/** Guest data pages for a guest of `mib` MiB in all (the first 2 MiB are the harness). */
export function dataPages(mib: number): number {
  const pages = mib * 256 - DATA_GFN;
  if (pages < 1) throw new RangeError(`--guest-mib must be at least 3 (2 MiB of it is the guest harness), got ${mib}`);
  return pages;
}

/** The workload a --workload / --pages pair describes, on `data` data pages from gfn `first`. */
export function workloadOf(kind: GuestFlags['workload'], pages: number, data: number, first = DATA_GFN): Workload {
  switch (kind) {
    case 'stride':
      if (pages > data) throw new RangeError(`--pages ${pages} is more than the guest's ${data} data pages`);
      return Workload.stride({ firstPage: first, pages, stridePages: Math.max(1, Math.floor(data / pages)) });
    case 'random':
      return Workload.random({ firstPage: first, spanPages: data, pagesPerEpoch: pages, seed: 1 });
    case 'counter':
      return Workload.counter({ page: first });
    default:
      throw new RangeError(`--workload must be stride, random or counter, got ${JSON.stringify(kind)}`);
  }
}

export function buildGuest(kvm: Kvm, f: GuestFlags): Machine {
  const data = dataPages(f.guestMib);
  return createMachine(kvm, { dataPages: data, mode: f.mode, workloads: workloadOf(f.workload, f.pages, data, dataGfnFor(data)) });
}

/** x to 3 decimals (ms in reports). */
export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** p50 and p99 of the last values pushed (a fixed window, no allocation per value). */
export class Window {
  readonly #v: Float64Array;
  #n = 0;

  constructor(size = 2048) {
    this.#v = new Float64Array(size);
  }

  push(x: number): void {
    this.#v[this.#n++ % this.#v.length] = x;
  }

  quantiles(): { p50: number; p99: number } {
    const n = Math.min(this.#n, this.#v.length);
    if (!n) return { p50: 0, p99: 0 };
    const s = this.#v.slice(0, n).sort();
    return { p50: s[Math.floor(0.5 * n)], p99: s[Math.min(n - 1, Math.floor(0.99 * n))] };
  }
}

/** host:port (host defaults to 127.0.0.1). */
export function hostPort(v: string): { host: string; port: number } {
  const m = /^(?:(.+):)?(\d+)$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new InvalidArgumentError('expected host:port or port');
  return { host: m[1] ?? '127.0.0.1', port };
}
