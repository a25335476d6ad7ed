#include "cm/denoiser.h"

#include <ATen/ATen.h>
#include <cmath>

namespace cm {

BoundaryScalings boundary_scalings(const at::Tensor& sigma, const SchedulerConfig& c) {
  const auto s = sigma.reshape({-1, 1, 1, 1});
  const double sd2 = c.sigma_data * c.sigma_data;
  BoundaryScalings b;
  b.c_skip = sd2 / ((s - c.sigma_min).pow(2) + sd2);
  b.c_out = (s - c.sigma_min) * c.sigma_data / (s.pow(2) + sd2).sqrt();
  b.c_in = 1.0 / (s.pow(2) + sd2).sqrt();
  return b;
}

at::Tensor sigma_to_timestep(const at::Tensor& sigma) {
  return 1000 * 0.25 * (sigma.to(at::kDouble) + 1e-44).log();
}

at::Tensor consistency_function(UNet2DModelImpl& unet, const at::Tensor& x, const at::Tensor& sigma,
                                const std::optional<at::Tensor>& labels,
                                const SchedulerConfig& config) {
  const auto b = boundary_scalings(sigma.to(x.scalar_type()), config);
  const auto out = unet.forward(x * b.c_in, sigma_to_timestep(sigma), labels);
  return b.c_skip * x + b.c_out * out;
}

at::Tensor edm_denoise(UNet2DModelImpl& unet, const at::Tensor& x, const at::Tensor& sigma,
                       const std::optional<at::Tensor>& labels, double sd) {
  const auto s = sigma.reshape({-1, 1, 1, 1});
  const auto c_skip = sd * sd / (s.pow(2) + sd * sd);
  const auto c_out = s * sd / (s.pow(2) + sd * sd).sqrt();
  const auto c_in = 1.0 / (s.pow(2) + sd * sd).sqrt();
  return c_skip * x + c_out * unet.forward(x * c_in, sigma_to_timestep(sigma), labels);
}

at::Tensor trigflow_velocity(UNet2DModelImpl& unet, const at::Tensor& x_hat, const at::Tensor& t,
                             const std::optional<at::Tensor>& labels, double sigma_data,
                             double sigma_max) {
  auto per_sample = [&](const at::Tensor& v) {
    return v.reshape({-1, 1, 1, 1}).to(x_hat.scalar_type());
  };
  const auto t64 = t.to(at::kDouble).reshape({-1});
  const auto t_eval = t64.clamp_max(std::atan(sigma_max / sigma_data));
  const auto sigma = sigma_data * t_eval.tan();
  const auto x = x_hat * per_sample(1.0 / t_eval.cos());
  const auto d =
      edm_denoise(unet, x, sigma.to(at::promote_types(at::kFloat, x_hat.scalar_type())), labels,
                  sigma_data);
  return (per_sample(t64.cos()) * x_hat - d) * per_sample(1.0 / (sigma_data * t64.sin()));
}

}  // namespace cm
