// Register comparisons that hold on every x86 host: RFLAGS bits the architecture leaves
// undefined at that exit (undefinedRflags: AF after a shift, ...) are masked, exactly those
// and only there; everything else must be equal. Values are compared as hex strings, so a
// failure prints them (and crosses jest's worker boundary, which cannot carry BigInts).
import type { Regs } from '../../lib';
import { undefinedRflags } from '../../lib/guest/x86';

/** `regs` as hex strings, with the bits undefined at this exit cleared from rflags. */
export function definedRegs(regs: Regs, mask = undefinedRflags(regs)): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(regs)) out[name] = `0x${(name === 'rflags' ? value & ~mask : value).toString(16)}`;
  return out;
}

/** Expects `actual` to equal `expected` in every architecturally defined bit (the mask comes from `expected`'s exit). */
export function expectSameRegs(actual: Regs, expected: Regs): void {
  const mask = undefinedRflags(expected);
  expect(definedRegs(actual, mask)).toEqual(definedRegs(expected, mask));
}
