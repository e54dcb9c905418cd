#!/usr/bin/env bash
# npm run test:asan — the native test suites against an AddressSanitizer + UndefinedBehavior-
# Sanitizer build of the addon.
#
# 1. cmake-js builds the same sources (CMakeLists.txt reads native/sources.json) with
#    -fsanitize=address,undefined into build-asan/, never touching build/ or build-cmake/.
#    cmake-js 7 appends its own -DCMAKE_CXX_FLAGS after ours, so the flags go through the
#    per-configuration CMAKE_CXX_FLAGS_RELWITHDEBINFO, which it leaves alone.
# 2. KVM_DIRTY_ADDON makes the loader (lib/native/binding.ts) load that build, in every jest
#    worker and child process.
# 3. node itself is not instrumented: libasan must be the first library loaded (LD_PRELOAD),
#    which every jest worker and child process inherits. Any report fails the run.
#
# Arguments go to jest instead of the default selection (e.g. scripts/test-asan.sh test/native-ring.test.ts).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [[ ! -e /dev/kvm ]]; then
  echo "test:asan: /dev/kvm is absent, nothing native to run" >&2
  exit 1
fi

san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
mkdir -p build-asan
npx cmake-js compile --out build-asan --config RelWithDebInfo --target kvm_dirty \
  --CDCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g $san" \
  --CDCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >build-asan/cmake-js.log 2>&1 \
  || { cat build-asan/cmake-js.log >&2; exit 1; }
addon="$root/build-asan/RelWithDebInfo/kvm_dirty.node"
# The runtimes the addon was linked against (ldd), so the preloaded one is the same version.
libasan="$(ldd "$addon" | awk '/libasan/ { print $3 }')"
libubsan="$(ldd "$addon" | awk '/libubsan/ { print $3 }')"
[[ -n "$libasan" && -n "$libubsan" ]] || { echo "test:asan: $addon is not linked with libasan/libubsan" >&2; exit 1; }

# dist/ for the tests that run compiled code in a child process (type checking is npm test's job)
npx tsc -p tsconfig.json --noCheck
export KVM_DIRTY_ADDON="$addon"
reports="$root/build-asan/reports"
rm -rf "$reports"
mkdir -p "$reports"

# Every suite that reaches the addon, so a new native test is covered without being listed
# here. Left out: the 10,000-scenario differential (npm test runs it) and the suites with no
# native code (stream format, units, generated header, bench charts/reports, emulator-only).
# Arguments replace the selection (e.g. scripts/test-asan.sh test/native-ring.test.ts).
select=(--testPathIgnorePatterns '/test/differential\.' '/test/checkpoint-stream\.' '/test/units\.'
  '/test/guest-header\.' '/test/bench-(chart|report)\.' '/test/emulator-(cmma|dirty-log|model|profiles)')
[[ $# -gt 0 ]] && select=("$@")

# Check that the preload took: a sanitized addon that did not load would silently skip the
# native suites, so load it and fail loudly here.
LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0 node -e \
  "require('./dist/lib').openKvm({ backend: 'native' }).close()"

# detect_leaks=0: node's own allocations alive at exit are not ours to report.
# halt_on_error / -fno-sanitize-recover: the first report ends the process, so it cannot be missed.
# ASan writes its reports to files (log_path); GCC's UBSan runtime ignores log_path and writes
# to stderr, which jest relays, so the run's output is kept and searched too.
set +e
LD_PRELOAD="$libasan" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  KVM_DIRTY_TEST_BACKENDS=native KVM_REQUIRED=1 \
  npx jest "${select[@]}" 2>&1 | tee "$root/build-asan/jest.log"
status=${PIPESTATUS[0]}
set -e

if compgen -G "$reports/*" >/dev/null || grep -q 'runtime error:' "$root/build-asan/jest.log"; then
  echo "test:asan: sanitizer reports:" >&2
  cat "$reports"/* 2>/dev/null >&2 || true
  grep -A12 'runtime error:' "$root/build-asan/jest.log" >&2 || true
  status=1
else
  echo "test:asan: no AddressSanitizer / UndefinedBehaviorSanitizer report ($addon)"
fi
exit "$status"
