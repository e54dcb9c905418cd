// The C guest of examples/own-guest on the native backend: it runs to its result; stopped at
// any exit, saved (vCPU, VM devices, serial port, memory) and restored into a fresh VM, here
// or in another process, it finishes with exactly the same output and result; restored with
// less than its full state it visibly breaks, which shows each piece matters.
//
// Built with the machine's gcc (skipped, with the reason, where there is none).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Cap, MpState, type Kvm, type VcpuState } from '../lib';
import { buildGuest, unsupportedInstructions } from '../examples/own-guest/build';
import { guestBuildSkip } from './helpers/guest-build';
import { encodeSnapshot, restore, snapshot, type Machine, type Snapshot } from '../examples/own-guest/machine';
import { describeNative } from './helpers/native';
import { expectedRun, loadedMachine, runGuest } from './helpers/own-guest';

describe('the guest build refuses instructions this host cannot run', () => {
  test('unsupportedInstructions() names SSE arithmetic, x87, int3, xrstor, cmpxchg16b and friends; plain xmm moves pass', () => {
    const listing = [
      'guest.elf:     file format elf64-x86-64',
      '',
      '0000000000200000 <_start>:',
      '  200000:\tmovdqu 0x10(%rsp),%xmm6',
      '  200006:\tmovdqa %xmm7,(%rax)',
      '  20000a:\tpxor   %xmm0,%xmm0',
      '  20000e:\taddsd  %xmm1,%xmm0',
      '  200012:\tmovq   %rax,%xmm0',
      '  200017:\tint3',
      '  200018:\tint    $0x80',
      '  20001a:\tlock cmpxchg16b (%rsi)',
      '  20001f:\txrstor (%rsi)',
      '  200022:\tldmxcsr (%rsi)',
      '  200025:\tcrc32q %rcx,%rax',
      '  20002a:\tfld1',
      '  20002c:\tfxsave (%rsi)',
      '  20002f:\tpopcnt %rax,%rcx',
      '  200034:\tlock cmpxchg %rcx,(%rsi)',
      '  200039:\trep stos %al,%es:(%rdi)',
      '  20003b:\tiretq',
    ].join('\n');
    expect(unsupportedInstructions(listing)).toEqual([
      '20000a:\tpxor   %xmm0,%xmm0',
      '20000e:\taddsd  %xmm1,%xmm0',
      '200012:\tmovq   %rax,%xmm0',
      '200017:\tint3',
      '200018:\tint    $0x80',
      '20001a:\tlock cmpxchg16b (%rsi)',
      '20001f:\txrstor (%rsi)',
      '200022:\tldmxcsr (%rsi)',
      '200025:\tcrc32q %rcx,%rax',
      '20002a:\tfld1',
      '20002f:\tpopcnt %rax,%rcx',
    ]);
  });
});

const buildSkip = guestBuildSkip();
let built: { elf: Uint8Array; bin: Uint8Array } | undefined;
function guest(): { elf: Uint8Array; bin: Uint8Array } {
  if (built === undefined) {
    const b = buildGuest();
    built = { elf: new Uint8Array(fs.readFileSync(b.elf)), bin: new Uint8Array(fs.readFileSync(b.bin)) };
    fs.rmSync(path.dirname(b.elf), { recursive: true, force: true });
  }
  return built;
}

const EXPECTED = expectedRun();

/** Runs a loaded machine for `exits` handled exits, snapshots it at that exit and closes it. */
async function stopAt(m: Machine, exits: number): Promise<{ snap: Snapshot; output: string }> {
  const r = await runGuest(m, { maxExits: exits });
  expect(r).toMatchObject({ stopped: 'maxExits', handled: exits });
  const snap = snapshot(m);
  const output = m.serial.text();
  m.vm.close();
  return { snap, output };
}

