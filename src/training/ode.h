// The EDM denoiser (Karras et al. 2022) and the probability-flow ODE step that consistency
// distillation takes with it.
#pragma once

#include <functional>
#include <optional>

#include "cm/unet.h"

namespace cm::training {

// D(x, σ) = c_skip·x + c_out·F(c_in·x, 250·ln σ) with c_skip = σd²/(σ²+σd²),
// c_out = σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²); σ of shape [B].
at::Tensor edm_denoise(UNet2DModelImpl& unet, const at::Tensor& x, const at::Tensor& sigma,
                       const std::optional<at::Tensor>& labels, double sigma_data);

using Denoiser = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& sigma)>;

// One Heun (2nd-order) step of dx/dσ = (x − D(x, σ))/σ from σ_from to σ_to, per sample.
at::Tensor heun_step(const Denoiser& denoise, const at::Tensor& x, const at::Tensor& sigma_from,
                     const at::Tensor& sigma_to);

}  // namespace cm::training
