// The editing tasks: each turns its options into an (A, Ω, baseline) problem for the one loop.
#include <algorithm>
#include <string>

#include "cm/editing.h"
#include "cm/error.h"

namespace cm {

namespace {

struct TaskName {
  EditTask task;
  const char* name;
};
constexpr TaskName kTasks[] = {
    {EditTask::kInpaint, "inpaint"},         {EditTask::kColorize, "colorize"},
    {EditTask::kSuperres, "superres"},       {EditTask::kStroke, "stroke"},
    {EditTask::kInterpolate, "interpolate"}, {EditTask::kDenoise, "denoise"},
};

// SDEdit's time points in the paper's stroke-guided generation.
const std::vector<double> kStrokeSigmas = {5.38, 2.24};
constexpr int kDefaultSteps = 20;

std::string size_text(int w, int h) {
  return std::to_string(w) + "x" + std::to_string(h);
}

at::Tensor to_display(const at::Tensor& x) {
  return (x.to(at::kFloat) / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1}).contiguous();
}

// What a task hands to the loop, plus what the result reports about it.
struct Setup {
  EditProblem problem;
  at::Tensor reference;  // [1, C, H, W] in [-1, 1], for display
  int factor = 0;
};

void require_model_size(const ImageU8& image, int size, const std::string& what) {
  if (image.width != size || image.height != size)
    throw Error(what + ": " + size_text(image.width, image.height) + " is not the model's size " +
                size_text(size, size));
}

void require_image(const EditOptions& o) {
  if (o.image.pixels.empty()) throw Error(std::string(edit_task_name(o.task)) + ": needs an image");
}

Setup set_up_inpaint(const EditOptions& o, int channels, int size) {
  require_image(o);
  if (o.mask.pixels.empty()) throw Error("inpaint: needs a mask (white = regenerate)");
  if (o.mask.width != o.image.width || o.mask.height != o.image.height)
    throw Error("mask: " + size_text(o.mask.width, o.mask.height) + " is not the image's size " +
                size_text(o.image.width, o.image.height));
  require_model_size(o.image, size, "image");
  Setup s;
  s.reference = image_to_tensor(o.image, channels);
  const auto white = image_to_tensor(o.mask, 1) >= 0;  // 128..255 map to [0.0039, 1]
  const auto keep = (~white).to(at::kFloat);
  s.problem.projection = inpainting_projection(keep);
  s.problem.reference = s.reference;
  s.problem.baseline = at::full_like(s.reference, -1);  // the holes start black, as in the paper
  return s;
}

Setup set_up_colorize(const EditOptions& o, int channels, int size) {
  require_image(o);
  if (channels != 3)
    throw Error("colorize: needs a 3-channel model, this one has " + std::to_string(channels));
  require_model_size(o.image, size, "image");
  Setup s;
  s.reference = image_to_tensor(o.image, channels);
  s.problem.projection = colorization_projection();
  s.problem.reference = s.reference;
  // The neutral gray of the same luminance, so the model sees the gray photograph. (The original
  // code starts from zero chroma coefficients, a green-tinted image; t₁·z swamps either.)
  const auto w = at::tensor(std::vector<float>{0.2989f, 0.5870f, 0.1140f}).reshape({1, 3, 1, 1});
  s.problem.baseline = ((s.reference * w).sum(1, true) / w.sum()).expand_as(s.reference);
  return s;
}

Setup set_up_superres(const EditOptions& o, int channels, int size) {
  require_image(o);
  Setup s;
  at::Tensor y = image_to_tensor(o.image, channels);
  if (o.factor == 0) {
    // A low-resolution image: the factor is how many times it fits into the model's size.
    if (o.image.width != o.image.height || size % o.image.width != 0 || o.image.width == size)
      throw Error("image: " + size_text(o.image.width, o.image.height) +
                  " does not divide the model's size " + size_text(size, size) +
                  " (give a full-size image and a factor instead)");
    s.factor = size / o.image.width;
    y = y.repeat_interleave(s.factor, 2).repeat_interleave(s.factor, 3);
  } else {
    if (o.factor < 2 || size % o.factor != 0)
      throw Error("factor: " + std::to_string(o.factor) + " does not divide the model's size " +
                  std::to_string(size) + " (or is below 2)");
    require_model_size(o.image, size, "image");
    s.factor = o.factor;
  }
  s.reference = y;
  s.problem.projection = superres_projection(s.factor, size, size);
  s.problem.reference = y;
  // Black, as in the paper; only its block means would matter, and those are kept from y.
  s.problem.baseline = at::full_like(y, -1);
  return s;
}

// SDEdit: nothing is kept; the stroke painting itself is what gets noised.
Setup set_up_stroke(const EditOptions& o, int channels, int size) {
  require_image(o);
  require_model_size(o.image, size, "image");
  Setup s;
  s.reference = image_to_tensor(o.image, channels);
  s.problem.reference = s.reference;
  s.problem.baseline = s.reference;
  return s;
}

// Nothing kept either; the image is taken as already noisy at sigma unless noise is added here.
Setup set_up_denoise(const EditOptions& o, int channels, int size) {
  Setup s = set_up_stroke(o, channels, size);
  s.problem.noise_start = o.add_noise;
  return s;
}

Setup set_up(const EditOptions& o, int channels, int size) {
  switch (o.task) {
    case EditTask::kInpaint:
      return set_up_inpaint(o, channels, size);
    case EditTask::kColorize:
      return set_up_colorize(o, channels, size);
    case EditTask::kSuperres:
      return set_up_superres(o, channels, size);
    case EditTask::kStroke:
      return set_up_stroke(o, channels, size);
    case EditTask::kDenoise:
      return set_up_denoise(o, channels, size);
    case EditTask::kInterpolate:
      break;
  }
  throw Error(std::string("no set-up for task ") + edit_task_name(o.task));
}

void set_time_points(CMStochasticIterativeScheduler& scheduler, const EditOptions& o) {
  const int n_train = scheduler.config().num_train_timesteps;
  if (o.task == EditTask::kDenoise) {
    if (!o.sigmas.empty() || !o.timesteps.empty() || o.num_inference_steps != 0)
      throw Error("denoise: evaluates once at sigma; steps, timesteps and sigmas do not apply");
    const auto& c = scheduler.config();
    if (!(o.sigma >= c.sigma_min && o.sigma <= c.sigma_max))
      throw Error("sigma: " + std::to_string(o.sigma) + " is outside the model's [" +
                  std::to_string(c.sigma_min) + ", " + std::to_string(c.sigma_max) + "]");
    scheduler.set_sigmas({o.sigma});
  } else if (!o.sigmas.empty()) {
    scheduler.set_sigmas(o.sigmas);
  } else if (!o.timesteps.empty()) {
    scheduler.set_timesteps(o.timesteps);
  } else if (o.num_inference_steps != 0) {
    scheduler.set_timesteps(o.num_inference_steps);
  } else if (o.task == EditTask::kStroke) {
    scheduler.set_sigmas(kStrokeSigmas);
  } else {
    scheduler.set_timesteps(std::min(kDefaultSteps, n_train));
  }
}

std::vector<int64_t> resolve_labels(ConsistencyModelPipeline& pipe, const EditOptions& o,
                                    int batch_size, uint64_t seed) {
  GenerateOptions g;
  g.batch_size = batch_size;
  g.class_labels = o.class_labels;
  g.seed = seed;
  return resolve_class_labels(pipe.unet()->config(), g);
}

EditResult interpolate(ConsistencyModelPipeline& pipe, const EditOptions& o, int channels,
                       int size) {
  if (o.frames < 1) throw Error("frames: must be at least 1, got " + std::to_string(o.frames));
  if (o.class_labels.size() > 1)
    throw Error("interpolate: one class label for all frames, got " +
                std::to_string(o.class_labels.size()));
  // The labels follow the first seed, as plain generation from it would draw them.
  const auto label = resolve_labels(pipe, o, 1, o.seed);
  EditProblem problem;  // nothing kept: plain sampling, from interpolated noise
  problem.reference = at::zeros({1, channels, size, size}, at::kFloat);
  problem.pipeline_last_step = true;
  const int steps = static_cast<int>(pipe.scheduler().num_steps());
  std::vector<at::Tensor> frames;
  for (int k = 0; k < o.frames; ++k) {
    const double t = o.frames == 1 ? 0.0 : static_cast<double>(k) / (o.frames - 1);
    StepCallback report;
    if (o.on_step)
      report = [&](int i, int, double timestep, const at::Tensor& x) {
        o.on_step(k * steps + i, o.frames * steps, timestep, x);
      };
    const auto out =
        run_zero_shot(pipe, problem, 1, label, slerp_noise(o.seed, o.seed2, t), report);
    frames.push_back(out.samples);
  }
  EditResult r;
  r.samples = at::cat(frames);
  r.images = to_display(r.samples);
  for (int k = 0; k < o.frames; ++k)
    r.class_labels.insert(r.class_labels.end(), label.begin(), label.end());
  return r;
}

}  // namespace

