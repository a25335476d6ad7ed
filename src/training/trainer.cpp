// The training loop. One step: draw a batch and noise from the seeded generator, compute the
// method's loss, average the gradients over the processes, Adam (or RAdam) step with warm-up and
// clipping, update target and EMA weights.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "cm/denoiser.h"
#include "cm/error.h"
#include "cm/eval.h"
#include "cm/output.h"
#include "cm/pipeline.h"
#include "cm/safetensors.h"
#include "cm/training.h"
#include "training/autocast.h"
#include "training/checkpoint.h"
#include "training/data.h"
#include "runtime/distributed.h"
#include "training/ode.h"
#include "training/radam.h"
#include "training/schedules.h"
#include "training/trigflow.h"
#include "models/embeddings.h"

namespace cm {

using namespace training;
namespace fs = std::filesystem;

namespace {

UNet2DModel clone_unet(const UNet2DModel& m) {
  UNet2DModel copy(m->config());
  copy->to(m->parameters().front().device());
  copy->load_state_dict(m->state_dict(), "copy");
  return copy;
}

void lerp_weights(UNet2DModel& into, const UNet2DModel& from, double keep) {
  torch::NoGradGuard no_grad;
  auto dst = into->parameters();
  auto src = from->parameters();
  for (size_t i = 0; i < dst.size(); ++i) dst[i].mul_(keep).add_(src[i], 1.0 - keep);
}

at::Tensor take(const std::vector<double>& grid, const at::Tensor& idx) {
  return at::tensor(grid, at::kDouble).index_select(0, idx).to(at::kFloat);
}

at::Tensor distance(const std::string& kind, const at::Tensor& a, const at::Tensor& b) {
  if (kind == "l2") return (a - b).pow(2).flatten(1).mean(1);
  if (kind == "l1") return (a - b).abs().flatten(1).mean(1);
  if (kind == "pseudo-huber") return pseudo_huber(a, b, pseudo_huber_c(a[0].numel()));
  throw Error("--distance: unknown value '" + kind + "' (l2, l1, pseudo-huber)");
}

// "cpu", "cuda" (this process's GPU: LOCAL_RANK, else RANK modulo the GPU count) or "cuda:N".
at::Device training_device(const std::string& name, const DistributedOptions& d) {
  if (name == "cpu") return at::kCPU;
  if (name.rfind("cuda", 0) != 0)
    throw Error("--device: unknown value '" + name + "' (cpu, cuda, cuda:N)");
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) throw Error("--device " + name + ": no CUDA device is visible to this process");
  int index = 0;
  if (name == "cuda") {
    index = d.local_rank >= 0 ? d.local_rank : d.rank % count;
  } else {
    try {
      const at::Device dev(name);
      index = dev.has_index() ? dev.index() : 0;
    } catch (const std::exception&) {
      throw Error("--device: bad value '" + name + "'");
    }
  }
  if (index >= count)
    throw Error("--device " + name + ": GPU " + std::to_string(index) + " does not exist (" +
                std::to_string(count) + " visible)");
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(index));
}

struct Batch {
  at::Tensor x;
  std::optional<at::Tensor> labels;
};

