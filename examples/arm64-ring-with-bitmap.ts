// The dirty ring with its bitmap backup on an emulated arm64 VM (KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP),
// in the order the kernel documentation gives (api.rst §7.36, kernel-semantics §4):
//
//   1. KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING_ACQ_REL): arm64 offers only the ACQ_REL ring
//      (plain KVM_CAP_DIRTY_LOG_RING is refused with EINVAL), before any vCPU;
//   2. KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP), before any memory slot, so that
//      logged slots still get a bitmap;
//   3. each epoch, the vCPU's writes go to its ring: harvest, KVM_RESET_DIRTY_RINGS;
//   4. writes KVM makes without a running vCPU (on arm64 the vGIC/ITS tables it saves into
//      guest memory) cannot go to any ring: they land in the slot's bitmap;
//   5. the bitmap is collected with KVM_GET_DIRTY_LOG as the very last step, once the vCPUs
//      are stopped and the device state is saved.
//
//   node dist/examples/arm64-ring-with-bitmap.js [--epochs 4]
//
//   gfn 0 .. 511       slot 0  the workload harness (page tables, code; not logged)
//   gfn 512 .. 1535    slot 1  guest RAM, logged (the vCPU's stride writes)
//   gfn 2048 .. 2063   slot 2  logged; stands in for the GIC/ITS tables KVM writes on save
import { Cap, DirtyBitmap, DirtyPages, ExitReason, MemFlag, PAGE_SIZE, Workload, openKvm, type Kvm } from '../lib';

const arg = (name: string, dflt: number): number =>
  process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : dflt;
const EPOCHS = arg('--epochs', 4);
if (!(EPOCHS >= 1 && EPOCHS < 16)) throw new RangeError('--epochs must be 1..15 (one table page each)');

const RAM_GFN = 512;
const RAM_PAGES = 1024;
const TABLES_GFN = 2048;
const TABLES_PAGES = 16;

const kvm: Kvm = openKvm({ backend: 'emulator', arch: 'arm64' });
console.log(`backend: ${kvm.backend}, arch: ${kvm.arch}`);
console.log(
  `KVM_CHECK_EXTENSION: DIRTY_LOG_RING ${kvm.checkExtension(Cap.DirtyLogRing)}, ` +
    `DIRTY_LOG_RING_ACQ_REL ${kvm.checkExtension(Cap.DirtyLogRingAcqRel)}, ` +
    `DIRTY_LOG_RING_WITH_BITMAP ${kvm.checkExtension(Cap.DirtyLogRingWithBitmap)}`,
);

const ringBytes = kvm.dirtyRingLimits().bytesFor(2048); // the soft limit holds 2048 pages
// Plain KVM_CAP_DIRTY_LOG_RING promises nothing about memory ordering: a weakly ordered
// arch does not offer it, and enabling it fails.
{
  const probe = kvm.createVm();
  try {
    probe.enableCap(Cap.DirtyLogRing, [ringBytes]);
    throw new Error('KVM_CAP_DIRTY_LOG_RING was accepted on arm64');
  } catch (e) {
    if ((e as { code?: string }).code !== 'EINVAL') throw e;
    console.log(`KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING) on arm64: ${(e as { code: string }).code} (only the ACQ_REL ring is offered)`);
  }
  // WITH_BITMAP decides whether new slots get a bitmap, so it is refused once a slot exists.
  probe.enableDirtyRing(ringBytes);
  probe.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: probe.createMemory(PAGE_SIZE) });
  try {
    probe.enableDirtyRingWithBitmap();
    throw new Error('KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP was accepted after a memory slot');
  } catch (e) {
    if ((e as { code?: string }).code !== 'EINVAL') throw e;
    console.log('KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP) after a memory slot: EINVAL');
  }
  probe.close();
}

const vm = kvm.createVm();
const cap = vm.enableDirtyRing(ringBytes);
if (cap !== Cap.DirtyLogRingAcqRel) throw new Error(`expected the ACQ_REL ring, got cap ${cap}`);
vm.enableDirtyRingWithBitmap(); // before the first memory slot
console.log(`ring: KVM_CAP_DIRTY_LOG_RING_ACQ_REL, ${ringBytes} bytes; then KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP`);

vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: vm.createMemory(RAM_GFN * PAGE_SIZE) });
vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: RAM_GFN * PAGE_SIZE, memory: vm.createMemory(RAM_PAGES * PAGE_SIZE), flags: MemFlag.LogDirtyPages });
vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: TABLES_GFN * PAGE_SIZE, memory: vm.createMemory(TABLES_PAGES * PAGE_SIZE), flags: MemFlag.LogDirtyPages });
const vcpu = vm.createVcpu(0);
const ring = vcpu.dirtyRing!;

// Every epoch the guest writes pages 600, 610, ..., 790 (20 pages), then exits with an OUT.
vcpu.load(Workload.stride({ firstPage: 600, pages: 20, stridePages: 10 }));
const out = new DirtyPages(ring.entries);
const fromRing = new Set<number>();
for (let epoch = 1; epoch <= EPOCHS; epoch++) {
  const exit = vcpu.run();
  if (exit.reason !== ExitReason.Io) throw new Error(`epoch ${epoch}: unexpected exit ${ExitReason[exit.reason]}`);
  // Without a running vCPU KVM writes the GIC/ITS tables (here: one page per epoch, and the
  // first page again); with the bitmap on, those writes are logged there, not in a ring.
  vm.emulator!.guestWrite(null, (TABLES_GFN + epoch) * PAGE_SIZE, 8);
  vm.emulator!.guestWrite(null, TABLES_GFN * PAGE_SIZE, 8);
  out.clear();
  const n = ring.harvest(out);
  const reset = vm.resetDirtyRings();
  if (reset !== n) throw new Error(`reset ${reset} != harvested ${n}`);
  const slots = new Set<number>();
  for (let i = 0; i < n; i++) {
    slots.add(out.slots[i]);
    fromRing.add(RAM_GFN + out.offsets[i]);
  }
  const gfns = Array.from(out.offsets.subarray(0, n), (o) => RAM_GFN + o);
  console.log(`epoch ${epoch}: ring ${n} entries (slot ${[...slots].join(',')}), pages ${gfns.slice(0, 3).join(', ')} .. ${gfns[n - 1]}`);
}

// The last step: the vCPU is stopped and the device state saved, so the bitmap is complete.
// One KVM_GET_DIRTY_LOG per slot reads it; with a single pass KVM_CLEAR_DIRTY_LOG is not needed.
const ramBits = vm.getDirtyLog(1);
const tableBits = vm.getDirtyLog(2, new DirtyBitmap(TABLES_PAGES));
const fromBitmap: number[] = [];
tableBits.forEach((page) => fromBitmap.push(TABLES_GFN + page));
console.log(`bitmap, slot 1 (vCPU writes went to the ring): ${ramBits.count()} pages`);
console.log(`bitmap, slot 2 (writes without a vCPU): ${fromBitmap.length} pages: ${fromBitmap.join(', ')}`);
console.log(`from the ring: ${fromRing.size} distinct pages over ${EPOCHS} epochs; from the bitmap: ${fromBitmap.length}`);

const expectedBitmap = Array.from({ length: EPOCHS + 1 }, (_, i) => TABLES_GFN + i);
if (ramBits.count() !== 0 || fromRing.size !== 20 || fromBitmap.join() !== expectedBitmap.join()) {
  throw new Error('the pages did not arrive where the kernel puts them');
}
kvm.close();
