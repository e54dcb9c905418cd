// Checkpoint a running guest to a file, then rebuild it from the file and let it run on.
//
//   node dist/examples/checkpoint-file.js [--backend native|emulator] [--mode ring|bitmap|bitmap-clear]
//
// The dirty-tracking mode follows the kernel's capabilities: the ring where it has one.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitReason, Workload, openKvm, type BackendName } from '../lib';
import { Checkpointer, FileSink, createMachine, readCheckpointFile, restoreMachine, sameContents, type DirtyMode } from '../lib/checkpoint';

const arg = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);

async function main(): Promise<void> {
  const kvm = openKvm({ backend: arg('--backend') as BackendName | undefined });
  const dir = mkdtempSync(join(tmpdir(), 'kvm-dirty-'));
  const file = join(dir, 'guest.kdck');
  try {
    // A guest of 2 MiB harness + 16 MiB data; its workload writes 32 pages every epoch.
    const guest = createMachine(kvm, {
      dataPages: 4096,
      mode: (arg('--mode') as DirtyMode | undefined) ?? 'auto',
      workloads: Workload.stride({ firstPage: 512, pages: 32, stridePages: 100 }),
    });
    console.log(`backend ${kvm.backend}, dirty tracking: ${guest.mode}`);

    // 200 epochs: each ends at the workload's epoch OUT; its dirty pages and registers go to the file.
    const stats = await new Checkpointer({ machine: guest, sink: new FileSink(file) }).run({ epochs: 200 });
    console.log(`checkpointed ${stats.epochs} epochs (${stats.pagesPerEpoch} pages each) into ${statSync(file).size} bytes; pause p50 ${stats.pauseP50Us} µs`);

    // Read it back: the image of the last committed epoch.
    const { image, error } = await readCheckpointFile(file);
    if (error) throw error;
    const copy = restoreMachine(kvm, image);
    console.log(`restored epoch ${image.epoch}: memory ${copy.slots.every((s, i) => sameContents(s, guest.slots[i])) ? 'identical' : 'DIFFERENT'}`);

    // Both run one more epoch; the copy does exactly what the original does.
    const exit = copy.vcpus[0].run();
    const orig = guest.vcpus[0].run();
    if (exit.reason !== ExitReason.Io || orig.reason !== ExitReason.Io) throw new Error(`unexpected exits ${exit.reason}, ${orig.reason}`);
    const page = copy.slots[1].bytes.readBigUInt64LE(0);
    console.log(`next epoch: copy OUT ${exit.io?.value}, original OUT ${orig.io?.value}; page 512 holds ${page}; ` +
      `memory ${sameContents(copy.slots[1], guest.slots[1]) ? 'still identical' : 'DIFFERENT'}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    kvm.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
