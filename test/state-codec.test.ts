// The state encoding of docs/state-format.md, byte by byte, and every way a reader rejects bytes
// it did not write. No kernel needed: the states are built here.
import { decodeVcpuState, decodeVmState, encodeVcpuState, encodeVmState, type VcpuState, type VmState } from '../lib';
import { encodeRegs, encodeSregs, IOAPIC_PINS } from '../lib/kvm-structs';
import { VCPU_STATE_MAGIC, VM_STATE_MAGIC } from '../lib/state-codec';

const seg = (selector: number) => ({ base: BigInt(selector) << 12n, limit: 0xffffffff, selector, type: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 });
const bytes = (n: number, from: number) => Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff);

function fullState(): VcpuState {
  return {
    regs: {
      rax: 1n, rbx: 2n, rcx: 3n, rdx: 4n, rsi: 5n, rdi: 6n, rsp: 7n, rbp: 8n, r8: 9n, r9: 10n, r10: 11n, r11: 12n,
      r12: 13n, r13: 14n, r14: 15n, r15: 0xffff_ffff_ffff_ffffn, rip: 0x20_0000n, rflags: 0x202n,
    },
    sregs: {
      cs: seg(8), ds: seg(16), es: seg(16), fs: seg(16), gs: seg(16), ss: seg(16), tr: seg(0x28), ldt: seg(0),
      gdt: { base: 0x4000n, limit: 23 }, idt: { base: 0x20_3000n, limit: 4095 },
      cr0: 0x8001_0033n, cr2: 0xdeadn, cr3: 0x1000n, cr4: 0x620n, cr8: 1n, efer: 0x500n, apicBase: 0xfee0_0900n,
      interruptBitmap: [0n, 1n << 32n, 0n, 5n],
    },
    cpuid: [{ function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 }, { function: 7, index: 1, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0x10 }],
    fpu: { fpr: bytes(128, 1), fcw: 0x37f, fsw: 0x1, ftwx: 0x80, lastOpcode: 0x7ff, lastIp: 0x1234n, lastDp: 0x5678n, xmm: bytes(256, 3), mxcsr: 0 },
    xsave: { region: bytes(4096, 7) },
    xcrs: { flags: 0, xcrs: [{ xcr: 0, value: 7n }] },
    msrs: [{ index: 0xc0000082, data: 0xffff_ffff_8100_0000n }, { index: 0x10, data: 123n }],
    vcpuEvents: {
      exception: { injected: 1, nr: 14, hasErrorCode: 1, pending: 0, errorCode: 2 }, interrupt: { injected: 0, nr: 0x20, soft: 0, shadow: 1 },
      nmi: { injected: 0, pending: 1, masked: 1 }, sipiVector: 0x9a, flags: 0xd, smi: { smm: 0, pending: 0, smmInsideNmi: 0, latchedInit: 1 },
      tripleFault: { pending: 0 }, exceptionHasPayload: 1, exceptionPayload: 0xdead_b000n,
    },
    lapic: { regs: bytes(1024, 11) },
    debugregs: { db: [1n, 2n, 3n, 4n], dr6: 0xffff0ff0n, dr7: 0x400n, flags: 0n },
    mpState: 3,
  };
}

function fullVmState(): VmState {
  const pic = (imr: number) => ({
    lastIrr: 1, irr: 2, imr, isr: 4, priorityAdd: 5, irqBase: 0x30, readRegSelect: 1, poll: 0, specialMask: 0, initState: 0,
    autoEoi: 0, rotateOnAutoEoi: 0, specialFullyNestedMode: 0, init4: 1, elcr: 0x0c, elcrMask: 0xf8,
  });
  const ch = (count: number) => ({
    count, latchedCount: 3, countLatched: 0, statusLatched: 0, status: 0, readState: 3, writeState: 3, writeLatch: 0,
    rwMode: 3, mode: 2, bcd: 0, gate: 1, countLoadTime: -5n,
  });
  return {
    irqchip: {
      picMaster: pic(0xfb), picSlave: pic(0xff),
      ioapic: { baseAddress: 0xfec00000, ioregsel: 0x10, id: 0, irr: 0, redirtbl: Array.from({ length: IOAPIC_PINS }, (_, i) => 0x10000n | BigInt(0x30 + i)) },
    },
    pit2: { channels: [ch(0x1234), ch(18), ch(0x10000)], flags: 0 },
    clock: { clock: 123_456_789n, flags: 6, realtime: 1_700_000_000_000_000_000n, hostTsc: 99n },
  };
}

