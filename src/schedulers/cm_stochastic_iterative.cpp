// Arithmetic mirrors diffusers: the tables in float64 (NumPy), the per-step scalings as 0-d float32
// tensors, so that results agree bit for bit rather than to a tolerance.
#include <cmath>
#include <string>

#include "cm/error.h"
#include "cm/scheduler.h"

namespace cm {

CMStochasticIterativeScheduler::CMStochasticIterativeScheduler(const SchedulerConfig& config)
    : config_(config) {
  config_.validate("scheduler config");
  set_timesteps(1);
}

double CMStochasticIterativeScheduler::sigma_to_t(double sigma) {
  return 1000 * 0.25 * std::log(sigma + 1e-44);
}

double CMStochasticIterativeScheduler::karras_sigma(double ramp) const {
  const double min_inv_rho = std::pow(config_.sigma_min, 1 / config_.rho);
  const double max_inv_rho = std::pow(config_.sigma_max, 1 / config_.rho);
  return std::pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), config_.rho);
}

void CMStochasticIterativeScheduler::set_timesteps(int num_inference_steps) {
  const int n_train = config_.num_train_timesteps;
  if (num_inference_steps < 1 || num_inference_steps > n_train) {
    throw Error("num_inference_steps: " + std::to_string(num_inference_steps) +
                " must be between 1 and num_train_timesteps (" + std::to_string(n_train) + ")");
  }
  const int64_t ratio = n_train / num_inference_steps;
  std::vector<int64_t> indices;
  for (int i = num_inference_steps - 1; i >= 0; --i) indices.push_back(i * ratio);
  set_from_indices(indices);
}

void CMStochasticIterativeScheduler::set_timesteps(const std::vector<int64_t>& timesteps) {
  if (timesteps.empty()) throw Error("timesteps: the list is empty");
  for (size_t i = 1; i < timesteps.size(); ++i) {
    if (timesteps[i] >= timesteps[i - 1])
      throw Error("timesteps: must be in descending order (" + std::to_string(timesteps[i - 1]) +
                  " then " + std::to_string(timesteps[i]) + ")");
  }
  if (timesteps.front() >= config_.num_train_timesteps)
    throw Error("timesteps: must start before num_train_timesteps (" +
                std::to_string(config_.num_train_timesteps) + "), got " +
                std::to_string(timesteps.front()));
  if (timesteps.back() < 0)
    throw Error("timesteps: must not be negative, got " + std::to_string(timesteps.back()));
  set_from_indices(timesteps);
}

void CMStochasticIterativeScheduler::set_sigmas(const std::vector<double>& sigmas) {
  if (sigmas.empty()) throw Error("sigmas: the list is empty");
  for (size_t i = 0; i < sigmas.size(); ++i) {
    if (!(sigmas[i] >= config_.sigma_min && sigmas[i] <= config_.sigma_max))
      throw Error("sigmas: " + std::to_string(sigmas[i]) + " is outside [sigma_min, sigma_max] = [" +
                  std::to_string(config_.sigma_min) + ", " + std::to_string(config_.sigma_max) +
                  "]");
    if (i > 0 && sigmas[i] >= sigmas[i - 1])
      throw Error("sigmas: must be in descending order (" + std::to_string(sigmas[i - 1]) +
                  " then " + std::to_string(sigmas[i]) + ")");
  }
  timesteps_.clear();
  sigmas_.clear();
  for (double sigma : sigmas) {
    timesteps_.push_back(sigma_to_t(sigma));
    sigmas_.push_back(static_cast<float>(sigma));
  }
  sigmas_.push_back(static_cast<float>(config_.sigma_min));
}