if (buildSkip !== undefined) {
  describe.skip(`the own-guest C program (skipped: ${buildSkip})`, () => test('runs', () => undefined));
} else {
  describeNative('the own-guest C program', (open) => {
    let kvm: Kvm;
    beforeAll(() => {
      guest();
    });
    beforeEach(() => (kvm = open()));
    afterEach(() => kvm.close());

    test('runs to completion with exactly the output and result of its algorithm; ELF and flat binary alike', async () => {
      for (const image of [guest().elf, guest().bin]) {
        const m = loadedMachine(kvm, image);
        const r = await runGuest(m);
        expect(m.serial.text()).toBe(EXPECTED.output);
        expect(r.result).toBe(EXPECTED.result);
        // two exits per character (LSR, THR) and the result: timer interrupts and hlt stay in the kernel
        expect(r.handled).toBe(2 * EXPECTED.output.length);
        m.vm.close();
      }
    });

    test('loadImage() put the segments where the ELF says and started it as documented', () => {
      const m = loadedMachine(kvm, guest().elf);
      const loaded = m.vcpu.loadImage({ image: guest().elf });
      expect(loaded).toMatchObject({ format: 'elf', entry: 0x200000, stackTop: 8 << 20 });
      expect(loaded.segments.map((s) => s.gpa)).toEqual([0x200000, 0x201000, 0x202000]);
      const regs = m.vcpu.getRegs();
      expect([regs.rip, regs.rsp, regs.rflags, regs.rax]).toEqual([0x200000n, BigInt(8 << 20), 2n, 0n]);
      const sregs = m.vcpu.getSregs();
      expect([sregs.cr0, sregs.cr4, sregs.efer & 0x500n, sregs.gdt.base, sregs.gdt.limit, sregs.idt.limit]).toEqual([0x80010033n, 0x620n, 0x500n, 0x4000n, 23, 0]);
      const text = loaded.segments[0];
      expect(m.memory.view(text.gpa, text.fileBytes)).toEqual(guest().bin.subarray(0, text.fileBytes));
    });

    for (const at of [1, 2, 57, 300, 601]) {
      test(`stopped after ${at} exits, saved and restored into a fresh VM in this process, it finishes the same`, async () => {
        const { snap, output } = await stopAt(loadedMachine(kvm, guest().elf), at);
        expect(output.length).toBe(Math.floor(at / 2)); // mid-run: the characters sent so far
        const m = restore(kvm, snap);
        const r = await runGuest(m);
        expect(output + m.serial.text()).toBe(EXPECTED.output);
        expect(r.result).toBe(EXPECTED.result);
        expect(at + r.handled).toBe(2 * EXPECTED.output.length);
        expect(m.serial.transmitted).toBe(EXPECTED.output.length);
      });
    }

    test('checkpointed every 25 exits, each time into a fresh VM, it finishes the same', async () => {
      let m = loadedMachine(kvm, guest().elf);
      let output = '';
      let restores = 0;
      for (;;) {
        const r = await runGuest(m, { maxExits: 25 });
        if (r.stopped === 'exit') {
          expect(output + m.serial.text()).toBe(EXPECTED.output);
          expect(r.result).toBe(EXPECTED.result);
          break;
        }
        const snap = snapshot(m);
        output += m.serial.text();
        m.vm.close();
        m = restore(kvm, snap);
        restores++;
      }
      expect(restores).toBe(Math.floor((2 * EXPECTED.output.length) / 25));
    });

    test('restored from its encoded bytes in another process, it finishes the same', async () => {
      const { snap, output } = await stopAt(loadedMachine(kvm, guest().elf), 401);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-snapshot-'));
      try {
        const file = path.join(dir, 'snapshot.bin');
        fs.writeFileSync(file, encodeSnapshot(snap));
        const child = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'own-guest-restore.js'), file], { encoding: 'utf8', timeout: 120_000 });
        expect(child.stderr).toBe('');
        const got = JSON.parse(child.stdout) as { output: string; result: number; handled: number; transmitted: number; pid: number };
        expect(got.pid).not.toBe(process.pid);
        expect(output + got.output).toBe(EXPECTED.output);
        expect(got.result).toBe(EXPECTED.result);
        expect(401 + got.handled).toBe(2 * EXPECTED.output.length);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    // A restore that leaves pieces out: run until the guest's result or a 3 s kick (the whole
    // guest takes about 0.1 s; a guest whose timer is gone would wait in hlt forever).
    async function partial(at: number, parts: { vcpuPieces: Array<keyof VcpuState>; vm: boolean }) {
      const { snap, output } = await stopAt(loadedMachine(kvm, guest().elf), at);
      const m = restore(kvm, snap, parts);
      const r = await runGuest(m, { timeoutMs: 3000 });
      return { m, r, output: output + m.serial.text(), snap };
    }
    const ALL: Array<keyof VcpuState> = ['cpuid', 'fpu', 'xsave', 'xcrs', 'msrs', 'vcpuEvents', 'lapic', 'debugregs', 'mpState'];

    test('restoring only regs and sregs breaks it: the xmm registers come back zero, the LAPIC timer is gone, it waits in hlt forever', async () => {
      const { m, r, output, snap } = await partial(301, { vcpuPieces: [], vm: false });
      expect(r.stopped).toBe('timeout');
      expect(output).not.toContain('done');
      expect(m.vcpu.getMpState()).toBe(MpState.Halted);
      const lapic = new DataView(m.vcpu.getLapic().regs.buffer);
      expect([lapic.getUint32(0xf0, true) & 0x100, lapic.getUint32(0x380, true)]).toEqual([0, 0]); // APIC disabled, no timer count
      const xmm6 = (s: VcpuState) => Array.from(s.xsave!.region.subarray(160 + 6 * 16, 160 + 7 * 16));
      expect(xmm6(snap.vcpu).some((b) => b !== 0)).toBe(true);
      expect(xmm6(m.vcpu.getState()).every((b) => b === 0)).toBe(true);
    });

    test('restoring everything but xsave finishes with a different result: the live values were in xmm6 and xmm7', async () => {
      const { r, output } = await partial(301, { vcpuPieces: ALL.filter((p) => p !== 'xsave'), vm: true });
      expect(r.stopped).toBe('exit');
      expect(output).toContain('done: 100 ticks');
      expect(output).not.toBe(EXPECTED.output);
      expect(r.result).not.toBe(EXPECTED.result);
    });

    test('restoring everything but the LAPIC never finishes: its timer is what wakes the guest', async () => {
      const { m, r, output } = await partial(301, { vcpuPieces: ALL.filter((p) => p !== 'lapic'), vm: true });
      expect(r.stopped).toBe('timeout');
      expect(output).not.toContain('done');
      expect(m.vcpu.getMpState()).toBe(MpState.Halted);
    });

    test('restoring without the VM state (irqchip, PIT, clock) reads reset PIC masks back: result ^ 0xfbff', async () => {
      const { r, output } = await partial(301, { vcpuPieces: ALL, vm: false });
      const reset = expectedRun([0, 0]);
      expect(output).toBe(reset.output);
      expect(r.result).toBe(reset.result);
      expect((r.result! ^ EXPECTED.result) >>> 0).toBe(0xfbff);
    });

    test('examples/own-guest/run.js prints the guest\'s output and its result, straight and through fresh VMs', () => {
      const script = path.join(__dirname, '..', 'dist', 'examples', 'own-guest', 'run.js');
      const exits = 2 * EXPECTED.output.length;
      for (const [args, restores] of [[[], 0], [['--checkpoint-every', '100'], Math.floor(exits / 100)], [['--flat'], 0]] as const) {
        const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, KVM_DIRTY_BACKEND: 'native' } });
        expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
        expect(r.stdout).toContain(EXPECTED.output);
        expect(r.stdout).toContain(`result 0x${EXPECTED.result.toString(16).padStart(8, '0')} after ${exits} exits, ${restores} restores into a fresh VM`);
      }
    });

    test('the pieces of its state, and what each is on this host', () => {
      const m = loadedMachine(kvm, guest().elf);
      expect(kvm.checkExtension(Cap.Irqchip)).toBeGreaterThan(0);
      expect(Object.keys(m.vcpu.stateSkipped())).toEqual(['fpu']);
      expect(Object.keys(m.vm.getState()).sort()).toEqual(['clock', 'irqchip', 'pit2']);
    });
  });
}
