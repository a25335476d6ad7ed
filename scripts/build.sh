#!/usr/bin/env bash
# Sets up (idempotently) and builds consistency.cpp.
#   bash scripts/build.sh                   into build/: Debian's LibTorch 1.13, CPU
#   bash scripts/build.sh --cuda            into build-cuda/: PyPI's LibTorch 2.x with CUDA (.venv/)
#   bash scripts/build.sh --cuda --python P the same against the torch of interpreter P (e.g. a
#                                           GPU machine's python3); nothing is installed then
#   bash scripts/build.sh --minimal         into build-min/: inference only (no training, no Hub
#                                           downloads, one process): no libcurl, OpenSSL or Gloo
# Extra CMake arguments: CM_CMAKE_ARGS="-DCM_HUB=OFF ..." (used when a folder is configured).
set -euo pipefail
cd "$(dirname "$0")/.."

cuda=0
minimal=0
python=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) cuda=1 ;;
    --minimal) minimal=1 ;;
    --python) python="${2:?--python needs an interpreter}"; shift ;;
    -h | --help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (expected --cuda, --minimal, --python P)" >&2; exit 1 ;;
  esac
  shift
done

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# shellcheck disable=SC2206
extra=(${CM_CMAKE_ARGS:-})

if [ "$minimal" = 1 ]; then
  bash scripts/setup.sh
  [ -f build-min/CMakeCache.txt ] || cmake -S . -B build-min "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCM_HUB=OFF -DCM_TRAINING=OFF -DCM_DISTRIBUTED=OFF "${extra[@]}"
  cmake --build build-min -j "$(nproc)"
  exit 0
fi

if [ "$cuda" = 0 ]; then
  bash scripts/setup.sh
  [ -f build/CMakeCache.txt ] || cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${extra[@]}"
  cmake --build build -j "$(nproc)"
  exit 0
fi

if [ -z "$python" ]; then
  bash scripts/setup.sh --cuda
  python=.venv/bin/python
fi
# The torch package's folder first: TorchConfig looks its libraries up by name, and would
# otherwise take Debian's libtorch.so from the system path.
prefix="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__) + ";" + torch.utils.cmake_prefix_path)' 2>/dev/null)" ||
  { echo "build.sh: $python cannot import torch" >&2; exit 1; }
"$python" -c 'import torch, sys; sys.exit(torch.version.cuda is None)' ||
  { echo "build.sh: $python's torch has no CUDA" >&2; exit 1; }
if [ ! -f build-cuda/CMakeCache.txt ]; then
  # CMake's own CUDA discovery needs nvcc; the toolkit's usual place when it is not on the PATH.
  command -v nvcc >/dev/null || export PATH="$PATH:/usr/local/cuda/bin"
  cmake -S . -B build-cuda "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    "-DCMAKE_PREFIX_PATH=$prefix${CM_PREFIX_PATH:+;$CM_PREFIX_PATH}" "${extra[@]}"
fi
cmake --build build-cuda -j "$(nproc)"
