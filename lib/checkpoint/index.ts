// Checkpointing on top of dirty tracking: Remus-style epochs with replication, output commit
// and failover, pre-copy live migration, and the stream format they share
// (docs/stream-format.md).
export { Checkpointer, EPOCH_PORT, COUNTER_PORT, type CheckpointSink, type CheckpointerOptions, type CheckpointStats, type EpochInfo } from './checkpointer';
export { ReplicaImage } from './image';
export {
  createMachine, machineFromLayout, restoreMachine, describeMachine, chooseMode, hasDirtyRing, ringBytesFor,
  forEachNonZeroPage, copyNonZeroPages, sameContents, type Contents, type MachineSlot,
  DATA_GFN, DATA_SLOT, HARNESS_SLOT, type DirtyMode, type Machine, type MachineOptions,
} from './machine';
export { DirtyTracker, PageSet } from './tracker';
export { OutputCommit, OutputChannel, OutputClient } from './output';
export { FileSink, TcpSink, ReplicaServer, ReplicaRejected, readCheckpointFile, type ReplicaOutcome } from './transport';
export { migrate, type MigrateOptions, type MigrationResult, type MigrationRound } from './migrate';
export { runFailoverTrial, formatFailover, type FailoverOptions, type FailoverResult } from './failover';
// The dirty rate and the dirty limit of a machine (also kvm-dirty/dirtyrate).
export { measureDirtyRate, DirtyRateMeter, DirtyLimit, GuestRunner, type DirtyRateMode, type DirtyRateResult, type RunPolicy } from '../dirtyrate';
export { benchCheckpoint, type BenchCheckpointOptions, type BenchCheckpointResult } from './bench';
export { StreamError, FrameDecoder, FrameType, type StreamErrorCode } from './format';
export { crc32c } from './crc32c';
export type { MachineLayout, SlotLayout, VcpuLayout, VcpuRegs, OutputRecord, CommitRecord } from './records';
