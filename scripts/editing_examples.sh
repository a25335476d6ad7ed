#!/usr/bin/env bash
# Remakes the grids of docs/editing.md: one `cm edit` per task on the inputs in
# docs/images/editing/. Usage: scripts/editing_examples.sh [MODEL_DIR] [CM_BINARY]
# The model defaults to the shipped one when it exists, else the golden test model.
set -euo pipefail
cd "$(dirname "$0")/.."
default=models/fmnist-cm
[ -d "$default" ] || default=../shared/golden/tiny_cond/model
model="${1:-$default}"
cm="${2:-./build/cm}"
d=docs/images/editing
common=(-m "$model" --class 3 -s 0 --grid -q)
"$cm" edit "${common[@]}" --task inpaint --image $d/scene.png --mask $d/mask.png -o $d/inpaint_grid.png
# Colour needs a 3-channel model; a grayscale one says so and the rest goes on.
"$cm" edit "${common[@]}" --task colorize --image $d/scene.png -o $d/colorize_grid.png || true
"$cm" edit "${common[@]}" --task superres --image $d/scene.png --factor 4 -o $d/superres_grid.png
"$cm" edit "${common[@]}" --task stroke --image $d/stroke.png -o $d/stroke_grid.png
"$cm" edit "${common[@]}" --task interpolate --seed2 1 --frames 8 -o $d/interpolate_grid.png
"$cm" edit "${common[@]}" --task denoise --image $d/scene.png --sigma 0.5 --add-noise \
  -o $d/denoise_grid.png
