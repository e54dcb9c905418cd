// kvm-dirty: Linux KVM dirty-memory tracking (dirty ring, dirty bitmap, s390 CMMA) for
// Node.js, on the real /dev/kvm or on a kernel-exact emulator.
export { openKvm, hostArch, type OpenOptions, type BackendName } from './open';
export { Kvm } from './kvm';
export { Vm, VM_STATE_PIECES, type MemoryRegionOptions, type CmmaBits, type VmState, type VmStatePiece } from './vm';
export { Vcpu, VCPU_STATE_PIECES, type Exit, type VcpuState, type VcpuStatePiece } from './vcpu';
export type { ImageOptions, ImageSegment, LoadedImage } from './guest/image';
export {
  IrqchipId,
  MpState,
  CLOCK_TSC_STABLE,
  CLOCK_REALTIME,
  CLOCK_HOST_TSC,
  VCPUEVENT_VALID_NMI_PENDING,
  VCPUEVENT_VALID_SIPI_VECTOR,
  VCPUEVENT_VALID_SHADOW,
  VCPUEVENT_VALID_SMM,
  VCPUEVENT_VALID_PAYLOAD,
  VCPUEVENT_VALID_TRIPLE_FAULT,
  type Fpu,
  type Xsave,
  type Xcr,
  type Xcrs,
  type MsrEntry,
  type Lapic,
  type VcpuEvents,
  type Debugregs,
  type CpuidEntry,
  type PicState,
  type IoapicState,
  type PitChannelState,
  type PitState2,
  type ClockData,
} from './kvm-structs';
export { encodeVcpuState, decodeVcpuState, encodeVmState, decodeVmState, STATE_FORMAT_VERSION } from './state-codec';
export { IoBus, Serial16550, COM1_PORT, type Device, type BusRun, type BusRunOptions, type BusRunAsyncOptions, type SerialOptions } from './devices';
export { GuestMemory } from './memory';
export { DirtyRing } from './ring';
export { DirtyRingLimits, minRingBytes } from './ring-limits';
export { DirtyPages } from './dirty-pages';
export { DirtyBitmap } from './bitmap';
export { Workload, FIRST_WORKLOAD_PAGE, WORKLOAD_PAGE_LIMIT } from './workload';
export { KvmError, isKvmError } from './errors';
export { Cap, ExitReason, MemFlag, PAGE_SIZE, SyncRegs, type Arch } from './constants';
export type { HostInfo, CpuInfo, Regs, Sregs, Segment, DTable, IoExit, MmioExit, WorkloadSpec, EmulatorHooks } from './backend';
export { EssaOrc, S390ProgramInterruption } from './emulator/cmma';
