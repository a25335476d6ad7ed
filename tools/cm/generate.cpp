// cm generate: images from a consistency model, as diffusers' ConsistencyModelPipeline makes them.
#include <torch/cuda.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>

#include "cm/dtype.h"
#include "cm/error.h"
#include "cm/hub.h"
#include "cm/output.h"
#include "cm/pipeline.h"
#include "cm/distributed.h"
#include "cm/tuning.h"
#include "cm/version.h"
#include "common.h"
#include "generate_chunked.h"
#include "hub_progress.h"
#include "subcommands.h"

namespace cm::cli {
namespace {

namespace fs = std::filesystem;

struct GenerateArgs {
  std::string model;
  std::string output = "output.png";
  int batch_size = 1;
  int steps = 1;
  std::string timesteps;
  std::string classes;
  std::optional<int64_t> seed;
  std::string dtype = "float32";
  std::string variant;
  DeviceArgs dev;
  int threads = 0;
  bool grid = false;
  bool quiet = false;
  int per_class = 0;         // > 0: this many images of every class, one grid row per class
  int64_t chunk_size = 256;  // more images than this, or several processes: chunked
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// The "parameters" text of each PNG, in the key: value style of stable-diffusion.cpp.
std::string parameters_text(const GenerateArgs& a, uint64_t seed, const at::Tensor& images,
                            const std::vector<int64_t>& timesteps, std::optional<int64_t> label) {
  std::ostringstream ss;
  ss << "model: " << model_or_default(a.model) << ", seed: " << seed;
  if (timesteps.empty()) {
    ss << ", steps: " << a.steps;
  } else {
    ss << ", timesteps: " << join(timesteps);
  }
  if (label) ss << ", class: " << *label;
  ss << ", dtype: " << a.dtype;
  // Not bit-exact float32: say so, so that the image can be reproduced.
  if (a.dev.winograd) ss << ", convolution: winograd";
  ss << ", scheduler: CMStochasticIterativeScheduler"
     << ", size: " << images.size(2) << "x" << images.size(1) << ", generator: cm " << CM_VERSION;
  return ss.str();
}

int run_generate(GenerateArgs a) {
  if (a.batch_size < 1)
    throw Error("--batch-size: must be at least 1, got " + std::to_string(a.batch_size));
  if (a.steps < 1) throw Error("--steps: must be at least 1, got " + std::to_string(a.steps));
  if (a.chunk_size < 1)
    throw Error("--chunk-size: must be at least 1, got " + std::to_string(a.chunk_size));
  // Under torchrun (WORLD_SIZE > 1) or beyond one chunk, the images come chunk by chunk.
  const DistributedOptions dist = distributed_from_env();
  const bool one_picture = a.grid || a.per_class > 0;
  if (one_picture && dist.world_size > 1)
    throw Error("--grid and --per-class make one picture in one process; unset WORLD_SIZE");
  const bool chunked = !one_picture && (a.batch_size > a.chunk_size || dist.world_size > 1);
  if (!(ends_with(a.output, ".png") || ends_with(a.output, ".npy") || ends_with(a.output, ".npz")))
    throw Error("--output: '" + a.output + "' must end in .png, .npy or .npz");
  LoadOptions load;
  apply_device_args(a.dev, load);
  // Under torchrun a plain "cuda" means this process's own GPU, picked as cm train picks it.
  if (dist.world_size > 1 && a.dev.device == "cuda" && load.devices.empty()) {
    const int gpus = static_cast<int>(torch::cuda::device_count());
    if (gpus > 0) {
      const int index = dist.local_rank >= 0 ? dist.local_rank : dist.rank % gpus;
      load.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
    }
  }
  load.dtype = choose_dtype(a.dtype, load.device);
  a.dtype = dtype_name(load.dtype);  // what the PNG text records: `auto` resolved
  a.dev.winograd = load.winograd && load.dtype == at::kFloat;  // and whether Winograd ran
  set_threads(a.threads);

  const std::string model = model_or_default(a.model);
  if (a.model.empty() && !fs::exists(model))
    throw Error("no -m given and the default model " + model + " is missing");
  if (a.per_class < 0) throw Error("--per-class: must be positive");
  GenerateOptions o;
  o.cuda_graphs = !a.dev.no_cuda_graphs;
  o.batch_size = a.batch_size;
  o.num_inference_steps = a.steps;
  if (!a.timesteps.empty()) o.timesteps = parse_int_list("--timesteps", a.timesteps);
  if (a.seed) {
    o.seed = static_cast<uint64_t>(*a.seed);
  } else {
    o.seed = std::random_device{}() & 0x7fffffffu;
    if (dist.rank == 0) std::cerr << "seed: " << o.seed << std::endl;  // every rank uses rank 0's
  }

  const auto t0 = std::chrono::steady_clock::now();
  // A repository id (org/name[@rev]) becomes its snapshot folder in the Hugging Face cache.
  const std::string folder = resolve_model(model, hub_options(a.variant, a.quiet));
  load.variant = a.variant;
  auto pipe = ConsistencyModelPipeline::from_pretrained(folder, load);
  const int train_steps = pipe.is_trigflow() ? pipe.scm_scheduler().config().num_train_timesteps
                                             : pipe.scheduler().config().num_train_timesteps;
  if (a.timesteps.empty() && a.steps > train_steps)
    throw Error("--steps: " + std::to_string(a.steps) + " is more than the model's " +
                std::to_string(train_steps) + " training time steps (num_train_timesteps)");
  const auto class_names = read_class_names(folder);
  if (!a.classes.empty()) o.class_labels = parse_classes(a.classes, class_names);
  int grid_columns = 0;
  if (a.per_class > 0) {
    if (!pipe.unet()->config().num_class_embeds)
      throw Error("--per-class: the model is not class-conditional");
    const int classes = *pipe.unet()->config().num_class_embeds;
    o.class_labels.clear();
    for (int c = 0; c < classes; ++c)
      for (int i = 0; i < a.per_class; ++i) o.class_labels.push_back(c);
    o.batch_size = classes * a.per_class;
    grid_columns = a.per_class;
  }
  const auto t1 = std::chrono::steady_clock::now();
  log(a.quiet, "loaded " + model + " in " +
                   std::to_string(std::chrono::duration<double>(t1 - t0).count()) + " s");
  memory_policy_for_running();  // the weights are loaded and packed by now
  auto last = t1;
  InterruptGuard interrupt_guard;
  o.on_step = [&](int i, int n, double t, const at::Tensor&) {
    throw_if_interrupted();
    const auto now = std::chrono::steady_clock::now();
    char line[128];
    std::snprintf(line, sizeof line, "step %d/%d  t=%.4f  %.3f s", i + 1, n, t,
                  std::chrono::duration<double>(now - last).count());
    last = now;
    log(a.quiet, line);
  };
  if (chunked) {
    SamplingOptions so;
    so.num_images = a.batch_size;
    so.chunk_size = a.chunk_size;
    so.generate = o;
    so.generate.on_step = [&](int, int, double, const at::Tensor&) { throw_if_interrupted(); };
    so.distributed = dist;
    ChunkedOutput out{a.output, a.quiet || dist.rank != 0,
                      [&](uint64_t seed, const at::Tensor& images, std::optional<int64_t> label) {
                        return parameters_text(a, seed, images, o.timesteps, label);
                      }};
    return run_generate_chunked(pipe, so, out);
  }
  const GenerateResult r = pipe(o);

  if (ends_with(a.output, ".npy")) {
    write_npy(a.output, images_to_npy(r.images));
    std::cout << a.output << std::endl;
    return 0;
  }
  if (ends_with(a.output, ".npz")) {
    write_samples_npz(a.output, r.images, r.class_labels);
    std::cout << a.output << std::endl;
    return 0;
  }
  const auto images = to_uint8_images(r.images);
  if (a.grid || a.per_class > 0) {
    std::optional<int64_t> label;
    if (!r.class_labels.empty() && std::all_of(r.class_labels.begin(), r.class_labels.end(),
                                               [&](int64_t l) { return l == r.class_labels[0]; }))
      label = r.class_labels[0];
    std::string text = parameters_text(a, o.seed, r.images, o.timesteps, label);
    if (!r.class_labels.empty() && !label) text += ", classes: " + join(r.class_labels);
    const std::string path = output_name(a.output, 0, 1);
    write_png(path, make_grid(images, grid_columns), {{"parameters", text}});
    if (grid_columns > 0 && !class_names.empty()) {
      for (size_t c = 0; c < class_names.size(); ++c)
        log(a.quiet, "row " + std::to_string(c) + ": " + class_names[c]);
    }
    std::cout << path << std::endl;
    return 0;
  }
  for (size_t i = 0; i < images.size(); ++i) {
    std::optional<int64_t> label;
    if (!r.class_labels.empty()) label = r.class_labels[i];
    throw_if_interrupted();
    const std::string path =
        output_name(a.output, static_cast<int>(i), static_cast<int>(images.size()));
    write_png(path, images[i],
              {{"parameters", parameters_text(a, o.seed, r.images, o.timesteps, label)}});
    std::cout << path << std::endl;
  }
  return 0;
}

}  // namespace

Runner add_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  app.add_option("-m,--model", args->model,
                 "diffusers pipeline folder (or a UNet folder), or a Hugging Face Hub repository "
                 "id org/name[@revision] (default: the shipped Fashion-MNIST model)")
      ->check(not_empty());
  app.add_option("-o,--output", args->output,
                 "output file: .png (a %d in the name numbers the batch), .npy (float32 NHWC in "
                 "[0,1]) or .npz (arr_0 uint8 NHWC, arr_1 labels)")
      ->capture_default_str();
  app.add_option("-n,--batch-size", args->batch_size, "images to generate")->capture_default_str();
  app.add_option("--chunk-size", args->chunk_size,
                 "images per pipeline call when -n is larger or under torchrun (WORLD_SIZE > 1); "
                 "chunk k uses seed + k")
      ->capture_default_str();
  app.add_option("--steps", args->steps, "number of sampling steps")->capture_default_str();
  app.add_option("--timesteps", args->timesteps,
                 "explicit descending timestep indices, e.g. 22,0 (overrides --steps)")
      ->check(not_empty());
  app.add_option("--class", args->classes,
                 "class label(s) for class-conditional models: one for all, or one per image "
                 "(random when absent); numbers or the model's class names, e.g. sneaker")
      ->check(not_empty());
  app.add_option("--per-class", args->per_class,
                 "N images of every class as one grid, one row per class")
      ->check(at_least(1));
  app.add_option("-s,--seed", args->seed, "random seed (random and printed when absent)")
      ->check(seed_value());
  app.add_option("--variant", args->variant,
                 "weights variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)");
  app.add_option("--dtype", args->dtype,
                 "float32 (exact), bfloat16, float16, or auto (bfloat16 where the CPU or GPU "
                 "computes it natively, else float32)")
      ->capture_default_str();
  add_device_options(app, args->dev);
  app.add_option(
      "-t,--threads", args->threads,
      "CPU threads (default 0: the cores other processes leave free, checked before each "
      "network call)");
  app.add_flag("--grid", args->grid, "write the whole batch as one PNG grid");
  app.add_flag("-q,--quiet", args->quiet, "no progress output on stderr");
  return [args] { return run_generate(*args); };
}

}  // namespace cm::cli
