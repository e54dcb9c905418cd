// Runs the own-guest C program (guest.c) on the native backend and prints its serial output.
//
//   npm run build && node dist/examples/own-guest/run.js [--checkpoint-every N] [--flat]
//
// With --checkpoint-every N the guest is stopped after every N exits, its whole state (vCPU,
// VM devices, serial port, memory) is saved, and it continues in a fresh VM restored from
// that state; the output and the result are the same as an uninterrupted run's.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ExitReason, openKvm } from '../../lib';
import { buildGuest, guestBuildSkipReason } from './build';
import { createMachine, EXIT_PORT, restore, snapshot, type Machine } from './machine';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const every = args.includes('--checkpoint-every') ? Number(args[args.indexOf('--checkpoint-every') + 1]) : Infinity;
  if (!(every > 0)) throw new RangeError('--checkpoint-every needs a positive number of exits');
  const reason = guestBuildSkipReason();
  if (reason !== undefined) {
    console.error(`cannot build the guest: ${reason}`);
    process.exit(1);
  }
  const build = buildGuest(); // into a temporary directory
  const image = fs.readFileSync(args.includes('--flat') ? build.bin : build.elf);
  fs.rmSync(path.dirname(build.elf), { recursive: true, force: true });

  const kvm = openKvm();
  if (kvm.backend !== 'native') {
    console.error(`the guest needs the native backend (KVM); the emulator runs only the built-in workloads (${kvm.fallbackReason ?? ''})`);
    process.exit(1);
  }
  const onByte = (b: number): void => void process.stdout.write(String.fromCharCode(b));
  let m: Machine = createMachine(kvm, { onByte });
  const loaded = m.vcpu.loadImage({ image });
  console.log(`loaded ${loaded.format}: ${loaded.segments.length} segments, entry 0x${loaded.entry.toString(16)}, stack 0x${loaded.stackTop.toString(16)}`);

  let exits = 0;
  let restores = 0;
  for (;;) {
    const r = await m.bus.runAsync(m.vcpu, { ...(Number.isFinite(every) ? { maxExits: every } : {}), timeoutMs: 60_000 });
    exits += r.handled;
    if (r.stopped === 'maxExits') {
      const snap = snapshot(m);
      m.vm.close();
      m = restore(kvm, snap, { onByte });
      restores++;
      continue;
    }
    if (r.stopped === 'timeout') throw new Error('the guest did not finish within 60 s');
    const e = r.exit;
    if (e.reason === ExitReason.Io && e.io?.port === EXIT_PORT) {
      console.log(`result 0x${e.io.value.toString(16).padStart(8, '0')} after ${exits} exits, ${restores} restores into a fresh VM`);
      break;
    }
    throw new Error(`unexpected exit ${e.reason} ${JSON.stringify(e.io ?? e.mmio ?? {})}`);
  }
  kvm.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
