// s390 storage attributes (CMMA) for the emulator's s390x profile: the VM device attributes
// of groups KVM_S390_VM_MEM_CTRL and KVM_S390_VM_MIGRATION, KVM_S390_GET_CMMA_BITS,
// KVM_S390_SET_CMMA_BITS and the guest's ESSA instruction.
//
// The model is the "classic" s390 code valid through v6.18 (arch/s390/kvm/kvm-s390.c
// kvm_s390_get_cmma() & co., priv.c __do_essa(), mm/pgtable.c pgste_perform_essa()), which
// is what tools/testing/selftests/kvm/s390/cmma_test.c encodes; rule numbers refer to
// kernel-semantics.md §15. The 2026 rewrite over the new gmap (rule 113) walks differently
// and is deliberately not followed.
//
// Per page the kernel keeps a PGSTE (in the host page table of the memslot's memory) and a
// CMMA-dirty bit (in the second half of the memslot's dirty bitmap). Here each memslot gets
// a Uint8Array of PGSTE bits 24-31 (usage state 0x03, NODAT 0x40, ZERO 0x80) and, while it
// has KVM_MEM_LOG_DIRTY_PAGES, a Uint32Array of CMMA-dirty bits: no object per page, so a
// 16 GiB guest (4M pages) costs 4.5 MiB.
//
// Every page backed by a memslot counts as resident (its host PTE valid): the emulator has
// no swap, so SET_POT_VOLATILE gives "potentially volatile", SET_STABLE_IF_RESIDENT gives
// "stable", and no ESSA discards a page (the PGSTE ZERO bit is never set).

import {
  MemFlag,
  S390_CMMA_PEEK,
  S390_CMMA_SIZE_MAX,
  S390_VM_MEM_CLR_CMMA,
  S390_VM_MEM_CTRL,
  S390_VM_MEM_ENABLE_CMMA,
  S390_VM_MIGRATION,
  S390_VM_MIGRATION_START,
  S390_VM_MIGRATION_STATUS,
  S390_VM_MIGRATION_STOP,
} from '../constants';
import { fail } from '../errors';

/** A memslot as the CMMA model needs it. `flags`: MemFlag bits; LogDirtyPages gives the slot a dirty bitmap. */
export interface CmmaSlot {
  id: number;
  baseGfn: number;
  npages: number;
  flags: number;
}

/** ESSA operation request codes (arch/s390/include/asm/page-states.h ESSA_*). */
export enum EssaOrc {
  GetState = 0,
  SetStable = 1,
  SetUnused = 2,
  SetVolatile = 3,
  SetPotVolatile = 4,
  SetStableResident = 5,
  SetStableIfResident = 6,
  /** needs facility 147, which the emulated CPU model has */
  SetStableNodat = 7,
}

/** PGSTE bits 24-31 as stored per page (arch/s390/include/asm/pgtable.h _PGSTE_GPS_*, shifted right by 24). */
const USAGE_MASK = 0x03; // _PGSTE_GPS_USAGE_MASK
const USAGE_STABLE = 0x00;
const USAGE_UNUSED = 0x01;
const USAGE_POT_VOLATILE = 0x02;
const USAGE_VOLATILE = 0x03;
const NODAT = 0x40; // _PGSTE_GPS_NODAT
/** The value byte userspace sees: `(pgste >> 24) & 0x43` (rule 105). */
const VALUE_MASK = USAGE_MASK | NODAT;

/** KVM_S390_MAX_BIT_DISTANCE = 2 * sizeof(void *): a block header (address + length) costs 16 bytes. */
const MAX_BIT_DISTANCE = 16;

/** Program-interruption code of an operation exception. */
export const PGM_OPERATION = 0x01;

/**
 * What a real guest would take instead of completing its instruction: a program
 * interruption. Thrown by `essa()` when the VM has not enabled CMMA (the guest's ESSA is an
 * operation exception, rule 100). Check `err.name`, not `instanceof` (jest realms).
 */
