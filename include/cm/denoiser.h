// The consistency function with per-sample noise levels, differentiable: what the trainer
// optimises and what the scheduler's step applies at a single σ.
#pragma once

#include <optional>

#include "cm/config.h"
#include "cm/unet.h"

namespace cm {

struct BoundaryScalings {
  at::Tensor c_skip, c_out, c_in;  // each [B, 1, 1, 1]
};

// c_skip = σd²/((σ−σmin)² + σd²), c_out = (σ−σmin)·σd/√(σ² + σd²), c_in = 1/√(σ² + σd²):
// f(x, σmin) = x exactly, the boundary condition.
BoundaryScalings boundary_scalings(const at::Tensor& sigma, const SchedulerConfig& config);

// The UNet's time input for noise levels σ: 250·ln(σ + 1e-44), as the scheduler feeds it.
at::Tensor sigma_to_timestep(const at::Tensor& sigma);

// f(x, σ) = c_skip·x + c_out·F(c_in·x, 250·ln σ, labels) for σ of shape [B] (not clipped).
at::Tensor consistency_function(UNet2DModelImpl& unet, const at::Tensor& x, const at::Tensor& sigma,
                                const std::optional<at::Tensor>& labels,
                                const SchedulerConfig& config);

}  // namespace cm