const char* edit_task_name(EditTask task) {
  for (const auto& t : kTasks)
    if (t.task == task) return t.name;
  return "?";
}

EditTask parse_edit_task(const std::string& name) {
  std::string all;
  for (const auto& t : kTasks) {
    if (name == t.name) return t.task;
    all += (all.empty() ? "" : ", ") + std::string(t.name);
  }
  throw Error("task: unknown '" + name + "' (" + all + ")");
}

at::Tensor image_to_tensor(const ImageU8& image, int channels) {
  const ImageU8 c = convert_channels(image, channels);
  auto u8 = at::from_blob(const_cast<uint8_t*>(c.pixels.data()), {c.height, c.width, channels},
                          at::kByte);
  return (u8.to(at::kFloat) / 127.5 - 1).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

EditResult edit(ConsistencyModelPipeline& pipe, const EditOptions& o) {
  if (pipe.is_trigflow())
    throw Error("the model is a TrigFlow (SCMScheduler) model: zero-shot editing does not take "
                "those yet");
  const UNetConfig& config = pipe.unet()->config();
  if (config.sample_size <= 0) throw Error("the UNet config has no sample_size");
  if (o.batch_size < 1)
    throw Error("batch size must be at least 1, got " + std::to_string(o.batch_size));
  const int channels = config.in_channels, size = config.sample_size;
  set_time_points(pipe.scheduler(), o);
  const auto& sigmas = pipe.scheduler().sigmas();
  const std::vector<double> points(sigmas.begin(), sigmas.end() - 1);
  if (o.task == EditTask::kInterpolate) {
    EditResult r = interpolate(pipe, o, channels, size);
    r.sigmas = points;
    return r;
  }

  const Setup s = set_up(o, channels, size);
  EditResult r;
  r.class_labels = resolve_labels(pipe, o, o.batch_size, o.seed);
  const auto out =
      run_zero_shot(pipe, s.problem, o.batch_size, r.class_labels, seeded_noise(o.seed), o.on_step);
  r.samples = out.samples;
  r.images = to_display(out.samples);
  r.reference = to_display(s.reference);
  // For a denoise of an image noised here, the noisy image is what the model sees.
  const bool noised_input = o.task == EditTask::kDenoise && o.add_noise;
  r.projected = to_display(noised_input ? out.start.slice(0, 0, 1) : out.projected);
  r.sigmas = points;
  r.factor = s.factor;
  return r;
}

}  // namespace cm