void CMStochasticIterativeScheduler::set_from_indices(const std::vector<int64_t>& descending) {
  // diffusers reverses the indices before mapping them onto the ramp, so the first step always
  // lands on the noisiest level of the chosen set.
  timesteps_.clear();
  sigmas_.clear();
  const double denom = config_.num_train_timesteps - 1;
  for (auto it = descending.rbegin(); it != descending.rend(); ++it) {
    const double sigma = karras_sigma(static_cast<double>(*it) / denom);
    timesteps_.push_back(sigma_to_t(sigma));
    sigmas_.push_back(static_cast<float>(sigma));
  }
  sigmas_.push_back(static_cast<float>(config_.sigma_min));
}

at::Tensor CMStochasticIterativeScheduler::scale_model_input(const at::Tensor& sample,
                                                             size_t step_index) const {
  const auto sigma = at::scalar_tensor(sigmas_.at(step_index), at::kFloat);
  return sample / (sigma.pow(2) + config_.sigma_data * config_.sigma_data).pow(0.5);
}

at::Tensor CMStochasticIterativeScheduler::denoise(const at::Tensor& model_output,
                                                   size_t step_index,
                                                   const at::Tensor& sample) const {
  // The scalings stay 0-d CPU tensors: ATen passes them to a GPU kernel as scalar arguments, so
  // no host-to-device copy is made (which a CUDA graph could not capture).
  const auto sigma = at::scalar_tensor(sigmas_.at(step_index), at::kFloat);
  const double sd2 = config_.sigma_data * config_.sigma_data;
  const auto c_skip = sd2 / ((sigma - config_.sigma_min).pow(2) + sd2);
  const auto c_out =
      (sigma - config_.sigma_min) * config_.sigma_data / (sigma.pow(2) + sd2).pow(0.5);
  auto denoised = c_out * model_output + c_skip * sample;
  if (config_.clip_denoised) denoised = denoised.clamp(-1, 1);
  return denoised;
}

at::Tensor CMStochasticIterativeScheduler::step(const at::Tensor& model_output, size_t step_index,
                                                const at::Tensor& sample,
                                                const at::Generator& generator) const {
  at::Tensor noise;
  if (timesteps_.size() > 1) {
    // Drawn on the CPU, as diffusers' randn_tensor does for a CPU generator, then moved.
    c10::optional<at::Generator> gen;
    if (generator.defined()) gen = generator;
    noise = at::randn(model_output.sizes(), gen,
                      at::TensorOptions().dtype(model_output.scalar_type()))
                .to(model_output.device());
  }
  return step_with_noise(model_output, step_index, sample, noise);
}

at::Tensor CMStochasticIterativeScheduler::step_with_noise(const at::Tensor& model_output,
                                                           size_t step_index,
                                                           const at::Tensor& sample,
                                                           const at::Tensor& noise) const {
  if (timesteps_.size() > 1 && !noise.defined())
    throw Error("step_with_noise: a multistep schedule needs the step's noise");
  const auto denoised = denoise(model_output, step_index, sample);
  const auto n = timesteps_.size() > 1 ? noise : at::zeros_like(model_output);
  const auto z = n * config_.s_noise;
  return denoised + z * noise_scale(step_index);
}

at::Tensor CMStochasticIterativeScheduler::noise_scale(size_t step_index) const {
  const auto sigma_next = at::scalar_tensor(sigmas_.at(step_index + 1), at::kFloat);
  const auto sigma_hat = sigma_next.clamp(config_.sigma_min, config_.sigma_max);
  return (sigma_hat.pow(2) - config_.sigma_min * config_.sigma_min).pow(0.5);
}

at::Tensor CMStochasticIterativeScheduler::add_noise(const at::Tensor& original,
                                                     const at::Tensor& noise,
                                                     const std::vector<size_t>& step_indices) const {
  std::vector<float> s;
  for (size_t i : step_indices) s.push_back(sigmas_.at(i));
  auto sigma = at::tensor(s, at::kFloat).to(original.device(), original.scalar_type());
  while (sigma.dim() < original.dim()) sigma = sigma.unsqueeze(-1);
  return original + noise * sigma;
}

}  // namespace cm
