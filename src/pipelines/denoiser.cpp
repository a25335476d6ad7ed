#include "cm/denoiser.h"

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

}  // namespace cm
