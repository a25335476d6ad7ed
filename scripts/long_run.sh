#!/usr/bin/env bash
# The long training run behind the next shipped model (issue 14), spread over sessions: starts the
# run in training-run/ or resumes it from training-run/checkpoint, trains for MINUTES and stops
# with a checkpoint. Two data-parallel processes of one thread each (on these 28×28 convolutions
# they do 1.3-1.5x the images/s of one process with two threads; docs/training.md). The options
# must not change between resumes: they are here, not on the command line.
# Usage: scripts/long_run.sh MINUTES [cm]      (log: runs/long_run.rank0.log)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: scripts/long_run.sh MINUTES [cm]}
cm=${2:-./build/cm}
run=training-run
opts=(--method ict --steps 40000 -n 32 --lr 2e-4 --warmup 500 --ema-rate 0.9995 --ema-warmup
      --ict-s1 320 --bf16 --checkpoint-every 500 --sample-every 0 --log-every 50
      --eval-every 2000 --eval-per-class 100 --max-minutes "$minutes" -t 1 -o "$run")
[ -d "$run/checkpoint" ] || [ -d "$run/checkpoint.old" ] && opts+=(--resume)
export OMP_WAIT_POLICY=PASSIVE
mkdir -p runs
port=$((29500 + RANDOM % 1000))
pids=()
for r in 1 0; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$cm" train "${opts[@]}" >>"runs/long_run.rank$r.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
tail -n 3 runs/long_run.rank0.log
exit "$status"
