// Zero-shot image editing with a consistency model: the paper's Algorithm 4 (Song et al. 2023).
//
// One mechanism serves every task. An orthogonal linear transform A and a mask Ω in A's space
// say which coefficients of the result come from a reference image y; the model fills in the
// rest. With time points t₁ > … > t_N and the denoiser D of the pipeline:
//   y ← A⁻¹[A(y)·Ω + A(b)·(1−Ω)]        (b: the task's baseline image)
//   x ← y + t₁·z
//   for each i: x₀ = clamp(D(x, tᵢ), −1, 1);  x₀ ← A⁻¹[A(y)·Ω + A(x₀)·(1−Ω)];
//               x ← x₀ + √(tᵢ₊₁² − σ_min²)·z  (no noise after the last point)
// A new task is a new (A, Ω, b), not a new loop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cm/image_io.h"
#include "cm/pipeline.h"

namespace cm {

// ---- The mechanism ----

// An orthogonal map on images [B, C, H, W] (so A⁻¹ = Aᵀ) whose coefficients keep the image's
// layout. Computed in float64 whatever the input's dtype, returned in the input's dtype.
class LinearTransform {
 public:
  static LinearTransform identity();
  // 3x3 on the channels; coefficient 0 is the luminance axis (0.2989, 0.5870, 0.1140)/‖·‖.
  static LinearTransform colour();
  // p²xp² on each channel's non-overlapping pxp patches; coefficient 0, stored at the patch's
  // top-left pixel, is the uniform axis: the patch sum / p, i.e. p times the patch mean.
  static LinearTransform patches(int p);

  at::Tensor forward(const at::Tensor& images) const;        // A
  at::Tensor inverse(const at::Tensor& coefficients) const;  // A⁻¹
  bool is_identity() const { return kind_ == Kind::kIdentity; }
  int patch_size() const { return patch_; }
  // The orthogonal matrix, float64, one basis vector per column (column 0 the first axis);
  // undefined for the identity.
  const at::Tensor& matrix() const { return q_; }

 private:
  enum class Kind { kIdentity, kColour, kPatches };
  Kind kind_ = Kind::kIdentity;
  int patch_ = 1;
  at::Tensor q_;
};

// The n x n orthogonal matrix whose first column is first_axis/‖first_axis‖, completed by
// Gram-Schmidt over the standard basis: deterministic, float64.
at::Tensor orthogonal_completion(const std::vector<double>& first_axis);

// A and Ω: which coefficients come from the reference. mask broadcasts against [B, C, H, W]
// coefficients (1 = the reference's, 0 = the model's); undefined means nothing is kept.
struct Projection {
  LinearTransform transform = LinearTransform::identity();
  at::Tensor mask;

