import './dispose';
import type { BackendVcpu, DTable, ExitInfo, Regs, Segment, Sregs } from './backend';
import { fail } from './errors';
import { DirtyRing } from './ring';
import { checkInstance, checkObject, checkU64, checkUint } from './validate';
import { Workload } from './workload';

/** What vcpu.run() returned: the exit reason and, for I/O and MMIO exits, their data. */
export type Exit = ExitInfo;

const REG_NAMES = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SEGMENT_BITS = { limit: 0xffff_ffff, selector: 0xffff, type: 15, present: 1, dpl: 3, db: 1, s: 1, l: 1, g: 1, avl: 1, unusable: 1 } as const;

/** struct kvm_sregs from JS, every field checked (TypeError / RangeError naming it), u64s as bigints. */
function checkSregs(value: unknown): Sregs {
  const o = checkObject('sregs', value);
  const segment = (name: string): Segment => {
    const g = checkObject(`sregs.${name}`, o[name]);
    const seg = { base: checkU64(`sregs.${name}.base`, g.base) } as Segment;
    for (const [field, max] of Object.entries(SEGMENT_BITS)) (seg as unknown as Record<string, number>)[field] = checkUint(`sregs.${name}.${field}`, g[field], max);
    return seg;
  };
  const dtable = (name: string): DTable => {
    const t = checkObject(`sregs.${name}`, o[name]);
    return { base: checkU64(`sregs.${name}.base`, t.base), limit: checkUint(`sregs.${name}.limit`, t.limit, 0xffff) };
  };
  const bitmap = o.interruptBitmap;
  if (!Array.isArray(bitmap) || bitmap.length !== 4) throw new TypeError('sregs.interruptBitmap must be an array of 4 u64 words');
  const out = {} as Sregs;
  for (const name of SEGMENTS) out[name] = segment(name);
  out.gdt = dtable('gdt');
  out.idt = dtable('idt');
  for (const name of ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const) out[name] = checkU64(`sregs.${name}`, o[name]);
  out.interruptBitmap = bitmap.map((w, i) => checkU64(`sregs.interruptBitmap[${i}]`, w));
  return out;
}

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
    this._handle.setSregs(checkSregs(sregs));
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
