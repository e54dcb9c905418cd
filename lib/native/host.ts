// What kind of KVM this host has, for kvm.hostInfo and the CLI's capability report.
import * as fs from 'node:fs';
import * as os from 'node:os';

import type { HostInfo } from '../backend';
import { cpuInfo } from '../cpu';

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A kvm_intel / kvm_amd module parameter ('Y'/'N' or '1'/'0'), as true/false; undefined if unreadable. */
function param(module: string, name: string): boolean | undefined {
  const v = readText(`/sys/module/${module}/parameters/${name}`);
  if (v === undefined) return undefined;
  return v === 'Y' || v === '1';
}

/**
 * The vendor module that provides /dev/kvm: kvm_pvm (PVM: KVM without VMX/SVM, used nested
 * inside cloud VMs), kvm_intel, kvm_amd; on arm64 and s390x KVM is one arch module.
 */
export function kvmFlavour(): string {
  for (const m of ['kvm_pvm', 'kvm_intel', 'kvm_amd']) if (fs.existsSync(`/sys/module/${m}`)) return m;
  if (process.arch === 'arm64' && fs.existsSync('/dev/kvm')) return 'kvm_arm';
  if (process.arch === 's390x' && fs.existsSync('/dev/kvm')) return 'kvm_s390';
  return 'unknown';
}

/** x86: the `hypervisor` CPUID flag in /proc/cpuinfo says this kernel runs under a hypervisor. */
export function isNested(): boolean | null {
  if (process.arch !== 'x64') return null;
  const cpuinfo = readText('/proc/cpuinfo');
  if (cpuinfo === undefined) return null;
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo);
  return flags ? flags[1].split(/\s+/).includes('hypervisor') : null;
}

function describeFlavour(flavour: string, nested: boolean | null): string {
  const notes: string[] = [];
  if (nested) notes.push('nested');
  switch (flavour) {
    case 'kvm_pvm':
      notes.push('no VMX/EPT/PML, shadow paging');
      break;
    case 'kvm_intel': {
      const ept = param('kvm_intel', 'ept');
      const pml = param('kvm_intel', 'pml');
      if (ept !== undefined) notes.push(ept ? 'EPT' : 'no EPT, shadow paging');
      if (pml !== undefined) notes.push(pml ? 'PML' : 'no PML');
      break;
    }
    case 'kvm_amd': {
      const npt = param('kvm_amd', 'npt');
      if (npt !== undefined) notes.push(npt ? 'NPT' : 'no NPT, shadow paging');
      break;
    }
    default:
      break;
  }
  return notes.length ? `${flavour} (${notes.join('; ')})` : flavour;
}

/**
 * kvm_cpu_dirty_log_size(): the entries a vCPU's hardware log can hold beyond the ring's own
 * reserve (x86: the PML buffer, 512 entries, where PML is in use: kvm_intel with ept and pml
 * on, or kvm_amd where its pml parameter exists and is on); 0 elsewhere (PVM, shadow paging,
 * other architectures). The ring reserves 64 + this (kernel-semantics.md rule 6).
 */
export function cpuDirtyLogSize(flavour = kvmFlavour()): number {
  const PML_ENTRIES = 512;
  if (flavour === 'kvm_intel') return param('kvm_intel', 'ept') !== false && param('kvm_intel', 'pml') === true ? PML_ENTRIES : 0;
  if (flavour === 'kvm_amd') return param('kvm_amd', 'npt') !== false && param('kvm_amd', 'pml') === true ? PML_ENTRIES : 0;
  return 0;
}

/** HostInfo of this machine. */
export function hostInfo(): HostInfo {
  const flavour = kvmFlavour();
  const nested = isNested();
  const pml = process.arch === 'x64' ? cpuDirtyLogSize(flavour) > 0 : false;
  return { flavour, nested, kernel: os.release(), description: describeFlavour(flavour, nested), pml, cpu: cpuInfo() };
}
