// The dirty bitmap: KVM_GET_DIRTY_LOG, then manual protect with KVM_CLEAR_DIRTY_LOG.
//
//   node dist/examples/bitmap.js [--backend emulator]
import { DirtyBitmap, MemFlag, Workload, openKvm, type BackendName } from '../lib';

const backend = (process.argv.includes('--backend') ? process.argv[process.argv.indexOf('--backend') + 1] : undefined) as BackendName | undefined;
const kvm = openKvm({ backend });
console.log(`backend: ${kvm.backend}; host: ${kvm.hostInfo.description}`);

for (const manual of [false, true]) {
  const vm = kvm.createVm();
  if (manual) vm.enableManualDirtyLogProtect(1); // GET stops clearing; CLEAR re-arms
  const harness = vm.createMemory(2 << 20);
  const ram = vm.createMemory(16 << 20); // 4096 pages from gfn 512
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: harness });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 2 << 20, memory: ram, flags: MemFlag.LogDirtyPages });
  const vcpu = vm.createVcpu(0);
  vcpu.load(Workload.stride({ firstPage: 600, pages: 10, stridePages: 100 }));
  vcpu.run(); // epoch 1: pages 600, 700, ..., 1500

  const bm = vm.getDirtyLog(1); // bit i = page 512 + i
  console.log(`${manual ? 'manual protect' : 'plain'}: get -> ${bm.count()} dirty pages: ${bm.toArray().map((o) => 512 + o).join(' ')}`);
  console.log(`  get again -> ${vm.getDirtyLog(1).count()} (${manual ? 'GET does not clear' : 'the first GET cleared and re-armed'})`);
  if (manual) {
    const mask = DirtyBitmap.of(192, [88, 188]); // pages 600 and 700
    vm.clearDirtyLog(1, 0, 192, mask);
    console.log(`  clear pages 600, 700 -> ${vm.getDirtyLog(1).count()} left`);
  }
  vm.close();
}
kvm.close();
