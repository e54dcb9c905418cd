import type { HostInfo } from './backend';
import { Cap } from './constants';
import type { Kvm } from './kvm';

/** Capabilities that matter to dirty tracking, in the order the report lists them. */
export const PROBED_CAPS: readonly Cap[] = [
  Cap.DirtyLogRing,
  Cap.DirtyLogRingAcqRel,
  Cap.DirtyLogRingWithBitmap,
  Cap.ManualDirtyLogProtect2,
  Cap.S390CmmaMigration,
  Cap.UserMemory,
  Cap.ReadonlyMem,
  Cap.NrMemslots,
  Cap.NrVcpus,
  Cap.MaxVcpus,
  Cap.MultiAddressSpace,
  Cap.ImmediateExit,
  Cap.CheckExtensionVm,
];

export interface ProbeReport {
  backend: 'native' | 'emulator';
  arch: string;
  fallbackReason?: string;
  host: HostInfo;
  apiVersion: number;
  vcpuMmapSize: number;
  capabilities: Array<{ name: string; cap: number; value: number }>;
  dirtyRing: {
    maxBytes: number; maxEntries: number; acquireRelease: boolean; withBitmap: boolean;
    /** KVM_DIRTY_RING_RSVD_ENTRIES + kvm_cpu_dirty_log_size(): 64, or 576 with Intel PML */
    reservedEntries: number;
    /** the smallest ring the kernel takes */
    minBytes: number;
  };
}

/** What `kvm-dirty probe` reports: every dirty-tracking capability with its value, and the host. */
export function probe(kvm: Kvm): ProbeReport {
  const capabilities = PROBED_CAPS.map((cap) => ({ name: `KVM_CAP_${snake(Cap[cap])}`, cap, value: kvm.checkExtension(cap) }));
  const ringBytes = Math.max(kvm.checkExtension(Cap.DirtyLogRing), kvm.checkExtension(Cap.DirtyLogRingAcqRel));
  const limits = kvm.dirtyRingLimits();
  return {
    backend: kvm.backend,
    arch: kvm.arch,
    ...(kvm.fallbackReason ? { fallbackReason: kvm.fallbackReason } : {}),
    host: { ...kvm.hostInfo, cpu: { ...kvm.hostInfo.cpu } },
    apiVersion: kvm.getApiVersion(),
    vcpuMmapSize: kvm.getVcpuMmapSize(),
    capabilities,
    dirtyRing: {
      maxBytes: ringBytes,
      maxEntries: ringBytes / 16,
      acquireRelease: kvm.checkExtension(Cap.DirtyLogRingAcqRel) > 0,
      withBitmap: kvm.checkExtension(Cap.DirtyLogRingWithBitmap) > 0,
      reservedEntries: limits.reservedEntries,
      minBytes: limits.supported ? limits.minBytes : 0,
    },
  };
}

/** The kernel's spelling of a Cap member: DirtyLogRingAcqRel -> DIRTY_LOG_RING_ACQ_REL. */
export function snake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toUpperCase();
}

/** The report as a table a person reads. */
export function formatProbe(r: ProbeReport): string {
  const rows: Array<[string, string]> = [
    ['backend', r.backend + (r.fallbackReason ? ` (fallback: ${r.fallbackReason})` : '')],
    ['arch', r.arch],
    ['host KVM', r.host.description],
    ['CPU', `${r.host.cpu.vendor}: ${r.host.cpu.model}`],
    ['kernel', r.host.kernel],
    ['KVM_GET_API_VERSION', String(r.apiVersion)],
    ['KVM_GET_VCPU_MMAP_SIZE', `${r.vcpuMmapSize} bytes`],
  ];
  for (const c of r.capabilities) rows.push([`${c.name} (${c.cap})`, describeCap(c.cap, c.value)]);
  if (r.dirtyRing.maxBytes > 0) {
    rows.push(['dirty ring sizes', `${r.dirtyRing.minBytes} .. ${r.dirtyRing.maxBytes} bytes; ${r.dirtyRing.reservedEntries} entries reserved${r.host.pml ? ' (64 + 512 for PML)' : ''}: soft limit = entries - ${r.dirtyRing.reservedEntries}`]);
  }
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

function describeCap(cap: number, value: number): string {
  if (value === 0) return '0 (absent)';
  switch (cap) {
    case Cap.DirtyLogRing:
    case Cap.DirtyLogRingAcqRel:
      return `${value} (ring up to ${value / 16} entries of 16 bytes)`;
    case Cap.ManualDirtyLogProtect2:
      return `${value} (${value & 2 ? 'MANUAL_PROTECT_ENABLE | INITIALLY_SET' : 'MANUAL_PROTECT_ENABLE'})`;
    default:
      return String(value);
  }
}
