// Arithmetic mirrors diffusers' SCMScheduler: the times are a float32 tensor there, so the
// cosines and sines are 0-d float32 tensors here, applied to the sample in the sample's dtype.
#include <ATen/ATen.h>
#include <string>

#include "cm/error.h"
#include "cm/scm_scheduler.h"

namespace cm {
namespace {

constexpr double kMaxTime = 1.57080;  // diffusers' max_timesteps (just above π/2)
constexpr double kIntermediateTime = 1.3;

std::string str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

SCMScheduler::SCMScheduler(const SCMSchedulerConfig& config) : config_(config) {
  config_.validate("scheduler config");
  set_timesteps(1);
}

void SCMScheduler::set_timesteps(int n) {
  if (n < 1 || n > config_.num_train_timesteps)
    throw Error("num_inference_steps: " + std::to_string(n) +
                " must be between 1 and num_train_timesteps (" +
                std::to_string(config_.num_train_timesteps) + ")");
  at::Tensor t = n == 2 ? at::tensor({kMaxTime, kIntermediateTime, 0.0}, at::kDouble).to(at::kFloat)
                        : at::linspace(kMaxTime, 0.0, n + 1, at::kFloat);
  timesteps_.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

void SCMScheduler::set_timesteps(const std::vector<double>& times) {
  if (times.size() < 2)
    throw Error(
        "timesteps: need at least two times (where each step starts, and where the last "
        "one ends, usually 0), got " +
        std::to_string(times.size()));
  if (static_cast<int64_t>(times.size()) - 1 > config_.num_train_timesteps)
    throw Error("timesteps: " + std::to_string(times.size() - 1) +
                " steps exceed num_train_timesteps (" +
                std::to_string(config_.num_train_timesteps) + ")");
  for (size_t i = 0; i < times.size(); ++i) {
    if (!(times[i] >= 0 && times[i] <= kMaxTime))
      throw Error("timesteps: " + str(times[i]) + " is outside [0, 1.5708] (TrigFlow time)");
    if (i > 0 && !(times[i] < times[i - 1]))
      throw Error("timesteps: must be in descending order (" + str(times[i - 1]) + " then " +
                  str(times[i]) + ")");
  }
  timesteps_.clear();
  for (double t : times) timesteps_.push_back(static_cast<float>(t));
}

at::Tensor SCMScheduler::denoise(const at::Tensor& model_output, size_t step_index,
                                 const at::Tensor& sample) const {
  const auto s = at::scalar_tensor(timesteps_.at(step_index), at::kFloat);
  return at::cos(s) * sample - at::sin(s) * model_output;
}

at::Tensor SCMScheduler::step_with_noise(const at::Tensor& model_output, size_t step_index,
                                         const at::Tensor& sample, const at::Tensor& noise) const {
  if (!noise.defined()) throw Error("SCMScheduler::step_with_noise: the step's noise is missing");
  const auto x0 = denoise(model_output, step_index, sample);
  const auto t = at::scalar_tensor(timesteps_.at(step_index + 1), at::kFloat);
  return at::cos(t) * x0 + at::sin(t) * (noise * config_.sigma_data);
}

at::Tensor SCMScheduler::step(const at::Tensor& model_output, size_t step_index,
                              const at::Tensor& sample, const at::Generator& generator) const {
  c10::optional<at::Generator> gen;
  if (generator.defined()) gen = generator;
  // diffusers' randn_tensor: float32 on the CPU for a CPU generator, then moved.
  const auto noise = at::randn(model_output.sizes(), gen, at::TensorOptions().dtype(at::kFloat))
                         .to(model_output.device());
  return step_with_noise(model_output, step_index, sample, noise);
}

}  // namespace cm
