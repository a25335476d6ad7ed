#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input (tests/fuzz/fuzz_*.cpp) with libFuzzer, under
# AddressSanitizer and UndefinedBehaviorSanitizer, in build-fuzz/ (clang, -DCM_FUZZ=ON: only the
# torch-free libraries, built in about two minutes).
#   bash scripts/fuzz.sh                    every target, 1,000,000 executions each
#   bash scripts/fuzz.sh --runs N [T...]    N executions of targets T (default: all)
#   bash scripts/fuzz.sh --seconds S [T...] S seconds each instead
#   bash scripts/fuzz.sh --replay           no fuzzing: the torch-free tests and every corpus
#                                           input, under the sanitizers (in CI)
# Each target starts from its seed corpus (tests/fuzz/corpus/T, left unchanged) and grows a
# working corpus in build-fuzz/corpus/T. An input that crashes, leaks, times out (10 s) or takes
# over 2 GB stops the run and is saved as build-fuzz/crashes/T-*: fix the bug, then copy the
# input to tests/fuzz/corpus/T/crash_<what> so the normal test suite replays it (ctest -L fuzz).
# Ends with one line per target: executions, seconds, corpus size, outcome. Exit 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1000000
seconds=""
replay=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a count}"; shift ;;
    --seconds) seconds="${2:?--seconds needs a number}"; runs="" ; shift ;;
    --replay) replay=1 ;;
    -h | --help) sed -n 2,15p "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1' (expected --runs N, --seconds S)" >&2; exit 1 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors weights_index config png jpeg npy npz pt_archive hub)
fi

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (bash scripts/setup.sh installs it)" >&2; exit 1; }
[ -f build-fuzz/CMakeCache.txt ] ||
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCM_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
if [ "$replay" = 1 ]; then
  exec ctest --test-dir build-fuzz --output-on-failure
fi

limit=(-runs="$runs")
[ -n "$seconds" ] && limit=(-max_total_time="$seconds")
summary=()
failed=0
for t in "${targets[@]}"; do
  binary=build-fuzz/tests/fuzz/fuzz_$t
  [ -x "$binary" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 1; }
  mkdir -p "build-fuzz/corpus/$t" build-fuzz/crashes
  log="build-fuzz/fuzz_$t.log"
  start=$(date +%s)
  status=ok
  # -print_final_stats gives the executions done; the first folder is where new inputs go.
  if ! "$binary" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="build-fuzz/crashes/$t-" "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" \
      >"$log" 2>&1; then
    status="FAILED (see $log and build-fuzz/crashes/$t-*)"
    failed=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-14s %10s executions %6ss corpus %5s  %s' "$t" "$execs" \
    "$(( $(date +%s) - start ))" "$corpus" "$status")")
  echo "${summary[-1]}"
done
echo "--- fuzz.sh summary (ASan + UBSan, libFuzzer, $(date -u +%F)):"
printf '%s\n' "${summary[@]}"
exit "$failed"
