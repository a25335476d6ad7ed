#include "training/radam.h"

#include <cmath>

#include "training/optimizer_key.h"

namespace cm::training {

using torch::optim::AdamOptions;
using torch::optim::AdamParamState;

RAdam::RAdam(std::vector<at::Tensor> params, AdamOptions defaults)
    : Optimizer({torch::optim::OptimizerParamGroup(std::move(params))},
                std::make_unique<AdamOptions>(defaults)) {}

at::Tensor RAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const AdamOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      at::Tensor grad = p.grad();
      if (o.weight_decay() != 0) grad = grad.add(p, o.weight_decay());
      auto key = optimizer_state_key(p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto s = std::make_unique<AdamParamState>();
        s->step(0);
        s->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<AdamParamState&>(*it->second);
      s.step(s.step() + 1);
      const double t = static_cast<double>(s.step());
      s.exp_avg().mul_(beta1).add_(grad, 1.0 - beta1);
      s.exp_avg_sq().mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
      const double bias1 = 1.0 - std::pow(beta1, t);
      const double beta2_t = std::pow(beta2, t);
      const double rho_t = rho_inf - 2.0 * t * beta2_t / (1.0 - beta2_t);
      if (rho_t > 5.0) {
        const double rect = std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                      ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
        const double bias2 = 1.0 - beta2_t;
        const auto denom = s.exp_avg_sq().sqrt().add_(o.eps());
        p.addcdiv_(s.exp_avg(), denom, -o.lr() * rect * std::sqrt(bias2) / bias1);
      } else {
        p.add_(s.exp_avg(), -o.lr() / bias1);
      }
    }
  }
  return loss;
}

}  // namespace cm::training
