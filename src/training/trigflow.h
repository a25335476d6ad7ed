// sCT's tangent and loss (Lu & Song 2024; NVlabs/FastGen's sCM), on cm::trigflow_velocity.
#pragma once

#include <optional>

#include "cm/denoiser.h"

namespace cm::training {

// dF/dλ of F = trigflow_velocity(unet, x̂ + λ·v_x, t + λ·v_t) at λ = 0 (σmax unclamped), by
// forward-mode automatic differentiation: dual tensors at a fresh forward-AD level, through
// LibTorch's plain differentiable ops (grad mode on; models::ForwardAdScope for group norm).
// Returns the tangent, detached, in x̂'s dtype; dropout draws as a plain forward pass would.
at::Tensor trigflow_jvp(UNet2DModelImpl& unet, const at::Tensor& x_hat, const at::Tensor& t,
                        const at::Tensor& v_x, const at::Tensor& v_t,
                        const std::optional<at::Tensor>& labels, double sigma_data);

// sCM's normalized tangent (FastGen's _scm_pred_to_loss): with c = cos t, s = sin t,
// g = −c²·(σd·F⁻ − dx̂/dt) − r·(c·s·x̂ + σd·∂F⁻/∂t), then g / (‖g‖/√D + norm_c), per sample
// (D = C·H·W). `jvp` is the total derivative of F⁻ along (c·s·dx̂/dt, c·s), r the tangent
// warm-up factor in [0, 1]. All float64.
at::Tensor scm_tangent(const at::Tensor& f_minus, const at::Tensor& jvp, const at::Tensor& x_hat,
                       const at::Tensor& dxt_dt, const at::Tensor& t, double r, double sigma_data,
                       double norm_c);

// Per sample: w/e^logvar·‖F − F⁻ − g‖²/D + logvar, w = 1/σ (sCM's prior weighting, σ the EDM
// noise level), D = C·H·W, as the paper writes it. FastGen divides by D once more: a constant
// the learned logvar absorbs in the end, but until it has, gradients D times smaller, near
// Adam's ε (its EDM2 recipe lowers ε to 1e-11 for that). [B] float64.
at::Tensor scm_loss(const at::Tensor& f, const at::Tensor& tangent, const at::Tensor& logvar,
                    const at::Tensor& sigma);

}  // namespace cm::training