describe('vCPU state encoding', () => {
  test('header, piece order and the kernel structs byte for byte', () => {
    const s = fullState();
    const b = encodeVcpuState(s);
    const v = new DataView(b.buffer);
    expect(String.fromCharCode(...b.subarray(0, 4))).toBe('KVCS');
    expect(v.getUint32(0, true)).toBe(VCPU_STATE_MAGIC);
    expect([v.getUint16(4, true), v.getUint16(6, true), v.getUint32(8, true), v.getUint32(12, true)]).toEqual([1, 1, 11, b.length]);
    const pieces: Array<[number, number]> = [];
    for (let at = 16; at < b.length; ) {
      const tag = v.getUint16(at, true);
      const length = v.getUint32(at + 4, true);
      expect(v.getUint16(at + 2, true)).toBe(0);
      pieces.push([tag, length]);
      at += 8 + ((length + 7) & ~7);
    }
    // regs, sregs, cpuid (8 + 2 * 40), fpu, xsave, xcrs, msrs (8 + 2 * 16), events, lapic, debugregs, mp_state
    expect(pieces).toEqual([[1, 144], [2, 312], [3, 88], [4, 416], [5, 4096], [6, 392], [7, 40], [8, 64], [9, 1024], [10, 128], [11, 4]]);
    expect(b.subarray(24, 24 + 144)).toEqual(encodeRegs(s.regs));
    expect(b.subarray(24 + 144 + 8, 24 + 144 + 8 + 312)).toEqual(encodeSregs(s.sregs));
    expect(decodeVcpuState(b)).toEqual(s);
  });

  test('regs and sregs alone are a state; pieces absent stay absent', () => {
    const { regs, sregs } = fullState();
    const b = encodeVcpuState({ regs, sregs });
    expect(b.length).toBe(16 + 8 + 144 + 8 + 312);
    expect(decodeVcpuState(b)).toEqual({ regs, sregs });
  });

  test('a reader rejects what it did not write, naming the problem', () => {
    const good = encodeVcpuState(fullState());
    const patched = (at: number, value: number, width: 2 | 4 = 2): Uint8Array => {
      const b = good.slice();
      if (width === 2) new DataView(b.buffer).setUint16(at, value, true);
      else new DataView(b.buffer).setUint32(at, value, true);
      return b;
    };
    expect(() => decodeVcpuState(good.subarray(0, 10))).toThrow(/shorter than the 16-byte header/);
    expect(() => decodeVcpuState(good.subarray(0, good.length - 8))).toThrow(/truncated or trailing/);
    expect(() => decodeVcpuState(patched(0, 0x1234, 4))).toThrow(/bad magic/);
    expect(() => decodeVcpuState(patched(4, 2))).toThrow(/format version 2/);
    expect(() => decodeVcpuState(patched(6, 2))).toThrow(/architecture 2/);
    expect(() => decodeVcpuState(patched(18, 1))).toThrow(/reserved/);
    expect(() => decodeVcpuState(patched(16, 12))).toThrow(/ascend/); // regs' tag 12 before sregs' 2
    expect(() => decodeVcpuState(patched(8, 12, 4))).toThrow(/starts past the end/);
    expect(() => decodeVcpuState(encodeVmState(fullVmState()))).toThrow(/bad magic/);
    expect(() => decodeVcpuState(new Uint32Array(8) as never)).toThrow(TypeError);
    // a piece of the wrong size: sregs said to be 304 bytes
    const short = good.slice();
    new DataView(short.buffer).setUint32(16 + 8 + 144 + 4, 304, true);
    expect(() => decodeVcpuState(short)).toThrow(RangeError);
    // an unknown tag, written as a writer of a later version might
    const { regs, sregs } = fullState();
    const withUnknown = encodeVcpuState({ regs, sregs, mpState: 0 });
    new DataView(withUnknown.buffer).setUint16(16 + 8 + 144 + 8 + 312, 12, true);
    expect(() => decodeVcpuState(withUnknown)).toThrow(/unknown piece tag 12/);
    // no regs
    const noRegs = encodeVcpuState({ regs, sregs });
    new DataView(noRegs.buffer).setUint16(16, 3, true); // regs' 144 bytes relabelled cpuid
    expect(() => decodeVcpuState(noRegs)).toThrow(RangeError);
  });

  test('encoding checks the state like setState() does', () => {
    const s = fullState();
    expect(() => encodeVcpuState({ regs: s.regs } as never)).toThrow(TypeError);
    expect(() => encodeVcpuState({ ...s, mpState: -1 })).toThrow(RangeError);
    expect(() => encodeVcpuState({ ...s, xsave: { region: new Uint8Array(100) } })).toThrow(RangeError);
    expect(() => encodeVcpuState({ ...s, msrs: [{ index: 1, data: 'x' as never }] })).toThrow(TypeError);
  });
});

