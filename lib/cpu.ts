// The CPU this process runs on, for kvm.hostInfo, the CLI's report and the bench's host object.
import * as fs from 'node:fs';
import * as os from 'node:os';

import type { CpuInfo } from './backend';

/** The CPU this process runs on, from /proc/cpuinfo (vendor_id and model name on x86; 'unknown' where absent). */
export function cpuInfo(): CpuInfo {
  const text = readCpuinfo();
  const field = (name: string): string | undefined => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(text)?.[1].trim();
  const vendorId = field('vendor_id') ?? field('CPU implementer') ?? field('vendor') ?? 'unknown';
  const vendor = ({ GenuineIntel: 'Intel', AuthenticAMD: 'AMD', HygonGenuine: 'Hygon' } as Record<string, string>)[vendorId] ?? vendorId;
  const model = field('model name') ?? field('machine') ?? os.cpus()[0]?.model ?? 'unknown';
  return { vendor, model };
}

function readCpuinfo(): string {
  try {
    return fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}
