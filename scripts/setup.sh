#!/usr/bin/env bash
# Installs everything consistency.cpp needs to build and test on Debian 12. Safe to run again.
#   bash scripts/setup.sh          Debian's packages (LibTorch 1.13, CPU): the default build
#   bash scripts/setup.sh --cuda   also PyPI's torch (LibTorch 2.x with CUDA) into .venv/, for
#                                  scripts/build.sh --cuda (nothing installed system-wide but
#                                  Debian's packages)
set -euo pipefail
cd "$(dirname "$0")/.."

# The LibTorch 2.x the CUDA build is made and tested against (CUDA 13.0; the lent GPU machine
# runs this version too).
TORCH_VERSION_PIN="2.11.0"

cuda=0
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=1 ;;
    -h | --help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --cuda)" >&2; exit 1 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread
  nlohmann-json3-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev libcli11-dev libgtest-dev
  libcurl4-openssl-dev libssl-dev python3 libgloo-dev libsleef-dev libdnnl-dev
  libcpp-httplib-dev
  dataset-fashion-mnist
)
[ "$cuda" = 1 ] && packages+=(python3-venv)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$cuda" = 1 ]; then
  # A project-local virtual environment (ignored by git) holding PyPI's torch: its wheel is a
  # full LibTorch with CUDA (headers, libtorch*.so, CMake config) and brings the CUDA libraries
  # it was built against as nvidia-* wheels.
  if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION_PIN')" 2>/dev/null; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    echo "setup: installing torch==$TORCH_VERSION_PIN into .venv/" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION_PIN"
  fi
fi
