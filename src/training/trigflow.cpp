#include "training/trigflow.h"

#include <ATen/ATen.h>
#include <cmath>

namespace cm::training {

at::Tensor scm_tangent(const at::Tensor& f_minus, const at::Tensor& jvp, const at::Tensor& x_hat,
                       const at::Tensor& dxt_dt, const at::Tensor& t, double r, double sigma_data,
                       double norm_c) {
  const auto c = t.reshape({-1, 1, 1, 1}), cos_t = c.cos(), sin_t = c.sin();
  const auto g1 = -cos_t * cos_t * (sigma_data * f_minus - dxt_dt);
  const auto g2 = -(cos_t * sin_t * x_hat + sigma_data * jvp);
  const auto g = g1 + r * g2;
  const double dims = static_cast<double>(g[0].numel());
  const auto norm = g.flatten(1).norm(2, 1).reshape({-1, 1, 1, 1}) / std::sqrt(dims);
  return g / (norm + norm_c);
}

at::Tensor scm_loss(const at::Tensor& f, const at::Tensor& tangent, const at::Tensor& logvar,
                    const at::Tensor& sigma) {
  const auto f64 = f.to(at::kDouble);
  const auto target = f64.detach() + tangent;
  const auto unweighted = (f64 - target).pow(2).flatten(1).mean(1);
  const auto lv = logvar.to(at::kDouble).reshape({-1});
  return (1.0 / sigma.to(at::kDouble)) / lv.exp() * unweighted + lv;
}

}  // namespace cm::training
