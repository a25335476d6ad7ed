// The probability-flow ODE step that consistency distillation takes with the EDM denoiser
// (cm::edm_denoise).
#pragma once

#include <functional>
#include <optional>

#include "cm/denoiser.h"
#include "cm/unet.h"

namespace cm::training {

using Denoiser = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& sigma)>;

// One Heun (2nd-order) step of dx/dσ = (x − D(x, σ))/σ from σ_from to σ_to, per sample.
at::Tensor heun_step(const Denoiser& denoise, const at::Tensor& x, const at::Tensor& sigma_from,
                     const at::Tensor& sigma_to);

}  // namespace cm::training