std::string text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Values the training arithmetic cannot use, refused by the flag's name before anything runs
// (a log interval of 0 divided by zero; N below 2 gave an empty multinomial).
void check_ranges(const TrainOptions& o) {
  auto at_least = [](int64_t v, int64_t min, const char* flag) {
    if (v < min)
      throw Error(std::string(flag) + ": must be at least " + std::to_string(min) + ", got " +
                  std::to_string(v));
  };
  at_least(o.log_every, 1, "--log-every");
  at_least(o.checkpoint_every, 0, "--checkpoint-every");  // 0: only at the end
  at_least(o.sample_every, 0, "--sample-every");
  at_least(o.warmup, 0, "--warmup");
  at_least(o.data_limit, 0, "--data-limit");
  at_least(o.ict_s0, 2, "--ict-s0");
  at_least(o.ict_s1, o.ict_s0, "--ict-s1 (at least --ict-s0)");
  at_least(o.ct_s0, 2, "--ct-s0");
  at_least(o.ct_s1, o.ct_s0, "--ct-s1 (at least --ct-s0)");
  at_least(o.cd_scales, 2, "--cd-scales");
  at_least(o.stop_after, 0, "--stop-after");
  at_least(o.eval_every, 0, "--eval-every");
  at_least(o.eval_per_class, 1, "--eval-per-class");
  at_least(o.ect_stage_steps, 0, "--ect-stage-steps");
  if (!(o.ect_q > 1) || !std::isfinite(o.ect_q))
    throw Error("--ect-q: must be above 1, got " + text(o.ect_q));
  if (!(o.ect_c >= 0) || !std::isfinite(o.ect_c))
    throw Error("--ect-c: must be 0 or more, got " + text(o.ect_c));
  if (!std::isfinite(o.ect_k) || !std::isfinite(o.ect_b))
    throw Error("--ect-k/--ect-b: must be finite");
  if (!(o.sct_p_std > 0) || !std::isfinite(o.sct_p_std) || !std::isfinite(o.sct_p_mean))
    throw Error("--sct-p-std: must be positive (and --sct-p-mean finite), got " +
                text(o.sct_p_std));
  if (!(o.sct_sigma_max > o.scheduler.sigma_min) || !std::isfinite(o.sct_sigma_max))
    throw Error("--sct-sigma-max: must be finite and above sigma_min, got " +
                text(o.sct_sigma_max));
  if (o.jvp != "ad" && o.jvp != "fd")
    throw Error("--jvp: unknown value '" + o.jvp + "' (ad, fd)");
  if (!(o.tangent_norm_c > 0) || !std::isfinite(o.tangent_norm_c))
    throw Error("--tangent-norm-c: must be positive, got " + text(o.tangent_norm_c));
  if (o.ect_weighting != "dt" && o.ect_weighting != "snr")
    throw Error("--ect-weighting: unknown value '" + o.ect_weighting + "' (dt, snr)");
  auto unit = [](double v, const char* flag, bool closed) {
    if (!(v >= 0 && (closed ? v <= 1 : v < 1)))
      throw Error(std::string(flag) + ": must be in [0, 1" + (closed ? "]" : ")") + ", got " +
                  text(v));
  };
  unit(o.ema_rate, "--ema-rate", true);
  unit(o.ct_mu0, "--ct-mu0", false);
  unit(o.cd_target_ema, "cd_target_ema", false);
  if (!(o.lr >= 0) || !std::isfinite(o.lr))
    throw Error("--lr: must be 0 or more, got " + text(o.lr));
  if (!std::isfinite(o.grad_clip)) throw Error("--grad-clip: must be finite");
  if (!(o.max_minutes >= 0))
    throw Error("--max-minutes: must be 0 or more, got " + text(o.max_minutes));
}

// --init: the weights of a UNet (or pipeline) folder into `unet`, whose architecture must be the
// folder's (dropout is a training choice, not architecture).
void load_initial_weights(const std::string& init, UNet2DModel& unet, const UNetConfig& run) {
  const fs::path dir = init_unet_dir(init);
  auto theirs = UNetConfig::load((dir / "config.json").string());
  theirs.dropout = run.dropout;
  if (theirs.to_json() != run.to_json())
    throw Error("--init " + init +
                ": its UNet is not the run's architecture (leave out the architecture flags and "
                "cm train takes the folder's)");
  const auto weights = load_unet(dir.string(), at::kFloat, at::kCPU);
  unet->load_state_dict(weights->state_dict(), "--init " + init);
}

