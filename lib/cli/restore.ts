// kvm-dirty restore FILE: rebuild the VM of a checkpoint file as of its last complete epoch,
// check that it is the image (memory and registers), run one more epoch and check what the
// workload did in it; a guest image runs on from there to its result, its serial output printed.

import { ExitReason } from '../constants';
import { restoreMachine, sameContents, type DirtyMode, type Machine } from '../checkpoint/machine';
import type { ReplicaImage } from '../checkpoint/image';
import { OutputTap } from '../checkpoint/migration-link';
import { readCheckpointFile } from '../checkpoint/transport';
import { SerialPrinter, open, runToExit, type BackendFlags } from './common';

interface Flags extends BackendFlags {
  mode: DirtyMode | 'auto';
  json?: boolean;
}

export interface RestoreReport {
  file: string;
  epoch: number;
  /** why the file ended early (damage, truncation), if it did */
  streamError: string | null;
  backend: string;
  mode: string;
  checks: { name: string; ok: boolean; detail: string }[];
  ok: boolean;
  /** a guest image: its result once it ran on from the epoch (null: none in time), and the serial output of that run */
  guestResult?: number | null;
  serial?: string;
}

export async function restoreCommand(file: string, f: Flags): Promise<void> {
  const { image, error } = await readCheckpointFile(file);
  if (!image.restorable) throw new Error(`${file} holds no complete epoch${error ? ` (${error.message})` : ''}`);
  const kvm = open(f);
  try {
    const m = restoreMachine(kvm, image, f.mode);
    const report: RestoreReport = {
      file, epoch: image.epoch, streamError: error?.message ?? null, backend: kvm.backend, mode: m.mode, checks: verify(m, image), ok: false,
    };
    // The stream's last output on the exit port is the result: the guest ended in the stream
    // (it stays halted after it), so there is nothing to run on.
    const seq = image.committed!.outputSeq;
    const last = m.exitPort !== null && seq > 0 ? image.outputsFrom(seq - 1).outputs[0] : undefined;
    if (last && last.port === m.exitPort) {
      report.guestResult = last.value >>> 0;
      report.checks.push({ name: 'guest', ok: true, detail: `had ended in the stream with its result 0x${report.guestResult.toString(16).padStart(8, '0')} (output #${seq - 1}): nothing to run on` });
    } else if (m.exitPort !== null) {
      const serial = new SerialPrinter(!f.json);
      const tap = new OutputTap([m.exitPort], seq, { released: true, onRelease: serial.onOutput });
      const result = await runToExit(m, tap, 60_000);
      report.guestResult = result;
      report.serial = serial.text;
      report.checks.push({ name: 'guest', ok: result !== null, detail: result === null ? 'no result within 60 s' : `ran on to its result 0x${result.toString(16).padStart(8, '0')} (${tap.seq - seq} outputs)` });
    }
    report.ok = report.checks.every((c) => c.ok);
    m.close();
    if (f.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(`${file}: epoch ${image.epoch}${error ? ` (the file ends early: ${error.message})` : ''}; rebuilt on ${kvm.backend} (${m.mode})`);
      for (const c of report.checks) console.log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
    }
    if (!report.ok) process.exitCode = 1;
  } finally {
    kvm.close();
  }
}

function verify(m: Machine, image: ReplicaImage): RestoreReport['checks'] {
  const checks: RestoreReport['checks'] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  const same = m.slots.every((s, i) => sameContents(s, image.slot(i)));
  check('memory', same, same ? `${m.slots.length} slots equal the image` : 'guest memory differs from the image');
  const regsOk = m.vcpus.every((v, i) => JSON.stringify(v.getRegs(), big) === JSON.stringify(image.regs[i].regs, big));
  check('registers', regsOk, regsOk ? `${m.vcpus.length} vCPU(s) as saved` : 'registers differ from the image');

  const layout = image.layout!;
  m.vcpus.forEach((v, i) => {
    const w = layout.vcpus[i].workload;
    if (!w || w.kind === 'spin') return;
    const before = image.regs[i].regs;
    const exit = v.run();
    const regs = v.getRegs();
    if (exit.reason !== ExitReason.Io || !exit.io) return check(`vCPU ${v.id} next epoch`, false, `exit ${exit.reason}, expected an OUT`);
    const data = (gfn: number) => {
      const k = m.slots.findIndex((s) => gfn * 4096 >= s.layout.guestPhysAddr && gfn * 4096 < s.layout.guestPhysAddr + s.layout.size);
      return m.slots[k].bytes.readBigUInt64LE(gfn * 4096 - m.slots[k].layout.guestPhysAddr);
    };
    if (w.kind === 'counter') {
      const was = image.readU64(w.page * 4096);
      const now = data(w.page);
      check(`vCPU ${v.id} counter`, now === was + 1n && exit.io.value === Number(now & 0xffff_ffffn),
        `counter ${was} -> ${now}, output ${exit.io.value}`);
      return;
    }
    // stride / random: the epoch OUT carries the epoch's low byte; the epoch is rbx.
    const epoch = regs.rbx;
    const next = epoch === before.rbx || epoch === before.rbx + 1n;
    check(`vCPU ${v.id} epoch`, exit.io.port === 0x10 && exit.io.value === Number(epoch & 0xffn) && next,
      `epoch ${before.rbx} -> ${epoch}, OUT 0x${exit.io.port.toString(16)} value ${exit.io.value}`);
    if (w.kind === 'stride') {
      let wrong = 0;
      for (let p = 0; p < w.pages; p++) if (data(w.firstPage + p * w.stridePages) !== epoch) wrong++;
      check(`vCPU ${v.id} stride pages`, wrong === 0, `${w.pages - wrong}/${w.pages} pages hold epoch ${epoch}`);
    }
  });
  return checks;
}

function big(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}
