// What saving and restoring the full state costs, per vCPU and per VM: the public calls
// (ioctls plus the typed decode/encode), the same ioctls alone at the backend (the kernel's
// share), regs and sregs alone (what a checkpoint held before), and the encoding.
//
//   npm run build && node dist/bench/state.js [--iterations N] [--json]
//
// measureStateCosts() is what bench/run.ts can call; it needs the native backend with an
// in-kernel irqchip (the pieces measured are the ones getState() collects there).

import { Cap, encodeVcpuState, encodeVmState, decodeVcpuState, decodeVmState, openKvm, Workload, type Kvm, type Vcpu, type Vm } from '../lib';
import { cpuidRoom, msrsFor, XCRS_SIZE, LAPIC_SIZE, VCPU_EVENTS_SIZE, DEBUGREGS_SIZE, PIT_STATE2_SIZE, CLOCK_DATA_SIZE, irqchipFor, IrqchipId, MAX_CPUID_ENTRIES } from '../lib/kvm-structs';
import { median } from './stats';

export interface StateCosts {
  iterations: number;
  /** µs per call, medians */
  vcpuGetState: number;
  vcpuSetState: number;
  vmGetState: number;
  vmSetState: number;
  /** the same GETs (every vCPU piece) at the backend, into preallocated structs: the kernel's share */
  vcpuGetIoctls: number;
  /** KVM_GET_REGS + KVM_GET_SREGS and their SETs: the state a checkpoint held before */
  regsSregsGet: number;
  regsSregsSet: number;
  /** KVM_SET_CPUID2 alone (the first step of setState()) */
  setCpuid2: number;
  encodeVcpuState: number;
  decodeVcpuState: number;
  /** bytes of the encodings */
  vcpuStateBytes: number;
  vmStateBytes: number;
  /** the pieces measured */
  pieces: string[];
  msrs: number;
}

function timeUs(iterations: number, fn: () => void): number {
  for (let i = 0; i < Math.min(200, iterations); i++) fn(); // warm up (JIT, kernel caches)
  const samples = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const t = process.hrtime.bigint();
    fn();
    samples[i] = Number(process.hrtime.bigint() - t) / 1000;
  }
  return median(samples);
}

function machine(kvm: Kvm): { vm: Vm; vcpu: Vcpu } {
  const vm = kvm.createVm();
  vm.createIrqchip();
  vm.createPit2();
  const mem = vm.createMemory(4 << 20);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });
  return { vm, vcpu: vm.createVcpu(0) };
}

/** Medians over `iterations` calls of each operation, on a vCPU that has run a workload. */
export function measureStateCosts(kvm: Kvm, iterations = 2000): StateCosts {
  if (kvm.backend !== 'native' || kvm.checkExtension(Cap.Irqchip) === 0) throw new RangeError('measureStateCosts() needs the native backend with an in-kernel irqchip');
  const src = machine(kvm);
  src.vcpu.load(Workload.counter({ page: 600 }));
  src.vcpu.run();
  const dst = machine(kvm);
  const state = src.vcpu.getState();
  const vmState = src.vm.getState();
  const h = src.vcpu._handle;
  const vmH = src.vm._handle;
  const msrIndices = state.msrs!.map((m) => m.index);
  const b = {
    cpuid: cpuidRoom(MAX_CPUID_ENTRIES), xsave: new Uint8Array(h.xsaveSize), xcrs: new Uint8Array(XCRS_SIZE), msrs: msrsFor(msrIndices),
    lapic: new Uint8Array(LAPIC_SIZE), events: new Uint8Array(VCPU_EVENTS_SIZE), debugregs: new Uint8Array(DEBUGREGS_SIZE),
  };
  const chips = [irqchipFor(IrqchipId.PicMaster), irqchipFor(IrqchipId.PicSlave), irqchipFor(IrqchipId.Ioapic)];
  const vmb = { pit: new Uint8Array(PIT_STATE2_SIZE), clock: new Uint8Array(CLOCK_DATA_SIZE) };
  const regs = src.vcpu.getRegs();
  const sregs = src.vcpu.getSregs();
  const bytes = encodeVcpuState(state);
  const out: StateCosts = {
    iterations,
    vcpuGetState: timeUs(iterations, () => src.vcpu.getState()),
    vcpuSetState: timeUs(iterations, () => dst.vcpu.setState(state)),
    vmGetState: timeUs(iterations, () => src.vm.getState()),
    vmSetState: timeUs(iterations, () => dst.vm.setState(vmState)),
    vcpuGetIoctls: timeUs(iterations, () => {
      h.getRegs();
      h.getSregs();
      h.getCpuid2(b.cpuid);
      h.getXsave(b.xsave);
      h.getXcrs(b.xcrs);
      h.getMsrs(b.msrs);
      h.getVcpuEvents(b.events);
      h.getLapic(b.lapic);
      h.getDebugregs(b.debugregs);
      h.getMpState();
      for (const c of chips) vmH.getIrqchip(c);
      vmH.getPit2(vmb.pit);
      vmH.getClock(vmb.clock);
    }),
    regsSregsGet: timeUs(iterations, () => {
      src.vcpu.getRegs();
      src.vcpu.getSregs();
    }),
    regsSregsSet: timeUs(iterations, () => {
      dst.vcpu._handle.setRegs(regs);
      dst.vcpu._handle.setSregs(sregs);
    }),
    setCpuid2: timeUs(iterations, () => dst.vcpu.setCpuid2(state.cpuid!)),
    encodeVcpuState: timeUs(iterations, () => encodeVcpuState(state)),
    decodeVcpuState: timeUs(iterations, () => decodeVcpuState(bytes)),
    vcpuStateBytes: bytes.length,
    vmStateBytes: encodeVmState(vmState).length,
    pieces: Object.keys(state),
    msrs: msrIndices.length,
  };
  decodeVmState(encodeVmState(vmState)); // the VM encoding round-trips (its cost is below a µs)
  src.vm.close();
  dst.vm.close();
  return out;
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const iterations = args.includes('--iterations') ? Number(args[args.indexOf('--iterations') + 1]) : 2000;
  const kvm = openKvm({ backend: 'native' });
  const r = measureStateCosts(kvm, iterations);
  kvm.close();
  if (args.includes('--json')) console.log(JSON.stringify(r, null, 2));
  else {
    console.log(`full state: ${r.pieces.join(', ')} (${r.msrs} MSRs); medians of ${r.iterations} calls, µs`);
    for (const [k, v] of Object.entries(r)) if (typeof v === 'number' && k !== 'iterations' && k !== 'msrs') console.log(`  ${k.padEnd(16)} ${k.endsWith('Bytes') ? v : v.toFixed(1)}`);
  }
}