class Trainer {
 public:
  explicit Trainer(const TrainOptions& o) : o_(o) {
    if (o.method != "ict" && o.method != "ct" && o.method != "cd" && o.method != "edm" &&
        o.method != "ect" && !is_trigflow_method(o.method))
      throw Error("--method: unknown value '" + o.method + "' (ict, ct, cd, edm, ect, sct, scd)");
    if (o.total_steps < 1) throw Error("--steps: must be at least 1");
    if (o.batch_size < 1) throw Error("--batch-size: must be at least 1");
    check_ranges(o);
    if (o.eval_every > 0 && (o.unet.in_channels != 1 || o.unet.sample_size != 28))
      throw Error("--eval-every: evaluation needs a 1×28×28 model (Fashion-MNIST), this one is " +
                  std::to_string(o.unet.in_channels) + "×" + std::to_string(o.unet.sample_size) +
                  "²");
    // A run folder is never overwritten silently: its log and checkpoint are hours of work. Rank 0
    // alone writes them, so it alone checks (other ranks may look after it has begun writing).
    if (!o.resume && o.distributed.rank == 0) {
      for (const char* part : {"checkpoint", "checkpoint.old", "train_log.csv"}) {
        if (fs::exists(fs::path(o.output_dir) / part))
          throw Error("-o " + o.output_dir + ": holds a run (" + part +
                      "); --resume continues it, or choose another folder");
      }
    }
    if (o.optimizer != "adam" && o.optimizer != "radam")
      throw Error("--optimizer: unknown value '" + o.optimizer + "' (adam, radam)");
    data_ = load_dataset(o.data, o.data_limit, o.unet.sample_size, o.unet.in_channels);
    if (data_.size() == 0) throw Error("--data: '" + o.data + "' holds no images");
    if (o.classes_from_data) {
      o_.unet.num_class_embeds.reset();
      if (!data_.class_names.empty())
        o_.unet.num_class_embeds = static_cast<int>(data_.class_names.size());
    }
    const auto& u = o_.unet;
    if (u.in_channels != data_.images.size(1) || u.sample_size != data_.images.size(2))
      throw Error("--data: images are " + std::to_string(data_.images.size(1)) + "×" +
                  std::to_string(data_.images.size(2)) + "², the model expects " +
                  std::to_string(u.in_channels) + "×" + std::to_string(u.sample_size) + "²");
    conditional_ = u.num_class_embeds.has_value();
    if (conditional_ && data_.class_names.empty())
      throw Error(
          "--data: '" + o.data +
          "' has no class sub-folders, but the model is class-conditional (--num-classes 0)");
    if (conditional_ && *u.num_class_embeds < static_cast<int>(data_.class_names.size()))
      throw Error("num_class_embeds is smaller than the dataset's class count");

    device_ = training_device(o.device, o.distributed);
    group_ = std::make_unique<ProcessGroup>(o.distributed, device_);
    // Loaded before the first step, so a missing classifier fails now, not an hour in.
    if (o.eval_every > 0 && group_->is_main()) {
      if (o.eval_classifier.empty()) throw Error("--eval-every: needs a classifier (--classifier)");
      evaluator_ = std::make_unique<Evaluator>(o.eval_classifier);
    }
    if (!data_.skipped.empty() && group_->is_main() && o.log) {
      for (size_t i = 0; i < data_.skipped.size() && i < 5; ++i)
        o.log("warning: " + data_.skipped[i] + " (skipped)");
      o.log("data: " + std::to_string(data_.skipped.size()) + " unreadable file(s) skipped, " +
            std::to_string(data_.size()) + " images used");
    }
    torch::manual_seed(o.seed);  // initial weights and dropout masks
    s_.online = UNet2DModel(u);
    if (!o.init.empty() && !o.resume) load_initial_weights(o.init, s_.online, u);
    s_.online->to(device_);  // drawn on the CPU first: the same initial weights on any device
    s_.online->train();
    // The same seed gives every rank the same weights already; the broadcast makes it a rule.
    group_->broadcast(s_.online->parameters());
    if (group_->rank() > 0) torch::manual_seed(o.seed + 7919 * group_->rank());  // own dropout
    s_.ema = clone_unet(s_.online);
    s_.ema->eval();
    if (o.method == "ct" || o.method == "cd") {
      s_.target = clone_unet(s_.online);
      s_.target->train();
    }
    if (o.method == "cd" || o.method == "scd") {
      if (o.teacher.empty()) throw Error("--teacher: required for --method " + o.method);
      const fs::path t(o.teacher);
      teacher_ = load_unet(fs::exists(t / "unet") ? (t / "unet").string() : o.teacher, at::kFloat,
                           device_);
    }
    if (is_trigflow_method(o.method)) {
      // Zero: every sample starts with weight e⁰ = 1 (FastGen draws it at random).
      s_.logvar = torch::nn::Linear(u.block_out_channels.at(0), 1);
      torch::NoGradGuard no_grad;
      s_.logvar->weight.zero_();
      s_.logvar->bias.zero_();
      s_.logvar->to(device_);
    }
    if (o.optimizer == "radam")
      s_.optimizer = std::make_unique<RAdam>(s_.trainable(), torch::optim::AdamOptions(o.lr));
    else
      s_.optimizer =
          std::make_unique<torch::optim::Adam>(s_.trainable(), torch::optim::AdamOptions(o.lr));
    s_.generator = at::detail::createCPUGenerator(o.seed);
    if (o.resume) {
      load_checkpoint(o.output_dir, o.method, s_);
      if (group_->rank() > 0) torch::manual_seed(o.seed + 7919 * group_->rank() + s_.step);
    }
  }

