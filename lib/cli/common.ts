// Shared pieces of the checkpoint commands: the backend, the guest (a built-in workload or a
// guest image of the user's own) from the command line, the guest's serial output, percentiles
// for progress lines.

import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import { COM1_PORT } from '../devices';
import { GuestRunner } from '../dirtyrate/runner';
import type { OutputTap } from '../checkpoint/migration-link';
import { openKvm, type OpenOptions } from '../index';
import type { Kvm } from '../kvm';
import { Workload } from '../workload';
import { DATA_GFN, createImageMachine, createMachine, dataGfnFor, type DirtyMode, type Machine } from '../checkpoint/machine';

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
  /** a guest image (flat binary or ELF64) instead of the workload */
  image?: string;
  entry?: number;
  imageMib: number;
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
  if (f.image !== undefined) {
    return createImageMachine(kvm, { image: new Uint8Array(readFileSync(f.image)), entry: f.entry, memoryBytes: f.imageMib * 2 ** 20, mode: f.mode });
  }
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

/** An address: decimal or 0x hex. */
export function address(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be an address (decimal or 0x hex)`);
    return n;
  };
}

/**
 * A guest image's serial output as a command shows it: each byte to stdout as it is released
 * (unless `echo` is off: --json prints it in the summary instead), all of it kept.
 */
export class SerialPrinter {
  text = '';
  readonly #echo: boolean;

  constructor(echo: boolean) {
    this.#echo = echo;
  }

  /** An output (port, value): COM1's bytes are the serial output. */
  readonly onOutput = (port: number, value: number): void => {
    if (port !== COM1_PORT) return;
    const c = String.fromCharCode(value & 0xff);
    this.text += c;
    if (this.#echo) process.stdout.write(c);
  };

  /** Packed output records (an OutputCommit's release). */
  readonly onPacked = (packed: ArrayLike<number>, count: number): void => {
    for (let i = 0; i < count; i++) this.onOutput(packed[2 * i] & 0xffff, packed[2 * i + 1]);
  };
}

/** Waits until the runner's guest has written its result or `ms` passed, then stops it; the result, or null. */
export async function untilGuestExit(runner: GuestRunner, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([runner.done(), new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
  await runner.stop();
  return runner.guestResult;
}

/** Runs a machine's guest with `tap` on a new runner until it writes its result or `ms` passed. */
export function runToExit(m: Machine, tap: OutputTap, ms: number): Promise<number | null> {
  const runner = new GuestRunner(m, [tap]);
  runner.start();
  return untilGuestExit(runner, ms);
}
