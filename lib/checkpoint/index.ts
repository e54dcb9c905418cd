// Checkpointing on top of dirty tracking: Remus-style epochs with replication, output commit
// and failover, pre-copy live migration, and the stream format they share
// (docs/stream-format.md).
export { Checkpointer, EPOCH_PORT, COUNTER_PORT, type CheckpointSink, type CheckpointerOptions, type CheckpointStats, type EpochInfo } from './checkpointer';
export { ReplicaImage } from './image';
export {
  createMachine, machineFromLayout, restoreMachine, describeMachine, chooseMode, hasDirtyRing, ringBytesFor,
  forEachNonZeroPage, copyNonZeroPages, sameContents, type Contents, type MachineSlot,
  DATA_GFN, DATA_SLOT, HARNESS_SLOT, type DirtyMode, type Machine, type MachineOptions,
  createImageMachine, imageMode, standardDevices, captureState, applyState, GUEST_EXIT_PORT, IMAGE_MEMORY_BYTES,
  type ImageMachineOptions, type ImageGuestOptions, type DeviceOutput,
} from './machine';
export type { MachineState } from './state-frame';
export { DirtyTracker, PageSet } from './tracker';
export { OutputCommit, OutputChannel, OutputClient, monotonicMs, type OutputArrival, type HostVisit, type LeaseCheck } from './output';
export {
  SocketCoordinator, LeaseLostError, checkLeasePeriods, comparePositions,
  type Coordinator, type Lease, type LeaseState, type LeaseRecord, type Position, type StandByOptions,
} from './coordinator';
export { EtcdCoordinator, parseEtcdUrl, type EtcdCoordinatorOptions } from './etcd-coordinator';
export { startEtcd, findEtcd, type EtcdServer, type StartEtcdOptions } from './etcd-server';
export { FaultProxy } from './fault-proxy';
export { QuorumSink, UnprotectedSink, type QuorumSinkOptions } from './replication';
export type { LeaseTag } from './lease-frame';
export { FileSink, TcpSink, ReplicaServer, ReplicaRejected, readCheckpointFile, type ReplicaOutcome } from './transport';
export { migrate, type MigrateOptions, type MigrationResult, type MigrationRound } from './migrate';
export {
  migrateTo, type MigrateToOptions, type MigrationStats, type MigrationRoundStats, type MigrationProgress, type MigrationStatus, type ThrottleMode,
} from './migration';
export { receiveMigration, type ReceiveMigrationOptions, type IncomingMigration } from './incoming';
export { OutputTap, type MigrationTarget } from './migration-link';
export {
  runFailoverTrial, formatFailover, runPartitionTrial, FAULTS,
  type FailoverOptions, type FailoverResult, type PartitionOptions, type PartitionResult, type ScheduleRecord, type Fault, type EtcdTrialOptions,
} from './failover';
// The dirty rate and the dirty limit of a machine (also kvm-dirty/dirtyrate).
export { measureDirtyRate, DirtyRateMeter, DirtyLimit, GuestRunner, type DirtyRateMode, type DirtyRateResult, type RunPolicy } from '../dirtyrate';
export { benchCheckpoint, type BenchCheckpointOptions, type BenchCheckpointResult } from './bench';
export { StreamError, FrameDecoder, FrameType, type StreamErrorCode } from './format';
export { crc32c } from './crc32c';
export type { MachineLayout, SlotLayout, VcpuLayout, VcpuRegs, OutputRecord, CommitRecord } from './records';
