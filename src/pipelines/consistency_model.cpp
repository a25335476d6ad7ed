#include <ATen/CPUGeneratorImpl.h>
#include <filesystem>

#include "cm/error.h"
#include "cm/pipeline.h"

namespace cm {

namespace fs = std::filesystem;

ConsistencyModelPipeline::ConsistencyModelPipeline(UNet2DModel unet,
                                                   CMStochasticIterativeScheduler scheduler)
    : unet_(std::move(unet)), scheduler_(std::move(scheduler)) {
  unet_->eval();  // dropout off: sampling is deterministic given the seed
  // oneDNN's convolutions run about 1.4x faster on NHWC, and the attention blocks then read
  // their tokens without a transpose copy (docs/performance.md).
  if (unet_->parameters().front().device().is_cpu()) {
    unet_->to_channels_last();
    unet_->allow_weight_prepacking(true);
  }
}

ConsistencyModelPipeline ConsistencyModelPipeline::from_pretrained(const std::string& path,
                                                                   const LoadOptions& options) {
  if (!fs::exists(path)) throw Error(path + ": model folder does not exist");
  if (!fs::is_directory(path)) throw Error(path + ": not a directory");
  const fs::path root(path);
  // Loaded straight into the layout the constructor would otherwise convert to, in one copy.
  const auto format =
      options.device.is_cpu() ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (fs::exists(root / "model_index.json")) {
    PipelineIndex::load((root / "model_index.json").string());
    const fs::path sched = root / "scheduler" / "scheduler_config.json";
    const SchedulerConfig sc =
        fs::exists(sched) ? SchedulerConfig::load(sched.string()) : SchedulerConfig{};
    return ConsistencyModelPipeline(load_unet((root / "unet").string(), options.dtype,
                                              options.device, options.variant, format),
                                    CMStochasticIterativeScheduler(sc));
  }
  if (fs::exists(root / "config.json")) {
    return ConsistencyModelPipeline(
        load_unet(path, options.dtype, options.device, options.variant, format),
        CMStochasticIterativeScheduler());
  }
  throw Error(path + ": neither a pipeline folder (model_index.json) nor a UNet folder (config.json)");
}

std::vector<int64_t> resolve_class_labels(const UNetConfig& config, const GenerateOptions& o) {
  if (!config.num_class_embeds) {
    if (!o.class_labels.empty())
      throw Error("class labels given, but the model is not class-conditional");
    return {};
  }
  const int64_t n = *config.num_class_embeds;
  std::vector<int64_t> labels = o.class_labels;
  if (labels.empty()) {
    // diffusers draws these from torch's global generator; seeding a fresh one with the seed
    // gives what torch.manual_seed(seed) would, without disturbing the noise generator.
    auto gen = at::detail::createCPUGenerator(o.seed);
    auto t = at::randint(0, n, {o.batch_size}, gen, at::TensorOptions().dtype(at::kLong));
    labels.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + o.batch_size);
  } else if (labels.size() == 1) {
    labels.assign(o.batch_size, labels[0]);
  } else if (static_cast<int>(labels.size()) != o.batch_size) {
    throw Error("class labels: " + std::to_string(labels.size()) + " given for batch size " +
                std::to_string(o.batch_size));
  }
  for (int64_t l : labels) {
    if (l < 0 || l >= n)
      throw Error("class label " + std::to_string(l) + " is out of range [0, " +
                  std::to_string(n) + ")");
  }
  return labels;
}

GenerateResult ConsistencyModelPipeline::operator()(const GenerateOptions& o) {
  const UNetConfig& config = unet_->config();
  if (o.batch_size < 1)
    throw Error("batch size must be at least 1, got " + std::to_string(o.batch_size));
  if (config.sample_size <= 0) throw Error("the UNet config has no sample_size");
  if (o.timesteps.empty()) {
    scheduler_.set_timesteps(o.num_inference_steps);
  } else {
    scheduler_.set_timesteps(o.timesteps);
  }
  const auto param = unet_->parameters().front();
  const auto dtype = param.scalar_type();
  const auto device = param.device();
  const std::vector<int64_t> shape = {o.batch_size, config.in_channels, config.sample_size,
                                      config.sample_size};

  torch::InferenceMode inference;
  auto generator = at::detail::createCPUGenerator(o.seed);
  at::Tensor sample;
  if (o.latents) {
    if (o.latents->sizes().vec() != shape) {
      std::ostringstream ss;
      ss << "latents have shape " << o.latents->sizes() << " but " << at::IntArrayRef(shape)
         << " is expected";
      throw Error(ss.str());
    }
    sample = o.latents->to(device, dtype);
  } else {
    sample = at::randn(shape, generator, at::TensorOptions().dtype(dtype)).to(device);
  }
  sample = sample * scheduler_.init_noise_sigma();

  GenerateResult result;
  result.class_labels = resolve_class_labels(config, o);
  std::optional<at::Tensor> labels;
  if (!result.class_labels.empty()) labels = at::tensor(result.class_labels).to(device);

  const auto& timesteps = scheduler_.timesteps();
  const int steps = static_cast<int>(timesteps.size());
  for (int i = 0; i < steps; ++i) {
    const auto t = at::scalar_tensor(timesteps[i], at::kDouble);
    const auto scaled = scheduler_.scale_model_input(sample, i);
    const auto out = unet_->forward(scaled, t, labels);
    sample = scheduler_.step(out, i, sample, generator);
    if (o.on_step) o.on_step(i, steps, timesteps[i], sample);
  }
  result.images = (sample / 2 + 0.5).clamp(0, 1).to(at::kCPU, at::kFloat).permute({0, 2, 3, 1})
                      .contiguous();
  result.timesteps = timesteps;
  return result;
}

}  // namespace cm