  TrainProgress run(const TrainCallback& on_log) {
    const bool main = group_->is_main();
    std::ofstream log;
    if (main) {
      fs::create_directories(o_.output_dir);
      const fs::path log_path = fs::path(o_.output_dir) / "train_log.csv";
      const bool new_log = !fs::exists(log_path) || !o_.resume;
      log.open(log_path, new_log ? std::ios::trunc : std::ios::app);
      if (!log) throw Error(log_path.string() + ": cannot write the training log");
      if (new_log)
        log << "step,loss,num_scales,target_ema,lr,images_per_second,frechet_1step,"
               "accuracy_1step,frechet_2steps,accuracy_2steps,images\n";
    }

    TrainProgress p;
    p.total_steps = o_.total_steps;
    auto t0 = std::chrono::steady_clock::now();
    int64_t images_since = 0;
    double loss_sum = 0;
    int64_t loss_count = 0;
    const auto run_start = std::chrono::steady_clock::now();
    const int64_t first_step = s_.step;
    auto why_stop = [&]() -> std::optional<TrainStop> {
      if (s_.step >= o_.total_steps) return TrainStop::kCompleted;
      if (o_.stop_after > 0 && s_.step - first_step >= o_.stop_after) return TrainStop::kStepLimit;
      if (o_.max_minutes > 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count() >
              o_.max_minutes * 60)
        return TrainStop::kTimeLimit;
      if (o_.stop_requested && o_.stop_requested()) return TrainStop::kRequested;
      return std::nullopt;
    };
    // Every rank stops at the same step: one rank's Ctrl-C or time budget stops them all (and
    // those that did not see it themselves report it as requested).
    for (;;) {
      const auto stop = why_stop();
      if (group_->any(stop.has_value())) {
        p.stop = stop.value_or(TrainStop::kRequested);
        break;
      }
      const double loss = step(p);
      loss_sum += loss;
      ++loss_count;
      images_since += o_.batch_size * group_->world_size();
      ++s_.step;
      p.step = s_.step;
      const bool eval_now = o_.eval_every > 0 &&
                            (s_.step % o_.eval_every == 0 || s_.step == o_.total_steps);
      const bool log_now = s_.step % o_.log_every == 0 || s_.step == o_.total_steps || eval_now;
      if (log_now) {
        const auto now = std::chrono::steady_clock::now();
        p.images_per_second = images_since / std::chrono::duration<double>(now - t0).count();
        p.loss = group_->mean(loss_sum / loss_count);
        t0 = now;
        images_since = 0;
        loss_sum = 0;
        loss_count = 0;
      }
      // Rank 0's own work (log, samples, checkpoint) can fail where the others have nothing to
      // fail: it says so to them before anyone waits on the next step's collectives.
      std::exception_ptr error;
      if (main) {
        try {
          if (eval_now) evaluate_ema(p);
          if (log_now) {
            log << p.step << "," << p.loss << "," << p.num_scales << "," << p.target_ema << ","
                << current_lr() << "," << p.images_per_second;
            for (double v : {p.frechet_1step, p.accuracy_1step, p.frechet_2steps, p.accuracy_2steps})
              if (std::isnan(v)) log << ","; else log << "," << v;
            log << "," << p.step * global_batch() << "\n";
            log.flush();
            if (on_log) on_log(p);
            p.frechet_1step = p.accuracy_1step = p.frechet_2steps = p.accuracy_2steps = std::nan("");
          }
          if (o_.sample_every > 0 && s_.step % o_.sample_every == 0) write_samples();
          if (o_.checkpoint_every > 0 && s_.step % o_.checkpoint_every == 0) checkpoint(p);
        } catch (...) {
          error = std::current_exception();
        }
      }
      agree(error, "writing its log, samples or checkpoint");
      // The next log line's images/s is the training's own, not diluted by this evaluation.
      if (eval_now) t0 = std::chrono::steady_clock::now();
    }
    if (main) checkpoint(p);
    return p;
  }

 private:
  double current_lr() const { return o_.lr * warmup_factor(s_.step, o_.warmup); }

  // Every rank learns whether any failed (one collective, nothing with a single process): the one
  // that failed throws its own error, the others a cm::Error saying so, at the same step, rather
  // than waiting in the next collective until the timeout.
  void agree(const std::exception_ptr& error, const std::string& what) {
    if (!group_->any(error != nullptr)) return;
    if (error) std::rethrow_exception(error);
    throw Error("rank " + std::to_string(group_->rank()) + " stops: another rank failed " + what +
                " at step " + std::to_string(s_.step) + " (its own output says why)");
  }

