// Device models in the VMM and the dispatcher that hands them a vCPU's I/O and MMIO exits.
//
// A device claims I/O port ranges and/or guest-physical MMIO ranges; IoBus.handle() gives it
// each access of an exit (a `rep outsb` is several) and, for an IN or an MMIO read, writes
// the device's answer into kvm_run where the kernel takes it on the next KVM_RUN. IoBus.run()
// and runAsync() are the run loop: KVM_RUN until an exit no device takes (an OUT to a port
// nobody claims, HLT without an in-kernel irqchip, a shutdown, a kick), or until a number of
// handled exits. Every device saves and restores its state as bytes, which travel with the
// vCPU and VM state of a checkpoint.

import { ExitReason } from '../constants';
import { checkObject, checkUint, describe } from '../validate';
import type { Exit, Vcpu } from '../vcpu';

/** A device model. Ports and MMIO ranges must not overlap another device's on the same bus. */
export interface Device {
  /** unique on its bus: names the device's saved state */
  readonly name: string;
  /** I/O ports answered, as inclusive [first, last] ranges */
  readonly ioPorts?: ReadonlyArray<readonly [number, number]>;
  /**
   * One byte-wide I/O access (a 2- or 4-byte access arrives as consecutive ports): for 'out',
   * `value` is the byte written; for 'in', return the byte read (0xff if nothing answers).
   */
  onIo?(port: number, direction: 'in' | 'out', value: number): number | void;
  /** guest-physical MMIO ranges answered, as [gpa, length] (outside every memory slot) */
  readonly mmioRanges?: ReadonlyArray<readonly [number, number]>;
  /** One MMIO access of data.length bytes: a write brings the bytes in `data`; a read fills it. */
  onMmio?(gpa: number, isWrite: boolean, data: Uint8Array): void;
  /** The device's state, to be given to restore() of the same kind of device. */
  save(): Uint8Array;
  /** Sets the state save() returned; RangeError for bytes it cannot have made. */
  restore(bytes: Uint8Array): void;
}

/** How a run loop ended. */
export interface BusRun {
  /** the last exit: the one no device took ('exit'), or the last one handled ('maxExits') */
  exit: Exit;
  /** exits the devices handled during this call */
  handled: number;
  /** 'exit': an exit for the caller; 'maxExits': the limit was reached (a pending IN or MMIO read already completed); 'timeout': runAsync's timer kicked the vCPU */
  stopped: 'exit' | 'maxExits' | 'timeout';
}

export interface BusRunOptions {
  /** return after this many handled exits (default: no limit) */
  maxExits?: number;
}

export interface BusRunAsyncOptions extends BusRunOptions {
  /** kick the vCPU after this many ms (default: never); the run then ends 'timeout' */
  timeoutMs?: number;
}

// kvm_run (include/uapi/linux/kvm.h, x86-64): the exit union starts at byte 32.
const RUN_IO_DIRECTION = 32;
const RUN_IO_SIZE = 33;
const RUN_IO_PORT = 34;
const RUN_IO_COUNT = 36;
const RUN_IO_DATA_OFFSET = 40;
const RUN_MMIO_PHYS_ADDR = 32;
const RUN_MMIO_DATA = 40;
const RUN_MMIO_LEN = 48;
const RUN_MMIO_IS_WRITE = 52;
const KVM_EXIT_IO_IN = 0;

interface Claim<T> {
  first: number;
  last: number;
  device: T;
}

export class IoBus {
  readonly #devices = new Map<string, Device>();
  readonly #ports: Claim<Device>[] = [];
  readonly #mmio: Claim<Device>[] = [];

  constructor(devices: Device[] = []) {
    if (!Array.isArray(devices)) throw new TypeError(`devices must be an array, got ${describe(devices)}`);
    for (const d of devices) this.add(d);
  }

