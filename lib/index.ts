// kvm-dirty: Linux KVM dirty-memory tracking (dirty ring, dirty bitmap, s390 CMMA) for
// Node.js, on the real /dev/kvm or on a kernel-exact emulator.
export { openKvm, hostArch, type OpenOptions, type BackendName } from './open';
export { Kvm } from './kvm';
export { Vm, type MemoryRegionOptions, type CmmaBits } from './vm';
export { Vcpu, type Exit } from './vcpu';
export { GuestMemory } from './memory';
export { DirtyRing } from './ring';
export { DirtyRingLimits, minRingBytes } from './ring-limits';
export { DirtyPages } from './dirty-pages';
export { DirtyBitmap } from './bitmap';
export { Workload, FIRST_WORKLOAD_PAGE, WORKLOAD_PAGE_LIMIT } from './workload';
export { KvmError, isKvmError } from './errors';
export { Cap, ExitReason, MemFlag, PAGE_SIZE, type Arch } from './constants';
export type { HostInfo, CpuInfo, Regs, Sregs, Segment, DTable, IoExit, MmioExit, WorkloadSpec, EmulatorHooks } from './backend';
export { EssaOrc, S390ProgramInterruption } from './emulator/cmma';
