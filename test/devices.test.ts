// The device interface, IoBus's dispatch into kvm_run, and the 16550 transmit subset with its
// saved state. The bus is driven with a fake vCPU here (a kvm_run buffer and the exits a
// kernel would return); test/own-guest.test.ts runs it under a real guest.
import { COM1_PORT, ExitReason, IoBus, Serial16550, type Device, type Exit, type Vcpu } from '../lib';

/** A stand-in vCPU whose run() returns the exits given, with kvm_run filled as the kernel fills it. */
class FakeVcpu {
  readonly runBuffer = new ArrayBuffer(3 * 4096);
  readonly exits: Array<{ exit: Exit; data?: number[] }> = [];
  completed = 0;
  #view = new DataView(this.runBuffer);

  io(port: number, direction: 'in' | 'out', size: number, values: number[]): this {
    this.exits.push({ exit: { reason: ExitReason.Io, io: { port, direction, size, count: values.length, value: values[0] ?? 0 } }, data: values });
    return this;
  }

  mmio(gpa: number, isWrite: boolean, data: number[]): this {
    this.exits.push({ exit: { reason: ExitReason.Mmio, mmio: { physAddr: gpa, len: data.length, isWrite, data: isWrite ? data : [] } }, data });
    return this;
  }

  hlt(): this {
    this.exits.push({ exit: { reason: ExitReason.Hlt } });
    return this;
  }

  run(): Exit {
    const next = this.exits.shift();
    if (next === undefined) throw new Error('no more exits');
    const v = this.#view;
    const e = next.exit;
    v.setUint32(8, e.reason, true);
    if (e.io) {
      v.setUint8(32, e.io.direction === 'out' ? 1 : 0);
      v.setUint8(33, e.io.size);
      v.setUint16(34, e.io.port, true);
      v.setUint32(36, e.io.count, true);
      v.setBigUint64(40, 4096n, true);
      new Uint8Array(this.runBuffer, 4096, 64).fill(0xcc);
      if (e.io.direction === 'out') next.data!.forEach((x, i) => { for (let b = 0; b < e.io!.size; b++) v.setUint8(4096 + i * e.io!.size + b, (x >> (8 * b)) & 0xff); });
    }
    if (e.mmio) {
      v.setBigUint64(32, BigInt(e.mmio.physAddr), true);
      new Uint8Array(this.runBuffer, 40, 8).fill(0xcc);
      if (e.mmio.isWrite) next.data!.forEach((x, i) => v.setUint8(40 + i, x));
      v.setUint32(48, e.mmio.len, true);
      v.setUint8(52, e.mmio.isWrite ? 1 : 0);
    }
    return e;
  }

  async runAsync(): Promise<Exit> {
    return this.run();
  }

  completeIo(): void {
    this.completed++;
  }

  kick(): void {}

  /** the IN data the bus wrote for the last exit */
  inData(bytes: number): number[] {
    return Array.from(new Uint8Array(this.runBuffer, 4096, bytes));
  }
}

const fake = (): FakeVcpu & Vcpu => new FakeVcpu() as FakeVcpu & Vcpu;

