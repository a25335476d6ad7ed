#include "training/trigflow.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <cmath>
#include <limits>

#include "models/layers.h"

namespace cm::training {

namespace {

// One forward-AD level, released however the computation ends.
class DualLevel {
 public:
  DualLevel() : index_(torch::autograd::ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(index_); }
  DualLevel(const DualLevel&) = delete;
  DualLevel& operator=(const DualLevel&) = delete;
  uint64_t index() const { return index_; }

 private:
  uint64_t index_;
};

}  // namespace

at::Tensor trigflow_jvp(UNet2DModelImpl& unet, const at::Tensor& x_hat, const at::Tensor& t,
                        const at::Tensor& v_x, const at::Tensor& v_t,
                        const std::optional<at::Tensor>& labels, double sigma_data) {
  const at::AutoGradMode plain_ops(true);
  const models::ForwardAdScope group_norm_in_elementary_ops;
  const DualLevel level;
  const auto x = at::_make_dual(x_hat, v_x.to(x_hat.scalar_type()), level.index());
  const auto time = at::_make_dual(t, v_t.to(t.scalar_type()), level.index());
  const auto f =
      trigflow_velocity(unet, x, time, labels, sigma_data, std::numeric_limits<double>::infinity());
  const auto tangent = std::get<1>(at::_unpack_dual(f, level.index()));
  if (!tangent.defined()) return at::zeros_like(x_hat);  // F does not depend on the inputs
  return tangent.detach().clone();
}

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
