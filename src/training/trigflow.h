// sCM's TrigFlow view of an EDM denoiser (Lu & Song 2024; NVlabs/FastGen's TrigFlowPrecond), and
// the sCT tangent: what --method sct trains.
#pragma once

#include <optional>

#include "cm/unet.h"

namespace cm::training {

// F(x̂, t) = (cos t·x̂ − D(x̂/cos t, σd·tan t))/(σd·sin t): the TrigFlow velocity over σd of the
// EDM denoiser D (edm_denoise), x̂ = cos t·x₀ + sin t·z with z ~ N(0, σd²). t is [B] float64 in
// (0, π/2); the time conversions are float64, the network runs in x̂'s dtype. Returns x̂'s dtype.
at::Tensor trigflow_velocity(UNet2DModelImpl& unet, const at::Tensor& x_hat, const at::Tensor& t,
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