  /** Adds a device; TypeError for a malformed one, RangeError if a name, port or range is taken. */
  add(device: Device): this {
    const d = checkObject('device', device) as unknown as Device;
    if (typeof d.name !== 'string' || d.name === '') throw new TypeError('device.name must be a non-empty string');
    if (this.#devices.has(d.name)) throw new RangeError(`a device named ${JSON.stringify(d.name)} is already on the bus`);
    if (typeof d.save !== 'function' || typeof d.restore !== 'function') throw new TypeError(`device ${d.name} needs save() and restore()`);
    const ports = claims(d, d.ioPorts, 'ioPorts', 0xffff, (r) => [r[0], r[1]]);
    const mmio = claims(d, d.mmioRanges, 'mmioRanges', Number.MAX_SAFE_INTEGER, (r) => [r[0], r[0] + r[1] - 1]);
    if (ports.length > 0 && typeof d.onIo !== 'function') throw new TypeError(`device ${d.name} claims ports but has no onIo()`);
    if (mmio.length > 0 && typeof d.onMmio !== 'function') throw new TypeError(`device ${d.name} claims MMIO but has no onMmio()`);
    for (const [mine, theirs, what] of [[ports, this.#ports, 'ports'], [mmio, this.#mmio, 'MMIO']] as const) {
      for (const c of mine) {
        const clash = theirs.find((t) => c.first <= t.last && t.first <= c.last);
        if (clash) throw new RangeError(`${d.name}'s ${what} [0x${c.first.toString(16)}, 0x${c.last.toString(16)}] overlap ${clash.device.name}'s`);
      }
    }
    this.#devices.set(d.name, d);
    this.#ports.push(...ports);
    this.#mmio.push(...mmio);
    return this;
  }

  get devices(): readonly Device[] {
    return [...this.#devices.values()];
  }

  /**
   * Gives an Io or Mmio exit to the device that claims it and, for an IN or an MMIO read,
   * writes the answer into the vCPU's kvm_run. Returns false (touching nothing) when no
   * device claims it or it is another kind of exit.
   */
  handle(vcpu: Vcpu, exit: Exit): boolean {
    if (exit.reason === ExitReason.Io) return this.#io(vcpu);
    if (exit.reason === ExitReason.Mmio) return this.#mmioExit(vcpu);
    return false;
  }

  /** KVM_RUN until an exit no device takes, or `maxExits` handled exits (see BusRun). */
  run(vcpu: Vcpu, options: BusRunOptions = {}): BusRun {
    const max = maxExitsOf(options);
    let handled = 0;
    for (;;) {
      const exit = vcpu.run();
      if (!this.handle(vcpu, exit)) return { exit, handled, stopped: 'exit' };
      if (++handled >= max) return this.#stop(vcpu, exit, handled);
    }
  }

  /** As run(), with vcpu.runAsync(); `timeoutMs` kicks the vCPU (an in-kernel hlt waits until then). */
  async runAsync(vcpu: Vcpu, options: BusRunAsyncOptions = {}): Promise<BusRun> {
    const max = maxExitsOf(options);
    const o = checkObject('options', options);
    let timedOut = false;
    const timer = o.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      vcpu.kick();
    }, checkUint('timeoutMs', o.timeoutMs, 2 ** 31 - 1));
    try {
      let handled = 0;
      for (;;) {
        const exit = await vcpu.runAsync();
        if (timedOut && exit.reason === ExitReason.Intr) return { exit, handled, stopped: 'timeout' };
        if (!this.handle(vcpu, exit)) return { exit, handled, stopped: 'exit' };
        if (++handled >= max) return this.#stop(vcpu, exit, handled);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Every device's save(), by name. */
  save(): Record<string, Uint8Array> {
    const out: Record<string, Uint8Array> = {};
    for (const [name, d] of this.#devices) out[name] = d.save();
    return out;
  }

  /** Gives each device its state from save(); RangeError if a device's state is missing. */
  restore(states: Record<string, Uint8Array>): void {
    const s = checkObject('states', states);
    for (const name of this.#devices.keys()) {
      if (!(s[name] instanceof Uint8Array)) throw new RangeError(`no saved state (a Uint8Array) for device ${JSON.stringify(name)}`);
    }
    for (const [name, d] of this.#devices) d.restore(s[name] as Uint8Array);
  }

  /** Stopping at a handled exit: an IN or MMIO read is complete only after KVM_RUN takes its data. */
  #stop(vcpu: Vcpu, exit: Exit, handled: number): BusRun {
    if ((exit.reason === ExitReason.Io && exit.io?.direction === 'in') || (exit.reason === ExitReason.Mmio && !exit.mmio?.isWrite)) {
      vcpu.completeIo();
    }
    return { exit, handled, stopped: 'maxExits' };
  }

  #io(vcpu: Vcpu): boolean {
    const run = new DataView(vcpu.runBuffer);
    const port = run.getUint16(RUN_IO_PORT, true);
    const size = run.getUint8(RUN_IO_SIZE);
    const first = this.#find(this.#ports, port);
    if (first === undefined) return false;
    const isIn = run.getUint8(RUN_IO_DIRECTION) === KVM_EXIT_IO_IN;
    const count = run.getUint32(RUN_IO_COUNT, true);
    const dataOffset = Number(run.getBigUint64(RUN_IO_DATA_OFFSET, true));
    if (dataOffset + count * size > run.byteLength) return false; // not a layout the kernel makes
    const data = new Uint8Array(vcpu.runBuffer, dataOffset, count * size);
    for (let i = 0; i < count; i++) {
      for (let b = 0; b < size; b++) {
        const p = (port + b) & 0xffff;
        const device = b === 0 ? first : this.#find(this.#ports, p);
        const at = i * size + b;
        if (isIn) data[at] = device === undefined ? 0xff : (Number(device.onIo!(p, 'in', 0) ?? 0xff) & 0xff);
        else device?.onIo!(p, 'out', data[at]);
      }
    }
    return true;
  }

  #mmioExit(vcpu: Vcpu): boolean {
    const run = new DataView(vcpu.runBuffer);
    const gpa = Number(run.getBigUint64(RUN_MMIO_PHYS_ADDR, true));
    const device = this.#find(this.#mmio, gpa);
    if (device === undefined) return false;
    const len = Math.min(run.getUint32(RUN_MMIO_LEN, true), 8);
    device.onMmio!(gpa, run.getUint8(RUN_MMIO_IS_WRITE) !== 0, new Uint8Array(vcpu.runBuffer, RUN_MMIO_DATA, len));
    return true;
  }

  #find(claims: Claim<Device>[], at: number): Device | undefined {
    for (const c of claims) if (at >= c.first && at <= c.last) return c.device;
    return undefined;
  }
}

function maxExitsOf(options: BusRunOptions): number {
  const o = checkObject('options', options);
  return o.maxExits === undefined ? Infinity : checkUint('maxExits', o.maxExits);
}

function claims(
  d: Device,
  ranges: unknown,
  field: string,
  max: number,
  span: (r: readonly [number, number]) => [number, number],
): Claim<Device>[] {
  if (ranges === undefined) return [];
  if (!Array.isArray(ranges)) throw new TypeError(`device ${d.name}: ${field} must be an array of [number, number]`);
  return ranges.map((r, i) => {
    if (!Array.isArray(r) || r.length !== 2) throw new TypeError(`device ${d.name}: ${field}[${i}] must be [number, number]`);
    checkUint(`${d.name}.${field}[${i}][0]`, r[0], max);
    checkUint(`${d.name}.${field}[${i}][1]`, r[1], max);
    const [first, last] = span(r as [number, number]);
    if (last < first || last > max) throw new RangeError(`device ${d.name}: ${field}[${i}] is an empty or out-of-range range`);
    return { first, last, device: d };
  });
}
