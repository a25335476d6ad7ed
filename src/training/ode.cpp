#include "training/ode.h"

#include "cm/denoiser.h"

namespace cm::training {

at::Tensor edm_denoise(UNet2DModelImpl& unet, const at::Tensor& x, const at::Tensor& sigma,
                       const std::optional<at::Tensor>& labels, double sd) {
  const auto s = sigma.reshape({-1, 1, 1, 1});
  const auto c_skip = sd * sd / (s.pow(2) + sd * sd);
  const auto c_out = s * sd / (s.pow(2) + sd * sd).sqrt();
  const auto c_in = 1.0 / (s.pow(2) + sd * sd).sqrt();
  return c_skip * x + c_out * unet.forward(x * c_in, sigma_to_timestep(sigma), labels);
}

at::Tensor heun_step(const Denoiser& denoise, const at::Tensor& x, const at::Tensor& sigma_from,
                     const at::Tensor& sigma_to) {
  const auto from = sigma_from.reshape({-1, 1, 1, 1}), to = sigma_to.reshape({-1, 1, 1, 1});
  const auto d = (x - denoise(x, sigma_from)) / from;
  const auto x_euler = x + (to - from) * d;
  const auto d2 = (x_euler - denoise(x_euler, sigma_to)) / to;
  return x + (to - from) * (d + d2) / 2;
}

}  // namespace cm::training
