#!/usr/bin/env python3
"""Times diffusers' ConsistencyModelPipeline on a pipeline folder: the baseline cm is measured
against in issue 12 (scripts/gpu_check.sh runs it on the folders `cm bench --save` writes, so both
time the same weights).

Rows use cm bench's key names where they mean the same (model, dtype, batch, steps, timesteps,
ms_per_image, images_per_s, peak_gpu_mem_mb), plus impl: diffusers-eager | diffusers-compile.
A configuration that fails becomes a row with 'error' instead of a time; the others still run.
"""
import argparse
import json
import os
import statistics
import sys
import time


def int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got '{text}'")
    return values


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a diffusers pipeline folder (model_index.json, unet/, scheduler/)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--batch", type=int_list, default=[1], help="comma-separated batch sizes, timed in this order")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--timesteps", type=int_list, help="explicit timesteps, e.g. 17,0")
    how.add_argument("--steps", type=int, help="number of steps, the scheduler's own spacing")
    ap.add_argument("--compile", default="both", choices=["off", "reduce-overhead", "both"],
                    help="off: eager only; reduce-overhead: torch.compile only; both: eager, then compiled")
    ap.add_argument("-r", "--repetitions", type=int, default=5, help="timed calls per row (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per eager row")
    ap.add_argument("--compile-warmup", type=int, default=4,
                    help="untimed calls per compiled row (compile, CUDA graph warm-up and recording)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON file, rewritten after each row (so a killed run keeps its rows); "
                                  "default: stdout at the end")
    a = ap.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        ap.error(f"--steps must be at least 1, got {a.steps}")
    if a.repetitions < 1 or a.warmup < 1 or a.compile_warmup < 1:
        ap.error("--repetitions, --warmup and --compile-warmup must be at least 1")
    return a


def die(msg):
    print(f"bench_diffusers: {msg}", file=sys.stderr)
    sys.exit(1)


def import_stack():
    """torch with CUDA and diffusers' pipeline, or a one-line reason why not."""
    try:
        import torch
    except ImportError as e:
        die(f"PyTorch is not importable ({e})")
    if not torch.cuda.is_available():
        die(f"CUDA is not available to torch {torch.__version__} (built for CUDA {torch.version.cuda})")
    try:
        import diffusers
        from diffusers import ConsistencyModelPipeline
    except ImportError as e:
        die(f"diffusers with ConsistencyModelPipeline is not importable ({e}); "
            "scripts/gpu_check.sh --prepare carries a wheel")
    return torch, diffusers, ConsistencyModelPipeline


def explicit_timesteps(scheduler, steps, device):
    """The indices `set_timesteps(num_inference_steps=steps)` uses, passed explicitly instead:
    explicit timesteps land on the GPU (given `device`), the other path leaves them on the CPU,
    which would make torch.compile's CUDA graphs skip the UNet. Checked against the scheduler."""
    n = scheduler.config.num_train_timesteps
    ratio = n // steps
    idx = [i * ratio for i in reversed(range(steps))]
    scheduler.set_timesteps(num_inference_steps=steps)
    own = scheduler.timesteps.cpu().tolist()
    scheduler.set_timesteps(timesteps=idx, device=device)
    if scheduler.timesteps.cpu().tolist() != own:
        die(f"--steps {steps}: explicit timesteps {idx} do not reproduce the scheduler's own {own}")
    return idx


def time_row(torch, pipe, batch, timesteps, labels, warmup, reps, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def call():
        # output_type "pt" keeps the images on the GPU: no host copy counted against diffusers.
        # num_inference_steps=None: with timesteps given, the default 1 only logs a warning per call.
        pipe(batch_size=batch, class_labels=labels, num_inference_steps=None, timesteps=timesteps, generator=gen,
             output_type="pt", return_dict=False)
        torch.cuda.synchronize()

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    call()
    first_s = time.perf_counter() - t0
    for _ in range(warmup - 1):
        call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000 / batch
    return {"first_call_s": first_s, "ms_per_image": ms, "images_per_s": 1000.0 / ms,
            "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20}


def main(argv=None):
    a = parse_args(argv)
    if not os.path.isfile(os.path.join(a.model, "model_index.json")):
        die(f"{a.model}: not a pipeline folder (no model_index.json)")
    torch, diffusers, Pipeline = import_stack()
    dtype = getattr(torch, a.dtype)
    torch.backends.cudnn.benchmark = True  # the fastest eager convolutions: a fair baseline

    t0 = time.perf_counter()
    pipe = Pipeline.from_pretrained(a.model, torch_dtype=dtype).to("cuda")
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    timesteps = a.timesteps or explicit_timesteps(pipe.scheduler, a.steps, "cuda")
    conditional = pipe.unet.config.num_class_embeds is not None
    base = {"model": os.path.basename(os.path.normpath(a.model)), "model_dir": os.path.abspath(a.model),
            "device": "cuda", "gpu": torch.cuda.get_device_name(), "dtype": a.dtype,
            "steps": len(timesteps), "timesteps": timesteps, "output_type": "pt",
            "repetitions": a.repetitions, "load_s": load_s, "torch": torch.__version__,
            "diffusers": diffusers.__version__}

    impls = {"off": ["diffusers-eager"], "reduce-overhead": ["diffusers-compile"],
             "both": ["diffusers-eager", "diffusers-compile"]}[a.compile]
    rows = []
    eager_unet = pipe.unet
    for impl in impls:
        compiled = impl == "diffusers-compile"
        if compiled:
            # dynamic=False: one static graph per batch size, as a user serving fixed batches would.
            pipe.unet = torch.compile(eager_unet, mode="reduce-overhead", fullgraph=True, dynamic=False)
        for batch in a.batch:
            row = dict(base, impl=impl, batch=batch,
                       warmup=a.compile_warmup if compiled else a.warmup,
                       compile="reduce-overhead, fullgraph, dynamic=False" if compiled else None)
            # Class-conditional models get fixed labels, so no host-side random draw is timed.
            labels = torch.zeros(batch, dtype=torch.long, device="cuda") if conditional else None
            skips_before = _cudagraph_skips(torch)
            print(f"bench_diffusers: {row['model']} {impl} batch {batch} ...", file=sys.stderr, flush=True)
            try:
                row.update(time_row(torch, pipe, batch, timesteps, labels, row["warmup"], a.repetitions, a.seed))
                if compiled:
                    # Non-zero means inductor ran this UNet without CUDA graphs: the row is then
                    # not what "reduce-overhead" promises, and the report reader should know.
                    row["cudagraph_skips"] = _cudagraph_skips(torch) - skips_before
            except Exception as e:  # one failing configuration must not lose the others' rows
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                torch.cuda.empty_cache()
            print(f"bench_diffusers:   {row.get('ms_per_image', row.get('error'))}", file=sys.stderr, flush=True)
            rows.append(row)
            if a.out:
                tmp = a.out + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(rows, f, indent=1)
                os.replace(tmp, a.out)
        pipe.unet = eager_unet
        torch.cuda.empty_cache()
    if not a.out:
        json.dump(rows, sys.stdout, indent=1)
        print()
    return 1 if all("error" in r for r in rows) else 0


def _cudagraph_skips(torch):
    try:
        from torch._dynamo.utils import counters
        return counters["inductor"]["cudagraph_skips"]
    except (ImportError, KeyError, TypeError):  # a torch without the counter: unknown, report 0
        return 0


if __name__ == "__main__":
    sys.exit(main())
