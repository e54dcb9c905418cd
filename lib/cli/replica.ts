// kvm-dirty replica: receives checkpoint streams, applies each epoch atomically, acknowledges
// it, and says how each stream ended (complete, rejected and why, or the primary lost). With
// --take-over it is a Remus backup: when the primary is lost, it rebuilds the machine as of
// the last committed epoch and runs the guest on (a guest image to its result, a workload for
// --run-ms, then checked), resending first the outputs the output client has not confirmed.

import type { ReplicaImage } from '../checkpoint/image';
import { restoreMachine, type DirtyMode } from '../checkpoint/machine';
import { OutputTap } from '../checkpoint/migration-link';
import { OutputChannel } from '../checkpoint/output';
import { ReplicaServer, type ReplicaOutcome } from '../checkpoint/transport';
import { checkWorkload } from '../checkpoint/verify';
import { SerialPrinter, open, runToExit, type BackendFlags } from './common';

interface Flags extends BackendFlags {
  listen: number;
  host: string;
  once?: boolean;
  takeOver?: boolean;
  mode: DirtyMode | 'auto';
  runMs?: number;
  outputClient?: { host: string; port: number };
  json?: boolean;
}

export async function replicaCommand(f: Flags): Promise<void> {
  const emit = (event: Record<string, unknown>, text: string) => console.log(f.json ? JSON.stringify(event) : text);
  let epochs = 0;
  let pages = 0;
  let lastEpoch = -1;
  const server = new ReplicaServer({
    onCommit: (c) => {
      epochs++;
      pages += c.pages;
      lastEpoch = c.epoch;
    },
  });
  const port = await server.listen(f.listen, f.host);
  emit({ event: 'listening', host: f.host, port }, `replica listening on ${f.host}:${port}`);
  // Once a second: what was acknowledged since the last line.
  let shown = 0;
  const started = performance.now();
  const ticker = setInterval(() => {
    if (epochs === shown) return;
    const rate = epochs - shown;
    shown = epochs;
    emit({ event: 'progress', acked: lastEpoch, epochs, pages, epochsPerSec: rate },
      `acked epoch ${lastEpoch} | ${epochs} epochs, ${pages} pages | ${rate} epochs/s`);
  }, 1000);
  const describe = (o: ReplicaOutcome) => {
    const img = o.image;
    const base = { event: o.kind, epoch: img.epoch, outputSeq: img.committed?.outputSeq ?? 0, seconds: (performance.now() - started) / 1000 };
    switch (o.kind) {
      case 'finished':
        return emit(base, `stream complete: last epoch ${img.epoch}`);
      case 'rejected':
        return emit({ ...base, code: o.error.code, reason: o.error.message }, `stream REJECTED (${o.error.code}): ${o.error.message}; keeping epoch ${img.epoch}`);
      case 'lost':
        return emit({ ...base, reason: o.reason }, `primary lost (${o.reason}); last committed epoch ${img.epoch}`);
    }
  };
  let lost: ReplicaImage | null = null;
  try {
    for (;;) {
      const o = await server.nextOutcome();
      describe(o);
      if (f.takeOver && o.kind === 'lost' && o.image.restorable) {
        lost = o.image;
        break;
      }
      if (f.once) {
        if (o.kind === 'rejected') process.exitCode = 2;
        break;
      }
    }
  } finally {
    clearInterval(ticker);
    await server.close();
  }
  if (lost) await takeOver(lost, f, emit);
}

/** The backup's takeover: the machine as of the last committed epoch, running here. */
async function takeOver(image: ReplicaImage, f: Flags, emit: (event: Record<string, unknown>, text: string) => void): Promise<void> {
  const kvm = open(f);
  try {
    const m = restoreMachine(kvm, image, f.mode);
    const outputSeq = image.committed!.outputSeq;
    // The outputs the client has not confirmed come again from the image, then the guest's new ones.
    let channel: OutputChannel | null = null;
    let replayed = 0;
    if (f.outputClient) {
      const c = await OutputChannel.connect(f.outputClient.port, f.outputClient.host);
      const held = image.outputsFrom(c.next);
      if (held.firstSeq !== c.next) throw new Error(`the output client expects output ${c.next}; this replica holds outputs from ${held.firstSeq} on`);
      if (c.next > outputSeq) throw new Error(`the output client has output ${c.next - 1}, beyond the last committed one (${outputSeq - 1})`);
      c.channel.sendRecords(held.firstSeq, held.outputs);
      channel = c.channel;
      replayed = held.outputs.length;
    }
    const serial = new SerialPrinter(!f.json && !channel);
    const tap = new OutputTap(m.exitPort !== null ? [m.exitPort] : [0x11], outputSeq, { released: true, channel, onRelease: serial.onOutput });
    emit({ event: 'took-over', epoch: image.epoch, outputSeq, replayed, backend: kvm.backend, mode: m.mode }, `took over from epoch ${image.epoch} on ${kvm.backend} (${m.mode}); ${replayed} outputs resent`);
    if (m.exitPort !== null) {
      const result = await runToExit(m, tap, f.runMs ?? 60_000);
      await channel?.waitAcked(tap.seq).catch(() => undefined);
      const hex = result === null ? null : `0x${result.toString(16).padStart(8, '0')}`;
      emit({ event: 'guest-exit', guestResult: result, outputs: tap.seq, serial: serial.text }, result === null ? 'the guest did not write its result in time' : `guest result ${hex}`);
      if (result === null) process.exitCode = 1;
    } else {
      const from = image.regs.map((r, i) => Number(m.workloads[i]?.spec.kind === 'counter' ? r.regs.rax : r.regs.rbx));
      await runToExit(m, tap, f.runMs ?? 1000);
      const check = checkWorkload(m, from);
      emit({ event: check.ok ? 'running-verified' : 'verify-failed', from, reached: check.reached, problems: check.problems },
        check.ok ? `the workload went on (${from.join(', ')} -> ${check.reached.join(', ')})` : `PROBLEMS: ${check.problems.join('; ')}`);
      if (!check.ok) process.exitCode = 1;
    }
    await channel?.close();
    m.close();
  } finally {
    kvm.close();
  }
}