  // Every rank draws the whole global batch from the same generator and keeps its own slice, so
  // W processes with batch B see exactly what one process with batch W·B sees.
  int64_t global_batch() const { return o_.batch_size * group_->world_size(); }
  at::Tensor mine(const at::Tensor& global) const {
    return global.narrow(0, o_.batch_size * group_->rank(), o_.batch_size);
  }

  Batch draw_batch() {
    const auto idx = mine(at::randint(0, static_cast<int64_t>(data_.size()), {global_batch()},
                                      s_.generator, at::TensorOptions().dtype(at::kLong)));
    Batch b;
    b.x = data_.images.index_select(0, idx).to(device_);
    if (conditional_) b.labels = data_.labels.index_select(0, idx).to(device_);
    return b;
  }

  // The online network with its dropout masks; `replay` evaluates the target with the same ones.
  at::Tensor online_and_target(const Batch& b, const at::Tensor& x_hi, const at::Tensor& s_hi,
                               UNet2DModel& target_net, const at::Tensor& x_lo,
                               const at::Tensor& s_lo, at::Tensor& target) {
    // Dropout draws from the default generator of the device it runs on.
    auto gen = at::globalContext().defaultGenerator(device_);
    const auto dropout_state = gen.get_state();
    const auto out = consistency_function(*s_.online, x_hi, s_hi, b.labels, o_.scheduler);
    gen.set_state(dropout_state);
    {
      torch::NoGradGuard no_grad;
      target = consistency_function(*target_net, x_lo, s_lo, b.labels, o_.scheduler).detach();
    }
    return out;
  }

  int64_t ect_stage() const {
    const int64_t length = o_.ect_stage_steps > 0 ? o_.ect_stage_steps : (o_.total_steps + 7) / 8;
    return s_.step / length;
  }

  // ECT (locuslab/ect's ECMLoss) in this project's parameterization: σ is kept in [σmin, σmax]
  // (c_out < 0 below σmin), and where r ≤ σmin — the boundary, f(x, σmin) = x — the target is the
  // clean image, as the reference's is where r = 0.
  at::Tensor ect_loss(const Batch& b, const at::Tensor& z, TrainProgress& p) {
    const auto& sc = o_.scheduler;
    const auto t =
        (mine(at::randn({global_batch()}, s_.generator, at::TensorOptions().dtype(at::kFloat))) *
             o_.p_std +
         o_.p_mean)
            .exp()
            .clamp(sc.sigma_min, sc.sigma_max)
            .to(device_);
    const int64_t stage = ect_stage();
    const auto r = ect_r(t, stage, o_.ect_q, o_.ect_k, o_.ect_b);
    const auto x_t = b.x + t.reshape({-1, 1, 1, 1}) * z;
    const auto x_r = b.x + r.reshape({-1, 1, 1, 1}) * z;  // the same noise for both points
    at::Tensor target;
    const auto out =
        online_and_target(b, x_t, t, s_.online, x_r, r.clamp_min(sc.sigma_min), target);
    const auto boundary = (r <= sc.sigma_min).reshape({-1, 1, 1, 1});
    target = at::where(boundary, b.x, target.to(at::kFloat).nan_to_num());
    p.num_scales = stage;
    p.target_ema = 0;
    const auto weight = ect_weight(o_.ect_weighting, t, r, sc.sigma_data);
    return (weight * pseudo_huber(out.to(at::kFloat), target, o_.ect_c)).mean();
  }

