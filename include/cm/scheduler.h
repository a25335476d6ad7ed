// CMStochasticIterativeScheduler: diffusers' multistep consistency sampling (the paper's
// Algorithm 1) on the Karras noise grid.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "cm/config.h"

namespace cm {

class CMStochasticIterativeScheduler {
 public:
  explicit CMStochasticIterativeScheduler(const SchedulerConfig& config = {});

  const SchedulerConfig& config() const { return config_; }
  double init_noise_sigma() const { return config_.sigma_max; }

  // Evenly spaced over the training grid, as diffusers does. Throws cm::Error when the count is
  // not in [1, num_train_timesteps].
  void set_timesteps(int num_inference_steps);
  // Explicit indices into the training grid, strictly descending, each in [0, num_train_timesteps).
  void set_timesteps(const std::vector<int64_t>& timesteps);
  // Arbitrary noise levels, strictly descending, each in [sigma_min, sigma_max] (zero-shot
  // editing starts mid-way, e.g. SDEdit's 5.38 then 2.24). The UNet inputs are 250·ln σ.
  void set_sigmas(const std::vector<double>& sigmas);

  // The values fed to the UNet (float64, 250·ln σ) and the noise levels (float32, with sigma_min
  // appended), exactly as diffusers computes them.
  const std::vector<double>& timesteps() const { return timesteps_; }
  const std::vector<float>& sigmas() const { return sigmas_; }
  size_t num_steps() const { return timesteps_.size(); }

  // sample / sqrt(σ² + σ_data²) for step `step_index`.
  at::Tensor scale_model_input(const at::Tensor& sample, size_t step_index) const;
  // One step: the boundary-condition denoiser, optional clipping, then re-noising to the next σ
  // with a draw from `generator` (only when there is more than one step, as in diffusers; an
  // undefined generator means torch's default one).
  at::Tensor step(const at::Tensor& model_output, size_t step_index, const at::Tensor& sample,
                  const at::Generator& generator = {}) const;
  // The same step with the re-noising draw given (unit variance, the sample's shape; ignored
  // with a single step): what a caller that draws every step's noise up front (a CUDA graph)
  // uses. step() is this with the draw made from `generator`.
  at::Tensor step_with_noise(const at::Tensor& model_output, size_t step_index,
                             const at::Tensor& sample, const at::Tensor& noise) const;
  // The denoised estimate alone (c_skip·sample + c_out·model_output, clipped when configured).
  at::Tensor denoise(const at::Tensor& model_output, size_t step_index,
                     const at::Tensor& sample) const;
  // √(σ̂² − σ_min²), σ̂ the next level clamped to [sigma_min, sigma_max]: how much unit noise
  // step() adds after step `step_index` (a 0-d float32 tensor on the CPU).
  at::Tensor noise_scale(size_t step_index) const;
  // original + noise·σ(step_indices[b]) per sample.
  at::Tensor add_noise(const at::Tensor& original, const at::Tensor& noise,
                       const std::vector<size_t>& step_indices) const;

  // 250·ln(σ + 1e-44): the UNet's time input for a noise level.
  static double sigma_to_t(double sigma);
  // Karras noise level for ramp ∈ [0, 1] (0 → sigma_max, 1 → sigma_min), in float64.
  double karras_sigma(double ramp) const;

 private:
  void set_from_indices(const std::vector<int64_t>& descending);

  SchedulerConfig config_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
};

}  // namespace cm