describe('VM state encoding', () => {
  test('header, pieces, round trip', () => {
    const s = fullVmState();
    const b = encodeVmState(s);
    const v = new DataView(b.buffer);
    expect(String.fromCharCode(...b.subarray(0, 4))).toBe('KVMS');
    expect(v.getUint32(0, true)).toBe(VM_STATE_MAGIC);
    expect([v.getUint16(4, true), v.getUint32(8, true), v.getUint32(12, true)]).toEqual([1, 5, 16 + 3 * (8 + 520) + 8 + 112 + 8 + 48]);
    // each irqchip piece is struct kvm_irqchip with its chip_id
    expect([v.getUint32(24, true), v.getUint32(24 + 528, true), v.getUint32(24 + 2 * 528, true)]).toEqual([0, 1, 2]);
    expect(decodeVmState(b)).toEqual(s);
    expect(decodeVmState(encodeVmState({}))).toEqual({});
  });

  test('the irqchip is all three chips or none; a chip piece names its chip', () => {
    const b = encodeVmState(fullVmState());
    const chipsOnly = encodeVmState({ irqchip: fullVmState().irqchip });
    new DataView(chipsOnly.buffer).setUint16(16 + 2 * 528, 6, true); // the IOAPIC piece relabelled with an unknown tag
    expect(() => decodeVmState(chipsOnly)).toThrow(/unknown piece tag 6/);
    const wrongChip = b.slice();
    new DataView(wrongChip.buffer).setUint32(24, 2, true); // PIC master's piece says chip 2
    expect(() => decodeVmState(wrongChip)).toThrow(/names chip 2/);
    // the PIC slave's piece cut out, the header's count and length adjusted
    const noSlave = new Uint8Array(b.length - 528);
    noSlave.set(b.subarray(0, 16 + 528));
    noSlave.set(b.subarray(16 + 2 * 528), 16 + 528);
    new DataView(noSlave.buffer).setUint32(8, 4, true);
    new DataView(noSlave.buffer).setUint32(12, noSlave.length, true);
    expect(() => decodeVmState(noSlave)).toThrow(/all three pieces/);
    const { pit2, clock } = fullVmState();
    expect(decodeVmState(encodeVmState({ pit2, clock }))).toEqual({ pit2, clock });
  });
});
