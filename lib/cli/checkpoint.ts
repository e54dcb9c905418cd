// kvm-dirty checkpoint: a workload or a guest image under checkpointing, to a file or to a
// backup replica, with a live progress line on stderr (a guest image prints its serial output
// instead, as it is released) and a summary (text or --json) on stdout.

import { SingleBar } from 'cli-progress';
import { Checkpointer, type CheckpointSink } from '../checkpoint/checkpointer';
import { OutputChannel, OutputCommit } from '../checkpoint/output';
import { FileSink, TcpSink } from '../checkpoint/transport';
import { SerialPrinter, Window, buildGuest, open, type GuestFlags } from './common';

interface Flags extends GuestFlags {
  out?: string;
  backup?: { host: string; port: number };
  epochs?: number;
  seconds?: number;
  epochMs: number;
  delta: boolean;
  outputClient?: { host: string; port: number };
  json?: boolean;
}

export async function checkpointCommand(f: Flags): Promise<void> {
  if (!f.out === !f.backup) throw new Error('give exactly one of --out FILE and --backup HOST:PORT');
  const image = f.image !== undefined;
  // A workload runs 5 s by default; a guest image until it writes its result.
  if (f.epochs === undefined && f.seconds === undefined && !image) f.seconds = 5;
  const kvm = open(f);
  try {
    const machine = buildGuest(kvm, f);
    const sink: CheckpointSink = f.out ? new FileSink(f.out) : await TcpSink.connect(f.backup!.port, f.backup!.host);
    // Output commit: the guest's outputs are released once the backup (or the file) has their epoch.
    let released = 0;
    const serial = new SerialPrinter(!f.json && !f.outputClient);
    const outputs = new OutputCommit((_first, packed, count) => {
      released += count;
      serial.onPacked(packed, count);
    });
    // With an output client, the released outputs go to it (a replica that takes over resends what it has not confirmed).
    let channel: OutputChannel | null = null;
    if (f.outputClient) {
      const c = await OutputChannel.connect(f.outputClient.port, f.outputClient.host);
      if (c.next !== 0) throw new Error(`a fresh guest starts at output 0; the output client expects ${c.next}`);
      channel = c.channel;
      channel.attach(outputs);
    }
    const bar = image ? null : new SingleBar({
      stream: process.stderr,
      format: '{bar} {epochs} epochs | {eps} epochs/s | {ppe} pages/epoch | pause p50 {p50} µs p99 {p99} µs | acked {acked}',
      barsize: 20,
      hideCursor: false,
      fps: 5,
    });
    const pauses = new Window();
    const started = performance.now();
    let pages = 0;
    const total = f.epochs ?? Math.round((f.seconds ?? 0) * 10);
    bar?.start(total, 0, { epochs: 0, eps: 0, ppe: 0, p50: 0, p99: 0, acked: 0 });
    let lastDraw = 0;
    const ck: Checkpointer = new Checkpointer({
      machine, sink, outputs, epochMs: f.epochMs, delta: f.delta ? undefined : false,
      outputsPerEpoch: !image && f.workload === 'counter' ? f.pages : Infinity,
      onEpoch: (e) => {
        pages += e.pages;
        pauses.push(e.pauseUs);
        const now = performance.now();
        if (!bar || now - lastDraw < 100) return;
        lastDraw = now;
        const { p50, p99 } = pauses.quantiles();
        const secs = (now - started) / 1000;
        bar.update(f.epochs ? e.epoch : Math.min(total, Math.round(secs * 10)), {
          epochs: e.epoch, eps: Math.round(e.epoch / secs), ppe: Math.round(pages / e.epoch),
          p50: Math.round(p50), p99: Math.round(p99), acked: ck.acked,
        });
      },
    });
    const onSigint = () => ck.stop();
    process.once('SIGINT', onSigint);
    let stats;
    try {
      stats = await ck.run({ epochs: f.epochs, seconds: f.seconds });
    } finally {
      process.off('SIGINT', onSigint);
      bar?.stop();
    }
    await channel?.close();
    const guest = image ? { image: f.image, guestResult: stats.guestResult, serial: serial.text } : { workload: f.workload, pages: f.pages, guestMib: f.guestMib };
    const summary = { ...stats, released, ...guest, target: f.out ? { file: f.out } : { backup: `${f.backup!.host}:${f.backup!.port}` } };
    if (f.json) console.log(JSON.stringify(summary, null, 2));
    else {
      if (image) console.log(stats.guestResult === null ? 'the guest did not write its result' : `guest result 0x${stats.guestResult.toString(16).padStart(8, '0')}`);
      console.log(`${stats.epochs} epochs in ${stats.seconds.toFixed(2)} s (${stats.backend}, ${stats.mode}${machine.fullState ? ', full state' : ''}): ` +
        `${stats.committedPerSec.toFixed(0)} committed/s, ${stats.pagesPerEpoch.toFixed(1)} pages/epoch, ` +
        `pause p50 ${stats.pauseP50Us} µs p99 ${stats.pauseP99Us} µs, ${(stats.bytes / 2 ** 20).toFixed(1)} MiB, ` +
        `${released} outputs released`);
    }
    machine.close();
  } finally {
    kvm.close();
  }
}