  // sCT and sCD as NVlabs/FastGen's sCM: see TrainOptions. The JVP replays the online pass's dropout
  // masks (FastGen's fork_rng gives it masks drawn after that pass), so the tangent is that of
  // the very function trained.
  at::Tensor scm_training_loss(const Batch& b, const at::Tensor& z_unit, TrainProgress& p) {
    const auto& sc = o_.scheduler;
    const double sd = sc.sigma_data;
    const auto sigma =
        (mine(at::randn({global_batch()}, s_.generator, at::TensorOptions().dtype(at::kFloat))) *
             o_.sct_p_std +
         o_.sct_p_mean)
            .exp()
            .clamp(sc.sigma_min, o_.sct_sigma_max)
            .to(device_);
    // σ is already within what is trained; the differences must not meet a clamp at its edge.
    constexpr double kNoClamp = std::numeric_limits<double>::infinity();
    const auto t = at::atan2(sigma.to(at::kDouble), at::scalar_tensor(sd, at::kDouble));
    const auto t4 = t.reshape({-1, 1, 1, 1});
    const auto x0 = b.x.to(at::kDouble), z = z_unit.to(at::kDouble) * sd;
    const auto x_hat = (t4.cos() * x0 + t4.sin() * z).to(at::kFloat);
    at::Tensor dxt_dt;  // where x̂ moves: the data's path (sCT) or the teacher's velocity (sCD)
    if (o_.method == "scd") {
      torch::NoGradGuard no_grad;
      dxt_dt = sd * trigflow_velocity(*teacher_, x_hat, t, b.labels, sd, kNoClamp).to(at::kDouble);
    } else {
      dxt_dt = t4.cos() * z - t4.sin() * x0;
    }

    auto gen = at::globalContext().defaultGenerator(device_);
    const auto dropout_state = gen.get_state();
    const auto f = trigflow_velocity(*s_.online, x_hat, t, b.labels, sd, kNoClamp);
    const auto after_state = gen.get_state();
    const auto cos_sin = t.cos() * t.sin();  // the tangent direction: cos t·sin t·(dx̂/dt, 1)
    at::Tensor jvp;
    if (o_.jvp == "ad") {
      gen.set_state(dropout_state);
      jvp = trigflow_jvp(*s_.online, x_hat, t, (cos_sin.reshape({-1, 1, 1, 1}) * dxt_dt),
                         cos_sin, b.labels, sd)
                .to(at::kDouble);
    } else {
      // Float64 throughout, along (dx̂/dt, 1), and a step of 10⁻⁵ in ln σ (ε = 10⁻⁵·sin t·cos t):
      // the time input 250·ln σ turns FastGen's ε = 10⁻³·t into up to hundreds of radians of the
      // time embedding's fastest sinusoid near t = π/2. The copy's dropout masks are its own (a
      // float64 draw), shared by both evaluations.
      torch::NoGradGuard no_grad;
      UNet2DModel exact = clone_unet(s_.online);
      exact->to(at::kDouble);
      exact->train();
      const auto eps = 1e-5 * cos_sin;
      const auto x = x_hat.to(at::kDouble);
      auto at_offset = [&](const at::Tensor& step) {
        gen.set_state(dropout_state);
        return trigflow_velocity(*exact, x + step.reshape({-1, 1, 1, 1}) * dxt_dt, t + step,
                                 b.labels, sd, kNoClamp);
      };
      jvp = (at_offset(eps) - at_offset(-eps)) * (cos_sin / (2 * eps)).reshape({-1, 1, 1, 1});
    }
    gen.set_state(after_state);
    const double r =
        o_.tangent_warmup > 0
            ? std::min(1.0, static_cast<double>(s_.step) / static_cast<double>(o_.tangent_warmup))
            : 1.0;
    const auto g = scm_tangent(f.detach().to(at::kDouble), jvp, x_hat.to(at::kDouble), dxt_dt, t,
                               r, sd, o_.tangent_norm_c);
    const auto features = models::timestep_embedding(sigma_to_timestep(sigma).to(at::kFloat),
                                                     o_.unet.block_out_channels.at(0),
                                                     o_.unet.flip_sin_to_cos, o_.unet.freq_shift);
    const auto logvar = s_.logvar->forward(features.to(device_)).reshape({-1});
    p.num_scales = 0;
    p.target_ema = 0;
    return scm_loss(f, g, logvar, sigma).mean();
  }

