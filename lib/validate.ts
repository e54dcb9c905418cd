// Argument checks shared by the public classes: wrong JS types are TypeErrors, values out
// of the kernel's range are RangeErrors, each naming the argument.

export function checkUint(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${describe(value)}`);
  if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be a safe integer, got ${value}`);
  if (value < 0 || value > max) throw new RangeError(`${name} must be in [0, ${max}], got ${value}`);
  return value;
}

/** A u64 given as a number (safe integer; -1 means all bits) or a bigint, as a bigint in [0, 2^64). */
export function checkU64(name: string, value: unknown): bigint {
  if (typeof value === 'bigint') {
    if (value < -(1n << 63n) || value >= 1n << 64n) throw new RangeError(`${name} does not fit in 64 bits: ${value}`);
    return BigInt.asUintN(64, value);
  }
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be a safe integer or a bigint, got ${value}`);
    return BigInt.asUintN(64, BigInt(value));
  }
  throw new TypeError(`${name} must be a number or a bigint, got ${describe(value)}`);
}

export function checkBool(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
  return value;
}

export function checkObject(name: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null) throw new TypeError(`${name} must be an object, got ${describe(value)}`);
  return value as Record<string, unknown>;
}


export function checkInstance<T>(name: string, value: unknown, cls: Function & { prototype: T }, what: string): T {
  if (!(value instanceof cls)) throw new TypeError(`${name} must be ${what}, got ${describe(value)}`);
  return value as T;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  if (typeof value === 'string') return `a string (${JSON.stringify(value.slice(0, 40))})`;
  return `${typeof value} ${String(value)}`;
}
