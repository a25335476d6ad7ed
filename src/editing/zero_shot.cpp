// The Algorithm-4 loop and its noise sources.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <memory>
#include <sstream>

#include "cm/editing.h"
#include "cm/error.h"
#include "cm/tuning.h"

namespace cm {

NoiseSource seeded_noise(uint64_t seed) {
  auto generator = at::detail::createCPUGenerator(seed);
  return [generator](at::IntArrayRef shape) {
    return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
  };
}

at::Tensor slerp(const at::Tensor& a, const at::Tensor& b, double t) {
  // The ends are the inputs themselves, not a rounding of them, so frame 0 and the last frame of
  // an interpolation are exactly the two seeds' images.
  if (t == 0) return a;
  if (t == 1) return b;
  const auto ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  const double cos_theta =
      std::clamp((ad * bd).sum().item<double>() /
                     (ad.norm().item<double>() * bd.norm().item<double>() + 1e-300),
                 -1.0, 1.0);
  const double theta = std::acos(cos_theta);
  if (std::sin(theta) < 1e-6) return ((1 - t) * ad + t * bd).to(a.scalar_type());
  const double wa = std::sin((1 - t) * theta) / std::sin(theta);
  const double wb = std::sin(t * theta) / std::sin(theta);
  return (wa * ad + wb * bd).to(a.scalar_type());
}

NoiseSource slerp_noise(uint64_t seed_a, uint64_t seed_b, double t) {
  auto a = seeded_noise(seed_a);
  auto b = seeded_noise(seed_b);
  return [a, b, t](at::IntArrayRef shape) { return slerp(a(shape), b(shape), t); };
}

ZeroShotOutput run_zero_shot(ConsistencyModelPipeline& pipe, const EditProblem& problem,
                             int batch_size, const std::vector<int64_t>& labels,
                             const NoiseSource& noise, const StepCallback& on_step) {
  if (pipe.is_trigflow())
    throw Error("the model is a TrigFlow (SCMScheduler) model: zero-shot editing does not take "
                "those yet");
  auto& unet = pipe.unet();
  const auto& scheduler = pipe.scheduler();
  const UNetConfig& config = unet->config();
  if (batch_size < 1)
    throw Error("batch size must be at least 1, got " + std::to_string(batch_size));
  const auto& y_in = problem.reference;
  if (!y_in.defined() || y_in.dim() != 4 || y_in.size(1) != config.in_channels ||
      (y_in.size(0) != 1 && y_in.size(0) != batch_size)) {
    std::ostringstream ss;
    ss << "reference has shape " << (y_in.defined() ? y_in.sizes() : at::IntArrayRef{})
       << "; [1 or " << batch_size << ", " << config.in_channels << ", H, W] is expected";
    throw Error(ss.str());
  }
  if (!labels.empty() && static_cast<int>(labels.size()) != batch_size)
    throw Error("class labels: " + std::to_string(labels.size()) + " given for batch size " +
                std::to_string(batch_size));
  const auto param = unet->parameters().front();
  const auto dtype = param.scalar_type();
  const auto device = param.device();
  const std::vector<int64_t> shape = {batch_size, y_in.size(1), y_in.size(2), y_in.size(3)};

  torch::InferenceMode inference;
  // x stays in float32 whatever the model's dtype: only the UNet's input and output are cast, so
  // the projections stay accurate in half precision too.
  const auto y = y_in.to(device, at::kFloat);
  const auto baseline =
      problem.baseline.defined() ? problem.baseline.to(device, at::kFloat) : at::zeros_like(y);
  ZeroShotOutput out;
  out.projected = problem.projection(y, baseline);
  const auto& sigmas = scheduler.sigmas();
  const auto& timesteps = scheduler.timesteps();
  at::Tensor x;
  if (problem.noise_start) {
    x = out.projected + noise(shape).to(device) * static_cast<double>(sigmas[0]);
  } else {
    x = out.projected.expand(shape).contiguous();
  }
  out.start = x;

  std::optional<at::Tensor> label_tensor;
  if (!labels.empty()) label_tensor = at::tensor(labels).to(device);
  const double s_noise = scheduler.config().s_noise;
  const int steps = static_cast<int>(timesteps.size());
  for (int i = 0; i < steps; ++i) {
    if (x.is_cpu()) adapt_cpu_threads();
    const auto t = at::scalar_tensor(timesteps[i], at::kDouble);
    const auto model_output =
        unet->forward(scheduler.scale_model_input(x, i).to(dtype), t, label_tensor).to(at::kFloat);
    auto x0 = scheduler.denoise(model_output, i, x).clamp(-1, 1);
    x0 = problem.projection(y, x0);
    if (i + 1 < steps || (problem.pipeline_last_step && steps > 1)) {
      // The same operations as the scheduler's step, so that with nothing kept this loop is the
      // pipeline's multistep sampling to the bit.
      const auto z = noise(shape).to(device) * s_noise;
      x = x0 + z * scheduler.noise_scale(i).to(device);
    } else {
      x = x0;
    }
    if (on_step) on_step(i, steps, timesteps[i], x);
  }
  out.samples = x.to(at::kCPU);
  out.projected = out.projected.to(at::kCPU);
  out.start = out.start.to(at::kCPU);
  return out;
}

}  // namespace cm
