#!/usr/bin/env bash
# Sets up, builds and runs every test (parity with diffusers' golden vectors included).
#   bash scripts/test.sh          the default build (Debian's LibTorch 1.13, CPU)
#   bash scripts/test.sh --cuda   the LibTorch 2.x CUDA build, on this machine's CPU (GPU tests
#                                 report themselves skipped where no GPU is present); the tests
#                                 labelled `host` (CLI, HTTP, Hub: the same code in both builds)
#                                 run in the default build only
#   bash scripts/test.sh --minimal  the inference-only build (scripts/build.sh --minimal): its
#                                   tests, and that none of its binaries links libcurl or Gloo
#                                   itself (LibTorch's own libraries are LibTorch's business)
# A test that runs past 20 minutes is stopped and fails: a hang costs one test, not the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--minimal" ]; then
  bash scripts/build.sh --minimal
  for f in build-min/cm build-min/libcm_cli.so build-min/libcm.so; do
    if readelf -d "$f" | grep NEEDED | grep -E 'libcurl|libgloo'; then
      echo "test.sh: $f links a library the inference-only build must not need" >&2
      exit 1
    fi
  done
  if grep -E '^(CURL|GLOO)_[A-Z_]*:(FILE)?PATH=' build-min/CMakeCache.txt | grep -vq NOTFOUND; then
    echo "test.sh: build-min/ looked for libcurl or Gloo" >&2
    exit 1
  fi
  ctest --test-dir build-min --output-on-failure --timeout 1200
elif [ "${1:-}" = "--cuda" ]; then
  bash scripts/build.sh --cuda
  ctest --test-dir build-cuda --output-on-failure --timeout 1200 -LE host
  # Why GPU tests skipped, if they did (CTest keeps each test's output in its log).
  grep -h "needs .*CUDA device" build-cuda/Testing/Temporary/LastTest.log | sort | uniq -c |
    sed 's/^ */GPU tests skipped: /' || true
else
  bash scripts/build.sh
  ctest --test-dir build --output-on-failure --timeout 1200
fi
