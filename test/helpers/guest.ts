// A small VM for tests: slot 0 = the harness's [0, 2 MiB) (not logged), slot 1 = `dataPages`
// logged pages from guest-physical 2 MiB (gfn 512), one vCPU.
//
//   gfn 0 .. 511            slot 0  harness: page tables + code (host writes only)
//   gfn 512 .. 512+data-1   slot 1  KVM_MEM_LOG_DIRTY_PAGES; entry.offset = gfn - 512
import { MemFlag, type GuestMemory, type Kvm, type Vcpu, type Vm } from '../../lib';

export const DATA_SLOT = 1;
export const DATA_GFN = 512;
export const HARNESS_BYTES = 2 * 1024 * 1024;

export interface TestGuest {
  vm: Vm;
  vcpu: Vcpu;
  harness: GuestMemory;
  data: GuestMemory;
  /** the u64 at bytes 0-7 of guest page `gfn` (in slot 1) */
  word(gfn: number): bigint;
}

/**
 * A test VM. The dirty ring: `ringFor: n` takes the host's smallest ring whose soft limit holds
 * n entries (kvm.dirtyRingLimits().bytesFor(n): 64 reserved entries here, 576 on an Intel host
 * with PML); `ringBytes` a size of the caller's, for tests of one profile's exact numbers.
 */
export function makeGuest(
  kvm: Kvm,
  opts: { dataPages?: number; ringBytes?: number; ringFor?: number; manualProtect?: number; vcpus?: number } = {},
): TestGuest & { vcpusAll: Vcpu[] } {
  const dataPages = opts.dataPages ?? 1024;
  const vm = kvm.createVm();
  const ringBytes = opts.ringBytes ?? (opts.ringFor === undefined ? 0 : kvm.dirtyRingLimits().bytesFor(opts.ringFor));
  if (ringBytes) vm.enableDirtyRing(ringBytes);
  if (opts.manualProtect !== undefined) vm.enableManualDirtyLogProtect(opts.manualProtect);
  const harness = vm.createMemory(HARNESS_BYTES);
  const data = vm.createMemory(dataPages * 4096);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: harness });
  vm.setUserMemoryRegion({ slot: DATA_SLOT, guestPhysAddr: DATA_GFN * 4096, memory: data, flags: MemFlag.LogDirtyPages });
  const vcpusAll: Vcpu[] = [];
  for (let i = 0; i < (opts.vcpus ?? 1); i++) vcpusAll.push(vm.createVcpu(i));
  const view = new DataView(data.buffer);
  return {
    vm,
    vcpu: vcpusAll[0],
    vcpusAll,
    harness,
    data,
    word: (gfn) => view.getBigUint64((gfn - DATA_GFN) * 4096, true),
  };
}

/** Sorted unique numbers. */
export function uniqSorted(xs: Iterable<number>): number[] {
  return [...new Set(xs)].sort((a, b) => a - b);
}

export function range(from: number, count: number, step = 1): number[] {
  return Array.from({ length: count }, (_, i) => from + i * step);
}