  // The method's loss on this rank's slice of the batch; sets p's N(k) and μ(k).
  at::Tensor compute_loss(const Batch& b, const at::Tensor& z, TrainProgress& p) {
    at::Tensor loss;
    if (o_.method == "ect") return ect_loss(b, z, p);
    if (is_trigflow_method(o_.method)) return scm_training_loss(b, z, p);
    if (o_.method == "edm") {
      const auto sigma =
          (mine(at::randn({global_batch()}, s_.generator, at::TensorOptions().dtype(at::kFloat))) *
               o_.edm_p_std +
           o_.edm_p_mean)
              .exp()
              .to(device_);
      const double sd = o_.scheduler.sigma_data;
      const auto d =
          edm_denoise(*s_.online, b.x + sigma.reshape({-1, 1, 1, 1}) * z, sigma, b.labels, sd);
      const auto weight = (sigma.pow(2) + sd * sd) / (sigma * sd).pow(2);
      loss = (weight * (d - b.x).pow(2).flatten(1).mean(1)).mean();
      p.num_scales = 0;
      p.target_ema = 0;
    } else {
      const bool ict = o_.method == "ict";
      const int64_t n = ict ? ict_num_scales(s_.step, o_.total_steps, o_.ict_s0, o_.ict_s1)
                        : o_.method == "ct"
                            ? ct_num_scales(s_.step, o_.total_steps, o_.ct_s0, o_.ct_s1)
                            : o_.cd_scales;
      const auto grid = karras_grid(n, o_.scheduler);
      at::Tensor idx;
      if (ict) {
        const auto probs =
            at::tensor(lognormal_index_probs(grid, o_.p_mean, o_.p_std), at::kDouble);
        idx = mine(at::multinomial(probs, global_batch(), /*replacement=*/true, s_.generator));
      } else {
        idx = mine(at::randint(0, n - 1, {global_batch()}, s_.generator,
                               at::TensorOptions().dtype(at::kLong)));
      }
      const auto s_lo = take(grid, idx).to(device_), s_hi = take(grid, idx + 1).to(device_);
      const auto x_hi = b.x + s_hi.reshape({-1, 1, 1, 1}) * z;
      at::Tensor x_lo;
      if (o_.method == "cd") {
        torch::NoGradGuard no_grad;
        const double sd = o_.scheduler.sigma_data;
        auto teacher = [&](const at::Tensor& x, const at::Tensor& sigma) {
          return edm_denoise(*teacher_, x, sigma, b.labels, sd);
        };
        x_lo = heun_step(teacher, x_hi, s_hi, s_lo);
      } else {
        x_lo = b.x + s_lo.reshape({-1, 1, 1, 1}) * z;  // the same noise for both points
      }
      at::Tensor target;
      UNet2DModel& target_net = ict ? s_.online : s_.target;
      const auto out = online_and_target(b, x_hi, s_hi, target_net, x_lo, s_lo, target);
      if (ict) {
        const auto weight = 1.0 / (s_hi - s_lo);
        loss = (weight * pseudo_huber(out.to(at::kFloat), target.to(at::kFloat),
                                      pseudo_huber_c(b.x[0].numel())))
                   .mean();
      } else {
        loss = distance(o_.distance, out.to(at::kFloat), target.to(at::kFloat)).mean();
      }
      p.num_scales = n;
      p.target_ema = o_.method == "ct"   ? ct_target_ema(n, o_.ct_s0, o_.ct_mu0)
                     : o_.method == "cd" ? o_.cd_target_ema
                                         : 0.0;
    }
    return loss;
  }

