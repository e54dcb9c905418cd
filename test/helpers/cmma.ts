// Two ways to drive the s390 CMMA model in test/emulator-cmma.test.ts: EmulatedCmma alone,
// with a memslot list kept here, and the public API on the emulated s390x VM.
import { EmulatedCmma, type CmmaSlot } from '../../lib/emulator/cmma';
import { openKvm, type GuestMemory, type Kvm, type Vm } from '../../lib';
import { PAGE_SIZE, S390_VM_MIGRATION, S390_VM_MIGRATION_STATUS } from '../../lib/constants';

export { expectKvmError } from './backends';

export interface CmmaLogOut {
  startGfn: number;
  count: number;
  remaining: number;
  /** only the direct driver sees the struct's flags */
  flags?: number;
}

/** A VM as the CMMA tests use it; memslots are given in pages. */
export interface CmmaVm {
  /** Creates slot `id`, or changes it (same size: a move or a flags change). */
  setSlot(id: number, baseGfn: number, npages: number, flags: number): void;
  setFlags(id: number, flags: number): void;
  moveSlot(id: number, baseGfn: number): void;
  deleteSlot(id: number): void;
  createVcpu(): void;
  setAttr(group: number, attr: number): void;
  getAttr(group: number, attr: number): bigint;
  hasAttr(group: number, attr: number): boolean;
  getCmmaBits(startGfn: number, count: number, flags: number, values: Uint8Array): CmmaLogOut;
  setCmmaBits(startGfn: number, values: Uint8Array, mask: bigint, flags?: number): void;
  essa(gfn: number, orc: number): number;
  close(): void;
}

export interface CmmaDriver {
  name: string;
  skipReason?: string;
  newVm(): CmmaVm;
  /** memslot size granule in pages (s390 memslots are whole MiBs on a real VM) */
  slotUnit: number;
  /** can afford a 4 GiB memslot */
  bigMemory: boolean;
  /** the flags part of an expected struct: what this driver can see of it */
  flagsOut(flags: number): { flags?: number };
}

/** EmulatedCmma with a memslot list of its own; it checks nothing KVM_SET_USER_MEMORY_REGION would. */
class DirectVm implements CmmaVm {
  readonly #slots = new Map<number, CmmaSlot>();
  readonly cmma = new EmulatedCmma(() => [...this.#slots.values()]);

  setSlot(id: number, baseGfn: number, npages: number, flags: number): void {
    const before = this.#slots.get(id) ?? null;
    const after = { id, baseGfn, npages, flags };
    this.#slots.set(id, after);
    this.cmma.slotChanged(before, after);
  }
  setFlags(id: number, flags: number): void {
    const s = this.#slot(id);
    this.setSlot(id, s.baseGfn, s.npages, flags);
  }
  moveSlot(id: number, baseGfn: number): void {
    const s = this.#slot(id);
    this.setSlot(id, baseGfn, s.npages, s.flags);
  }
  deleteSlot(id: number): void {
    const before = this.#slot(id);
    this.#slots.delete(id);
    this.cmma.slotChanged(before, null);
  }
  createVcpu(): void {
    this.cmma.vcpuCreated();
  }
  setAttr(group: number, attr: number): void {
    this.cmma.setDeviceAttr(group, attr);
  }
  getAttr(group: number, attr: number): bigint {
    return this.cmma.getDeviceAttr(group, attr);
  }
  hasAttr(group: number, attr: number): boolean {
    return this.cmma.hasDeviceAttr(group, attr);
  }
  getCmmaBits(startGfn: number, count: number, flags: number, values: Uint8Array): CmmaLogOut {
    return this.cmma.getCmmaBits({ startGfn, count, flags }, values);
  }
  setCmmaBits(startGfn: number, values: Uint8Array, mask: bigint, flags = 0): void {
    this.cmma.setCmmaBits({ startGfn, count: values.length, flags, mask }, values);
  }
  essa(gfn: number, orc: number): number {
    return this.cmma.essa(gfn, orc);
  }
  close(): void {}

  #slot(id: number): CmmaSlot {
    const s = this.#slots.get(id);
    if (!s) throw new Error(`test bug: no slot ${id}`);
    return s;
  }
}

/** The public API on openKvm({ backend: 'emulator', arch: 's390x' }). */
class PublicVm implements CmmaVm {
  readonly #kvm: Kvm;
  readonly #vm: Vm;
  readonly #slots = new Map<number, { memory: GuestMemory; baseGfn: number; npages: number; flags: number }>();
  #vcpus = 0;

