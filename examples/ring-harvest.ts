// The dirty ring, end to end: a guest writes 256 pages per epoch; after each epoch we
// harvest its vCPU's ring, re-arm the pages, and check each page holds the epoch number.
//
//   npm run demo            (or: node dist/examples/ring-harvest.js [--backend emulator] [--pml])
//
// --pml runs it on the emulated Intel host with PML, whose kernel reserves 576 ring entries.
import { DirtyPages, ExitReason, MemFlag, Workload, openKvm, type BackendName } from '../lib';

const PAGES = 256;
const backend = (process.argv.includes('--backend') ? process.argv[process.argv.indexOf('--backend') + 1] : undefined) as BackendName | undefined;
const kvm = openKvm({ backend, pml: process.argv.includes('--pml') });
console.log(`backend: ${kvm.backend}${kvm.fallbackReason ? ` (fallback: ${kvm.fallbackReason})` : ''}; host: ${kvm.hostInfo.description}`);

// The ring's size comes from the host: its soft limit must hold an epoch's pages twice over
// (this PVM host logs every write, DESIGN §5), above the entries the kernel keeps in reserve.
const limits = kvm.dirtyRingLimits();
const ringBytes = limits.bytesFor(2 * PAGES);
const vm = kvm.createVm();
const cap = vm.enableDirtyRing(ringBytes); // before the first vCPU
const harness = vm.createMemory(2 << 20); // guest-physical [0, 2 MiB): page tables + code
const ram = vm.createMemory(64 << 20); // [2 MiB, 66 MiB): logged
vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: harness });
vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 2 << 20, memory: ram, flags: MemFlag.LogDirtyPages });
const vcpu = vm.createVcpu(0);
const ring = vcpu.dirtyRing!;
console.log(`ring: ${ring.entries} entries (${limits.reservedEntries} reserved, soft limit ${limits.softLimit(ringBytes)}) via ${cap === 223 ? 'KVM_CAP_DIRTY_LOG_RING_ACQ_REL' : 'KVM_CAP_DIRTY_LOG_RING'}`);

// Every epoch: write the epoch number into pages 1000, 1007, 1014, ... (256 pages), then OUT 0x10.
vcpu.load(Workload.stride({ firstPage: 1000, pages: PAGES, stridePages: 7 }));
const out = new DirtyPages(ring.entries);
const words = new BigUint64Array(ram.buffer);
const epochs = 200;
let harvested = 0;
let harvestNs = 0n;
for (let epoch = 1; epoch <= epochs; epoch++) {
  const exit = vcpu.run();
  if (exit.reason !== ExitReason.Io || exit.io?.port !== 0x10) throw new Error(`unexpected exit ${ExitReason[exit.reason]}`);
  const t0 = process.hrtime.bigint();
  out.clear();
  ring.harvest(out); // collect DIRTY entries, mark them RESET
  const reset = vm.resetDirtyRings(); // re-protect them: the next write logs again
  harvestNs += process.hrtime.bigint() - t0;
  if (reset !== out.length) throw new Error(`reset ${reset} != harvested ${out.length}`);
  // Read contents only after the reset (so a write after the read would be logged again).
  const pages = new Set<number>();
  for (let i = 0; i < out.length; i++) {
    const gfn = 512 + out.offsets[i]; // slot 1 starts at gfn 512
    pages.add(gfn);
    if (words[(gfn - 512) * 512] !== BigInt(epoch)) throw new Error(`page ${gfn} does not hold epoch ${epoch}`);
  }
  if (pages.size !== PAGES) throw new Error(`epoch ${epoch}: ${pages.size} distinct pages, expected ${PAGES}`);
  harvested += out.length;
  if (epoch === 1) {
    const first = [...pages].slice(0, 4).join(', ');
    console.log(`epoch 1: ${out.length} entries (slot ${out.slots[0]}), pages ${first}, ... each holding 1`);
  }
}
console.log(`${epochs} epochs, ${harvested} entries harvested, every page checked; harvest + reset ${(Number(harvestNs) / epochs / 1000).toFixed(1)} µs per epoch`);
kvm.close();
