// cm edit: zero-shot editing (inpainting, colorization, super-resolution, stroke-guided
// generation, interpolation, denoising) with a consistency model, the paper's Algorithm 4.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include "cm/dtype.h"
#include "cm/editing.h"
#include "cm/error.h"
#include "cm/hub.h"
#include "cm/output.h"
#include "cm/pipeline.h"
#include "cm/version.h"
#include "common.h"
#include "hub_progress.h"
#include "subcommands.h"

namespace cm::cli {
namespace {

namespace fs = std::filesystem;

struct EditArgs {
  std::string model;
  std::string task;
  std::string image;
  std::string mask;
  std::string output = "edit.png";
  int factor = 0;
  std::optional<double> sigma;
  bool add_noise = false;
  std::optional<int64_t> seed;
  std::optional<int64_t> seed2;
  int frames = 8;
  int batch_size = 1;
  std::optional<int> steps;
  std::string timesteps;
  std::string sigmas;
  std::string classes;
  std::string dtype = "float32";
  std::string device = "cpu";
  int threads = 0;
  bool grid = false;
  bool no_resize = false;
  bool quiet = false;
  std::vector<std::string> given;  // the task-specific flags on the command line
};

// Flags that mean something for one task only: given with another, they are refused rather than
// silently ignored.
struct TaskFlag {
  const char* flag;
  EditTask task;
};
constexpr TaskFlag kTaskFlags[] = {
    {"--mask", EditTask::kInpaint},     {"--factor", EditTask::kSuperres},
    {"--sigma", EditTask::kDenoise},    {"--add-noise", EditTask::kDenoise},
    {"--seed2", EditTask::kInterpolate}, {"--frames", EditTask::kInterpolate},
};

std::vector<double> parse_double_list(const std::string& option, const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size())
      throw Error(option + ": '" + item + "' is not a number (in '" + text + "')");
    out.push_back(value);
  }
  if (out.empty()) throw Error(option + ": empty list");
  return out;
}

std::string size_text(int w, int h) {
  return std::to_string(w) + "x" + std::to_string(h);
}

template <typename T>
std::string join(const std::vector<T>& values) {
  std::ostringstream ss;
  for (size_t i = 0; i < values.size(); ++i) ss << (i ? "," : "") << values[i];
  return ss.str();
}

// Reads the image (and the mask) into the options and brings them to the model's size, or says
// why not. Errors name the files, which the library never sees.
void load_inputs(const EditArgs& a, EditTask task, int size, EditOptions& o) {
  if (task == EditTask::kInterpolate) return;
  if (a.image.empty()) throw Error("--image: required for " + std::string(edit_task_name(task)));
  o.image = read_image(a.image);
  if (task == EditTask::kInpaint) {
    if (a.mask.empty()) throw Error("--mask: required for inpaint (white = regenerate)");
    o.mask = read_image(a.mask);
    if (o.mask.width != o.image.width || o.mask.height != o.image.height)
      throw Error(a.mask + ": mask is " + size_text(o.mask.width, o.mask.height) + " but " +
                  a.image + " is " + size_text(o.image.width, o.image.height));
  }
  if (task == EditTask::kSuperres && a.factor == 0) {
    // A low-resolution image is taken as it is: its size sets the factor.
    const int w = o.image.width;
    if (w == size && o.image.height == size)
      throw Error(a.image + ": " + size_text(w, w) +
                  " is the model's size already: give --factor N to super-resolve it from its "
                  "N-times smaller version");
    if (w != o.image.height || size % w != 0 || w == size)
      throw Error(a.image + ": " + size_text(w, o.image.height) +
                  " does not divide the model's size " + size_text(size, size) +
                  " (for a full-size image, give --factor)");
    return;
  }
  if (o.image.width == size && o.image.height == size) return;
  if (a.no_resize)
    throw Error(a.image + ": " + size_text(o.image.width, o.image.height) +
                " is not the model's size " + size_text(size, size) + " (--no-resize)");
  std::cerr << "note: resizing " << a.image << " from " << size_text(o.image.width, o.image.height)
            << " to " << size_text(size, size) << std::endl;
  o.image = resize_image(o.image, size, size);
  if (!o.mask.pixels.empty()) o.mask = resize_image(o.mask, size, size);
}

