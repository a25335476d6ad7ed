// cm train: consistency training (iCT, CT), distillation (CD), EDM teacher training and ECT.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "cm/error.h"
#include "cm/training.h"
#include "common.h"
#include "subcommands.h"

namespace cm::cli {
namespace {

struct TrainArgs {
  TrainOptions o;
  std::string unet_config;  // a config.json for the architecture, overriding the flags below
  std::string channels = "32,64,64";
  int layers_per_block = 1;
  int head_dim = 32;
  int norm_groups = 8;
  double dropout = 0.0;
  int sample_size = 28;
  int in_channels = 1;
  int num_classes = -1;  // -1: the data's class count; 0: unconditional
  int threads = 0;
  bool quiet = false;
  // The architecture flags, to refuse them where the architecture comes from a file.
  std::vector<CLI::Option*> architecture_flags;
  CLI::Option* dropout_flag = nullptr;
};

// Ctrl-C: the run stops after the current step with a checkpoint (the library asks through
// TrainOptions::stop_requested); the previous handler comes back however training ends.
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

struct SigintStops {
  SigintStops() : previous(std::signal(SIGINT, on_sigint)) { g_interrupted = false; }
  ~SigintStops() { std::signal(SIGINT, previous); }
  void (*previous)(int);
};

// --unet-config's file, else --init's folder's config.json, else the flags; --dropout applies to
// all three (it is a training choice, not architecture).
UNetConfig architecture(const TrainArgs& a) {
  std::string file = a.unet_config;
  if (file.empty() && !a.o.init.empty()) file = init_unet_dir(a.o.init) + "/config.json";
  if (!file.empty()) {
    for (const auto* flag : a.architecture_flags)
      if (flag->count() > 0)
        throw Error(flag->get_name() + ": the architecture comes from " + file +
                    " (--unet-config or --init); leave the flag out");
    auto c = UNetConfig::load(file);
    if (a.dropout_flag->count() > 0) c.dropout = a.dropout;
    return c;
  }
  UNetConfig c;
  c.sample_size = a.sample_size;
  c.in_channels = c.out_channels = a.in_channels;
  c.block_out_channels.clear();
  for (auto ch : parse_int_list("--channels", a.channels))
    c.block_out_channels.push_back(static_cast<int>(ch));
  const size_t levels = c.block_out_channels.size();
  // The ImageNet-64 checkpoints' shape in miniature: resnet resampling, attention at the
  // lowest resolution, scale-shift time conditioning.
  c.down_block_types.assign(levels, "ResnetDownsampleBlock2D");
  c.up_block_types.assign(levels, "ResnetUpsampleBlock2D");
  c.down_block_types.back() = "AttnDownBlock2D";
  c.up_block_types.front() = "AttnUpBlock2D";
  c.downsample_type = c.upsample_type = "resnet";
  c.layers_per_block = a.layers_per_block;
  c.attention_head_dim = a.head_dim;
  c.norm_num_groups = a.norm_groups;
  c.attn_norm_num_groups = a.norm_groups;
  c.resnet_time_scale_shift = "scale_shift";
  c.dropout = a.dropout;
  if (a.num_classes > 0) c.num_class_embeds = a.num_classes;
  if (a.num_classes < -1) throw Error("--num-classes: must be 0 or more");
  c.validate("--channels/--layers-per-block/--head-dim/--norm-groups");
  return c;
}

int run_train(TrainArgs& a) {
  set_threads(a.threads, /*adaptive=*/false);  // a run resumes bit for bit on a busy machine too
  a.o.unet = architecture(a);
  a.o.classes_from_data = a.unet_config.empty() && a.o.init.empty() && a.num_classes == -1;
  a.o.distributed = distributed_from_env();
  const bool main = a.o.distributed.rank == 0;
  if (a.o.resume && main) {
    std::fprintf(stderr, "resuming %s from step %lld\n", a.o.output_dir.c_str(),
                 static_cast<long long>(checkpoint_step(a.o.output_dir)));
  }
  const auto start = std::chrono::steady_clock::now();
  a.o.log = stderr_log(a.quiet);
  if (a.o.eval_every > 0 && a.o.eval_classifier.empty()) {
    const char* env = std::getenv("CM_CLASSIFIER");
    a.o.eval_classifier =
        env ? env : shipped_model("fmnist-classifier", "--classifier DIR or set CM_CLASSIFIER");
  }
  SigintStops sigint;
  a.o.stop_requested = [] { return g_interrupted.load(); };
  const auto p = train(a.o, [&](const TrainProgress& p) {
    if (a.quiet) return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // images_per_second counts every process's images.
    const double left = p.images_per_second > 0
                            ? static_cast<double>(p.total_steps - p.step) * a.o.batch_size *
                                  a.o.distributed.world_size / p.images_per_second
                            : 0;
    std::fprintf(
        stderr, "step %lld/%lld  loss %.5f  N %lld  mu %.4f  %.1f img/s  %.0f s  left %.0f s\n",
        static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss,
        static_cast<long long>(p.num_scales), p.target_ema, p.images_per_second, elapsed, left);
    if (!std::isnan(p.frechet_1step)) {
      std::fprintf(stderr, "  eval: 1 step Fréchet %.3f accuracy %.4f, 2 steps Fréchet %.3f "
                   "accuracy %.4f\n", p.frechet_1step, p.accuracy_1step, p.frechet_2steps,
                   p.accuracy_2steps);
    }
  });
  if (main) std::printf("%s/checkpoint\n", a.o.output_dir.c_str());
  // A planned stop (--stop-after, --max-minutes) is a success: exit 0 with how to go on. Ctrl-C
  // keeps the shell's 130 (the checkpoint is written all the same).
  if (p.stop != TrainStop::kCompleted && main) {
    const char* why = p.stop == TrainStop::kStepLimit   ? "--stop-after"
                      : p.stop == TrainStop::kTimeLimit ? "--max-minutes"
                                                        : "Ctrl-C";
    std::fprintf(stderr,
                 "stopped at step %lld of %lld (%s); continue with the same command and --resume\n",
                 static_cast<long long>(p.step), static_cast<long long>(p.total_steps), why);
  }
  return p.stop == TrainStop::kRequested ? 130 : 0;
}

}  // namespace

Runner add_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto& o = a->o;
  app.add_option("--method", o.method,
                 "ict (default), ct, cd, edm (a diffusion model: the teacher for cd, the start "
                 "for ect, sct and scd), ect (consistency tuning, usually with --init), sct "
                 "(continuous-time consistency training in TrigFlow time, sCM; saves an "
                 "SCMScheduler pipeline) or scd (the same distilled from --teacher)")
      ->capture_default_str();
  app.add_option("--data", o.data,
                 "fashion-mnist[:train|:test], or a folder of PNG/JPEG images (one sub-folder per "
                 "class, or none), resized to --sample-size")
      ->capture_default_str();
  app.add_option("--data-limit", o.data_limit, "use only the first N images");
  app.add_option("-o,--output", o.output_dir, "run folder (checkpoint/, samples/, train_log.csv)")
      ->capture_default_str();
  app.add_option("--teacher", o.teacher,
                 "cd, scd: folder of an EDM-trained UNet (cm train --method edm)");
  app.add_option("--init", o.init,
                 "start from this UNet or pipeline folder's weights (its architecture too), e.g. "
                 "an edm run's teacher/ for ect")
      ->check(not_empty());
  app.add_option("--ect-stage-steps", o.ect_stage_steps,
                 "ect: steps per stage of r(t) (0: a eighth of --steps)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--ect-q", o.ect_q, "ect: r(t) approaches t by a factor q per stage")
      ->capture_default_str();
  app.add_option("--ect-k", o.ect_k, "ect: r(t)'s k (1 + k·sigmoid(-b·t))")->capture_default_str();
  app.add_option("--ect-b", o.ect_b, "ect: r(t)'s b")->capture_default_str();
  app.add_option("--ect-weighting", o.ect_weighting,
                 "ect: dt, 1/(t-r) (the reference's CIFAR-10 recipe), or snr, 1/t^2 + 1/sd^2 "
                 "(its ImageNet-64 one)")
      ->capture_default_str();
  app.add_option("--ect-c", o.ect_c, "ect: distance sqrt(|d|^2 + c^2) - c (0: the L2 norm)")
      ->capture_default_str();
  app.add_option("--sct-p-mean", o.sct_p_mean, "sct, scd: mean of ln(sigma)")->capture_default_str();
  app.add_option("--sct-p-std", o.sct_p_std, "sct, scd: deviation of ln(sigma)")->capture_default_str();
  app.add_option("--sct-sigma-max", o.sct_sigma_max,
                 "sct, scd: largest sigma trained at (beyond the 80 sampling starts from, as FastGen)")
      ->capture_default_str();
  app.add_option("--tangent-warmup", o.tangent_warmup,
                 "sct, scd: steps over which the tangent's second term grows from 0 to 1 (0: none)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--jvp", o.jvp,
                 "sct, scd: the tangent's derivative by forward-mode automatic differentiation (ad) or "
                 "float64 central differences (fd, slower)")
      ->capture_default_str();
  app.add_option("--tangent-norm-c", o.tangent_norm_c,
                 "sct, scd: tangent normalization g/(|g|/sqrt(D) + c)")
      ->capture_default_str();
  app.add_option("--steps", o.total_steps, "total training steps K")->capture_default_str();
  app.add_option("-n,--batch-size", o.batch_size,
                 "images per step and process (torchrun-style RANK/WORLD_SIZE/MASTER_ADDR/"
                 "MASTER_PORT in the environment start data-parallel training)")
      ->capture_default_str();
  app.add_option("--optimizer", o.optimizer, "adam or radam")->capture_default_str();
  app.add_option("--lr", o.lr, "learning rate")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear learning-rate warm-up steps")->capture_default_str();
  app.add_option("--grad-clip", o.grad_clip, "max gradient norm (0: off)")->capture_default_str();
  app.add_option("--ema-rate", o.ema_rate, "EMA rate of the sampling weights")
      ->capture_default_str();
  app.add_flag("--ema-warmup", o.ema_warmup,
               "EMA rate min(--ema-rate, (1+k)/(10+k)) at step k: the initial weights fade fast");
  app.add_option("--distance", o.distance, "ct/cd: l2, l1 or pseudo-huber")->capture_default_str();
  app.add_option("--ict-s0", o.ict_s0, "iCT: initial number of discretization steps")
      ->capture_default_str();
  app.add_option("--ict-s1", o.ict_s1, "iCT: final number of discretization steps")
      ->capture_default_str();
  app.add_option("--ct-s0", o.ct_s0, "CT: initial N")->capture_default_str();
  app.add_option("--ct-s1", o.ct_s1, "CT: final N")->capture_default_str();
  app.add_option("--ct-mu0", o.ct_mu0, "CT: initial target EMA")->capture_default_str();
  app.add_option("--cd-scales", o.cd_scales, "cd: number of noise levels N")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of weights, data order and noise")->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")
      ->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "steps between sample grids (0: never)")
      ->capture_default_str();
  app.add_option("--log-every", o.log_every, "steps between log lines")->capture_default_str();
  app.add_option("--eval-every", o.eval_every,
                 "steps between evaluations of the EMA model (cm eval's one- and two-step Fréchet "
                 "distance and accuracy, into train_log.csv; 0: never)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--eval-per-class", o.eval_per_class, "samples per class of each evaluation")
      ->capture_default_str()
      ->check(at_least(1));
  app.add_option("--classifier", o.eval_classifier,
                 "classifier folder for --eval-every (default: the shipped one; $CM_CLASSIFIER)")
      ->check(not_empty());
  app.add_flag("--bf16", o.bf16, "bfloat16 autocast for the network");
  app.add_option("--device", o.device,
                 "cpu, or cuda: one GPU per process (LOCAL_RANK), NCCL between processes")
      ->capture_default_str();
  app.add_flag("--resume", o.resume, "continue from <output>/checkpoint");
  app.add_option("--stop-after", o.stop_after, "stop with a checkpoint after N steps of this run")
      ->check(at_least(1));
  app.add_option("--max-minutes", o.max_minutes, "stop with a checkpoint after this wall time");
  app.add_flag("-q,--quiet", a->quiet, "no progress lines");
  app.add_option("--unet-config", a->unet_config, "architecture as a diffusers config.json");
  auto& arch = a->architecture_flags;
  arch.push_back(
      app.add_option("--channels", a->channels, "block_out_channels")->capture_default_str());
  arch.push_back(app.add_option("--layers-per-block", a->layers_per_block)->capture_default_str());
  arch.push_back(
      app.add_option("--head-dim", a->head_dim, "attention_head_dim")->capture_default_str());
  arch.push_back(
      app.add_option("--norm-groups", a->norm_groups, "norm_num_groups")->capture_default_str());
  a->dropout_flag = app.add_option("--dropout", a->dropout,
                                   "dropout probability (also over --unet-config's or --init's)")
                        ->capture_default_str();
  arch.push_back(app.add_option("--sample-size", a->sample_size)->capture_default_str());
  arch.push_back(app.add_option("--in-channels", a->in_channels)->capture_default_str());
  arch.push_back(app.add_option("--num-classes", a->num_classes,
                                "class embeddings (default: the data's class count; 0: "
                                "unconditional)")
                     ->check(at_least(0)));
  app.add_option("-t,--threads", a->threads, "CPU threads (default: all)");
  return [a] { return run_train(*a); };
}

