// vcpu.loadImage(): ELF64 and flat images go where they say, with .bss zeroed and the vCPU
// started as documented; every malformed or misplaced image is a RangeError before anything
// is written. On both backends (the emulator loads too; it then runs only its workloads).
import { ExitReason, type GuestMemory, type Kvm, type Vcpu } from '../lib';
import { describeEachBackend } from './helpers/backends';

const MIB = 1 << 20;

interface Seg {
  paddr: number;
  vaddr?: number;
  data: Uint8Array;
  memsz?: number;
  flags?: number;
}

/** A minimal static ELF64 for x86-64: the header, one program header per segment, the data. */
function makeElf(segments: Seg[], entry: number, patch: (v: DataView) => void = () => undefined): Uint8Array {
  const phoff = 64;
  let offset = phoff + segments.length * 56;
  const placed = segments.map((s) => {
    const at = offset;
    offset += s.data.length;
    return { ...s, at };
  });
  const out = new Uint8Array(offset);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(entry), true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, segments.length, true);
  placed.forEach((s, i) => {
    const p = phoff + i * 56;
    v.setUint32(p, 1, true); // PT_LOAD
    v.setUint32(p + 4, s.flags ?? 5, true); // R X
    v.setBigUint64(p + 8, BigInt(s.at), true);
    v.setBigUint64(p + 16, BigInt(s.vaddr ?? s.paddr), true);
    v.setBigUint64(p + 24, BigInt(s.paddr), true);
    v.setBigUint64(p + 32, BigInt(s.data.length), true);
    v.setBigUint64(p + 40, BigInt(s.memsz ?? s.data.length), true);
    v.setBigUint64(p + 48, 4096n, true);
    out.set(s.data, s.at);
  });
  patch(v);
  return out;
}

const CODE = Uint8Array.from([0xb0, 0x41, 0xe6, 0xf4, 0xf4]); // mov al, 'A'; out 0xf4, al; hlt
const DATA = Uint8Array.from({ length: 100 }, (_, i) => i + 1);