describe('Serial16550', () => {
  test('a polling putc: LSR says the transmitter is empty, THR bytes are the output', () => {
    const seen: number[] = [];
    const s = new Serial16550({ onByte: (b) => seen.push(b) });
    expect(s.ioPorts).toEqual([[0x3f8, 0x3ff]]);
    expect(s.onIo(COM1_PORT + 5, 'in', 0)).toBe(0x60);
    for (const c of 'hi\n') s.onIo(COM1_PORT, 'out', c.charCodeAt(0));
    expect([s.text(), Array.from(s.output), seen, s.transmitted]).toEqual(['hi\n', [104, 105, 10], [104, 105, 10], 3]);
    expect(s.onIo(COM1_PORT, 'in', 0)).toBe(0); // nothing received
  });

  test('the other registers keep what the guest writes; DLAB selects the divisor latch', () => {
    const s = new Serial16550();
    s.onIo(0x3fb, 'out', 0x83); // LCR: DLAB, 8 bits
    s.onIo(0x3f8, 'out', 0x01); // DLL: 115200 baud
    s.onIo(0x3f9, 'out', 0x00); // DLM
    expect([s.onIo(0x3f8, 'in', 0), s.onIo(0x3f9, 'in', 0), s.text()]).toEqual([1, 0, '']);
    s.onIo(0x3fb, 'out', 0x03);
    s.onIo(0x3f9, 'out', 0xff); // IER keeps its low 4 bits
    s.onIo(0x3fa, 'out', 0xc7); // FCR: FIFOs on
    s.onIo(0x3fc, 'out', 0xff); // MCR keeps 5 bits
    s.onIo(0x3ff, 'out', 0x5a); // SCR
    s.onIo(0x3fd, 'out', 0x00); // LSR is read-only
    expect([0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff].map((p) => s.onIo(p, 'in', 0))).toEqual([0x0f, 0xc1, 0x03, 0x1f, 0x60, 0xb0, 0x5a]);
  });

  test('save() -> restore() carries the registers and the count; output restarts; bad state is a RangeError', () => {
    const a = new Serial16550();
    a.onIo(0x3fb, 'out', 0x80);
    a.onIo(0x3f8, 'out', 0x0c);
    a.onIo(0x3fb, 'out', 0x03);
    a.onIo(0x3ff, 'out', 0x77);
    for (const c of 'abc') a.onIo(0x3f8, 'out', c.charCodeAt(0));
    const state = a.save();
    expect(Array.from(state)).toEqual([1, 0, 3, 0, 0x77, 0x0c, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    const b = new Serial16550();
    b.restore(state);
    expect(Array.from(b.save())).toEqual(Array.from(state));
    expect([b.transmitted, b.text()]).toEqual([3, '']);
    b.onIo(0x3f8, 'out', 0x64);
    expect([b.transmitted, b.text()]).toEqual([4, 'd']);
    expect(() => b.restore(state.subarray(0, 15))).toThrow(RangeError);
    expect(() => b.restore(Uint8Array.from([2, ...state.subarray(1)]))).toThrow(RangeError);
    expect(() => b.restore(Uint8Array.from([1, 0xff, ...state.subarray(2)]))).toThrow(RangeError);
    expect(() => b.restore('x' as never)).toThrow(TypeError);
    expect(() => new Serial16550({ port: 0xfffc })).toThrow(RangeError);
    expect(() => new Serial16550({ onByte: 1 as never })).toThrow(TypeError);
  });
});

describe('IoBus', () => {
  test('an OUT and an IN reach the device; the IN data lands at kvm_run.io.data_offset; 2-byte accesses go port by port', () => {
    const log: string[] = [];
    const dev: Device = {
      name: 'probe',
      ioPorts: [[0x100, 0x101]],
      onIo: (port, dir, value) => {
        log.push(`${dir} ${port.toString(16)} ${value}`);
        return dir === 'in' ? port & 0xff : undefined;
      },
      save: () => new Uint8Array(0),
      restore: () => undefined,
    };
    const bus = new IoBus([dev]);
    const v = fake().io(0x100, 'out', 1, [7]).io(0x100, 'in', 2, [0]).io(0x100, 'out', 1, [1, 2, 3]).io(0x50, 'out', 1, [9]);
    expect(bus.run(v)).toMatchObject({ stopped: 'exit', handled: 3, exit: { reason: ExitReason.Io, io: { port: 0x50 } } });
    expect(log).toEqual(['out 100 7', 'in 100 0', 'in 101 0', 'out 100 1', 'out 100 2', 'out 100 3']);
  });

  test('IN from a port nobody answers within a claimed access reads 0xff; the IN bytes are written', () => {
    const bus = new IoBus([new Serial16550()]);
    const v = fake().io(0x3fd, 'in', 1, [0]).hlt();
    bus.run(v, { maxExits: 1 });
    expect(v.inData(1)).toEqual([0x60]);
    expect(v.completed).toBe(1); // stopped after an IN: KVM_RUN must take the data before the state is saved
    const w = fake().io(0x3ff, 'in', 2, [0]).hlt(); // SCR, then 0x400 which nobody claims
    bus.run(w);
    expect(w.inData(2)).toEqual([0x00, 0xff]);
    expect(w.completed).toBe(0);
  });

  test('MMIO: writes bring their bytes, reads fill kvm_run.mmio.data', () => {
    const got: number[][] = [];
    const bus = new IoBus([{
      name: 'mmio', mmioRanges: [[0xd000_0000, 0x1000]],
      onMmio: (gpa, isWrite, data) => {
        if (isWrite) got.push([gpa, ...data]);
        else data.set([0x11, 0x22, 0x33, 0x44]);
      },
      save: () => new Uint8Array(0), restore: () => undefined,
    }]);
    const v = fake().mmio(0xd000_0010, true, [1, 2]).mmio(0xd000_0ffc, false, [0, 0, 0, 0]);
    expect(bus.run(v, { maxExits: 2 })).toMatchObject({ stopped: 'maxExits', handled: 2 });
    expect(got).toEqual([[0xd000_0010, 1, 2]]);
    expect(Array.from(new Uint8Array(v.runBuffer, 40, 4))).toEqual([0x11, 0x22, 0x33, 0x44]);
    expect(v.completed).toBe(1);
    expect(bus.run(fake().mmio(0xc000_0000, true, [1]))).toMatchObject({ stopped: 'exit', handled: 0 });
  });

  test('save() and restore() by name; overlapping or malformed devices are refused', () => {
    const a = new Serial16550();
    const b = new Serial16550({ port: 0x2f8, name: 'com2' });
    const bus = new IoBus([a, b]);
    a.onIo(0x3ff, 'out', 1);
    b.onIo(0x2ff, 'out', 2);
    const saved = bus.save();
    expect(Object.keys(saved)).toEqual(['serial', 'com2']);
    const again = new IoBus([new Serial16550(), new Serial16550({ port: 0x2f8, name: 'com2' })]);
    again.restore(saved);
    expect(again.devices.map((d) => (d as Serial16550).onIo(d === again.devices[0] ? 0x3ff : 0x2ff, 'in', 0))).toEqual([1, 2]);
    expect(() => again.restore({ serial: saved.serial })).toThrow(/com2/);
    expect(() => bus.add(new Serial16550({ port: 0x3f8, name: 'dup' }))).toThrow(/overlap/);
    expect(() => bus.add(new Serial16550({ port: 0x3e8 }))).toThrow(/already on the bus/);
    expect(() => bus.add({ name: 'x', ioPorts: [[1, 2]], save: () => new Uint8Array(0), restore: () => undefined } as Device)).toThrow(/onIo/);
    expect(() => bus.add({ name: 'y', save: 1 } as never)).toThrow(TypeError);
    expect(() => bus.add({ name: 'z', ioPorts: [[5, 2]], onIo: () => 0, save: () => new Uint8Array(0), restore: () => undefined })).toThrow(RangeError);
    expect(() => new IoBus('x' as never)).toThrow(TypeError);
  });

  test('runAsync with maxExits and the same dispatch', async () => {
    const s = new Serial16550();
    const bus = new IoBus([s]);
    const v = fake().io(0x3f8, 'out', 1, [65]).io(0x3f8, 'out', 1, [66]).hlt();
    expect(await bus.runAsync(v, { maxExits: 1 })).toMatchObject({ stopped: 'maxExits', handled: 1 });
    expect(await bus.runAsync(v)).toMatchObject({ stopped: 'exit', handled: 1, exit: { reason: ExitReason.Hlt } });
    expect(s.text()).toBe('AB');
    await expect(bus.runAsync(v, { maxExits: -1 })).rejects.toThrow(RangeError);
  });
});
