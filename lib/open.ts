import type { BackendSystem } from './backend';
import type { Arch } from './constants';
import { Kvm } from './kvm';
import { checkObject } from './validate';

export type BackendName = 'auto' | 'native' | 'emulator';

export interface OpenOptions {
  /** 'auto' (default): native where the addon loads and the device opens, else the emulator. */
  backend?: BackendName;
  /** The KVM device (default /dev/kvm). */
  device?: string;
  /** The architecture to run (default: the host's; other architectures only on the emulator). */
  arch?: Arch;
  /**
   * Emulator, x86_64 only: model an Intel host with PML (KVM reserves 64 + 512 ring entries,
   * so 4 and 8 KiB rings are EINVAL). Default false. Implies backend 'emulator' under 'auto'.
   */
  pml?: boolean;
}

const ARCHES: readonly Arch[] = ['x86_64', 'arm64', 's390x'];

/** The host's architecture in the kernel's spelling. */
export function hostArch(): Arch | undefined {
  return ({ x64: 'x86_64', arm64: 'arm64', s390x: 's390x' } as Record<string, Arch>)[process.arch];
}

/**
 * Opens KVM. Environment overrides for the defaults: KVM_DIRTY_BACKEND=auto|native|emulator,
 * KVM_DIRTY_DEVICE=/dev/kvm (so anyone can watch the fallback on a KVM host).
 */
export function openKvm(options: OpenOptions = {}): Kvm {
  const o = checkObject('options', options) as OpenOptions;
  const backend = o.backend ?? (process.env.KVM_DIRTY_BACKEND as BackendName | undefined) ?? 'auto';
  if (!['auto', 'native', 'emulator'].includes(backend)) {
    throw new RangeError(`backend must be 'auto', 'native' or 'emulator', got ${JSON.stringify(backend)}`);
  }
  const device = o.device ?? process.env.KVM_DIRTY_DEVICE ?? '/dev/kvm';
  if (typeof device !== 'string') throw new TypeError('device must be a path string');
  const host = hostArch();
  const arch = o.arch ?? host ?? 'x86_64';
  if (!ARCHES.includes(arch)) throw new RangeError(`arch must be one of ${ARCHES.join(', ')}, got ${JSON.stringify(arch)}`);
  const pml = o.pml ?? false;
  if (typeof pml !== 'boolean') throw new TypeError('pml must be a boolean');
  if (pml && arch !== 'x86_64') throw new RangeError(`pml models an Intel x86_64 host; arch ${arch} has no PML`);
  if (pml && backend === 'native') throw new RangeError("pml is a modelled host: use backend 'emulator' (the native backend has whatever the host has; see kvm.hostInfo.pml)");

  if (backend === 'emulator' || pml) return new Kvm(openEmulator(arch, pml), pml && backend === 'auto' ? 'pml: true asks for the emulated Intel PML host' : undefined);
  if (backend === 'native') {
    if (arch !== host) throw new RangeError(`the native backend runs the host's architecture (${host ?? process.arch}); use backend 'emulator' for ${arch}`);
    return new Kvm(openNative(device));
  }
  // auto
  if (arch !== host) return new Kvm(openEmulator(arch), `${arch} requested on a ${host ?? process.arch} host`);
  try {
    return new Kvm(openNative(device));
  } catch (e) {
    // The addon did not load or the device did not open: say why, and emulate.
    return new Kvm(openEmulator(arch), e instanceof Error ? e.message : String(e));
  }
}

function openNative(device: string): BackendSystem {
  // Loaded on demand: where the addon cannot load, only the emulator's code runs.
  const { openNativeBackend } = require('./native/backend') as typeof import('./native/backend');
  return openNativeBackend({ device });
}

function openEmulator(arch: Arch, pml = false): BackendSystem {
  const { openEmulatorBackend } = require('./emulator/backend') as typeof import('./emulator/backend');
  return openEmulatorBackend({ arch, pml });
}
