// Training consistency models: iCT (default), the original CT, consistency distillation (CD) from
// an EDM teacher, EDM training of that teacher, and ECT (consistency tuning of a pretrained
// diffusion model, Geng et al. 2024) and sCT (continuous-time consistency training in TrigFlow
// time, Lu & Song 2024). What it saves is a diffusers pipeline folder.
#pragma once

#include <cmath>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cm/config.h"
#include "cm/distributed.h"
#include "cm/log.h"

namespace cm {

struct TrainOptions {
  std::string method = "ict";  // ict | ct | cd | edm | ect | sct | scd
  // "fashion-mnist[:train|:test]", or a folder of PNG/JPEG images (one sub-folder per class, or
  // unlabelled), read at the model's sample_size and in_channels.
  std::string data = "fashion-mnist";
  int64_t data_limit = 0;              // > 0: use only the first N images
  bool classes_from_data = false;      // set unet.num_class_embeds to the data's class count
  std::string output_dir = "runs/cm";
  UNetConfig unet;             // the architecture (sample_size and channels must match the data)
  SchedulerConfig scheduler;   // σmin, σmax, σdata, ρ of the parameterization
  std::string teacher;         // cd, scd: folder of an EDM-trained UNet (--method edm output)
  // The run's initial weights: a UNet folder (config.json + weights) or a pipeline folder with
  // unet/, of the same architecture as `unet` (dropout aside) — typically --method edm's
  // teacher/ for ECT. Empty: random weights from `seed`.
  std::string init;

  int64_t total_steps = 10000;  // K
  int64_t batch_size = 64;   // per process: the global batch is batch_size × world_size
  std::string optimizer = "adam";  // adam | radam
  double lr = 1e-4;
  int64_t warmup = 1000;
  double grad_clip = 1.0;     // max gradient norm; <= 0 disables
  double ema_rate = 0.9999;   // EMA of the weights used for sampling
  // EMA warm-up: step k (from 0) uses min(ema_rate, (1 + k)/(10 + k)), so the sampling weights
  // forget the random initialisation within the first few hundred steps instead of ~1/(1 − rate).
  bool ema_warmup = false;
  // iCT
  int64_t ict_s0 = 10, ict_s1 = 1280;
  double p_mean = -1.1, p_std = 2.0;
  // CT / CD
  int64_t ct_s0 = 2, ct_s1 = 150;
  double ct_mu0 = 0.9;
  int64_t cd_scales = 18;        // CD: fixed N
  double cd_target_ema = 0.95;   // CD: fixed μ
  std::string distance = "l2";   // CT / CD: l2 | l1 | pseudo-huber
  // ECT: t log-normal (p_mean, p_std), r = ect_r(t, stage) with the stage advancing every
  // ect_stage_steps steps (0: total_steps/8, rounded up, as the reference's 8 stages), the same
  // noise for both points, the online network (its dropout masks replayed, no gradient) as the
  // target, distance √(‖·‖² + c²) − c weighted by 1/(t − r) ("dt", the reference's CIFAR-10
  // recipe) or 1/t² + 1/σd² ("snr", its ImageNet-64 one).
  int64_t ect_stage_steps = 0;
  double ect_q = 2.0, ect_k = 8.0, ect_b = 1.0, ect_c = 0.0;
  std::string ect_weighting = "dt";
  // sCT / sCD (sCM from data / distilled from `teacher`'s velocity, Lu & Song 2024, as
  // NVlabs/FastGen's sCM.py): the UNet is an EDM
  // denoiser seen in TrigFlow time t = atan(σ/σd); σ log-normal (sct_p_mean, sct_p_std) in
  // [σmin, sct_sigma_max]; the tangent's time derivative dF⁻/dt by forward-mode automatic
  // differentiation (jvp "ad", with the online pass's dropout masks) or central differences of a
  // float64 copy of the network ("fd", a step of 10⁻⁵ in ln σ); tangent warm-up over
  // tangent_warmup steps, tangent
  // normalization g/(‖g‖/√D + tangent_norm_c); the adaptive weight e^−logvar from a linear head on
  // the time's sinusoidal features (kept in the training state, not in the sampling model).
  double sct_p_mean = -1.0, sct_p_std = 1.4, sct_sigma_max = 800;
  int64_t tangent_warmup = 10000;
  std::string jvp = "ad";  // ad | fd
  double tangent_norm_c = 0.1;
  // EDM teacher
  double edm_p_mean = -1.2, edm_p_std = 1.2;

