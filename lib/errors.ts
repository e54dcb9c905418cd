import { constants } from 'node:os';
import { getSystemErrorMap, getSystemErrorName } from 'node:util';

/**
 * A failed kernel request (or the emulator's stand-in for one), shaped like Node's
 * system errors: `code` 'EINVAL', `errno` negative, `syscall` 'ioctl', and `ioctl`
 * naming the request ('KVM_ENABLE_CAP'). Check `err.code`, never `instanceof`:
 * jest runs tests in realms of their own.
 */
export class KvmError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  readonly ioctl?: string;

  /**
   * @param errno  the errno, positive (as the kernel returns it negated) or negative (as Node reports it)
   * @param ioctl  the request's name, e.g. 'KVM_GET_DIRTY_LOG'; absent for calls that make no kernel request
   * @param detail a hint appended to the message
   * @param syscall the system call, 'ioctl' unless it was open or mmap
   */
  constructor(errno: number, ioctl?: string, detail?: string, syscall = 'ioctl') {
    const n = -Math.abs(errno);
    const code = errnoName(n);
    const text = getSystemErrorMap().get(n)?.[1] ?? 'unknown error';
    super(`${code}: ${text}, ${syscall}${ioctl ? ` ${ioctl}` : ''}${detail ? ` (${detail})` : ''}`);
    this.name = 'KvmError';
    this.code = code;
    this.errno = n;
    this.syscall = syscall;
    if (ioctl !== undefined) this.ioctl = ioctl;
  }
}

function errnoName(n: number): string {
  try {
    return getSystemErrorName(n);
  } catch {
    return `Unknown system error ${n}`;
  }
}

/** Positive errno numbers of this host, for the emulator and for tests. */
export const Errno = constants.errno as Readonly<Record<string, number>>;

/** Throws KvmError(code) for a named errno, e.g. `fail('EINVAL', 'KVM_ENABLE_CAP')`. */
export function fail(code: keyof typeof constants.errno, ioctl?: string, detail?: string): never {
  throw new KvmError(constants.errno[code], ioctl, detail);
}

/** True if `e` is a KvmError-shaped error with this code (realm-safe). */
export function isKvmError(e: unknown, code?: string): e is KvmError {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'KvmError' &&
    (code === undefined || (e as { code?: unknown }).code === code);
}
