#include "pipelines/sampling_loop.h"

#include <ATen/ATen.h>

#include "cm/denoiser.h"
#include "cm/tuning.h"

namespace cm::pipelines {

at::Tensor run_sampling_loop(UNet2DModelImpl& unet, const CMStochasticIterativeScheduler& scheduler,
                             const SamplingInputs& in, const AfterStep& after_step) {
  at::Tensor sample = in.noise * scheduler.init_noise_sigma();
  const int steps = static_cast<int>(in.timesteps.size());
  for (int i = 0; i < steps; ++i) {
    if (sample.is_cpu()) adapt_cpu_threads();
    const auto scaled = scheduler.scale_model_input(sample, i);
    const auto out = unet.forward(scaled, in.timesteps[i], in.labels);
    sample = scheduler.step_with_noise(out, i, sample,
                                       in.step_noise.empty() ? at::Tensor() : in.step_noise[i]);
    if (after_step) after_step(i, sample);
  }
  return sample;
}

at::Tensor run_trigflow_loop(UNet2DModelImpl& unet, const SCMScheduler& scheduler,
                             const SamplingInputs& in, const AfterStep& after_step) {
  const auto& c = scheduler.config();
  at::Tensor sample = in.noise * scheduler.init_noise_scale();
  const int steps = static_cast<int>(scheduler.num_steps());
  for (int i = 0; i < steps; ++i) {
    if (sample.is_cpu()) adapt_cpu_threads();
    const auto t = at::full({sample.size(0)}, scheduler.timesteps()[i],
                            at::TensorOptions().dtype(at::kFloat).device(sample.device()));
    const auto out =
        trigflow_velocity(unet, sample, t, in.labels, c.sigma_data, c.sigma_max) * c.sigma_data;
    sample = scheduler.step_with_noise(out, i, sample, in.step_noise.at(i));
    if (after_step) after_step(i, sample);
  }
  return sample;
}

at::Tensor to_unit_range(const at::Tensor& sample) {
  return (sample / 2 + 0.5).clamp(0, 1).to(at::kFloat);
}

SamplingInputs to_device(const SamplingInputs& host, const at::Device& device) {
  auto move = [&](const at::Tensor& t) { return t.to(device, /*non_blocking=*/true); };
  SamplingInputs d;
  d.noise = move(host.noise);
  for (const auto& n : host.step_noise) d.step_noise.push_back(move(n));
  if (host.labels) d.labels = move(*host.labels);
  for (const auto& t : host.timesteps) d.timesteps.push_back(t.to(device, at::kDouble));
  return d;
}

}  // namespace cm::pipelines
