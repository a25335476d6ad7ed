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

// The EDM denoiser (Karras et al. 2022): D(x, σ) = c_skip·x + c_out·F(c_in·x, 250·ln σ) with
// c_skip = σd²/(σ²+σd²), c_out = σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²); σ of shape [B].
at::Tensor edm_denoise(UNet2DModelImpl& unet, const at::Tensor& x, const at::Tensor& sigma,
                       const std::optional<at::Tensor>& labels, double sigma_data);

// An EDM denoiser seen in TrigFlow time (sCM; NVlabs/FastGen's TrigFlowPrecond), where
// x̂ = cos t·x₀ + sin t·z, z ~ N(0, σd²): F(x̂, t) = (cos t·x̂ − D(x̂/cos t', σd·tan t'))/(σd·sin t)
// with t' = min(t, atan(σmax/σd)) — the network is evaluated no noisier than it was trained, and
// x₀ = cos t·x̂ − sin t·σd·F is D's estimate exactly. t is [B] (any float dtype; the time
// conversions are float64), the network runs in x̂'s dtype, and F comes back in it.
at::Tensor trigflow_velocity(UNet2DModelImpl& unet, const at::Tensor& x_hat, const at::Tensor& t,
                             const std::optional<at::Tensor>& labels, double sigma_data,
                             double sigma_max);

}  // namespace cm
