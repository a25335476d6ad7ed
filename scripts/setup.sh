#!/usr/bin/env bash
# Installs everything consistency.cpp needs to build and test on Debian 12. Safe to run again
# (quick when everything is there: no apt-get, no pip).
#   bash scripts/setup.sh          Debian's packages (LibTorch 1.13, CPU): the default build;
#                                  and .venv/ with the server tests' Python tools
#                                  (tests/server/requirements.txt: pytest, openai, selenium)
#   bash scripts/setup.sh --cuda   also PyPI's torch (LibTorch 2.x with CUDA) into .venv/, for
#                                  scripts/build.sh --cuda
# Nothing is installed system-wide but Debian's packages; .venv/ is ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."

# The LibTorch 2.x the CUDA build is made and tested against (CUDA 13.0; the lent GPU machine
# runs this version too).
TORCH_VERSION_PIN="2.11.0"

cuda=0
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=1 ;;
    -h | --help) sed -n 2,9p "$0"; exit 0 ;;
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
  # scripts/fuzz.sh: clang with libFuzzer and the sanitizers' runtimes.
  clang libclang-rt-14-dev
  # The server tests: .venv/ for their Python tools; nginx in front of two cm serve replicas
  # (Debian's plain nginx package is the lightest with the upstream and proxy modules, which are
  # built in); Chromium and its WebDriver for the web page test.
  python3-venv nginx chromium chromium-driver
)

# One dpkg-query for all (one per package is seconds on a busy machine).
# dpkg-query exits 1 when it has never heard of a package (a fresh machine): not an error here.
installed=" $( (dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${packages[@]}" 2>/dev/null || true) |
  awk '$1 == "ii" { printf "%s ", $2 }')"
missing=()
for p in "${packages[@]}"; do
  [[ "$installed" == *" $p "* ]] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi

# A project-local virtual environment (ignored by git), made from Debian's Python (not whichever
# python3 comes first on PATH, e.g. a pyenv one). It holds the server tests' Python tools, pinned
# in tests/server/requirements.txt; a copy of the file installed last marks them as done, so a
# second run starts no pip unless the file changed or a tool no longer imports.
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
requirements=tests/server/requirements.txt
installed_requirements=.venv/cm-server-requirements.txt
if ! cmp -s "$requirements" "$installed_requirements" ||
   ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('pytest', 'openai', 'selenium')))" 2>/dev/null; then
  echo "setup: installing $requirements into .venv/" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$installed_requirements"
fi

if [ "$cuda" = 1 ]; then
  # PyPI's torch in the same .venv/: its wheel is a full LibTorch with CUDA (headers,
  # libtorch*.so, CMake config) and brings the CUDA libraries it was built against as nvidia-*
  # wheels.
  if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION_PIN')" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION_PIN into .venv/" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION_PIN"
  fi
fi
