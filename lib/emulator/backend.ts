// The emulator backend: a pure-TypeScript KVM with upstream's dirty-tracking semantics, per
// architecture profile (DESIGN.md §4). One file per kernel object: system.ts (/dev/kvm),
// vm.ts (VM fd), vcpu.ts (vCPU fd), ring.ts (dirty ring), memory.ts (guest RAM, memslots),
// cmma.ts (s390 storage attributes), profiles.ts (what each arch offers).

import type { BackendOptions, BackendSystem } from '../backend';
import { PROFILES } from './profiles';
import { EmulatedSystem } from './system';

/** Opens the emulated /dev/kvm for `options.arch` (default x86_64); `device` is ignored. */
export function openEmulatorBackend(options: BackendOptions = {}): BackendSystem {
  const arch = options.arch ?? 'x86_64';
  const profile = PROFILES[arch];
  if (profile === undefined) throw new RangeError(`the emulator has no profile for arch ${JSON.stringify(arch)}`);
  return new EmulatedSystem(profile);
}