std::string parameters_text(const EditArgs& a, const EditOptions& o, const EditResult& r,
                            std::optional<int> frame) {
  std::ostringstream ss;
  ss << "task: " << edit_task_name(o.task) << ", model: " << model_or_default(a.model);
  if (!a.image.empty()) ss << ", image: " << a.image;
  if (o.task == EditTask::kInpaint) ss << ", mask: " << a.mask;
  if (o.task == EditTask::kSuperres) ss << ", factor: " << r.factor;
  if (o.task == EditTask::kDenoise)
    ss << ", sigma: " << o.sigma << (o.add_noise ? ", add noise" : "");
  ss << ", seed: " << o.seed;
  if (o.task == EditTask::kInterpolate) {
    ss << ", seed2: " << o.seed2 << ", frames: " << o.frames;
    if (frame) ss << ", frame: " << *frame;
  }
  if (!o.timesteps.empty()) {
    ss << ", timesteps: " << join(o.timesteps);
  } else if (o.num_inference_steps != 0 ||
             (o.sigmas.empty() && o.task != EditTask::kStroke && o.task != EditTask::kDenoise)) {
    ss << ", steps: " << r.sigmas.size();
  } else {
    ss << ", sigmas: " << join(r.sigmas);
  }
  if (!r.class_labels.empty()) ss << ", class: " << r.class_labels[0];
  ss << ", dtype: " << a.dtype << ", size: " << r.images.size(2) << "x" << r.images.size(1)
     << ", generator: cm " << CM_VERSION;
  return ss.str();
}

uint64_t seed_or_random(const std::optional<int64_t>& seed, const char* name) {
  if (seed) return static_cast<uint64_t>(*seed);
  const uint64_t s = std::random_device{}() & 0x7fffffffu;
  std::cerr << name << ": " << s << std::endl;
  return s;
}

int run_edit(EditArgs a) {
  EditOptions o;
  o.task = parse_edit_task(a.task);
  for (const auto& f : kTaskFlags) {
    if (f.task != o.task &&
        std::find(a.given.begin(), a.given.end(), f.flag) != a.given.end())
      throw Error(std::string(f.flag) + ": only for --task " + edit_task_name(f.task) +
                  ", not " + edit_task_name(o.task));
  }
  auto ends_with = [&](const char* suffix) {
    const size_t n = std::strlen(suffix);
    return a.output.size() >= n && a.output.compare(a.output.size() - n, n, suffix) == 0;
  };
  const bool npy = ends_with(".npy"), npz = ends_with(".npz");
  if (!ends_with(".png") && !npy && !npz)
    throw Error("--output: '" + a.output + "' must end in .png, .npy or .npz");
  if (a.grid && (npy || npz)) throw Error("--grid: only with a .png --output");
  if (a.batch_size < 1)
    throw Error("--batch-size: must be at least 1, got " + std::to_string(a.batch_size));
  if (a.steps && *a.steps < 1)
    throw Error("--steps: must be at least 1, got " + std::to_string(*a.steps));
  if (a.frames < 1) throw Error("--frames: must be at least 1, got " + std::to_string(a.frames));
  if (o.task == EditTask::kDenoise && !a.sigma)
    throw Error("--sigma: required for denoise (the image's noise level)");
  LoadOptions load;
  load.device = parse_device(a.device);
  load.dtype = choose_dtype(a.dtype, load.device);
  a.dtype = dtype_name(load.dtype);  // what the PNG text records: `auto` resolved
  set_threads(a.threads);

  o.factor = a.factor;
  o.sigma = a.sigma.value_or(0);
  o.add_noise = a.add_noise;
  o.frames = a.frames;
  o.batch_size = a.batch_size;
  o.num_inference_steps = a.steps.value_or(0);
  if (!a.timesteps.empty()) o.timesteps = parse_int_list("--timesteps", a.timesteps);
  if (!a.sigmas.empty()) o.sigmas = parse_double_list("--sigmas", a.sigmas);

  const auto t0 = std::chrono::steady_clock::now();
  const std::string folder = resolve_model(model_or_default(a.model), hub_options("", a.quiet));
  auto pipe = ConsistencyModelPipeline::from_pretrained(folder, load);
  if (!a.classes.empty()) o.class_labels = parse_classes(a.classes, read_class_names(folder));
  const auto t1 = std::chrono::steady_clock::now();
  log(a.quiet, "loaded " + model_or_default(a.model) + " in " +
                   std::to_string(std::chrono::duration<double>(t1 - t0).count()) + " s");
  const UNetConfig& config = pipe.unet()->config();
  if (a.factor > 0 && config.sample_size % a.factor != 0)
    throw Error("--factor: " + std::to_string(a.factor) + " does not divide the model's size " +
                std::to_string(config.sample_size));
  load_inputs(a, o.task, config.sample_size, o);
  o.seed = seed_or_random(a.seed, "seed");
  if (o.task == EditTask::kInterpolate) o.seed2 = seed_or_random(a.seed2, "seed2");

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
  const EditResult r = edit(pipe, o);
  if (npy || npz) {  // as cm generate: float32 NHWC in [0, 1], or uint8 and the labels
    if (npy)
      write_npy(a.output, images_to_npy(r.images));
    else
      write_samples_npz(a.output, r.images, r.class_labels);
    std::cout << a.output << std::endl;
    return 0;
  }

  const auto results = to_uint8_images(r.images);
  const bool frames = o.task == EditTask::kInterpolate;
  if (a.grid) {
    // Input, what the model sees, then the results; frames alone for an interpolation.
    std::vector<ImageU8> tiles;
    if (!frames) {
      tiles.push_back(to_uint8_images(r.reference)[0]);
      tiles.push_back(to_uint8_images(r.projected)[0]);
    }
    tiles.insert(tiles.end(), results.begin(), results.end());
    const std::string path = output_name(a.output, 0, 1);
    write_png(path, make_grid(tiles, static_cast<int>(tiles.size())),
              {{"parameters", parameters_text(a, o, r, std::nullopt)}});
    std::cout << path << std::endl;
    return 0;
  }
  for (size_t i = 0; i < results.size(); ++i) {
    throw_if_interrupted();
    const std::string path =
        output_name(a.output, static_cast<int>(i), static_cast<int>(results.size()));
    std::optional<int> frame;
    if (frames) frame = static_cast<int>(i);
    write_png(path, results[i], {{"parameters", parameters_text(a, o, r, frame)}});
    std::cout << path << std::endl;
  }
  return 0;
}

}  // namespace

