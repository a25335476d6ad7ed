#!/usr/bin/env bash
# The main job: sets up, builds, and generates images with a consistency model.
# Usage: scripts/generate.sh [MODEL_DIR] [extra cm generate options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model="${1:-../shared/golden/tiny_cond/model}"
shift || true
mkdir -p out
./build/cm generate -m "$model" --seed 0 -n 16 --grid -o out/grid.png "$@"
./build/cm generate -m "$model" --seed 0 -n 4 --steps 2 -o out/sample_%d.png "$@"
