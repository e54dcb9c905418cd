import './dispose';
import type { BackendVcpu, ExitInfo, Regs, Sregs } from './backend';
import { fail } from './errors';
import { DirtyRing } from './ring';
import { checkInstance, checkObject, checkU64 } from './validate';
import { Workload } from './workload';

/** What vcpu.run() returned: the exit reason and, for I/O and MMIO exits, their data. */
export type Exit = ExitInfo;

const REG_NAMES = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

/**
 * A virtual CPU (the vCPU fd, its kvm_run page and, with the ring on, its dirty ring).
 * Made by vm.createVcpu(); closed by close() or with its VM.
 */
export class Vcpu {
  readonly id: number;
  /** @internal */
  readonly _handle: BackendVcpu;
  readonly #ring: DirtyRing | null;
  #closed = false;
  readonly #onClose: (v: Vcpu) => void;

  /** @internal made by vm.createVcpu() */
  constructor(handle: BackendVcpu, onClose: (v: Vcpu) => void) {
    this._handle = handle;
    this.id = handle.id;
    this.#onClose = onClose;
    const ring = handle.ringBuffer;
    this.#ring = ring ? new DirtyRing(ring, handle.harvestRing?.bind(handle)) : null;
  }

  /** This vCPU's dirty ring, or null when the VM has no ring. */
  get dirtyRing(): DirtyRing | null {
    return this.#ring;
  }

  /** The kvm_run mapping (detached once closed). */
  get runBuffer(): ArrayBuffer {
    return this._handle.runBuffer;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Loads a guest-harness workload: page tables and code go into guest-physical
   * [0, 2 MiB) (which a memory slot must cover) and the registers start it at epoch 1.
   * Other vCPUs' workloads are left alone.
   */
  load(workload: Workload): this {
    this.#live(undefined);
    checkInstance('workload', workload, Workload, 'a Workload (Workload.stride(), .random(), .counter(), .spin())');
    this._handle.load(workload.spec);
    return this;
  }

  /** KVM_RUN, synchronously: returns at the guest's next exit. A kick makes it return ExitReason.Intr. */
  run(): Exit {
    this.#live('KVM_RUN');
    return this._handle.run();
  }

  /** KVM_RUN on the vCPU's own thread; the event loop keeps running meanwhile. */
  async runAsync(): Promise<Exit> {
    this.#live('KVM_RUN');
    return this._handle.runAsync();
  }

  /** Makes a running vCPU return promptly with ExitReason.Intr (or the next run, if none is running). */
  kick(): void {
    this.#live(undefined);
    this._handle.kick();
  }

  /** KVM_GET_REGS */
  getRegs(): Regs {
    this.#live('KVM_GET_REGS');
    return this._handle.getRegs();
  }

  /** KVM_SET_REGS; registers left out keep their values. */
  setRegs(regs: Partial<Regs>): void {
    this.#live('KVM_SET_REGS');
    const o = checkObject('regs', regs);
    const next = this._handle.getRegs();
    for (const name of REG_NAMES) if (o[name] !== undefined) next[name] = checkU64(`regs.${name}`, o[name]);
    this._handle.setRegs(next);
  }

  /** KVM_GET_SREGS */
  getSregs(): Sregs {
    this.#live('KVM_GET_SREGS');
    return this._handle.getSregs();
  }

  /** KVM_SET_SREGS (a full struct, as getSregs() returns it). */
  setSregs(sregs: Sregs): void {
    this.#live('KVM_SET_SREGS');
    checkObject('sregs', sregs);
    this._handle.setSregs(sregs);
  }

  /** Kicks and joins a running vCPU, then unmaps its ring and kvm_run and closes the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this._handle.close();
    this.#ring?._close();
    this.#onClose(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #live(ioctl: string | undefined): void {
    if (this.#closed) fail('EBADF', ioctl, 'the vCPU is closed');
  }
}
