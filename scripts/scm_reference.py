#!/usr/bin/env python3
"""Prints the golden values of tests/test_scm_scheduler.cpp from diffusers' own SCMScheduler.

  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch diffusers
  /tmp/ref/bin/python scripts/scm_reference.py > scm_golden.inc   # paste into the test

Each case sets the schedule as diffusers' set_timesteps would be called for it, then runs the
sampling loop on a [2, 1, 2, 2] sample: the initial sample is torch.randn(generator) * sigma_data,
the "model" is a fixed function of the sample and the time (so each step's arithmetic counts), and
every step() draws its noise from the same generator, as a pipeline passes it. Printed: the
schedule's timesteps, and after every step the sample and pred_original_sample, to 9 digits.
The versions this ran with are printed first; the test names them.
"""
import diffusers
import torch
from diffusers import SCMScheduler

SHAPE = (2, 1, 2, 2)


def model(sample, t):
    # Any smooth function of both inputs; float32 throughout, as a network's output would be.
    return 0.7 * sample - 0.25 * torch.cos(3 * sample) + 0.1 * t


def run(name, seed, sigma_data, **kwargs):
    s = SCMScheduler(sigma_data=sigma_data)
    s.set_timesteps(**kwargs)
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=g) * sigma_data
    rows = []
    for t in s.timesteps[:-1]:
        out = s.step(model(sample, t), t, sample, generator=g)
        sample = out.prev_sample
        rows.append((sample.flatten().tolist(), out.pred_original_sample.flatten().tolist()))
    print("    {\"%s\", %d, %r, %s, {%s}," % (
        name, seed, sigma_data, cpp_args(kwargs), ", ".join("%.9g" % v for v in s.timesteps.tolist())))
    print("     {")
    for prev, x0 in rows:
        print("      {{%s}," % ", ".join("%.9g" % v for v in prev))
        print("       {%s}}," % ", ".join("%.9g" % v for v in x0))
    print("     }},")


def cpp_args(kwargs):
    n = kwargs["num_inference_steps"]
    explicit = kwargs.get("timesteps")
    listed = "{%s}" % ", ".join("%.9g" % v for v in explicit) if explicit else "{}"
    return "%d, %s" % (n, listed)


print("// diffusers %s, torch %s" % (diffusers.__version__, torch.__version__))
run("one step", 1, 0.5, num_inference_steps=1, intermediate_timesteps=None)
run("two steps, intermediate 1.3", 2, 0.5, num_inference_steps=2)
run("four steps, linspace", 3, 0.5, num_inference_steps=4, intermediate_timesteps=None)
run("seven steps, linspace", 4, 1.0, num_inference_steps=7, intermediate_timesteps=None)
run("explicit times", 5, 0.5, num_inference_steps=3, timesteps=[1.5, 0.9, 0.4, 0.0],
    max_timesteps=None, intermediate_timesteps=None)