describeEachBackend('vcpu.loadImage', (b) => {
  let kvm: Kvm;
  let vcpu: Vcpu;
  let memory: GuestMemory;
  beforeEach(() => {
    kvm = b.open();
    const vm = kvm.createVm();
    memory = vm.createMemory(8 * MIB);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
    vcpu = vm.createVcpu(0);
  });
  afterEach(() => kvm.close());

  test('an ELF: each PT_LOAD at its address, .bss zeroed, rip at e_entry, rsp at the top of the slot, SSE on, a GDT', () => {
    new Uint8Array(memory.buffer).fill(0xee, 2 * MIB); // the .bss must not keep what was there
    const elf = makeElf([{ paddr: 0x200000, data: CODE }, { paddr: 0x300000, data: DATA, memsz: 0x2000, flags: 6 }], 0x200000);
    const loaded = vcpu.loadImage({ image: elf });
    expect(loaded).toEqual({
      format: 'elf', entry: 0x200000, stackTop: 8 * MIB,
      segments: [{ gpa: 0x200000, fileBytes: 5, memBytes: 5 }, { gpa: 0x300000, fileBytes: 100, memBytes: 0x2000 }],
    });
    const ram = new Uint8Array(memory.buffer);
    expect(ram.subarray(0x200000, 0x200005)).toEqual(CODE);
    expect(ram[0x200005]).toBe(0xee); // outside every segment: untouched
    expect(ram.subarray(0x300000, 0x300064)).toEqual(DATA);
    expect(ram.subarray(0x300064, 0x302000).every((x) => x === 0)).toBe(true);
    const regs = vcpu.getRegs();
    expect(regs).toEqual({ ...Object.fromEntries(Object.keys(regs).map((k) => [k, 0n])), rip: 0x200000n, rsp: BigInt(8 * MIB), rflags: 2n });
    const s = vcpu.getSregs();
    expect({ cr0: s.cr0, cr4: s.cr4, efer: s.efer & 0x500n, cr3: s.cr3, gdt: s.gdt, idt: s.idt, cs: s.cs.selector, ss: s.ss.selector, l: s.cs.l })
      .toEqual({ cr0: 0x80010033n, cr4: 0x620n, efer: 0x500n, cr3: 0x1000n, gdt: { base: 0x4000n, limit: 23 }, idt: { base: 0n, limit: 0 }, cs: 8, ss: 0x10, l: 1 });
    const gdt = new DataView(memory.buffer, 0x4000, 24);
    expect([gdt.getBigUint64(0, true), gdt.getBigUint64(8, true), gdt.getBigUint64(16, true)]).toEqual([0n, 0x00af9b000000ffffn, 0x00cf93000000ffffn]);
    // the page tables map at least 4 GiB, for the LAPIC at 0xfee00000: PDPT entries 0..3
    const pdpt = new DataView(memory.buffer, 0x2000, 40);
    expect([0, 1, 2, 3, 4].map((i) => pdpt.getBigUint64(i * 8, true) & 1n)).toEqual([1n, 1n, 1n, 1n, 0n]);
  });

  test('a flat binary at gpa (default 2 MiB), entry and stackTop as given', () => {
    expect(vcpu.loadImage({ image: CODE })).toMatchObject({ format: 'flat', entry: 0x200000, segments: [{ gpa: 0x200000, fileBytes: 5, memBytes: 5 }] });
    expect(vcpu.loadImage({ image: CODE, gpa: 0x400000, entry: 0x400002, stackTop: 0x7ff000 })).toMatchObject({ entry: 0x400002, stackTop: 0x7ff000 });
    expect(new Uint8Array(memory.buffer, 0x400000, 5)).toEqual(CODE);
    expect(vcpu.getRegs()).toMatchObject({ rip: 0x400002n, rsp: 0x7ff000n });
  });

  test('runs where the backend can run it: native to its OUT, the emulator (workloads only) stops with an internal error', () => {
    vcpu.loadImage({ image: CODE });
    const exit = vcpu.run();
    if (b.name === 'native') expect(exit).toMatchObject({ reason: ExitReason.Io, io: { port: 0xf4, direction: 'out', value: 0x41 } });
    else expect(exit.reason).toBe(ExitReason.InternalError);
  });

  test('every bad image or placement is a RangeError (or TypeError) and writes nothing', () => {
    const good = (): Seg[] => [{ paddr: 0x200000, data: CODE }];
    const elf = (segs: Seg[], entry = 0x200000, patch?: (v: DataView) => void) => makeElf(segs, entry, patch);
    const cases: Array<[string, unknown, RegExp]> = [
      ['segment outside memory', { image: elf([{ paddr: 0x1000_0000, data: CODE }], 0x1000_0000) }, /not inside one memory slot/],
      ['segment past the slot end', { image: elf([{ paddr: 8 * MIB - 2, data: CODE }], 8 * MIB - 2) }, /not inside one memory slot/],
      ['segment in the harness', { image: elf([{ paddr: 0x100000, data: CODE }], 0x100000) }, /harness/],
      ['flat image in the harness', { image: CODE, gpa: 0x1000 }, /harness/],
      ['overlapping segments', { image: elf([...good(), { paddr: 0x200004, data: DATA }]) }, /overlap/],
      ['vaddr != paddr', { image: elf([{ paddr: 0x200000, vaddr: 0xffff_8000_0020_0000, data: CODE }]) }, /p_vaddr/],
      ['ET_DYN', { image: elf(good(), 0x200000, (v) => v.setUint16(16, 3, true)) }, /ET_DYN/],
      ['not x86-64', { image: elf(good(), 0x200000, (v) => v.setUint16(18, 3, true)) }, /EM_X86_64/],
      ['ELFCLASS32', { image: elf(good(), 0x200000, (v) => v.setUint8(4, 1)) }, /ELFCLASS64/],
      ['big-endian', { image: elf(good(), 0x200000, (v) => v.setUint8(5, 2)) }, /little-endian/],
      ['truncated header', { image: elf(good()).subarray(0, 40) }, /shorter than the 64-byte/],
      ['program headers past the end', { image: elf(good(), 0x200000, (v) => v.setBigUint64(32, 1n << 20n, true)) }, /run past the image/],
      ['segment data past the end', { image: elf(good(), 0x200000, (v) => v.setBigUint64(64 + 32, 1n << 20n, true)) }, /run past the image|p_filesz/],
      ['filesz > memsz', { image: elf([{ paddr: 0x200000, data: DATA, memsz: 10 }]) }, /p_filesz/],
      ['no PT_LOAD', { image: elf(good(), 0x200000, (v) => v.setUint32(64, 4, true)) }, /no PT_LOAD/],
      ['PT_INTERP', { image: elf([...good(), { paddr: 0x300000, data: DATA }], 0x200000, (v) => v.setUint32(64 + 56, 3, true)) }, /dynamically linked/],
      ['entry outside an executable segment', { image: elf([...good(), { paddr: 0x300000, data: DATA, flags: 6 }], 0x300000) }, /e_entry/],
      ['entry outside memory', { image: CODE, entry: 0x1000_0000 }, /entry/],
      ['gpa given for an ELF', { image: elf(good()), gpa: 0x200000 }, /flat binaries/],
      ['stackTop not 16-byte aligned', { image: CODE, stackTop: 0x7ffff8 }, /16-byte/],
      ['stackTop over a segment', { image: CODE, stackTop: 0x201000 }, /overlaps segment/],
      ['stackTop outside memory', { image: CODE, stackTop: 0x1000_0000 }, /needs the page below/],
      ['empty flat image', { image: new Uint8Array(0) }, /empty/],
      ['image beyond the mapped 256 GiB', { image: elf([{ paddr: 2 ** 39, data: CODE }], 2 ** 39) }, /beyond/],
    ];
    for (const [what, options, message] of cases) {
      let err: Error | undefined;
      try {
        vcpu.loadImage(options as never);
      } catch (e) {
        err = e as Error;
      }
      // the case's name in the comparison says which one failed
      expect([what, err?.name, message.test(err?.message ?? '')]).toEqual([what, 'RangeError', true]);
    }
    expect(() => vcpu.loadImage({ image: [1, 2] } as never)).toThrow(TypeError);
    expect(() => vcpu.loadImage(null as never)).toThrow(TypeError);
    expect(() => vcpu.loadImage({ image: CODE, entry: -1 })).toThrow(RangeError);
    expect(new Uint8Array(memory.buffer).every((x) => x === 0)).toBe(true); // nothing written, harness included
  });

  test('needs a slot covering the harness at gpa 0', () => {
    const vm = kvm.createVm();
    const mem = vm.createMemory(4 * MIB);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 4 * MIB, memory: mem });
    expect(() => vm.createVcpu(0).loadImage({ image: CODE, gpa: 4 * MIB })).toThrow(/\[0, 2 MiB\)/);
  });
});
