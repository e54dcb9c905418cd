// kvm-dirty replica: receives checkpoint streams, applies each epoch atomically, acknowledges
// it, and says how each stream ended (complete, rejected and why, or the primary lost).

import { ReplicaServer, type ReplicaOutcome } from '../checkpoint/transport';
interface Flags {
  listen: number;
  host: string;
  once?: boolean;
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
  try {
    for (;;) {
      const o = await server.nextOutcome();
      describe(o);
      if (f.once) {
        if (o.kind === 'rejected') process.exitCode = 2;
        break;
      }
    }
  } finally {
    clearInterval(ticker);
    await server.close();
  }
}
