#include "training/ode.h"

#include "cm/denoiser.h"

namespace cm::training {

at::Tensor heun_step(const Denoiser& denoise, const at::Tensor& x, const at::Tensor& sigma_from,
                     const at::Tensor& sigma_to) {
  const auto from = sigma_from.reshape({-1, 1, 1, 1}), to = sigma_to.reshape({-1, 1, 1, 1});
  const auto d = (x - denoise(x, sigma_from)) / from;
  const auto x_euler = x + (to - from) * d;
  const auto d2 = (x_euler - denoise(x_euler, sigma_to)) / to;
  return x + (to - from) * (d + d2) / 2;
}

}  // namespace cm::training