Runner add_plot_log(CLI::App& app) {
  struct Args {
    std::vector<std::string> logs, labels;
    std::vector<double> images_before, batch;
    std::string image = "loss.png";
  };
  auto a = std::make_shared<Args>();
  app.add_option("logs", a->logs,
                 "a train_log.csv written by cm train; with several, their evaluations against "
                 "the images seen, in one chart")
      ->required();
  app.add_option("-o,--output", a->image, "image to write: .png or .jpg")->capture_default_str();
  app.add_option("--label", a->labels, "each log's legend entry (comma-separated, in order)")
      ->delimiter(',');
  app.add_option("--images-before", a->images_before,
                 "each log's images seen before its step 0, e.g. a --init model's pretraining "
                 "(comma-separated)")
      ->delimiter(',');
  app.add_option("--batch", a->batch,
                 "each log's images per step, for logs without an images column (0: the "
                 "column; comma-separated)")
      ->delimiter(',');
  return [a] {
    const size_t n = a->logs.size();
    const bool compare = n > 1 || !a->labels.empty() || !a->images_before.empty() ||
                         !a->batch.empty();
    if (!compare) {
      const auto p = plot_training_log(a->logs[0], a->image);
      std::printf("%s: loss %.4g to %.4g (log scale) over steps %.0f to %.0f", a->image.c_str(),
                  p.min_loss, p.max_loss, p.first_step, p.last_step);
      if (p.evaluations > 0)
        std::printf("; %lld evaluations (Fréchet distance, accuracy) below",
                    static_cast<long long>(p.evaluations));
      std::printf("\n");
      return 0;
    }
    auto check_count = [&](size_t count, const char* flag) {
      if (count != 0 && count != n)
        throw Error(std::string(flag) + ": " + std::to_string(count) + " values for " +
                    std::to_string(n) + " logs (one per log, in order)");
    };
    check_count(a->labels.size(), "--label");
    check_count(a->images_before.size(), "--images-before");
    check_count(a->batch.size(), "--batch");
    std::vector<QualityRun> runs(n);
    for (size_t i = 0; i < n; ++i) {
      runs[i].csv_path = a->logs[i];
      if (!a->labels.empty()) runs[i].label = a->labels[i];
      if (!a->images_before.empty()) runs[i].images_before = a->images_before[i];
      if (!a->batch.empty()) runs[i].images_per_step = a->batch[i];
    }
    const auto p = plot_quality_against_images(runs, a->image);
    std::printf("%s: %lld evaluations of %zu runs against images seen (up to %.0f)\n",
                a->image.c_str(), static_cast<long long>(p.evaluations), n, p.max_images);
    return 0;
  };
}

}  // namespace cm::cli
