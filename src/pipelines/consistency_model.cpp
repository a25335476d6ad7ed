#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <filesystem>
#include <future>
#include <torch/version.h>

#include "cm/error.h"
#include "cm/pipeline.h"
#include "pipelines/sampling_loop.h"
#if CM_ONEDNN_DIRECT
#include "kernels/onednn_conv.h"
#endif
#if CM_CUDA
#include "pipelines/cuda_graphs.h"
#endif

namespace cm {

namespace fs = std::filesystem;

#if CM_CUDA
struct ConsistencyModelPipeline::CudaGraphs : pipelines::CudaGraphCache {};
#else
struct ConsistencyModelPipeline::CudaGraphs {};
#endif

std::string unet_folder(const std::string& model_dir) {
  const fs::path root(model_dir);
  if (fs::exists(root / "model_index.json")) return (root / "unet").string();
  if (fs::exists(root / "config.json")) return model_dir;
  throw Error(model_dir +
              ": neither a pipeline folder (model_index.json) nor a UNet folder (config.json)");
}

ConsistencyModelPipeline::ConsistencyModelPipeline(UNet2DModel unet,
                                                   CMStochasticIterativeScheduler scheduler)
    : unet_(std::move(unet)), scheduler_(std::move(scheduler)) {
  unet_->eval();  // dropout off: sampling is deterministic given the seed
  // oneDNN's and cuDNN's convolutions run faster on NHWC, and the attention blocks then read
  // their tokens without a transpose copy (docs/performance.md).
  unet_->to_channels_last();
  if (unet_->parameters().front().device().is_cpu()) {
    unet_->allow_weight_prepacking(true);
    // Packed here rather than in the first call, which then costs what later ones do
    // (docs/performance.md); the layout picked for one sample serves other batch sizes too.
    unet_->prepack_weights(1);
  }
  graphs_ = std::make_shared<CudaGraphs>();
}

ConsistencyModelPipeline::ConsistencyModelPipeline(UNet2DModel unet, SCMScheduler scheduler)
    : ConsistencyModelPipeline(std::move(unet), CMStochasticIterativeScheduler()) {
  scm_ = std::move(scheduler);
}

const SCMScheduler& ConsistencyModelPipeline::scm_scheduler() const {
  if (!scm_) throw Error("not a TrigFlow (SCMScheduler) pipeline");
  return *scm_;
}

std::vector<at::Device> ConsistencyModelPipeline::devices() const {
  std::vector<at::Device> out{unet_->parameters().front().device()};
  for (const auto& r : replicas_) out.push_back(r->parameters().front().device());
  return out;
}

size_t ConsistencyModelPipeline::cuda_graph_count() const {
#if CM_CUDA
  return graphs_->size();
#else
  return 0;
#endif
}

namespace {

// The devices a pipeline is loaded on: LoadOptions::devices (CUDA indices) or its device.
std::vector<at::Device> load_devices(const LoadOptions& o) {
  if (o.devices.empty()) return {o.device};
  if (!o.device.is_cuda())
    throw Error("devices: splitting a batch over several devices needs --device cuda");
  std::vector<at::Device> out;
  for (int d : o.devices) {
    if (d < 0) throw Error("devices: '" + std::to_string(d) + "' is not a GPU index");
    for (const auto& e : out) {
      if (e.index() == d) throw Error("devices: GPU " + std::to_string(d) + " is listed twice");
    }
    out.emplace_back(at::kCUDA, static_cast<at::DeviceIndex>(d));
  }
  return out;
}

}  // namespace

namespace {

// float16 on the CPU: LibTorch 1.13 has no CPU kernels for its matrix products, which failed
// only at the first call with ATen's own message; 2.x has them. Asked of LibTorch itself, once.
void check_cpu_float16() {
  static const std::string missing = [] {
    try {
      c10::InferenceMode guard;
      const auto x = at::ones({1, 2, 4, 4}, at::kHalf);
      at::conv2d(x, at::ones({2, 2, 3, 3}, at::kHalf), at::ones({2}, at::kHalf), 1, 1);
      at::addmm(at::ones({2}, at::kHalf), at::ones({2, 2}, at::kHalf), at::ones({2, 2}, at::kHalf));
      return std::string();
    } catch (const std::exception& e) {
      const std::string what = e.what();
      return what.substr(0, what.find('\n'));
    }
  }();
  if (!missing.empty())
    throw Error("dtype float16: this LibTorch (" TORCH_VERSION
                ") cannot compute it on the CPU (" + missing + "); use float32 or bfloat16");
}

}  // namespace

bool winograd_supported() {
#if CM_ONEDNN_DIRECT
  return kernels::winograd_available();
#else
  return false;
#endif
}

ConsistencyModelPipeline ConsistencyModelPipeline::from_pretrained(const std::string& path,
                                                                   const LoadOptions& options) {
  if (!fs::exists(path)) throw Error(path + ": model folder does not exist");
  if (!fs::is_directory(path)) throw Error(path + ": not a directory");
  const auto devices = load_devices(options);
  if (devices.front().is_cpu() && options.dtype == at::kHalf) check_cpu_float16();
  if (devices.front().is_cuda()) {
    // LibTorch lets cuDNN use TF32 for float32 convolutions by default: ~1e-3 off diffusers'
    // float32 numbers. Process-wide switches, so a float32 load decides them.
    at::globalContext().setAllowTF32CuDNN(options.allow_tf32);
    at::globalContext().setAllowTF32CuBLAS(options.allow_tf32);
  }
  const fs::path root(path);
  const std::string unet_dir = unet_folder(path);
  const bool is_pipeline = unet_dir != path;
  SchedulerConfig sc;
  std::optional<SCMSchedulerConfig> scm;
  if (is_pipeline) {
    const auto index = PipelineIndex::load((root / "model_index.json").string());
    const fs::path sched = root / "scheduler" / "scheduler_config.json";
    if (index.scheduler_class == "SCMScheduler") {
      scm = SCMSchedulerConfig::from_json(read_text_file(sched.string()), sched.string());
      if (devices.size() > 1)
        throw Error(path + ": a TrigFlow (SCMScheduler) model runs on one device for now");
    } else if (fs::exists(sched)) {
      sc = SchedulerConfig::load(sched.string());
    }
  }
  // Loaded straight into the layout the constructor would otherwise convert to, in one copy.
  auto load = [&](const at::Device& d) {
    return load_unet(unet_dir, options.dtype, d, options.variant, at::MemoryFormat::ChannelsLast);
  };
  auto unet = load(devices.front());
  if (options.winograd && devices.front().is_cpu()) unet->use_winograd(true);
  ConsistencyModelPipeline pipe(unet, CMStochasticIterativeScheduler(sc));
  if (scm) pipe.scm_ = SCMScheduler(*scm);
  for (size_t i = 1; i < devices.size(); ++i) {
    auto replica = load(devices[i]);
    replica->eval();
    replica->to_channels_last();
    pipe.replicas_.push_back(replica);
  }
  return pipe;
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

namespace {

// The initial noise of a call: the caller's latents (their shape checked), or a draw from
// `generator` — the first draw of the call, in diffusers' order.
at::Tensor initial_noise(const GenerateOptions& o, const std::vector<int64_t>& shape,
                         at::Generator& generator, const at::TensorOptions& options) {
  if (!o.latents) return at::randn(shape, generator, options);
  if (o.latents->sizes().vec() != shape) {
    std::ostringstream ss;
    ss << "latents have shape " << o.latents->sizes() << " but " << at::IntArrayRef(shape)
       << " is expected";
    throw Error(ss.str());
  }
  auto noise = at::empty(shape, options);
  noise.copy_(*o.latents);
  return noise;
}

}  // namespace

at::Tensor ConsistencyModelPipeline::sample_on(size_t replica, const GenerateOptions& o,
                                               const CMStochasticIterativeScheduler& scheduler,
                                               const at::Tensor& noise,
                                               const std::vector<at::Tensor>& step_noise,
                                               const std::optional<at::Tensor>& labels) {
  UNet2DModelImpl& unet = replica == 0 ? *unet_ : *replicas_[replica - 1];
  const auto device = unet.parameters().front().device();
  pipelines::SamplingInputs host{noise, step_noise, labels, {}};
  for (double t : scheduler.timesteps()) host.timesteps.push_back(at::scalar_tensor(t, at::kDouble));
  const auto& timesteps = scheduler.timesteps();
  const int steps = static_cast<int>(timesteps.size());
  // Progress for the first part of the batch only: one report per step.
  pipelines::AfterStep after_step;
  if (o.on_step && replica == 0) {
    after_step = [&](int i, const at::Tensor& sample) { o.on_step(i, steps, timesteps[i], sample); };
  }
  if (device.is_cpu()) return run_sampling_loop(unet, scheduler, host, after_step);
#if CM_CUDA
  if (o.cuda_graphs) {
    const auto sample = graphs_->run(unet, scheduler, host, device);
    if (after_step) {
      for (int i = 0; i < steps; ++i) after_step(i, sample);
    }
    return sample;
  }
#endif
  const auto sample =
      run_sampling_loop(unet, scheduler, pipelines::to_device(host, device), after_step);
  auto out = at::empty(sample.sizes(), sample.options().device(at::kCPU).pinned_memory(true));
  out.copy_(sample);
  return out;
}

GenerateResult ConsistencyModelPipeline::operator()(const GenerateOptions& o) {
  const UNetConfig& config = unet_->config();
  if (o.batch_size < 1)
    throw Error("batch size must be at least 1, got " + std::to_string(o.batch_size));
  if (config.sample_size <= 0) throw Error("the UNet config has no sample_size");
  if (scm_) return generate_trigflow(o);
  // The call's own schedule: the loaded pipeline is never changed by a call.
  CMStochasticIterativeScheduler scheduler = scheduler_;
  if (o.timesteps.empty()) {
    scheduler.set_timesteps(o.num_inference_steps);
  } else {
    scheduler.set_timesteps(o.timesteps);
  }
  const auto param = unet_->parameters().front();
  const auto dtype = param.scalar_type();
  const bool cuda = param.device().is_cuda();
  const std::vector<int64_t> shape = {o.batch_size, config.in_channels, config.sample_size,
                                      config.sample_size};

  torch::InferenceMode inference;
  // Every draw is made up front on the CPU, in diffusers' order (the initial noise, then one per
  // step when there are several): the same numbers as drawing each when it is needed, and a CUDA
  // graph then needs no generator. Pinned, so copies to a GPU run asynchronously.
  auto generator = at::detail::createCPUGenerator(o.seed);
  const auto host = at::TensorOptions().dtype(dtype).pinned_memory(cuda);
  const at::Tensor noise = initial_noise(o, shape, generator, host);
  std::vector<at::Tensor> step_noise;
  if (scheduler.num_steps() > 1) {
    for (size_t i = 0; i < scheduler.num_steps(); ++i)
      step_noise.push_back(at::randn(shape, generator, host));
  }

  GenerateResult result;
  result.class_labels = resolve_class_labels(config, o);
  std::optional<at::Tensor> labels;
  if (!result.class_labels.empty()) {
    labels = at::empty({o.batch_size}, at::TensorOptions().dtype(at::kLong).pinned_memory(cuda));
    std::copy(result.class_labels.begin(), result.class_labels.end(), labels->data_ptr<int64_t>());
  }

  // The batch in contiguous parts, one per device (parts never empty).
  const int64_t parts = std::min<int64_t>(1 + replicas_.size(), o.batch_size);
  std::vector<at::Tensor> samples;
  if (parts == 1) {
    samples.push_back(sample_on(0, o, scheduler, noise, step_noise, labels));
  } else {
    const int64_t per = (o.batch_size + parts - 1) / parts;
    std::vector<std::future<at::Tensor>> jobs;
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t begin = p * per, len = std::min(per, o.batch_size - begin);
      if (len <= 0) break;
      auto slice = [&](const at::Tensor& t) { return t.narrow(0, begin, len); };
      std::vector<at::Tensor> sn;
      for (const auto& n : step_noise) sn.push_back(slice(n));
      std::optional<at::Tensor> l;
      if (labels) l = slice(*labels);
      jobs.push_back(std::async(std::launch::async, [this, p, &o, &scheduler, x = slice(noise),
                                                     sn, l] {
        torch::InferenceMode inference_here;
        return sample_on(static_cast<size_t>(p), o, scheduler, x, sn, l);
      }));
    }
    for (auto& j : jobs) samples.push_back(j.get());
  }
  const auto sample = samples.size() == 1 ? samples.front() : at::cat(samples);
  result.images = pipelines::to_unit_range(sample).to(at::kCPU).permute({0, 2, 3, 1}).contiguous();
  result.timesteps = scheduler.timesteps();
  return result;
}

// diffusers' order of draws for an SCMScheduler loop: the initial noise, then one per step (its
// step() draws even at the last step, where the noise is multiplied by sin 0).
GenerateResult ConsistencyModelPipeline::generate_trigflow(const GenerateOptions& o) {
  const UNetConfig& config = unet_->config();
  if (!o.timesteps.empty())
    throw Error("timesteps: a TrigFlow (SCMScheduler) model takes a step count, not indices");
  SCMScheduler scheduler = *scm_;
  scheduler.set_timesteps(o.num_inference_steps);
  const auto param = unet_->parameters().front();
  const std::vector<int64_t> shape = {o.batch_size, config.in_channels, config.sample_size,
                                      config.sample_size};
  torch::InferenceMode inference;
  auto generator = at::detail::createCPUGenerator(o.seed);
  pipelines::SamplingInputs in;
  in.noise = initial_noise(o, shape, generator, at::TensorOptions().dtype(param.scalar_type()));
  for (size_t i = 0; i < scheduler.num_steps(); ++i)
    in.step_noise.push_back(at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat)));
  GenerateResult result;
  result.class_labels = resolve_class_labels(config, o);
  if (!result.class_labels.empty()) in.labels = at::tensor(result.class_labels, at::kLong);
  const int steps = static_cast<int>(scheduler.num_steps());
  pipelines::AfterStep after_step;
  if (o.on_step) {
    after_step = [&](int i, const at::Tensor& sample) {
      o.on_step(i, steps, scheduler.timesteps()[i], sample);
    };
  }
  at::Tensor sample;
  if (param.device().is_cpu()) {
    sample = pipelines::run_trigflow_loop(*unet_, scheduler, in, after_step);
  } else {
    sample = pipelines::run_trigflow_loop(*unet_, scheduler,
                                          pipelines::to_device(in, param.device()), after_step);
  }
  result.images = pipelines::to_unit_range(sample).to(at::kCPU).permute({0, 2, 3, 1}).contiguous();
  for (size_t i = 0; i < scheduler.num_steps(); ++i)
    result.timesteps.push_back(scheduler.timesteps()[i]);
  return result;
}

}  // namespace cm