  // A⁻¹[A(keep)·Ω + A(rest)·(1−Ω)], in rest's dtype.
  at::Tensor operator()(const at::Tensor& keep, const at::Tensor& rest) const;
};

// The projections of the tasks. keep: [1, 1, H, W], 1 where the reference's pixels stay.
Projection inpainting_projection(const at::Tensor& keep);
Projection colorization_projection();
Projection superres_projection(int factor, int height, int width);

// Unit Gaussian noise of a given shape, float32 on the CPU, one call per draw.
using NoiseSource = std::function<at::Tensor(at::IntArrayRef shape)>;
// at::randn from torch.Generator().manual_seed(seed), as the pipeline draws.
NoiseSource seeded_noise(uint64_t seed);
// Each draw the spherical interpolation of the draws of two seeded streams at weight t: t = 0 is
// seed_a's stream exactly, t = 1 seed_b's.
NoiseSource slerp_noise(uint64_t seed_a, uint64_t seed_b, double t);
at::Tensor slerp(const at::Tensor& a, const at::Tensor& b, double t);

struct EditProblem {
  Projection projection;
  at::Tensor reference;     // y: [1 or B, C, H, W] in [-1, 1]
  at::Tensor baseline;      // b: what the unkept coefficients of y start as, same shape (or scalar)
  bool noise_start = true;  // false: y is taken as already noisy at t₁ (x ← y)
  // Also draw and add noise after the last point when there are several, scaled as the
  // scheduler's step does (√(σ_min(float32)² − σ_min²), about 6e-7): what the pipeline does, so
  // that with nothing kept the loop reproduces its multistep images to the bit.
  bool pipeline_last_step = false;
};

struct ZeroShotOutput {
  at::Tensor samples;    // [B, C, H, W] float32: the last x₀, not clamped after the projection
  at::Tensor projected;  // [1 or B, C, H, W] float32: the projected reference y
  at::Tensor start;      // [B, C, H, W] float32: x before the first evaluation
};

// Algorithm 4 at the scheduler's current time points (sigmas(), timesteps()); noise drawn as
// `noise` gives it: once for the start (when noise_start), then after every point but the last
// (see pipeline_last_step).
// The denoiser is the pipeline's: the UNet on scale_model_input(x) at 250·ln σ, then the
// scheduler's boundary-condition scalings. labels: one per sample, or empty.
ZeroShotOutput run_zero_shot(ConsistencyModelPipeline& pipe, const EditProblem& problem,
                             int batch_size, const std::vector<int64_t>& labels,
                             const NoiseSource& noise, const StepCallback& on_step = nullptr);

// ---- The tasks ----

enum class EditTask { kInpaint, kColorize, kSuperres, kStroke, kInterpolate, kDenoise };
const char* edit_task_name(EditTask task);
// "inpaint", "colorize", "superres", "stroke", "interpolate", "denoise"; cm::Error otherwise.
EditTask parse_edit_task(const std::string& name);

struct EditOptions {
  EditTask task = EditTask::kInpaint;
  // The reference, gray, RGB or RGBA, at the model's size (superres: or a low-resolution image
  // whose size divides it). Not used by interpolate.
  ImageU8 image;
  ImageU8 mask;            // inpaint: white (>= 128) = regenerate, black = keep; the image's size
  int factor = 0;          // superres: the patch size; 0 = the model's size / the image's size
  double sigma = 0;        // denoise: the image's noise level S
  bool add_noise = false;  // denoise: add S·z (seeded) to the image first
  uint64_t seed2 = 1;      // interpolate: the second seed
  int frames = 8;          // interpolate: images from seed to seed2, both included
  int batch_size = 1;      // samples per edit (interpolate: one per frame)
  // Time points: explicit σ values, else explicit indices into the training grid (as in
  // generation), else this many evenly spaced indices; 0 = the task's default (20, capped at the
  // grid's size; stroke: σ 5.38 then 2.24; denoise: sigma).
  int num_inference_steps = 0;
  std::vector<int64_t> timesteps;
  std::vector<double> sigmas;
  uint64_t seed = 0;
  std::vector<int64_t> class_labels;  // as in GenerateOptions (interpolate: one for all frames)
  StepCallback on_step;               // interpolate: steps counted over all frames
};

struct EditResult {
  at::Tensor images;     // [B, H, W, C] float32 in [0, 1] on the CPU
  at::Tensor samples;    // [B, C, H, W] float32 in model space, before clamping to [-1, 1]
  at::Tensor reference;  // [1, H, W, C] in [0, 1]: the input at the model's size and channels
  at::Tensor projected;  // [1, H, W, C] in [0, 1]: what the model sees (denoise with add_noise:
                         // the noised image)
  std::vector<int64_t> class_labels;
  std::vector<double> sigmas;  // the time points
  int factor = 0;              // superres: the patch size used
};

// Throws cm::Error naming the option and value for anything that does not fit the model.
EditResult edit(ConsistencyModelPipeline& pipe, const EditOptions& options);

// An 8-bit image as [1, C, H, W] float32 in [-1, 1] with the given channel count.
at::Tensor image_to_tensor(const ImageU8& image, int channels);

}  // namespace cm
