#!/usr/bin/env bash
# Training throughput per method and dtype on this machine: images/s over steps 11-20 of a run with
# the shipped model's architecture (the cm train defaults), batch 32, all cores; then data-parallel
# over two processes of one thread each. Prints a markdown table. Usage: scripts/train_throughput.sh [cm]
set -u  # cm train exits 130 when --stop-after ends a run early: not an error here
cm=${1:-./build/cm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE
common=(--steps 1000 --log-every 10 --sample-every 0 --checkpoint-every 0)
rate() { grep 'step 20/' | grep -o '[0-9.]* img/s' | cut -d' ' -f1; }

"$cm" train --method edm "${common[@]}" -n 32 --stop-after 1 -o "$tmp/teacher" -q >/dev/null
echo "| method | float32 images/s | bfloat16 images/s |"
echo "| --- | --- | --- |"
for m in edm ict ct cd; do
  extra=()
  [ "$m" = cd ] && extra=(--teacher "$tmp/teacher/teacher")
  f32=$("$cm" train --method "$m" "${common[@]}" -n 32 --stop-after 20 "${extra[@]}" -o "$tmp/$m" 2>&1 | rate)
  bf16=$("$cm" train --method "$m" --bf16 "${common[@]}" -n 32 --stop-after 20 "${extra[@]}" -o "$tmp/$m-bf16" 2>&1 | rate)
  echo "| $m | $f32 | $bf16 |"
done

port=$((29500 + RANDOM % 1000))
one=$("$cm" train "${common[@]}" -n 32 --stop-after 20 -t 2 -o "$tmp/one" 2>&1 | rate)
for r in 1 0; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$cm" train "${common[@]}" -n 16 --stop-after 20 -t 1 -o "$tmp/dp" >"$tmp/dp$r.log" 2>&1 &
done
wait
two=$(rate <"$tmp/dp0.log")
echo
echo "ict, global batch 32: one process with 2 threads $one images/s; two processes (c10d/Gloo on 127.0.0.1) with 1 thread and batch 16 each $two images/s"