  constructor() {
    this.#kvm = openKvm({ backend: 'emulator', arch: 's390x' });
    this.#vm = this.#kvm.createVm();
  }

  setSlot(id: number, baseGfn: number, npages: number, flags: number): void {
    const old = this.#slots.get(id);
    const memory = old && old.npages === npages ? old.memory : this.#vm.createMemory(npages * PAGE_SIZE);
    this.#vm.setUserMemoryRegion({ slot: id, guestPhysAddr: baseGfn * PAGE_SIZE, memory, flags });
    this.#slots.set(id, { memory, baseGfn, npages, flags });
  }
  setFlags(id: number, flags: number): void {
    const s = this.#slot(id);
    this.setSlot(id, s.baseGfn, s.npages, flags);
  }
  moveSlot(id: number, baseGfn: number): void {
    const s = this.#slot(id);
    this.setSlot(id, baseGfn, s.npages, s.flags);
  }
  deleteSlot(id: number): void {
    const s = this.#slot(id);
    this.#vm.setUserMemoryRegion({ slot: id, guestPhysAddr: s.baseGfn * PAGE_SIZE, memory: null, flags: 0 });
    this.#slots.delete(id);
  }
  createVcpu(): void {
    this.#vm.createVcpu(this.#vcpus++);
  }
  setAttr(group: number, attr: number): void {
    this.#vm.setDeviceAttr(group, attr);
  }
  getAttr(group: number, attr: number): bigint {
    if (group === S390_VM_MIGRATION && attr === S390_VM_MIGRATION_STATUS) return this.#vm.getMigrationMode() ? 1n : 0n;
    // no raw KVM_GET_DEVICE_ATTR on the public Vm yet
    return this.#vm.getDeviceAttr(group, attr);
  }
  hasAttr(group: number, attr: number): boolean {
    return this.#vm.hasDeviceAttr(group, attr);
  }
  getCmmaBits(startGfn: number, count: number, flags: number, values: Uint8Array): CmmaLogOut {
    const r = this.#vm.getCmmaBits({ startGfn, count, flags, values });
    expect(r.values).toBe(values);
    return { startGfn: r.startGfn, count: r.count, remaining: r.remaining };
  }
  setCmmaBits(startGfn: number, values: Uint8Array, mask: bigint, flags = 0): void {
    this.#vm.setCmmaBits({ startGfn, values, mask, flags });
  }
  essa(gfn: number, orc: number): number {
    const hooks = this.#vm.emulator;
    if (!hooks) throw new Error('the emulated VM has no hooks');
    return hooks.essa(gfn, orc);
  }
  close(): void {
    this.#kvm.close();
  }

  #slot(id: number) {
    const s = this.#slots.get(id);
    if (!s) throw new Error(`test bug: no slot ${id}`);
    return s;
  }
}

function publicSkipReason(): string | undefined {
  try {
    openKvm({ backend: 'emulator', arch: 's390x' }).close();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

export function drivers(): CmmaDriver[] {
  return [
    { name: 'direct', newVm: () => new DirectVm(), slotUnit: 1, bigMemory: true, flagsOut: (flags) => ({ flags }) },
    { name: 'public API', skipReason: publicSkipReason(), newVm: () => new PublicVm(), slotUnit: 256, bigMemory: false, flagsOut: () => ({}) },
  ];
}
