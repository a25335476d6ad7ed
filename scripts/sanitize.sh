#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer: every library, the
# CLI, the server and the tests instrumented (gcc, -DCM_SANITIZE=ON, in build-asan/); LibTorch,
# OpenBLAS and oneDNN are Debian's uninstrumented builds, so their insides are not checked, but
# every call our code makes into them with a bad pointer or size is.
#   bash scripts/sanitize.sh            build and run every test
#   bash scripts/sanitize.sh -R REGEX   only the tests whose names match (ctest -R)
# Any sanitizer report aborts the process it is in, and so fails its test. Leaks are not checked
# here: LeakSanitizer's tracer (GCC 12's) crashes at the exit of every multi-threaded process on
# these machines ("Tracer caught signal 11"). The fuzz build (scripts/fuzz.sh, clang) checks the
# parsers for leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
[ -f build-asan/CMakeCache.txt ] || cmake -S . -B build-asan "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCM_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$(nproc)"
export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
ctest --test-dir build-asan --output-on-failure --timeout 2400 "$@"
