#!/usr/bin/env bash
# The long training runs behind the shipped models, spread over sessions: starts the recipe's run
# in training-run/RECIPE or resumes it from its checkpoint, trains for MINUTES and stops with a
# checkpoint. Two data-parallel processes of one thread each (on these 28×28 convolutions they do
# 1.3-1.5x the images/s of one process with two threads; docs/training.md). The options must not
# change between resumes: they are here, not on the command line.
#
# Recipes:
#   ict  the iCT run behind models/fmnist-cm of 2026-12-07 (1.6M images; it ran in training-run/)
#   edm  a diffusion model (EDM) of the same architecture: the start of ect
#   ect  Easy Consistency Tuning of edm's teacher/ (run edm to its end first): the reference's
#        cheap recipe (q = 256 in one stage, RAdam 1e-4, no warm-up or clipping), float32 — its
#        two points are ~1% apart, closer than bfloat16's rounding
#
# In the repository a run's training state can be kept as parts under 20 MB
# (training-run/RECIPE/state/part.*, with the whole file's SHA-256): --pack splits
# checkpoint/training_state.safetensors into them (done after every run), --unpack joins them back
# (done before a resume on a fresh clone).
#
# Usage: scripts/long_run.sh RECIPE MINUTES [cm]     (log: runs/long_run_RECIPE.rank0.log)
#        scripts/long_run.sh RECIPE --pack | --unpack
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/long_run.sh ict|edm|ect MINUTES [cm] | RECIPE --pack | RECIPE --unpack"
recipe=${1:?$usage}
run=training-run/$recipe
common=(-n 32 --checkpoint-every 500 --sample-every 0 --log-every 50 -t 1 -o "$run")
case "$recipe" in
  ict) opts=(--method ict --steps 40000 --lr 2e-4 --warmup 500 --ema-rate 0.9995 --ema-warmup
             --ict-s1 320 --bf16 --eval-every 2000 --eval-per-class 100) ;;
  edm) opts=(--method edm --steps 4000 --lr 4e-4 --warmup 200 --ema-rate 0.9995 --ema-warmup
             --bf16) ;;
  ect) opts=(--method ect --init training-run/edm/teacher --steps 6000 --optimizer radam --lr 1e-4
             --warmup 0 --grad-clip 0 --ect-q 256 --ect-stage-steps 6000 --ema-rate 0.999
             --ema-warmup --eval-every 500 --eval-per-class 100) ;;
  *) echo "$usage" >&2; exit 1 ;;
esac
state=$run/checkpoint/training_state.safetensors

pack() {
  rm -rf "$run/state.tmp" && mkdir "$run/state.tmp"
  split -b 16m -d -a 2 "$state" "$run/state.tmp/part."
  sha256sum "$state" | cut -d' ' -f1 >"$run/state.tmp/SHA256"
  rm -rf "$run/state" && mv "$run/state.tmp" "$run/state"
}

unpack() {
  cat "$run"/state/part.* >"$state.tmp"
  if ! echo "$(cat "$run/state/SHA256")  $state.tmp" | sha256sum -c --status; then
    rm -f "$state.tmp"
    echo "error: $run/state/part.* do not join into the file whose SHA-256 is $run/state/SHA256" >&2
    exit 1
  fi
  mv "$state.tmp" "$state"
}

case "${2:?$usage}" in
  --pack) pack; exit 0 ;;
  --unpack) unpack; exit 0 ;;
esac
minutes=$2
cm=${3:-./build/cm}
[ ! -f "$state" ] && [ -f "$run/state/SHA256" ] && unpack

opts+=("${common[@]}" --max-minutes "$minutes")
[ -d "$run/checkpoint" ] || [ -d "$run/checkpoint.old" ] && opts+=(--resume)
export OMP_WAIT_POLICY=PASSIVE
mkdir -p runs
log=runs/long_run_$recipe
port=$((29500 + RANDOM % 1000))
pids=()
for r in 1 0; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$cm" train "${opts[@]}" >>"$log.rank$r.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
tail -n 3 "$log.rank0.log"
[ -f "$state" ] && pack
exit "$status"