export class S390ProgramInterruption extends Error {
  /** the interruption code, e.g. PGM_OPERATION (0x01) */
  readonly interruptionCode: number;
  constructor(interruptionCode: number, detail: string) {
    super(`s390 program interruption 0x${interruptionCode.toString(16).padStart(4, '0')}: ${detail}`);
    this.name = 'S390ProgramInterruption';
    this.interruptionCode = interruptionCode;
  }
}

/** One memslot's CMMA state. */
class SlotState {
  /** PGSTE bits 24-31 per page; 0 = stable, the state of a page nobody touched. */
  readonly pgste: Uint8Array;
  /** CMMA-dirty bit per page (the second half of the dirty bitmap); null without LOG_DIRTY_PAGES. */
  dirty: Uint32Array | null;

  constructor(readonly npages: number, logged: boolean) {
    this.pgste = new Uint8Array(npages);
    this.dirty = logged ? newBitmap(npages) : null;
  }
}

function newBitmap(npages: number): Uint32Array {
  return new Uint32Array(Math.ceil(npages / 32));
}

/** find_next_bit(): the first set bit at or after `from`, or `size` if none. */
function findNextBit(words: Uint32Array, size: number, from: number): number {
  if (from >= size) return size;
  let w = from >>> 5;
  let word = words[w] & (0xffffffff << (from & 31));
  for (;;) {
    if (word !== 0) {
      const bit = w * 32 + (31 - Math.clz32(word & -word));
      return bit < size ? bit : size;
    }
    w++;
    if (w * 32 >= size) return size;
    word = words[w];
  }
}

/** The memslots sorted by gfn, as the kernel's gfn tree orders them. */
class SlotView {
  readonly bases: number[] = [];
  readonly ends: number[] = [];
  readonly states: SlotState[] = [];

  get length(): number {
    return this.bases.length;
  }

  /** The slot holding `gfn`, or -1 (gfn_to_memslot). */
  indexOf(gfn: number): number {
    const i = this.firstEndingAfter(gfn);
    return i < this.length && this.bases[i] <= gfn ? i : -1;
  }

  /** The first slot whose end lies above `gfn`: the one holding it, or the one above its hole; length if none. */
  firstEndingAfter(gfn: number): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] > gfn) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /**
   * kvm_s390_next_dirty_cmma(): the first CMMA-dirty gfn at or after `gfn`, scanning the slot
   * holding gfn (or the first slot above its hole) and then the slots above it; when gfn lies
   * at or beyond the end of the highest slot the scan wraps to the lowest (rule 107). Nothing
   * dirty: the end of the highest slot.
   */
  nextDirty(gfn: number): number {
    let i = this.firstEndingAfter(gfn);
    let ofs: number;
    if (i === this.length) {
      i = 0;
      ofs = 0;
    } else {
      ofs = Math.max(0, gfn - this.bases[i]);
    }
    ofs = this.findDirty(i, ofs);
    while (ofs >= this.states[i].npages && i + 1 < this.length) {
      i++;
      ofs = this.findDirty(i, 0);
    }
    return this.bases[i] + ofs;
  }

  /** End of the highest slot (kvm_s390_get_gfn_end). */
  get memEnd(): number {
    return this.ends[this.length - 1];
  }

  private findDirty(i: number, from: number): number {
    const s = this.states[i];
    // Migration mode guarantees a bitmap on every slot (rules 93, 97); a slot without one has nothing dirty.
    return s.dirty ? findNextBit(s.dirty, s.npages, from) : s.npages;
  }
}

/** Result of KVM_S390_GET_CMMA_BITS: struct kvm_s390_cmma_log as the kernel copies it back. */
export interface CmmaLog {
  startGfn: number;
  count: number;
  flags: number;
  remaining: number;
}

const GET = 'KVM_S390_GET_CMMA_BITS';
const SET = 'KVM_S390_SET_CMMA_BITS';

/**
 * The CMMA state of one emulated s390x VM. The VM hands every memslot change to
 * `slotChanged()` and every vCPU creation to `vcpuCreated()`; `slots()` gives the current
 * memslots (any order) whenever a walk needs them.
 */
