// For the suites that build examples/own-guest with the machine's gcc: without the tools they
// skip with the reason, or fail when GUEST_BUILD_REQUIRED=1 (.ci/run sets it after
// `scripts/toolchain.sh install`).
import { guestBuildSkipReason } from '../../examples/own-guest/build';

/** Why the guest cannot be built here (undefined when it can); a failing test when it is required. */
export function guestBuildSkip(): string | undefined {
  const skip = guestBuildSkipReason();
  if (skip !== undefined && process.env.GUEST_BUILD_REQUIRED === '1') {
    test('the own-guest build tools are available (GUEST_BUILD_REQUIRED=1)', () => {
      throw new Error(`the own-guest C program cannot be built: ${skip}`);
    });
  }
  return skip;
}
