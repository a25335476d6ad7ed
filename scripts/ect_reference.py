#!/usr/bin/env python3
"""Prints ECT's second point r(t) and weights as locuslab/ect's own loss computes them, for
tests/test_training.cpp (TrainingSchedules.EctSecondPointAndWeightMatchTheReference).

  git -C ect show main:training/loss.py > main_loss.py      # CIFAR-10: weight 1/(t - r)
  git -C ect show imgnet:training/loss.py > imgnet_loss.py  # ImageNet-64: weight snrplusk_wt
  python3 scripts/ect_reference.py main_loss.py imgnet_loss.py

r(t) is taken from both (they must agree); the main branch computes its weight 1/(t - r) inline
in __call__, so it is checked here by running __call__ with a network that returns its input
(loss = ||x_t - x_r|| / (t - r) = |t - r| ||eps|| / (t - r) = ||eps||) and printed from the formula.
Needs torch. The reference's module is loaded as it is, with the few imports it makes of its own
repository (persistence, distributed printing, the EDM2 convolution) replaced by stand-ins: the
functions measured here use none of them.
"""
import importlib.util
import sys
import types

import torch

t_values = [0.002, 0.05, 0.5, 1.0, 1.9459, 3.0, 10.0, 80.0]
cases = [  # (stage, q, k, b)
    (0, 2.0, 8.0, 1.0), (1, 2.0, 8.0, 1.0), (2, 2.0, 8.0, 1.0), (5, 2.0, 8.0, 1.0),
    (0, 256.0, 8.0, 1.0), (1, 4.0, 4.0, 0.5),
]


def load_reference(path, package):
    stubs = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
        "torch_utils.distributed": types.ModuleType("torch_utils.distributed"),
        package: types.ModuleType(package),
        package + ".networks_edm2": types.ModuleType(package + ".networks_edm2"),
    }
    stubs["torch_utils.persistence"].persistent_class = lambda cls: cls
    stubs["torch_utils.distributed"].print0 = lambda *a, **k: None
    stubs["torch_utils"].persistence = stubs["torch_utils.persistence"]
    stubs["torch_utils"].distributed = stubs["torch_utils.distributed"]
    stubs[package].__path__ = []
    stubs[package + ".networks_edm2"].MPConv = type("MPConv", (), {})
    sys.modules.update(stubs)
    spec = importlib.util.spec_from_file_location(package + ".loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpp(values):
    return ", ".join(repr(float(v)) for v in values)


def main():
    main_ref = load_reference(sys.argv[1], "ectmain")
    imgnet_ref = load_reference(sys.argv[2], "ectimgnet")
    t = torch.tensor(t_values, dtype=torch.float64)
    print("// ECT_REFERENCE_CASES")
    for stage, q, k, b in cases:
        rs = []
        for ref in (main_ref, imgnet_ref):
            loss = ref.ECMLoss(q=q, k=k, b=b, adj="sigmoid")
            loss.update_schedule(stage)
            rs.append(loss.t_to_r(t))
        assert torch.equal(rs[0], rs[1]), "the branches' r(t) differ"
        print(f"{{{stage}, {q}, {k}, {b}, {{{cpp(rs[0])}}}}},")
    # main: the whole loss with an identity network is ||eps|| wherever r > 0.
    loss = main_ref.ECMLoss(q=256.0)
    torch.manual_seed(0)
    images = torch.randn(len(t_values), 1, 4, 4, dtype=torch.float64)
    torch.cuda.get_rng_state = lambda: None
    torch.cuda.set_rng_state = lambda state: None
    torch.manual_seed(1)
    normal = torch.randn(len(t_values), 1, 1, 1, dtype=torch.float64)
    eps = torch.randn_like(images)
    torch.manual_seed(1)
    got = loss(lambda x, sigma, labels, augment_labels=None: x, images)
    expected = eps.flatten(1).norm(dim=1)
    assert torch.allclose(got, expected, rtol=1e-5), (got, expected)
    print("// main branch: loss / (t - r) checked with an identity network:", cpp(got[:3]), "...")
    print("// ECT_REFERENCE_SNR_WEIGHTS (imgnet branch, sigma_data 0.5)")
    loss = imgnet_ref.ECMLoss(sigma_data=0.5)
    print(cpp(loss.wt_fn(t, t)))


if __name__ == "__main__":
    main()
