// The sampling loop itself, on tensors already where the model is: what a CPU call runs, what a
// CUDA call runs eagerly, and what a CUDA graph captures. One function for all three, so that a
// graph replay computes exactly what eager execution computes.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <vector>

#include "cm/scheduler.h"
#include "cm/scm_scheduler.h"
#include "cm/unet.h"

namespace cm::pipelines {

struct SamplingInputs {
  at::Tensor noise;                    // [B, C, H, W] unit-variance initial noise
  std::vector<at::Tensor> step_noise;  // one [B, C, H, W] draw per step (several steps only)
  std::optional<at::Tensor> labels;    // [B] class labels of a class-conditional model
  std::vector<at::Tensor> timesteps;   // one 0-d time input per step
};

// Called after each step with its index and the sample.
using AfterStep = std::function<void(int step, const at::Tensor& sample)>;

// noise·σ_max, then per step: the scaled input through the UNet, the scheduler's step with that
// step's noise. Returns the final sample (the model's dtype, on its device). `scheduler` has its
// timesteps set; inputs.timesteps holds its time inputs.
at::Tensor run_sampling_loop(UNet2DModelImpl& unet, const CMStochasticIterativeScheduler& scheduler,
                             const SamplingInputs& inputs, const AfterStep& after_step = nullptr);

// The same for a TrigFlow model (SCMScheduler): noise·σd, then per step the UNet's σd·F
// (cm::trigflow_velocity) and the scheduler's step with that step's noise (one per step, always).
at::Tensor run_trigflow_loop(UNet2DModelImpl& unet, const SCMScheduler& scheduler,
                             const SamplingInputs& inputs, const AfterStep& after_step = nullptr);

// The sample as images: [B, C, H, W] float32 in [0, 1], where the sample is.
at::Tensor to_unit_range(const at::Tensor& sample);

// The inputs copied to `device` (asynchronously from pinned memory), time inputs as 0-d float64.
SamplingInputs to_device(const SamplingInputs& host, const at::Device& device);

}  // namespace cm::pipelines
