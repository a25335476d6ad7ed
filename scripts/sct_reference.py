#!/usr/bin/env python3
"""Prints sCM's tangent and loss on fixed tensors as NVlabs/FastGen's own code computes them, for
tests/test_training.cpp (TrainingSchedules.SctTangentAndLossMatchTheReference).

  git -C FastGen show HEAD:fastgen/methods/consistency_model/sCM.py > sCM.py
  python3 scripts/sct_reference.py sCM.py

FastGen's SCMModel._scm_pred_to_loss is called as it is, on a stand-in `self` holding what it
reads (the loss config with FastGen's defaults, TrigFlow's alpha = cos and sigma = sin, sigma_data);
the module's imports of its own package are replaced by stand-ins it does not use here, but for
expand_like (trailing singleton dimensions, as documented in fastgen/utils). The tangent g is not
returned by that function: it is read off the loss's gradient, dL/dF = -2·w·g/(e^logvar·D²) per
sample, since the function's F - F⁻ is zero in value. Needs torch and numpy.
"""
import importlib.util
import sys
import types

import torch


def expand_like(x, target):
    return x.reshape(list(x.shape) + [1] * (target.ndim - x.ndim))


def load(path):
    stubs = {
        "fastgen": types.ModuleType("fastgen"),
        "fastgen.methods": types.SimpleNamespace(CMModel=object),
        "fastgen.networks": types.ModuleType("fastgen.networks"),
        "fastgen.networks.network": types.SimpleNamespace(FastGenNetwork=torch.nn.Module),
        "fastgen.utils": types.SimpleNamespace(expand_like=expand_like),
        "fastgen.utils.basic_utils": types.SimpleNamespace(convert_cfg_to_dict=dict, PRECISION_MAP={}),
        "fastgen.utils.logging_utils": types.ModuleType("fastgen.utils.logging_utils"),
    }
    stubs["fastgen.utils"].logging_utils = stubs["fastgen.utils.logging_utils"]
    stubs["fastgen.utils"].basic_utils = stubs["fastgen.utils.basic_utils"]
    sys.modules.update(stubs)
    spec = importlib.util.spec_from_file_location("fastgen_scm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(path):
    scm = load(path)
    shape = (2, 2, 1, 3)  # B = 2, D = 6
    n = 12
    k = torch.arange(n, dtype=torch.float64).reshape(shape)
    f = torch.sin(0.7 * k + 0.3)
    jvp = torch.cos(0.5 * k) - 0.2
    x_hat = 0.4 * torch.sin(1.3 * k - 0.5)
    dxt_dt = torch.cos(0.9 * k + 0.1) * 0.6
    t_hat = torch.tensor([0.3, 1.2], dtype=torch.float64)
    sigma_t = 0.5 * torch.tan(t_hat)  # the EDM noise level of each sample
    logvar = torch.tensor([[0.2], [-0.4]], dtype=torch.float64)
    config = types.SimpleNamespace(tangent_warmup_steps=10, tangent_warmup_const=0.1,
                                   prior_weighting_enabled=True, g_norm_spatial_invariance=True,
                                   divide_x_0_spatial_dim=True)
    trig = types.SimpleNamespace(alpha=torch.cos, sigma=torch.sin)
    stand_in = types.SimpleNamespace(loss_config=config, sigma_data=0.5,
                                     net_trigflow=types.SimpleNamespace(noise_scheduler=trig))
    f = f.clone().requires_grad_(True)
    loss, unweighted, r = scm.SCMModel._scm_pred_to_loss(
        stand_in, F_theta=f, F_theta_jvp=jvp, x_t_hat=x_hat, dxt_dt=dxt_dt, logvar=logvar,
        sigma_t=sigma_t, t_hat=t_hat, iteration=3)
    loss.sum().backward()
    d = 6
    w = (1 / sigma_t).reshape(-1, 1, 1, 1)
    g = -f.grad * torch.exp(logvar).reshape(-1, 1, 1, 1) * d * d / (2 * w)
    print("// r = %r" % r)
    print("const std::vector<double> kTangent = {%s};" % ", ".join("%.17g" % v for v in g.flatten().tolist()))
    print("const std::vector<double> kLoss = {%s};" % ", ".join("%.17g" % v for v in loss.tolist()))


if __name__ == "__main__":
    main(sys.argv[1])
