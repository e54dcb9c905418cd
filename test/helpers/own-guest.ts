// The own-guest example (examples/own-guest) in tests: what its output must be, computed here
// from the guest's algorithm (guest.c), and a run loop that bounds a run by a kick.
import { ExitReason, type Kvm } from '../../lib';
import { xorshift64 } from '../../lib/guest/x86';
import { createMachine, EXIT_PORT, type Machine } from '../../examples/own-guest/machine';

const M64 = (1n << 64n) - 1n;
const hex = (v: bigint, digits: number): string => v.toString(16).padStart(digits, '0');

/** guest.c's output and result, step by step as it computes them (TICKS `ticks`, a line every 10, PIC masks fb/ff). */
export function expectedRun(masks: [number, number] = [0xfb, 0xff], ticks = 100): { output: string; result: number } {
  let x = 0x9e3779b97f4a7c15n;
  let acc = 1n;
  let check = 0x0123456789abcdefn;
  const lines = ['own-guest: IDT, PIC, LAPIC timer'];
  for (let i = 1n; i <= BigInt(ticks); i++) {
    x = xorshift64(x);
    acc = (acc * 6364136223846793005n + (x ^ i)) & M64;
    check = (((check << 7n) | (check >> 57n)) & M64) ^ acc;
    if (i % 10n === 0n) lines.push(`tick ${i} acc ${hex(acc, 16)}`);
  }
  const result = (Number((check ^ (check >> 32n)) & 0xffff_ffffn) ^ ((masks[0] << 8) | masks[1])) >>> 0;
  lines.push(`done: ${ticks} ticks, every step saw an interrupt, pic masks ${hex(BigInt(masks[0]), 2)}/${hex(BigInt(masks[1]), 2)}, checksum ${hex(check, 16)}, result ${hex(BigInt(result), 8)}`);
  return { output: lines.map((l) => `${l}\n`).join(''), result };
}

export interface RunEnd {
  /** the result written to the exit port, or undefined if the run did not get there */
  result: number | undefined;
  /** exits the serial port handled */
  handled: number;
  stopped: 'exit' | 'maxExits' | 'timeout';
}

/** Runs the machine's guest until it writes its result, `maxExits` handled exits, or `timeoutMs` (a kick). */
export async function runGuest(m: Machine, options: { maxExits?: number; timeoutMs?: number } = {}): Promise<RunEnd> {
  const r = await m.bus.runAsync(m.vcpu, { timeoutMs: options.timeoutMs ?? 60_000, ...(options.maxExits !== undefined ? { maxExits: options.maxExits } : {}) });
  if (r.stopped !== 'exit') return { result: undefined, handled: r.handled, stopped: r.stopped };
  const e = r.exit;
  if (e.reason !== ExitReason.Io || e.io?.port !== EXIT_PORT) throw new Error(`the guest stopped with exit ${e.reason} ${JSON.stringify(e.io ?? e.mmio ?? {})}`);
  return { result: e.io.value, handled: r.handled, stopped: 'exit' };
}

/** A machine with the guest image loaded. */
export function loadedMachine(kvm: Kvm, image: Uint8Array): Machine {
  const m = createMachine(kvm);
  m.vcpu.loadImage({ image });
  return m;
}