export class EmulatedCmma {
  readonly #slots: () => readonly CmmaSlot[];
  readonly #states = new Map<number, SlotState>();
  #view: SlotView | null = null;
  #createdVcpus = 0;
  /** kvm->arch.use_cmma: set by KVM_S390_VM_MEM_ENABLE_CMMA */
  #useCmma = false;
  /** mm->context.uses_cmm: the guest has used CMM (rule 91) */
  #usesCmm = false;
  /** kvm->arch.migration_mode */
  #migrationMode = false;
  /** kvm->arch.cmma_dirty_pages: "remaining" */
  #cmmaDirtyPages = 0;

  constructor(slots: () => readonly CmmaSlot[]) {
    this.#slots = slots;
  }

  /** kvm->arch.use_cmma */
  get useCmma(): boolean {
    return this.#useCmma;
  }

  /** mm->context.uses_cmm: without it GET_CMMA_BITS reports nothing */
  get usesCmm(): boolean {
    return this.#usesCmm;
  }

  get migrationMode(): boolean {
    return this.#migrationMode;
  }

  /** kvm->arch.cmma_dirty_pages, the counter GET_CMMA_BITS reports as `remaining` */
  get cmmaDirtyPages(): number {
    return this.#cmmaDirtyPages;
  }

  /** KVM_SET_DEVICE_ATTR on the VM fd. No attribute here reads `value` (attr.addr). */
  setDeviceAttr(group: number, attr: number, _value?: bigint): void {
    const ioctl = 'KVM_SET_DEVICE_ATTR';
    if (group === S390_VM_MEM_CTRL) {
      if (attr === S390_VM_MEM_ENABLE_CMMA) {
        // kvm_s390_set_mem_control(): the SIE blocks of existing vCPUs would lack CMMA (rule 92)
        if (this.#createdVcpus > 0) fail('EBUSY', ioctl, 'CMMA must be enabled before the first vCPU');
        this.#useCmma = true;
        return;
      }
      if (attr === S390_VM_MEM_CLR_CMMA) {
        if (!this.#useCmma) fail('EINVAL', ioctl, 'CMMA is not enabled');
        // s390_reset_cmma() -> ptep_zap_unused(reset): every page stable, NODAT cleared
        for (const s of this.#states.values()) {
          for (let i = 0; i < s.npages; i++) s.pgste[i] &= ~VALUE_MASK;
        }
        return;
      }
      // KVM_S390_VM_MEM_LIMIT_SIZE is not emulated
      fail('ENXIO', ioctl);
    }
    if (group === S390_VM_MIGRATION) {
      if (attr === S390_VM_MIGRATION_START) return this.#startMigration();
      if (attr === S390_VM_MIGRATION_STOP) {
        // kvm_s390_vm_stop_migration(): the dirty bits and the counter stay (rule 94)
        this.#migrationMode = false;
        return;
      }
      fail('ENXIO', ioctl);
    }
    fail('ENXIO', ioctl);
  }

  /** KVM_GET_DEVICE_ATTR on the VM fd: only KVM_S390_VM_MIGRATION_STATUS (rule 96). */
  getDeviceAttr(group: number, attr: number): bigint {
    if (group === S390_VM_MIGRATION && attr === S390_VM_MIGRATION_STATUS) return this.#migrationMode ? 1n : 0n;
    fail('ENXIO', 'KVM_GET_DEVICE_ATTR');
  }

  /** KVM_HAS_DEVICE_ATTR on the VM fd: the machine has CMMA; group MIGRATION answers yes to any attr. */
  hasDeviceAttr(group: number, attr: number): boolean {
    if (group === S390_VM_MEM_CTRL) return attr === S390_VM_MEM_ENABLE_CMMA || attr === S390_VM_MEM_CLR_CMMA;
    return group === S390_VM_MIGRATION;
  }

  /** KVM_S390_GET_CMMA_BITS (rules 102-112). `values` receives `count` bytes at most. */
  getCmmaBits(args: { startGfn: number; count: number; flags: number }, values: Uint8Array): CmmaLog {
    if (!this.#useCmma) fail('ENXIO', GET, 'CMMA is not enabled');
    if (args.flags !== 0 && args.flags !== S390_CMMA_PEEK) fail('EINVAL', GET, `flags 0x${args.flags.toString(16)}`);
    const peek = args.flags === S390_CMMA_PEEK;
    if (!peek && !this.#migrationMode) fail('EINVAL', GET, 'not in migration mode (use peek)');
    const bufsize = Math.min(args.count, S390_CMMA_SIZE_MAX);
    const zeroed: CmmaLog = { startGfn: 0, count: 0, flags: 0, remaining: 0 };
    if (bufsize === 0 || !this.#usesCmm) return zeroed;
    if (!peek && this.#cmmaDirtyPages === 0) return zeroed;

    // The kernel fills a buffer of its own, then copies `count` bytes out.
    const buf = values.length >= bufsize ? values : new Uint8Array(bufsize);
    const log: CmmaLog = { startGfn: args.startGfn, count: args.count, flags: args.flags, remaining: 0 };
    const view = this.#sortedSlots();
    if (peek) log.count = this.#peek(view, args.startGfn, buf, bufsize);
    else if (view.length > 0) this.#get(view, log, buf, bufsize);
    else buf.fill(0, 0, Math.min(log.count, bufsize)); // no memslot: the kernel returns early, count untouched, copying its unwritten buffer
    log.remaining = this.#migrationMode ? this.#cmmaDirtyPages : 0;
    const copied = Math.min(log.count, bufsize);
    if (copied > values.length) {
      values.set(buf.subarray(0, values.length));
      fail('EFAULT', GET, `values has room for ${values.length} bytes, ${copied} to copy`);
    }
    if (buf !== values) values.set(buf.subarray(0, copied));
    return log;
  }

  /** KVM_S390_SET_CMMA_BITS (rules 114-117): `mask` in PGSTE bit positions. */
  setCmmaBits(args: { startGfn: number; count: number; flags: number; mask: bigint }, values: Uint8Array): void {
    if (!this.#useCmma) fail('ENXIO', SET, 'CMMA is not enabled');
    if (args.flags !== 0) fail('EINVAL', SET, `flags 0x${args.flags.toString(16)}`);
    if (args.count > S390_CMMA_SIZE_MAX) fail('EINVAL', SET, `count ${args.count} > ${S390_CMMA_SIZE_MAX}`);
    if (args.count === 0) return;
    if (values.length < args.count) fail('EFAULT', SET, `values holds ${values.length} bytes, count is ${args.count}`);
    // mask &= _PGSTE_GPS_USAGE_MASK | _PGSTE_GPS_NODAT, then moved to the stored byte's positions
    const m = Number((args.mask >> 24n) & BigInt(VALUE_MASK));
    const view = this.#sortedSlots();
    let i = 0;
    let hole = false;
    while (i < args.count) {
      const gfn = args.startGfn + i;
      const s = view.indexOf(gfn);
      if (s < 0) {
        hole = true; // pages before the hole keep their new values
        break;
      }
      const pgste = view.states[s].pgste;
      const ofs = gfn - view.bases[s];
      const n = Math.min(args.count - i, view.ends[s] - gfn);
      for (let k = 0; k < n; k++) pgste[ofs + k] = (pgste[ofs + k] & ~m) | (values[i + k] & m);
      i += n;
    }
    this.#usesCmm = true; // also after a hole (rule 116)
    if (hole) fail('EFAULT', SET, `gfn ${args.startGfn + i} is not in a memslot`);
  }

  /**
   * A guest ESSA with operation request code `orc` on page `gfn` (rules 91, 100). Returns the
   * page's CMMA value before the operation. Outside migration mode the first ESSA switches
   * on `uses_cmm` and the hardware interprets it without dirty tracking; in migration mode
   * every ESSA is intercepted and any set operation (orc != 0) marks the page CMMA-dirty.
   * Throws RangeError for an orc outside 0..7 or a gfn outside every memslot (a real guest
   * would take a specification or addressing exception), and S390ProgramInterruption
   * (operation) when the VM has not enabled CMMA.
   */
  essa(gfn: number, orc: number): number {
    if (!Number.isInteger(orc) || orc < 0 || orc > EssaOrc.SetStableNodat) {
      throw new RangeError(`orc must be an ESSA operation request code 0..7, got ${orc}`);
    }
    if (!Number.isSafeInteger(gfn) || gfn < 0) throw new RangeError(`gfn must be a page number, got ${gfn}`);
    if (!this.#useCmma) throw new S390ProgramInterruption(PGM_OPERATION, 'ESSA without KVM_S390_VM_MEM_ENABLE_CMMA');
    const view = this.#sortedSlots();
    const s = view.indexOf(gfn);
    if (s < 0) throw new RangeError(`gfn ${gfn} is not in a memslot (a guest ESSA there takes an addressing exception)`);
    const state = view.states[s];
    const ofs = gfn - view.bases[s];
    const before = state.pgste[ofs];
    state.pgste[ofs] = performEssa(before, orc);
    if (!this.#migrationMode) {
      this.#usesCmm = true; // handle_essa(): uses_cmm = 1, then ESSA retried in hardware
    } else if (orc !== EssaOrc.GetState && state.dirty) {
      // __do_essa(): count a page only when its bit really flips
      const w = ofs >>> 5;
      const bit = 1 << (ofs & 31);
      if ((state.dirty[w] & bit) === 0) {
        state.dirty[w] |= bit;
        this.#cmmaDirtyPages++;
      }
    }
    return before & VALUE_MASK;
  }

  /** KVM_CREATE_VCPU happened: ENABLE_CMMA is refused from now on. */
  vcpuCreated(): void {
    this.#createdVcpus++;
  }

  /**
   * A memslot was created (before null), deleted (after null), moved or had its flags
   * changed, after the VM's checks passed. The dirty bitmap follows kvm_prepare_memory_region():
   * dropped without LOG_DIRTY_PAGES, kept when the flag stays, new and clean when it appears.
   * PGSTEs live with the memory: kept on a move or flags change, gone with a deleted slot.
   * In migration mode a created or changed slot without LOG_DIRTY_PAGES stops migration mode;
   * deleting one does not (rule 97), and `remaining` is never adjusted.
   */
  slotChanged(before: CmmaSlot | null, after: CmmaSlot | null): void {
    this.#view = null;
    if (before && !after) {
      this.#states.delete(before.id);
      return;
    }
    if (!after) return;
    const logged = (after.flags & MemFlag.LogDirtyPages) !== 0;
    const old = before ? this.#states.get(before.id) : undefined;
    if (before && old && old.npages === after.npages) {
      if (before.id !== after.id) this.#states.delete(before.id);
      if (!logged) old.dirty = null;
      else if (!old.dirty) old.dirty = newBitmap(old.npages);
      this.#states.set(after.id, old);
    } else {
      if (before) this.#states.delete(before.id);
      this.#states.set(after.id, new SlotState(after.npages, logged));
    }
    if (this.#migrationMode && !logged) this.#migrationMode = false;
  }

  /** kvm_s390_vm_start_migration() (rule 93). */
  #startMigration(): void {
    const ioctl = 'KVM_SET_DEVICE_ATTR';
    if (this.#migrationMode) return; // already on: nothing is re-marked
    const view = this.#sortedSlots();
    if (view.length === 0) fail('EINVAL', ioctl, 'no memslots');
    if (!this.#useCmma) {
      this.#migrationMode = true;
      return;
    }
    // The kernel marks slot after slot and gives up at the first one without a bitmap; the
    // marks it leaves are unobservable (a later START marks everything again), so check first.
    if (view.states.some((s) => !s.dirty)) fail('EINVAL', ioctl, 'a memslot lacks KVM_MEM_LOG_DIRTY_PAGES');
    let pages = 0;
    for (const s of view.states) {
      s.dirty!.fill(0xffffffff); // memset(second half, 0xff): every page CMMA-dirty
      pages += s.npages;
    }
    this.#cmmaDirtyPages = pages;
    this.#migrationMode = true;
  }

  /** kvm_s390_peek_cmma(): values from startGfn on until a gfn outside the memslots (rule 106). */
  #peek(view: SlotView, startGfn: number, buf: Uint8Array, bufsize: number): number {
    let count = 0;
    let gfn = startGfn;
    while (count < bufsize) {
      const s = view.indexOf(gfn);
      if (s < 0) {
        if (count === 0) fail('EFAULT', GET, `gfn ${gfn} is not in a memslot`);
        break;
      }
      const pgste = view.states[s].pgste;
      const ofs = gfn - view.bases[s];
      const n = Math.min(bufsize - count, view.ends[s] - gfn);
      for (let k = 0; k < n; k++) buf[count + k] = pgste[ofs + k] & VALUE_MASK;
      count += n;
      gfn += n;
    }
    return count;
  }

  /** kvm_s390_get_cmma(), line for line (rules 107-112); updates log.startGfn and log.count. */
  #get(view: SlotView, log: CmmaLog, buf: Uint8Array, bufsize: number): void {
    let cur = view.nextDirty(log.startGfn);
    let s = view.indexOf(cur);
    log.count = 0;
    log.startGfn = cur;
    if (s < 0) return; // nothing dirty at or after startGfn (no wrap from a hole below the top)
    let next = view.nextDirty(cur + 1);
    const memEnd = view.memEnd;
    while (log.count < bufsize) {
      const state = view.states[s];
      const ofs = cur - view.bases[s];
      if (state.dirty) {
        const w = ofs >>> 5;
        const bit = 1 << (ofs & 31);
        if ((state.dirty[w] & bit) !== 0) {
          state.dirty[w] &= ~bit;
          this.#cmmaDirtyPages--;
        }
      }
      buf[log.count++] = state.pgste[ofs] & VALUE_MASK; // clean pages inside the block are sent too
      // The next dirty page is too far: a new block (16-byte header) is cheaper than the gap.
      if (next > cur + MAX_BIT_DISTANCE) return;
      if (cur === next) next = view.nextDirty(cur + 1);
      // End of memory, or the next dirty page would not fit; `next` below the start is the
      // wrap-around, which the kernel's unsigned subtraction also stops at.
      if (next >= memEnd || next < log.startGfn || next - log.startGfn >= bufsize) return;
      cur++;
      if (cur >= view.ends[s]) {
        s = view.indexOf(cur); // an adjacent slot continues the block, a hole ends it
        if (s < 0) return;
      }
    }
  }

  /** The memslots sorted by gfn with their states; rebuilt after a slot change. */
  #sortedSlots(): SlotView {
    if (this.#view) return this.#view;
    const view = new SlotView();
    for (const slot of [...this.#slots()].sort((a, b) => a.baseGfn - b.baseGfn)) {
      let state = this.#states.get(slot.id);
      const logged = (slot.flags & MemFlag.LogDirtyPages) !== 0;
      if (!state || state.npages !== slot.npages) {
        // a slot the VM had before this object saw it
        state = new SlotState(slot.npages, logged);
        this.#states.set(slot.id, state);
      }
      view.bases.push(slot.baseGfn);
      view.ends.push(slot.baseGfn + slot.npages);
      view.states.push(state);
    }
    this.#view = view;
    return view;
  }
}

/** pgste_perform_essa() on a resident page: the new PGSTE bits 24-31. */
function performEssa(pgste: number, orc: number): number {
  const rest = pgste & ~USAGE_MASK; // the operations below keep NODAT unless they say otherwise
  switch (orc) {
    case EssaOrc.GetState:
      return pgste;
    case EssaOrc.SetStable:
      return (pgste & ~(USAGE_MASK | NODAT)) | USAGE_STABLE;
    case EssaOrc.SetUnused:
      return rest | USAGE_UNUSED;
    case EssaOrc.SetVolatile:
      return rest | USAGE_VOLATILE;
    case EssaOrc.SetPotVolatile:
      return rest | USAGE_POT_VOLATILE;
    case EssaOrc.SetStableResident:
    case EssaOrc.SetStableIfResident:
      return rest | USAGE_STABLE;
    default: // EssaOrc.SetStableNodat
      return rest | USAGE_STABLE | NODAT;
  }
}