  uint64_t seed = 0;
  int64_t checkpoint_every = 1000;  // 0: only at the end (and when stopped)
  int64_t sample_every = 1000;   // sample grid PNG (one image per class), 0 disables
  // Every N steps (0: never), cm eval's figures for the EMA model go into train_log.csv's
  // frechet_1step, accuracy_1step, frechet_2steps and accuracy_2steps columns: eval_per_class
  // one- and two-step samples per class (the same seeds each time) against the real test images,
  // through `eval_classifier`. Fashion-MNIST-shaped (1×28×28) models only.
  int64_t eval_every = 0;
  int64_t eval_per_class = 100;
  std::string eval_classifier;
  int64_t log_every = 10;
  bool bf16 = false;             // bfloat16 autocast for the forward passes
  // "cpu", or "cuda": each process trains on one GPU, cuda:(LOCAL_RANK, else RANK modulo the
  // GPU count), and data parallelism goes through NCCL instead of Gloo. "cuda:N" pins one GPU.
  std::string device = "cpu";
  bool resume = false;
  int64_t stop_after = 0;       // > 0: stop (with a checkpoint) after this many steps of this run
  double max_minutes = 0;       // > 0: stop (with a checkpoint) after this much wall time
  // Asked before every step; true stops the run after a checkpoint. The library installs no
  // signal handler: `cm train` answers it from its own Ctrl-C handler.
  std::function<bool()> stop_requested;
  LogCallback log;  // notes from the run (unreadable data files skipped); progress: train()'s on_log
  DistributedOptions distributed;
};

// sct and scd: the model is an sCM (TrigFlow) one, saved and sampled with SCMScheduler.
inline bool is_trigflow_method(const std::string& method) {
  return method == "sct" || method == "scd";
}

// Why train() returned.
enum class TrainStop {
  kCompleted,  // total_steps reached
  kStepLimit,  // stop_after steps of this run
  kTimeLimit,  // max_minutes
  kRequested,  // stop_requested() said so
};
const char* train_stop_name(TrainStop stop);

struct TrainProgress {
  int64_t step = 0;        // steps done
  int64_t total_steps = 0;
  double loss = 0;
  int64_t num_scales = 0;  // N(k); ECT: the stage (from 0)
  double target_ema = 0;   // μ(k) (0 for iCT: the target is the online network)
  double images_per_second = 0;
  // Set on the steps that were evaluated (eval_every), else NaN.
  double frechet_1step = std::nan(""), accuracy_1step = std::nan("");
  double frechet_2steps = std::nan(""), accuracy_2steps = std::nan("");
  TrainStop stop = TrainStop::kCompleted;  // in train()'s result
};

using TrainCallback = std::function<void(const TrainProgress&)>;

// Runs (or resumes) training; returns the final progress. Writes, under output_dir: checkpoint/
// (pipeline folder of the EMA weights + training_state.safetensors), train_log.csv,
// samples/step_<k>.png. A stop before total_steps (stop_after, max_minutes, stop_requested) comes
// after the current step, with a checkpoint to resume from. With more than one process, rank 0
// writes and calls on_log, every rank stops at the same step, and every rank resumes from
// output_dir.
TrainProgress train(const TrainOptions& options, const TrainCallback& on_log = nullptr);

struct LossPlot {
  double first_step = 0, last_step = 0, min_loss = 0, max_loss = 0;
  int64_t evaluations = 0;  // logged --eval-every rows, drawn in panels below the loss
};
// Draws train_log.csv's loss against step (log scale, moving average) with labelled axes, and
// its evaluation columns (if any) below, into a PNG or JPEG (by `image_path`'s extension).
LossPlot plot_training_log(const std::string& csv_path, const std::string& image_path);

// One run of a cost-to-quality chart.
struct QualityRun {
  std::string csv_path;      // a train_log.csv with evaluations (cm train --eval-every)
  std::string label;         // its legend entry
  double images_before = 0;  // images seen before the log's step 0 (e.g. a --init model's)
  // Images per step (the global batch) for logs without an `images` column (before 2026-12-08);
  // 0: the log's own column.
  double images_per_step = 0;
};
struct QualityPlot {
  int64_t evaluations = 0;  // points drawn, over all runs
  double max_images = 0;
};
// Draws the runs' one- and two-step Fréchet distance (log scale) and class accuracy against the
// images seen (pretraining counted through images_before), one colour per run, into a PNG or JPEG.
QualityPlot plot_quality_against_images(const std::vector<QualityRun>& runs,
                                        const std::string& image_path);

// The UNet folder TrainOptions::init names: the folder itself, or its unet/ (a pipeline folder).
// Throws cm::Error naming --init when neither holds a config.json.
std::string init_unet_dir(const std::string& init);

// Number of steps stored in a training-state checkpoint (for --resume messages and tests).
int64_t checkpoint_step(const std::string& output_dir);

}  // namespace cm