Runner add_edit(CLI::App& app) {
  auto args = std::make_shared<EditArgs>();
  app.add_option("-m,--model", args->model,
                 "diffusers pipeline folder (or a UNet folder); default: the shipped model")
      ->check(not_empty());
  app.add_option("--task", args->task,
                 "inpaint, colorize, superres, stroke, interpolate or denoise")
      ->required();
  app.add_option("--image", args->image, "the reference image (PNG or JPEG, RGB or gray)");
  app.add_option("--mask", args->mask, "inpaint: white = regenerate, black = keep");
  app.add_option("--factor", args->factor,
                 "superres: block-average a full-size image by this factor (without it, --image "
                 "is a low-resolution image whose size divides the model's)")
      ->check(at_least(2));
  app.add_option("--sigma", args->sigma, "denoise: the image's noise level");
  app.add_flag("--add-noise", args->add_noise, "denoise: add noise of level --sigma first");
  app.add_option("--seed2", args->seed2, "interpolate: the second seed")->check(seed_value());
  app.add_option("--frames", args->frames, "interpolate: images from --seed to --seed2")
      ->capture_default_str();
  app.add_option(
         "-o,--output", args->output,
         "output .png (several images: numbered, or a %d in the name), .npy (float32 NHWC in "
         "[0,1]) or .npz (arr_0 uint8 NHWC, arr_1 labels)")
      ->capture_default_str();
  app.add_option("-n,--batch-size", args->batch_size, "samples of the edit")->capture_default_str();
  app.add_option("--steps", args->steps,
                 "time points evenly spaced over the training grid (default 20; stroke: "
                 "sigmas 5.38,2.24)");
  app.add_option("--timesteps", args->timesteps,
                 "explicit descending indices into the training grid (overrides --steps)")
      ->check(not_empty());
  app.add_option("--sigmas", args->sigmas, "explicit descending noise levels, e.g. 5.38,2.24")
      ->check(not_empty());
  app.add_option("--class", args->classes, "class label for class-conditional models")
      ->check(not_empty());
  app.add_option("-s,--seed", args->seed, "random seed (random and printed when absent)")
      ->check(seed_value());
  app.add_option("--dtype", args->dtype,
                 "float32 (exact), bfloat16, float16, or auto (bfloat16 where the CPU or GPU "
                 "computes it natively, else float32)")
      ->capture_default_str();
  app.add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  app.add_option(
      "-t,--threads", args->threads,
      "CPU threads (default 0: the cores other processes leave free, checked before each "
      "network call)");
  app.add_flag("--grid", args->grid,
               "one PNG: input, what the model sees, result(s) side by side (interpolate: the "
               "frames)");
  app.add_flag("--no-resize", args->no_resize,
               "reject an image of another size than the model's instead of resizing it");
  app.add_flag("-q,--quiet", args->quiet, "no progress output on stderr");
  return [args, &app] {
    for (const auto& f : kTaskFlags)
      if (app.count(f.flag)) args->given.push_back(f.flag);
    return run_edit(*args);
  };
}

}  // namespace cm::cli
