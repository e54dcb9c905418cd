// kvm-dirty/dirtyrate: how fast a guest dirties memory, and a per-vCPU limit on it (QEMU's
// calc-dirty-rate and set-vcpu-dirty-limit), on a machine of kvm-dirty/checkpoint.
// Rates are in MB/s with MB = MiB (2^20 bytes), as QEMU reports them.
export { measureDirtyRate, DirtyRateMeter, DIRTY_RATE_MODES, type DirtyRateMode, type DirtyRateResult, type VcpuDirtyRate, type MeasureDirtyRateOptions, type DirtyRateMeterOptions } from './measure';
export { DirtyLimit, MIN_SLICE_MS, type DirtyLimitOptions, type DirtyLimitPeriod } from './limit';
export { GuestRunner, EPOCH_PORT, type RunPolicy, type VcpuRunStats } from './runner';
export { PacedWorkload, createPacedMachine, dirtyRingBytes, stopDirtyLogging, type PacedWorkloadOptions, type TrueRate } from './paced';
export { PageSampler, DEFAULT_SAMPLE_PAGES_PER_GIB } from './sampling';
export { DistinctPages } from './pages';
export { MB, PAGES_PER_MB, mbpsToPagesPerSec, pagesPerSecToMBps } from './units';
