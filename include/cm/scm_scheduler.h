// SCMScheduler: diffusers' sampler for continuous-time consistency models in the TrigFlow
// parameterisation (sCM, Lu & Song 2024): x_t = cos t·x₀ + sin t·z, z ~ N(0, σd²), t from π/2
// (noise) to 0 (data); the model's output is σd·F, the predicted velocity dx_t/dt, so that
// x₀ = cos t·x_t − sin t·(σd·F).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <cstdint>
#include <vector>

#include "cm/config.h"

namespace cm {

class SCMScheduler {
 public:
  explicit SCMScheduler(const SCMSchedulerConfig& config = {});

  const SCMSchedulerConfig& config() const { return config_; }

  // diffusers' schedule for `num_inference_steps`: [1.5708, 1.3, 0] for two steps, else
  // linspace(1.5708, 0, n + 1), in float32 (torch's linspace). Throws cm::Error for a count
  // outside [1, num_train_timesteps].
  void set_timesteps(int num_inference_steps);
  // Explicit times t₀ > t₁ > … ≥ 0, the last one where sampling ends (usually 0): one step per
  // pair, so n + 1 values for n steps, each in [0, 1.5708].
  void set_timesteps(const std::vector<double>& times);

  // The n + 1 times (float32, as diffusers holds them); the model runs at the first n.
  const std::vector<float>& timesteps() const { return timesteps_; }
  size_t num_steps() const { return timesteps_.size() - 1; }

  // Initial sample: unit noise times this (σd).
  double init_noise_scale() const { return config_.sigma_data; }

  // x₀ = cos s·sample − sin s·model_output at s = timesteps()[step_index] (0-d float32 factors).
  at::Tensor denoise(const at::Tensor& model_output, size_t step_index,
                     const at::Tensor& sample) const;
  // One step: x₀, then cos t·x₀ + sin t·σd·noise at the next time t (noise: unit variance, the
  // sample's shape). At the last step t = 0 and the result is x₀ itself, but diffusers draws the
  // noise there too, so callers draw one per step to keep the generator's sequence.
  at::Tensor step_with_noise(const at::Tensor& model_output, size_t step_index,
                             const at::Tensor& sample, const at::Tensor& noise) const;
  // The same with the noise drawn from `generator` on the CPU (undefined: torch's default one).
  at::Tensor step(const at::Tensor& model_output, size_t step_index, const at::Tensor& sample,
                  const at::Generator& generator = {}) const;

 private:
  SCMSchedulerConfig config_;
  std::vector<float> timesteps_;
};

}  // namespace cm
