// A machine for the own-guest example: one VM with the in-kernel irqchip and PIT, one memory
// slot from guest-physical 0 (the harness's 2 MiB, then the guest), one vCPU, a 16550 on an
// IoBus; and a snapshot of all of it (vCPU and VM state, device state, memory) that restores
// into a fresh machine, in this process or, as bytes, in another.

import { decodeVcpuState, decodeVmState, encodeVcpuState, encodeVmState, IoBus, Serial16550, type GuestMemory, type Kvm, type VcpuState, type Vcpu, type Vm, type VmState } from '../../lib';

/** Guest RAM: the harness's first 2 MiB, the guest's code and data at 2 MiB, its stack at the top. */
export const MEMORY_BYTES = 8 << 20;
/** The port start.S writes guest_main()'s result to. */
export const EXIT_PORT = 0xf4;

export interface Machine {
  vm: Vm;
  memory: GuestMemory;
  vcpu: Vcpu;
  serial: Serial16550;
  bus: IoBus;
}

export interface MachineOptions {
  /** called with each byte the guest transmits */
  onByte?: (byte: number) => void;
}

/** A VM ready for vcpu.loadImage() or restore(): irqchip and PIT first (the kernel wants them before the vCPU). */
export function createMachine(kvm: Kvm, options: MachineOptions = {}): Machine {
  const vm = kvm.createVm();
  vm.createIrqchip();
  vm.createPit2();
  const memory = vm.createMemory(MEMORY_BYTES);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
  const vcpu = vm.createVcpu(0);
  const serial = new Serial16550({ onByte: options.onByte });
  return { vm, memory, vcpu, serial, bus: new IoBus([serial]) };
}

/** Everything a restore needs. */
export interface Snapshot {
  vcpu: VcpuState;
  vm: VmState;
  devices: Record<string, Uint8Array>;
  memory: Uint8Array;
}

/** The machine's state at an exit (an IoBus run stopped by maxExits has completed any pending IN). */
export function snapshot(m: Machine): Snapshot {
  return { vcpu: m.vcpu.getState(), vm: m.vm.getState(), devices: m.bus.save(), memory: m.memory.view(0, m.memory.size).slice() };
}

/** Which parts of a snapshot restore() applies (all by default): the tests leave some out. */
export interface RestoreParts {
  /** vCPU pieces beyond regs and sregs; default all the snapshot has */
  vcpuPieces?: ReadonlyArray<keyof VcpuState>;
  vm?: boolean;
}

/** A fresh machine on `kvm` in the snapshot's state. */
export function restore(kvm: Kvm, snap: Snapshot, options: MachineOptions & RestoreParts = {}): Machine {
  const m = createMachine(kvm, options);
  m.memory.view(0, m.memory.size).set(snap.memory);
  if (options.vm ?? true) m.vm.setState(snap.vm);
  const vcpu: VcpuState = { regs: snap.vcpu.regs, sregs: snap.vcpu.sregs };
  for (const piece of options.vcpuPieces ?? (Object.keys(snap.vcpu) as Array<keyof VcpuState>)) {
    if (snap.vcpu[piece] !== undefined) (vcpu as unknown as Record<string, unknown>)[piece] = snap.vcpu[piece];
  }
  m.vcpu.setState(vcpu);
  m.bus.restore(snap.devices);
  return m;
}

// A snapshot as bytes: "KOGS", then length-prefixed (u32 LE) blobs: the vCPU state
// (encodeVcpuState), the VM state (encodeVmState), the device count, per device its name
// (UTF-8) and state, and the memory.
const SNAPSHOT_MAGIC = 0x53474f4b;

export function encodeSnapshot(s: Snapshot): Uint8Array {
  const blobs: Uint8Array[] = [encodeVcpuState(s.vcpu), encodeVmState(s.vm), u32(Object.keys(s.devices).length)];
  for (const [name, state] of Object.entries(s.devices)) blobs.push(new TextEncoder().encode(name), state);
  blobs.push(s.memory);
  const out = new Uint8Array(4 + blobs.reduce((n, b) => n + 4 + b.length, 0));
  const v = new DataView(out.buffer);
  v.setUint32(0, SNAPSHOT_MAGIC, true);
  let at = 4;
  for (const b of blobs) {
    v.setUint32(at, b.length, true);
    out.set(b, at + 4);
    at += 4 + b.length;
  }
  return out;
}

export function decodeSnapshot(bytes: Uint8Array): Snapshot {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 || v.getUint32(0, true) !== SNAPSHOT_MAGIC) throw new RangeError('not an own-guest snapshot');
  let at = 4;
  const next = (): Uint8Array => {
    if (at + 4 > bytes.length) throw new RangeError('own-guest snapshot: truncated');
    const n = v.getUint32(at, true);
    if (at + 4 + n > bytes.length) throw new RangeError('own-guest snapshot: truncated');
    const b = bytes.subarray(at + 4, at + 4 + n);
    at += 4 + n;
    return b;
  };
  const vcpu = decodeVcpuState(next());
  const vm = decodeVmState(next());
  const count = new DataView(next().slice().buffer).getUint32(0, true);
  const devices: Record<string, Uint8Array> = {};
  for (let i = 0; i < count; i++) devices[new TextDecoder().decode(next())] = next().slice();
  const memory = next().slice();
  if (at !== bytes.length) throw new RangeError('own-guest snapshot: trailing bytes');
  return { vcpu, vm, devices, memory };
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}
