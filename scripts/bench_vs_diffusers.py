#!/usr/bin/env python3
"""Whole-process time of `cm generate` against diffusers' ConsistencyModelPipeline on the CPU:
process start, imports, loading the same pipeline folder, and one call for a batch of images.

Each repetition runs diffusers and then cm as fresh processes, one after the other (never at the
same time), and the table gives the median of each. diffusers runs in float32 with
torch.set_num_threads(--threads); cm with the same --threads and --dtype float32. The folder is
any diffusers pipeline folder, e.g. the ImageNet-64 architecture with random weights that
`cm bench --save /tmp/in64 -m imagenet64` writes.

    .venv/bin/python scripts/bench_vs_diffusers.py --model /tmp/in64 --batch 4 --steps 1

Needs torch, diffusers and accelerate in the interpreter that runs it (scripts/setup.sh --cuda
puts torch into .venv/; `.venv/bin/pip install -r scripts/requirements-diffusers.txt` the rest).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Run in a child process: the phases of one diffusers run, as JSON on the last line of stdout.
DIFFUSERS_RUN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from diffusers import ConsistencyModelPipeline
t1 = time.perf_counter()
model, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
pipe = ConsistencyModelPipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
t2 = time.perf_counter()
images = pipe(batch_size=batch, num_inference_steps=steps, generator=torch.manual_seed(0),
              output_type="np").images
t3 = time.perf_counter()
assert images.shape[0] == batch
import diffusers
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "call_s": t3 - t2,
                  "torch": torch.__version__, "diffusers": diffusers.__version__}))
"""


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a diffusers pipeline folder")
    ap.add_argument("--cm", default=os.path.join(os.path.dirname(__file__), "..", "build", "cm"),
                    help="the cm binary (default: build/cm)")
    ap.add_argument("--batch", type=int, default=4, help="images in the one call")
    ap.add_argument("--steps", type=int, default=1, help="sampling steps")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both")
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="runs of each (median)")
    ap.add_argument("--winograd", action="store_true",
                    help="also time `cm generate --winograd` (a third process per repetition)")
    args = ap.parse_args(argv)
    for name in ("batch", "steps", "threads", "repetitions"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: must be at least 1")
    if not os.path.isfile(os.path.join(args.model, "model_index.json")):
        ap.error(f"--model: {args.model} has no model_index.json")
    if not os.access(args.cm, os.X_OK):
        ap.error(f"--cm: {args.cm} is not an executable")
    return args


def run_diffusers(args):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DIFFUSERS_RUN, args.model, str(args.batch),
                           str(args.steps), str(args.threads)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit("diffusers failed:\n" + done.stderr[-3000:])
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    phases["process_s"] = wall
    return phases


def run_cm(args, out, extra=()):
    start = time.perf_counter()
    done = subprocess.run([args.cm, "generate", "-m", args.model, "-n", str(args.batch),
                           "--steps", str(args.steps), "-t", str(args.threads), "--dtype",
                           "float32", "-s", "0", "-o", out, *extra],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit("cm failed:\n" + done.stderr[-3000:])
    return {"process_s": wall}


def main(argv):
    args = parse_args(argv)
    rows = {"diffusers": [], "cm": []}
    if args.winograd:
        rows["cm --winograd"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repetitions):
            rows["diffusers"].append(run_diffusers(args))
            rows["cm"].append(run_cm(args, os.path.join(tmp, "out.npy")))
            if args.winograd:
                rows["cm --winograd"].append(
                    run_cm(args, os.path.join(tmp, "out.npy"), ["--winograd"]))
            print(f"run {r + 1}: " + ", ".join(f"{k} {v[-1]['process_s']:.2f} s"
                                               for k, v in rows.items()), file=sys.stderr)
    med = {k: statistics.median(x["process_s"] for x in v) for k, v in rows.items()}
    d = rows["diffusers"]
    print(f"model {args.model}, batch {args.batch}, {args.steps} step(s), float32, "
          f"{args.threads} threads, {args.repetitions} runs each; diffusers {d[0]['diffusers']} "
          f"on torch {d[0]['torch']}")
    print()
    print("| | whole process, each run (s) | median (s) |")
    print("|---|---|---|")
    for k, v in rows.items():
        each = " / ".join("%.2f" % x["process_s"] for x in v)
        print(f"| {k} | {each} | {med[k]:.2f} |")
    print()
    print("diffusers' phases, median: import {:.2f} s, load {:.2f} s, the call {:.2f} s".format(
        *(statistics.median(x[p] for x in d) for p in ("import_s", "load_s", "call_s"))))
    for k in rows:
        if k != "diffusers":
            print(f"{k} is {med['diffusers'] / med[k]:.2f}x faster end to end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