  double step(TrainProgress& p) {
    const double lr = current_lr();
    for (auto& group : s_.optimizer->param_groups())
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    const Batch b = draw_batch();
    auto global_shape = b.x.sizes().vec();
    global_shape[0] = global_batch();
    const auto z =
        mine(at::randn(global_shape, s_.generator, at::TensorOptions().dtype(at::kFloat)))
            .to(device_);
    at::Tensor loss;
    std::exception_ptr error;
    try {
      {
        // The forward passes; backward follows their dtypes.
        const Bf16Autocast autocast(o_.bf16, device_.type());
        loss = compute_loss(b, z, p);
      }
      s_.optimizer->zero_grad();
      loss.backward();
    } catch (...) {
      error = std::current_exception();
    }
    agree(error, "computing its loss");
    group_->average_gradients(s_.trainable());
    if (o_.method == "ect") {
      // √‖·‖² has no derivative where both points agree exactly (c = 0): as the reference, such
      // a gradient is taken as 0 rather than spoiling the step.
      for (auto& w : s_.online->parameters())
        if (w.grad().defined()) w.mutable_grad().nan_to_num_(0.0, 1e5, -1e5);
    }
    if (o_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(s_.trainable(), o_.grad_clip);
    s_.optimizer->step();
    if (s_.target) lerp_weights(s_.target, s_.online, p.target_ema);
    lerp_weights(s_.ema, s_.online, ema_rate_at(s_.step, o_.ema_rate, o_.ema_warmup));
    const double value = loss.item<double>();
    // Decided together: a rank that diverged alone must not leave the others waiting.
    if (group_->any(!std::isfinite(value)))
      throw Error("training diverged at step " + std::to_string(s_.step) + " (loss " +
                  (std::isfinite(value) ? "not finite on another rank" : std::to_string(value)) +
                  "); lower --lr or raise --warmup");
    return value;
  }

  int64_t final_num_scales() const {
    if (o_.method == "ict")
      return ict_num_scales(o_.total_steps, o_.total_steps, o_.ict_s0, o_.ict_s1);
    if (o_.method == "ct") return ct_num_scales(o_.total_steps, o_.total_steps, o_.ct_s0, o_.ct_s1);
    if (o_.method == "cd") return o_.cd_scales;
    return 40;
  }

  void checkpoint(const TrainProgress&) {
    if (o_.method == "edm") {
      // The teacher is a denoiser, not a consistency model: save the UNet folder alone.
      const fs::path dir = fs::path(o_.output_dir) / "teacher";
      UNet2DModel ema = s_.ema;
      save_unet(ema, dir.string());
    }
    save_checkpoint(o_.output_dir, o_, s_, final_num_scales(), data_.class_names);
  }

  // The EMA weights as the pipeline a user would sample: the final N(k)'s training grid.
  ConsistencyModelPipeline ema_pipeline() {
    if (is_trigflow_method(o_.method))
      return ConsistencyModelPipeline(clone_unet(s_.ema), SCMScheduler(scm_scheduler_config(o_)));
    SchedulerConfig sc = o_.scheduler;
    sc.num_train_timesteps = static_cast<int>(final_num_scales());
    return ConsistencyModelPipeline(clone_unet(s_.ema), CMStochasticIterativeScheduler(sc));
  }

  void evaluate_ema(TrainProgress& p) {
    if (!evaluator_ || o_.method == "edm") return;
    auto pipe = ema_pipeline();
    const auto rows = evaluator_->evaluate(pipe, o_.eval_per_class, {1, 2}, /*seed=*/0);
    p.frechet_1step = rows[0].frechet;
    p.frechet_2steps = rows[1].frechet;
    if (conditional_) {  // an unconditional model has no class to check
      p.accuracy_1step = rows[0].accuracy;
      p.accuracy_2steps = rows[1].accuracy;
    }
  }

  void write_samples() {
    if (o_.method == "edm") return;
    auto pipe = ema_pipeline();
    GenerateOptions g;
    const int classes = conditional_ ? static_cast<int>(data_.class_names.size()) : 10;
    g.batch_size = classes;
    if (conditional_) {
      for (int c = 0; c < classes; ++c) g.class_labels.push_back(c);
    }
    g.seed = 0;
    g.cuda_graphs = false;  // a fresh copy of the weights each time: nothing to replay
    const auto r = pipe(g);
    const fs::path dir = fs::path(o_.output_dir) / "samples";
    fs::create_directories(dir);
    char name[64];
    std::snprintf(name, sizeof name, "step_%07lld.png", static_cast<long long>(s_.step));
    write_png((dir / name).string(), make_grid(to_uint8_images(r.images), classes));
  }

  TrainOptions o_;
  Dataset data_;
  bool conditional_ = false;
  TrainState s_;
  UNet2DModel teacher_{nullptr};
  std::unique_ptr<Evaluator> evaluator_;  // rank 0, with --eval-every
  at::Device device_ = at::kCPU;
  std::unique_ptr<ProcessGroup> group_;
};

}  // namespace

const char* train_stop_name(TrainStop stop) {
  switch (stop) {
    case TrainStop::kCompleted: return "completed";
    case TrainStop::kStepLimit: return "step limit";
    case TrainStop::kTimeLimit: return "time limit";
    case TrainStop::kRequested: return "requested";
  }
  return "?";
}

TrainProgress train(const TrainOptions& options, const TrainCallback& on_log) {
  Trainer trainer(options);
  return trainer.run(on_log);
}

std::string init_unet_dir(const std::string& init) {
  const fs::path dir(init);
  if (fs::exists(dir / "unet" / "config.json")) return (dir / "unet").string();
  if (fs::exists(dir / "config.json")) return dir.string();
  throw Error("--init " + init +
              ": no config.json there (a UNet folder, or a pipeline folder with unet/)");
}

int64_t checkpoint_step(const std::string& output_dir) {
  const std::string path =
      (fs::path(output_dir) / "checkpoint" / "training_state.safetensors").string();
  SafeTensorsFile file(path);
  auto it = file.metadata().find("step");
  if (it == file.metadata().end()) throw Error(path + ": checkpoint has no step");
  return std::stoll(it->second);
}

}  // namespace cm
