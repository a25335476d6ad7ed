#!/usr/bin/env bash
# The main job: sets up, builds, and generates images with the shipped Fashion-MNIST consistency
# model: a grid with one row per class (one step) and the same with two steps.
# Usage: scripts/generate.sh [extra cm generate options, e.g. -m MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
mkdir -p out
./build/cm generate --per-class 8 --seed 0 -o out/grid_1step.png "$@"
./build/cm generate --per-class 8 --seed 0 --steps 2 -o out/grid_2step.png "$@"
