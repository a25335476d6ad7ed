// ConsistencyModelPipeline: noise to images in one or a few UNet evaluations, with the same
// numbers and the same random draws as diffusers' pipeline of that name.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cm/scheduler.h"
#include "cm/scm_scheduler.h"
#include "cm/unet.h"

namespace cm {

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // float32 (exact), bfloat16 or float16
  at::Device device = at::kCPU;
  std::string variant;  // weights variant, e.g. "fp16": diffusion_pytorch_model.fp16.safetensors
  // CUDA: one copy of the model on each of these GPUs, and every batch split over them in
  // contiguous parts (the noise is drawn for the whole batch first, so the images are those of
  // one GPU). Empty: `device` alone.
  std::vector<int> devices;
  // CUDA float32: let cuDNN and cuBLAS use TF32 (faster, ~1e-3 off). Off keeps float32 exact;
  // LibTorch's switches are process-wide, so loading a CUDA model sets them.
  bool allow_tf32 = false;
  // CPU float32: 3×3 convolutions by oneDNN's Winograd algorithm where this CPU and build have
  // it (winograd_supported()): fewer multiplications, faster on large layers, ~1e-5 off the
  // direct convolution per layer (docs/performance.md). Off keeps float32 exact.
  bool winograd = false;
};

// Whether LoadOptions::winograd takes effect here: this build calls oneDNN directly (LibTorch
// 1.13) and oneDNN has a float32 Winograd kernel for this CPU (AVX-512).
bool winograd_supported();

// Called after each step with the step index, the step count, the timestep and the sample.
using StepCallback = std::function<void(int step, int num_steps, double timestep,
                                        const at::Tensor& sample)>;

struct GenerateOptions {
  int batch_size = 1;
  // Empty: random labels for a class-conditional model (drawn as torch.randint would after
  // torch.manual_seed(seed), so they too follow the seed). One label: used for every image.
  std::vector<int64_t> class_labels;
  int num_inference_steps = 1;
  std::vector<int64_t> timesteps;  // explicit descending indices; override num_inference_steps
  uint64_t seed = 0;               // torch.Generator().manual_seed(seed)
  std::optional<at::Tensor> latents;  // [B, C, H, W] unit-variance noise instead of a seeded draw
  // CUDA: the whole sampling loop (every step, the scheduler's arithmetic included) is captured
  // once per (device, batch size, timesteps, dtype) as a CUDA graph and replayed: the C++
  // counterpart of torch.compile(mode="reduce-overhead"). Replays give eager execution's numbers
  // bit for bit; on_step then runs after the replay, once per step, with the final sample.
  bool cuda_graphs = true;
  StepCallback on_step;
};

struct GenerateResult {
  at::Tensor images;                  // [B, H, W, C] float32 in [0, 1] on the CPU
  std::vector<int64_t> class_labels;  // what was used (empty for unconditional models)
  std::vector<double> timesteps;      // the UNet time inputs of each step
};

// The labels a run uses: none for an unconditional model; the given ones (one for all images or
// one per image); or random ones following options.seed, as diffusers draws them. cm::Error when
// a label is out of range or the count does not fit the batch.
std::vector<int64_t> resolve_class_labels(const UNetConfig& config, const GenerateOptions& options);

// The UNet folder of a model folder: `unet/` of a pipeline folder (model_index.json), or the folder
// itself when it is a bare UNet folder (config.json); else cm::Error naming it.
std::string unet_folder(const std::string& model_dir);

// Writes a diffusers pipeline folder (model_index.json, unet/, scheduler/) for `unet`.
void save_pretrained(const std::string& dir, UNet2DModel& unet, const SchedulerConfig& scheduler);
// The same for a TrigFlow (sCM) model: scheduler/ is diffusers' SCMScheduler.
void save_pretrained(const std::string& dir, UNet2DModel& unet,
                     const SCMSchedulerConfig& scheduler);

// Threads: once constructed, a pipeline may be called from several threads at once (a server
// does): each call keeps its own scheduler state and random generator, and the CPU convolutions
// pack their weights once, under a lock, on the first call (tests/test_pipeline.cpp runs threads
// on one pipeline against the serial results). unet() and scheduler() hand out the shared
// objects: change them (load_state_dict, to(), the scheduler's timesteps) only while no call runs.
class ConsistencyModelPipeline {
 public:
  ConsistencyModelPipeline(UNet2DModel unet, CMStochasticIterativeScheduler scheduler);
  // A TrigFlow (sCM) model: the UNet is an EDM denoiser sampled in TrigFlow time
  // (cm::trigflow_velocity) with diffusers' SCMScheduler.
  ConsistencyModelPipeline(UNet2DModel unet, SCMScheduler scheduler);
  // A diffusers pipeline folder (model_index.json, unet/, scheduler/: a
  // CMStochasticIterativeScheduler or an SCMScheduler) or a bare UNet folder, in which case
  // CMStochasticIterativeScheduler's defaults apply.
  static ConsistencyModelPipeline from_pretrained(const std::string& path,
                                                  const LoadOptions& options = {});

  // Throws cm::Error on invalid options (batch size, labels, steps, timesteps, latents shape).
  // Each call keeps its own scheduler state.
  GenerateResult operator()(const GenerateOptions& options);

  // Writes a diffusers pipeline folder that from_pretrained (and diffusers) loads.
  void save_pretrained(const std::string& dir);

  UNet2DModel& unet() { return unet_; }
  // The consistency-model scheduler; for a TrigFlow pipeline, scm_scheduler() instead (and
  // editing, serving and CUDA graphs refuse such a pipeline for now).
  CMStochasticIterativeScheduler& scheduler() { return scheduler_; }
  bool is_trigflow() const { return scm_.has_value(); }
  // cm::Error when the pipeline is not a TrigFlow one.
  const SCMScheduler& scm_scheduler() const;
  // The devices a batch is split over (one entry on the CPU).
  std::vector<at::Device> devices() const;

  // The CUDA graphs captured so far (0 on the CPU): one per (device, batch, timesteps, dtype).
  size_t cuda_graph_count() const;

 private:
  struct CudaGraphs;
  at::Tensor sample_on(size_t replica, const GenerateOptions& o,
                       const CMStochasticIterativeScheduler& scheduler, const at::Tensor& noise,
                       const std::vector<at::Tensor>& step_noise,
                       const std::optional<at::Tensor>& labels);

  UNet2DModel unet_;
  GenerateResult generate_trigflow(const GenerateOptions& options);

  CMStochasticIterativeScheduler scheduler_;
  std::optional<SCMScheduler> scm_;
  std::vector<UNet2DModel> replicas_;  // further GPUs of LoadOptions::devices
  std::shared_ptr<CudaGraphs> graphs_;
};

}  // namespace cm
