import './dispose';
import type { BackendSystem, HostInfo } from './backend';
import { Cap, type Arch } from './constants';
import { fail, isKvmError } from './errors';
import { decodeCpuid, type CpuidEntry } from './kvm-structs';
import { DirtyRingLimits, probeRingLimits } from './ring-limits';
import { checkUint } from './validate';
import { Vm } from './vm';

/** The /dev/kvm handle (or the emulator's). Made by openKvm(). */
export class Kvm {
  /** @internal */
  readonly _handle: BackendSystem;
  /** Why openKvm({ backend: 'auto' }) chose the emulator; undefined otherwise. */
  readonly fallbackReason: string | undefined;
  readonly #vms = new Set<Vm>();
  #closed = false;
  #ringLimits: DirtyRingLimits | undefined;
  #msrIndexList: Uint32Array | undefined;

  /** @internal made by openKvm() */
  constructor(handle: BackendSystem, fallbackReason?: string) {
    this._handle = handle;
    this.fallbackReason = fallbackReason;
  }

  /** 'native' (the kernel's KVM) or 'emulator'. */
  get backend(): 'native' | 'emulator' {
    return this._handle.backend;
  }

  get arch(): Arch {
    return this._handle.arch;
  }

  /** The host's KVM flavour (e.g. kvm_pvm, nested), or the emulator's description. */
  get hostInfo(): HostInfo {
    return this._handle.hostInfo;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** KVM_GET_API_VERSION: 12 on every kernel since 2.6.22. */
  getApiVersion(): number {
    this.#live('KVM_GET_API_VERSION');
    return this._handle.getApiVersion();
  }

  /** KVM_CHECK_EXTENSION: 0 if the capability is absent, else its value (e.g. the maximum ring size in bytes). */
  checkExtension(cap: Cap | number): number {
    this.#live('KVM_CHECK_EXTENSION');
    return this._handle.checkExtension(checkUint('cap', cap, 0xffff_ffff));
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes of a vCPU's kvm_run mapping (the ring is mapped apart). */
  getVcpuMmapSize(): number {
    this.#live('KVM_GET_VCPU_MMAP_SIZE');
    return this._handle.getVcpuMmapSize();
  }

  /**
   * The dirty ring's size rules here: reserved entries (64, or 576 on an Intel host with PML),
   * the smallest and largest ring the kernel takes, and softLimit(bytes) / bytesFor(entries).
   * Asked once (the smallest ring is found with KVM_ENABLE_CAP on a scratch VM) and kept.
   */
  dirtyRingLimits(): DirtyRingLimits {
    this.#live('KVM_CHECK_EXTENSION');
    this.#ringLimits ??= probeRingLimits({
      checkExtension: (cap) => this._handle.checkExtension(cap),
      reservedEntries: this._handle.ringReservedEntries,
      tryRing: (bytes) => {
        const vm = this._handle.createVm(0);
        try {
          const cap = vm.checkExtension(Cap.DirtyLogRingAcqRel) > 0 ? Cap.DirtyLogRingAcqRel : Cap.DirtyLogRing;
          vm.enableCap(cap, [BigInt(bytes), 0n, 0n, 0n], 0);
          return true;
        } catch (e) {
          if (isKvmError(e, 'EINVAL')) return false;
          throw e;
        } finally {
          vm.close();
        }
      },
    });
    return this.#ringLimits;
  }

  /** KVM_GET_SUPPORTED_CPUID: the CPUID entries KVM can show a guest (every vCPU starts with them). */
  getSupportedCpuid(): CpuidEntry[] {
    this.#live('KVM_GET_SUPPORTED_CPUID');
    return decodeCpuid(this._handle.getSupportedCpuid());
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs the kernel saves and restores for a guest (vCPUs may refuse some). */
  getMsrIndexList(): number[] {
    this.#live('KVM_GET_MSR_INDEX_LIST');
    return Array.from(this.#msrs());
  }

  #msrs(): Uint32Array {
    this.#msrIndexList ??= this._handle.getMsrIndexList();
    return this.#msrIndexList;
  }

  /** KVM_CREATE_VM */
  createVm(): Vm {
    this.#live('KVM_CREATE_VM');
    const vm = new Vm(this._handle.createVm(0), (v) => this.#vms.delete(v), { msrIndexList: () => this.#msrs() });
    this.#vms.add(vm);
    return vm;
  }

  /** Closes every VM (children first), then the device. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const vm of [...this.#vms]) vm.close();
    this._handle.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(ioctl: string): void {
    if (this.#closed) fail('EBADF', ioctl, 'the KVM handle is closed');
  }
}
