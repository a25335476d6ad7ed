// The discretization, noise-level and loss schedules of consistency training and distillation
// (Song et al. 2023; Song & Dhariwal 2023, "Improved techniques", iCT).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cm/config.h"

namespace cm::training {

// N Karras noise levels, ascending: σ_i = (σmin^(1/ρ) + i/(N−1)·(σmax^(1/ρ) − σmin^(1/ρ)))^ρ.
std::vector<double> karras_grid(int64_t n, const SchedulerConfig& config);

// iCT: N(k) = min(s0·2^⌊k/K′⌋, s1) + 1 with K′ = ⌊K / (log2⌊s1/s0⌋ + 1)⌋.
int64_t ict_num_scales(int64_t k, int64_t total_steps, int64_t s0 = 10, int64_t s1 = 1280);
// CT: N(k) = ⌈√(k/K·((s1+1)² − s0²) + s0²) − 1⌉ + 1.
int64_t ct_num_scales(int64_t k, int64_t total_steps, int64_t s0 = 2, int64_t s1 = 150);
// CT target EMA: μ(k) = exp(s0·ln μ0 / (N(k) − 1)).
double ct_target_ema(int64_t num_scales, int64_t s0 = 2, double mu0 = 0.9);

// iCT's discretized log-normal: P(i) ∝ erf((ln σ_{i+1} − Pm)/(√2·Ps)) − erf((ln σ_i − Pm)/(√2·Ps))
// for i in [0, N−2]; sums to 1.
std::vector<double> lognormal_index_probs(const std::vector<double>& grid, double p_mean = -1.1,
                                          double p_std = 2.0);

// Pseudo-Huber distance per sample: √(‖a − b‖² + c²) − c over all but the batch dimension.
at::Tensor pseudo_huber(const at::Tensor& a, const at::Tensor& b, double c);
// iCT's c = 0.00054·√d for d values per sample.
double pseudo_huber_c(int64_t dim);

// ECT (Geng et al. 2024, "Consistency Models Made Easy"): the second point of stage s (from 0),
// r = max(0, t·(1 − q^−(s+1)·(1 + k·sigmoid(−b·t)))), element-wise. r moves from 0 towards t as
// the stages pass: the first stage is nearly denoising, the later ones nearly continuous time.
at::Tensor ect_r(const at::Tensor& t, int64_t stage, double q = 2.0, double k = 8.0,
                 double b = 1.0);
// ECT's weight of a pair: "dt" 1/(t − r) (locuslab/ect's main branch, CIFAR-10) or "snr"
// 1/t² + 1/σd² (its imgnet branch, ImageNet-64 with EDM2), element-wise.
at::Tensor ect_weight(const std::string& kind, const at::Tensor& t, const at::Tensor& r,
                      double sigma_data);
// EMA rate of step k (from 0): `rate`, or with warm-up min(rate, (1 + k)/(10 + k)).
double ema_rate_at(int64_t k, double rate, bool warmup);

// Learning-rate factor for linear warm-up over `warmup` steps.
double warmup_factor(int64_t step, int64_t warmup);

}  // namespace cm::training
