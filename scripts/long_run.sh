#!/usr/bin/env bash
# The long training run behind the next shipped model (issue 14), spread over sessions: starts the
# run in training-run/ or resumes it from training-run/checkpoint, trains for MINUTES and stops
# with a checkpoint. Two data-parallel processes of one thread each (on these 28×28 convolutions
# they do 1.3-1.5x the images/s of one process with two threads; docs/training.md). The options
# must not change between resumes: they are here, not on the command line.
#
# In the repository the training state is kept as parts under 20 MB (training-run/state/part.*,
# with the whole file's SHA-256): --pack splits checkpoint/training_state.safetensors into them
# (done after every run), --unpack joins them back (done before a resume on a fresh clone).
#
# Usage: scripts/long_run.sh MINUTES [cm]      (log: runs/long_run.rank0.log)
#        scripts/long_run.sh --pack | --unpack
set -euo pipefail
cd "$(dirname "$0")/.."
run=training-run
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

case "${1:?usage: scripts/long_run.sh MINUTES [cm] | --pack | --unpack}" in
  --pack) pack; exit 0 ;;
  --unpack) unpack; exit 0 ;;
esac
minutes=$1
cm=${2:-./build/cm}
[ ! -f "$state" ] && [ -f "$run/state/SHA256" ] && unpack

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
[ -f "$state" ] && pack
exit "$status"
