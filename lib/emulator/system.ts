// The emulated /dev/kvm fd: KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE
// and KVM_CREATE_VM, answered by the chosen architecture profile.

import type { BackendSystem, BackendVm, HostInfo } from '../backend';
import { KVM_API_VERSION, type Arch } from '../constants';
import { cpuInfo } from '../cpu';
import { fail } from '../errors';
import { checkExtension, type Profile } from './profiles';
import { EmulatedVm } from './vm';

export class EmulatedSystem implements BackendSystem {
  readonly backend = 'emulator' as const;
  readonly arch: Arch;
  readonly hostInfo: HostInfo;
  readonly ringReservedEntries: number;
  readonly #profile: Profile;

  constructor(profile: Profile) {
    this.#profile = profile;
    this.arch = profile.arch;
    this.ringReservedEntries = profile.ringReservedEntries;
    const ring = profile.dirtyLogPageOffset === 0 ? 'no dirty ring'
      : `dirty ring with ${profile.ringReservedEntries} reserved entries${profile.pml ? ', an Intel host with PML' : ', no PML'}`;
    this.hostInfo = {
      flavour: 'emulator',
      nested: null,
      kernel: '6.18 (emulated)',
      description: `emulator: upstream KVM 6.18 dirty tracking for ${profile.arch} in TypeScript ` +
        `(${ring}; write-protect logging: each page once per protect cycle)`,
      pml: profile.pml,
      cpu: cpuInfo(),
    };
  }

  getApiVersion(): number {
    return KVM_API_VERSION;
  }

  checkExtension(cap: number): number {
    return checkExtension(this.#profile, cap);
  }

  getVcpuMmapSize(): number {
    return this.#profile.vcpuMmapSize;
  }

  /** KVM_CREATE_VM: only the default machine type (0) is emulated. */
  createVm(type: number): BackendVm {
    if (type !== 0) fail('EINVAL', 'KVM_CREATE_VM', `machine type ${type} is not emulated`);
    return new EmulatedVm(this.#profile);
  }

  /**
   * The emulated CPU executes only the harness's workloads, never CPUID: it offers no leaves
   * (a table of 0 entries; the vCPUs still keep what KVM_SET_CPUID2 gives them).
   */
  getSupportedCpuid(): Uint8Array {
    return new Uint8Array(8);
  }

  /** The emulated vCPU knows no MSR (KVM_GET/SET_MSRS process none), so none is listed. */
  getMsrIndexList(): Uint32Array {
    return new Uint32Array(0);
  }

  close(): void {
    // Nothing to release: the VMs were closed first.
  }
}
