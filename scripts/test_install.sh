#!/usr/bin/env bash
# Installs a build (cmake --install) into a scratch prefix and uses it as someone else would:
# the installed cm finds its shipped model with no -m, and tests/downstream builds against the
# package with find_package(consistency) and reproduces cm generate's images.
#   bash scripts/test_install.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: test_install.sh BUILD_DIR}" && pwd)
work=$build/test_install
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
prefix=$work/prefix
for f in bin/cm lib/libcm_cli.so include/cm/pipeline.h include/cm/version.h \
  lib/cmake/consistency/consistencyConfig.cmake share/consistency/models/fmnist-cm/model_index.json; do
  [ -e "$prefix/$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
# The installed cm, from elsewhere, with the default model found relative to itself.
cd "$work"
env -u CM_MODEL "$prefix/bin/cm" --version
env -u CM_MODEL "$prefix/bin/cm" generate -n 2 --class 3 -s 7 -o "$work/ref.npy" -q
# The same LibTorch the build used.
torch_dir=$(sed -n 's/^Torch_DIR:PATH=//p' "$build/CMakeCache.txt")
cmake -S "$root/tests/downstream" -B "$work/downstream" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DTorch_DIR="$torch_dir" > "$work/configure.log"
cmake --build "$work/downstream" > "$work/build.log"
"$work/downstream/downstream" "$prefix/share/consistency/models/fmnist-cm" "$work/ref.npy"
