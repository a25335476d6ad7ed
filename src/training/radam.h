// RAdam (Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and Beyond"), which
// LibTorch 1.13's C++ API lacks. It keeps Adam's options and per-parameter state
// (AdamOptions, AdamParamState), so learning-rate changes and checkpoints treat both alike.
#pragma once

#include <torch/optim/adam.h>

namespace cm::training {

class RAdam : public torch::optim::Optimizer {
 public:
  RAdam(std::vector<at::Tensor> params, torch::optim::AdamOptions defaults);
  // Per parameter, with t = state.step after the increment and ρ∞ = 2/(1−β2) − 1:
  // m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², m̂ = m/(1−β1^t),
  // ρt = ρ∞ − 2t·β2^t/(1−β2^t); if ρt > 5 the step is m̂·r·√(1−β2^t)/(√v + ε) with
  // r = √((ρt−4)(ρt−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρt)), else plain momentum m̂; p ← p − lr·step.
  // weight_decay adds λ·p to g (L2, as torch.optim.RAdam does by default).
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace cm::training
