// For the tests of what only the native backend has (test/native-*.test.ts): a describe block
// that runs where the addon loads and the device opens, is skipped with the reason elsewhere,
// and fails when KVM_REQUIRED=1 (the same rule as describeEachBackend).
import { openKvm, type Kvm } from '../../lib';
import { backends } from './backends';

export function describeNative(title: string, suite: (open: () => Kvm) => void): void {
  const native = backends().find((b) => b.name === 'native');
  const reason = native === undefined ? 'KVM_DIRTY_TEST_BACKENDS leaves out native' : native.skipReason;
  const open = (): Kvm => openKvm({ backend: 'native' });
  if (reason === undefined) {
    describe(`${title} [native]`, () => suite(open));
  } else if (process.env.KVM_REQUIRED === '1') {
    describe(`${title} [native]`, () => {
      test('backend is available (KVM_REQUIRED=1)', () => {
        throw new Error(`native backend required but unavailable: ${reason}`);
      });
    });
  } else {
    describe.skip(`${title} [native] (skipped: ${reason})`, () => suite(open));
  }
}
