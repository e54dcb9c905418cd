// The State frame (stream format extension 3, docs/stream-format.md §12): the machine's full
// state at an epoch, beside the general registers of its Epoch part 0: every vCPU's
// VcpuState, the VM's in-kernel devices (VmState) and the VMM's devices, each as the bytes of
// its own format (docs/state-format.md; a device's save()). A reader decodes every piece when
// the frame arrives, so a malformed one refuses the epoch before anything is applied.

import { decodeVcpuState, decodeVmState, encodeVcpuState, encodeVmState } from '../state-codec';
import type { VcpuState } from '../vcpu';
import type { VmState } from '../vm';
import { StreamError, readU64, writeU64, type Frame } from './format';

/** A machine's state beyond its memory, as of one epoch. */
export interface MachineState {
  /** every vCPU's, in the Header's order */
  vcpus: { id: number; state: VcpuState }[];
  /** the VM's in-kernel devices and clock (vm.getState()), or null when the machine has none */
  vm: VmState | null;
  /** each VMM device's save(), by the device's name */
  devices: Record<string, Uint8Array>;
}

const FIXED = 24;
const MAX_NAME = 255;

const pad8 = (n: number): number => (n + 7) & ~7;

/** The State payload of epoch `epoch`: the pieces are encoded here (with the guest paused, where a checkpointer calls it). */
export function encodeStatePayload(epoch: number, s: MachineState): Buffer {
  const vcpus = s.vcpus.map((v) => ({ id: v.id, bytes: encodeVcpuState(v.state) }));
  const vm = s.vm ? encodeVmState(s.vm) : null;
  const devices = Object.entries(s.devices).map(([name, state]) => ({ name: Buffer.from(name, 'utf8'), state }));
  for (const d of devices) {
    if (d.name.length === 0 || d.name.length > MAX_NAME) throw new RangeError(`a device name is 1 to ${MAX_NAME} bytes of UTF-8, got ${d.name.length}`);
  }
  let size = FIXED + pad8(vm?.length ?? 0);
  for (const v of vcpus) size += 8 + pad8(v.bytes.length);
  for (const d of devices) size += 8 + pad8(d.name.length) + pad8(d.state.length);
  const p = Buffer.alloc(size);
  writeU64(p, 0, epoch);
  p.writeUInt32LE(vcpus.length, 8);
  p.writeUInt32LE(devices.length, 12);
  p.writeUInt32LE(vm?.length ?? 0, 16);
  let at = FIXED;
  for (const v of vcpus) {
    p.writeUInt32LE(v.id, at);
    p.writeUInt32LE(v.bytes.length, at + 4);
    p.set(v.bytes, at + 8);
    at += 8 + pad8(v.bytes.length);
  }
  if (vm) {
    p.set(vm, at);
    at += pad8(vm.length);
  }
  for (const d of devices) {
    p.writeUInt16LE(d.name.length, at);
    p.writeUInt32LE(d.state.length, at + 4);
    d.name.copy(p, at + 8);
    at += 8 + pad8(d.name.length);
    p.set(d.state, at);
    at += pad8(d.state.length);
  }
  return p;
}

export function decodeStateFrame(frame: Frame): { epoch: number; state: MachineState } {
  const p = frame.payload;
  const off = frame.offset;
  if (p.length < FIXED) throw new StreamError('EFRAME', off, `State payload of ${p.length} bytes (at least ${FIXED} expected)`);
  const epoch = readU64(p, 0, off, 'epoch number');
  const nVcpus = p.readUInt32LE(8);
  const nDevices = p.readUInt32LE(12);
  const vmBytes = p.readUInt32LE(16);
  if (p.readUInt32LE(20) !== 0) throw new StreamError('EFRAME', off, `State of epoch ${epoch}: bytes 20..23 must be zero`);
  let at = FIXED;
  const take = (n: number, what: string): Buffer => {
    if (at + pad8(n) > p.length) throw new StreamError('EFRAME', off, `State of epoch ${epoch}: ${what} of ${n} bytes is past the frame's end`);
    const b = p.subarray(at, at + n);
    at += pad8(n);
    return b;
  };
  const piece = <T>(decode: () => T, what: string): T => {
    try {
      return decode();
    } catch (e) {
      throw new StreamError('EFRAME', off, `State of epoch ${epoch}: ${what}: ${(e as Error).message}`);
    }
  };
  const vcpus: MachineState['vcpus'] = [];
  for (let i = 0; i < nVcpus; i++) {
    const head = take(8, `vCPU record ${i}`);
    const id = head.readUInt32LE(0);
    const bytes = take(head.readUInt32LE(4), `vCPU ${id}'s state`);
    vcpus.push({ id, state: piece(() => decodeVcpuState(bytes), `vCPU ${id}'s state`) });
  }
  const vm = vmBytes ? take(vmBytes, 'the VM state') : null;
  const devices: Record<string, Uint8Array> = {};
  for (let i = 0; i < nDevices; i++) {
    const head = take(8, `device record ${i}`);
    if (head.readUInt16LE(2) !== 0) throw new StreamError('EFRAME', off, `State of epoch ${epoch}: device record ${i} has non-zero padding`);
    const name = take(head.readUInt16LE(0), `device ${i}'s name`).toString('utf8');
    if (name === '' || name in devices) throw new StreamError('EFRAME', off, `State of epoch ${epoch}: device ${i} has ${name ? `the name ${JSON.stringify(name)} twice` : 'no name'}`);
    devices[name] = Uint8Array.from(take(head.readUInt32LE(4), `device ${name}'s state`));
  }
  if (at !== p.length) throw new StreamError('EFRAME', off, `State of epoch ${epoch}: ${p.length - at} bytes after its pieces`);
  return { epoch, state: { vcpus, vm: vm ? piece(() => decodeVmState(vm), 'the VM state') : null, devices } };
}
