// The trainer: schedules against their formulas, the ODE step, resume = unbroken run, loss goes
// down, and what it saves loads as a pipeline.
#include <csignal>
#include <filesystem>
#include <stdexcept>

#include "cm/error.h"
#include "cm/pipeline.h"
#include "cm/training.h"
#include "golden.h"
#include "io/state_dict.h"
#include "training/autocast.h"
#include "training/ode.h"
#include "training/schedules.h"
#include "training/trigflow.h"

namespace cm::test {
namespace {

namespace fs = std::filesystem;
using namespace cm::training;

TEST(TrainingSchedules, IctCurriculumDoublesEveryStage) {
  // K = 800: K' = floor(800 / (log2(128) + 1)) = 100.
  EXPECT_EQ(ict_num_scales(0, 800), 11);
  EXPECT_EQ(ict_num_scales(99, 800), 11);
  EXPECT_EQ(ict_num_scales(100, 800), 21);
  EXPECT_EQ(ict_num_scales(250, 800), 41);
  EXPECT_EQ(ict_num_scales(699, 800), 641);
  EXPECT_EQ(ict_num_scales(700, 800), 1281);
  EXPECT_EQ(ict_num_scales(800, 800), 1281);  // capped at s1 + 1
  // s1/s0 not a power of two: K' = floor(K / (log2(floor(150/10)) + 1)).
  const double stages = std::log2(15.0) + 1;
  const int64_t k_prime = static_cast<int64_t>(std::floor(1000 / stages));
  EXPECT_EQ(ict_num_scales(k_prime - 1, 1000, 10, 150), 11);
  EXPECT_EQ(ict_num_scales(k_prime, 1000, 10, 150), 21);
}

TEST(TrainingSchedules, CtScalesAndTargetEmaFollowTheFormulas) {
  for (int64_t k : {0, 1, 17, 500, 999, 1000}) {
    const double v = std::sqrt(k / 1000.0 * (151.0 * 151.0 - 4.0) + 4.0) - 1;
    const int64_t n = static_cast<int64_t>(std::ceil(v)) + 1;
    EXPECT_EQ(ct_num_scales(k, 1000, 2, 150), n) << k;
    EXPECT_NEAR(ct_target_ema(n, 2, 0.9), std::exp(2 * std::log(0.9) / (n - 1)), 1e-15);
  }
  EXPECT_EQ(ct_num_scales(0, 1000, 2, 150), 2);
  EXPECT_EQ(ct_num_scales(1000, 1000, 2, 150), 151);
  EXPECT_NEAR(ct_target_ema(2, 2, 0.9), 0.81, 1e-12);
}

TEST(TrainingSchedules, EmaWarmupStartsFastAndReachesTheRate) {
  EXPECT_DOUBLE_EQ(ema_rate_at(0, 0.999, false), 0.999);
  EXPECT_DOUBLE_EQ(ema_rate_at(0, 0.999, true), 0.1);
  EXPECT_DOUBLE_EQ(ema_rate_at(90, 0.999, true), 0.91);
  EXPECT_DOUBLE_EQ(ema_rate_at(8990, 0.999, true), 0.999);   // (1+k)/(10+k) = 0.999 here
  EXPECT_DOUBLE_EQ(ema_rate_at(100000, 0.999, true), 0.999);
}

TEST(TrainingSchedules, KarrasGridAndLogNormalProbabilities) {
  SchedulerConfig c;
  const auto grid = karras_grid(11, c);
  EXPECT_NEAR(grid.front(), c.sigma_min, 1e-12);
  EXPECT_NEAR(grid.back(), c.sigma_max, 1e-9);
  for (size_t i = 1; i < grid.size(); ++i) EXPECT_GT(grid[i], grid[i - 1]);
  const auto p = lognormal_index_probs(grid, -1.1, 2.0);
  ASSERT_EQ(p.size(), 10u);
  double sum = 0, raw_sum = 0;
  for (double v : p) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  std::vector<double> raw;
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    raw.push_back(std::erf((std::log(grid[i + 1]) + 1.1) / (std::sqrt(2.0) * 2.0)) -
                  std::erf((std::log(grid[i]) + 1.1) / (std::sqrt(2.0) * 2.0)));
    raw_sum += raw.back();
  }
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], raw[i] / raw_sum, 1e-12);
}

TEST(TrainingSchedules, PseudoHuberMatchesItsFormula) {
  const auto a = at::randn({3, 1, 4, 4}, at::kDouble), b = at::randn({3, 1, 4, 4}, at::kDouble);
  const double c = pseudo_huber_c(16);
  EXPECT_NEAR(c, 0.00054 * 4, 1e-15);
  const auto d = pseudo_huber(a, b, c);
  for (int i = 0; i < 3; ++i) {
    const double sq = (a[i] - b[i]).pow(2).sum().item<double>();
    EXPECT_NEAR(d[i].item<double>(), std::sqrt(sq + c * c) - c, 1e-12);
  }
}

// r(t) and the weights against numbers printed by locuslab/ect's own ECMLoss (t_to_r_sigmoid of
// its main and imgnet branches, snrplusk_wt of the latter; scripts/ect_reference.py on the same t).
TEST(TrainingSchedules, EctSecondPointAndWeightMatchTheReference) {
  const auto t = at::tensor({0.002, 0.05, 0.5, 1.0, 1.9459, 3.0, 10.0, 80.0}, at::kDouble);
  struct Case {
    int64_t stage;
    double q, k, b;
    std::vector<double> r;
  };
  const std::vector<Case> cases = {
      {0, 2.0, 8.0, 1.0, {0.0, 0.0, 0.0, 0.0, 0.0, 0.9308895218691987, 4.998184085251902, 40.0}},
      {1, 2.0, 8.0, 1.0,
       {0.0, 0.0, 0.0, 0.2121171572600098, 0.972945679879585, 1.9654447609345995, 7.499092042625951,
        60.0}},
      {2, 2.0, 8.0, 1.0,
       {0.000750999999666667, 0.01937486982421052, 0.2487296656009273, 0.6060585786300049,
        1.4594228399397924, 2.4827223804672998, 8.749546021312975, 70.0}},
      {5, 2.0, 8.0, 1.0,
       {0.0018438749999583335, 0.046171858728026316, 0.4685912082001159, 0.9507573223287507,
        1.885090354992474, 2.935340297558412, 9.843693252664123, 78.75}},
      {0, 256.0, 8.0, 1.0,
       {0.0019609687499895835, 0.049042964682006585, 0.492147802050029, 0.9876893305821877,
        1.9306975887481186, 2.983835074389603, 9.960923313166031, 79.6875}},
      {1, 4.0, 4.0, 0.5,
       {0.0016251249999895835, 0.04070312093124388, 0.4140220626107248, 0.8431148328004636,
        1.6908446137623432, 2.675680857145233, 9.358267872689288, 75.0}},
  };
  for (const auto& c : cases) {
    const auto r = ect_r(t, c.stage, c.q, c.k, c.b);
    for (size_t i = 0; i < c.r.size(); ++i)
      EXPECT_NEAR(r[i].item<double>(), c.r[i], 1e-12 * (1 + c.r[i]))
          << "stage " << c.stage << " q " << c.q << " t " << t[i].item<double>();
  }
  // "snr": the imgnet branch's snrplusk_wt at σd = 0.5.
  const std::vector<double> snr = {250004.00000000003, 403.99999999999994, 8.0, 5.0,
                                   4.2640942610941135, 4.111111111111111, 4.01, 4.00015625};
  const auto w = ect_weight("snr", t, t, 0.5);
  for (size_t i = 0; i < snr.size(); ++i)
    EXPECT_NEAR(w[i].item<double>(), snr[i], 1e-12 * snr[i]) << t[i].item<double>();
  // "dt": the main branch divides by t − r inline (the script checks that through its loss).
  const auto r = ect_r(t, 2);
  EXPECT_TRUE(at::allclose(ect_weight("dt", t, r, 0.5), 1.0 / (t - r), 1e-15, 0));
  EXPECT_THROW(ect_weight("sqrt", t, r, 0.5), cm::Error);
  // float32 as training runs it: the same to float32's precision.
  const auto r32 = ect_r(t.to(at::kFloat), 2, 2.0, 8.0, 1.0).to(at::kDouble);
  EXPECT_TRUE(at::allclose(r32, ect_r(t, 2, 2.0, 8.0, 1.0), 1e-6, 1e-7));
}

TEST(TrainingOde, HeunStepMatchesItsFormula) {
  // With D(x, σ) = a·x the ODE is dx/dσ = (1 − a)·x/σ; one Heun step from σf to σt gives
  // x·(1 + h·k/σf + h·k/σt·(1 + h·k/σf))/… written out below.
  const double a = 0.3, k = 1 - a;
  const auto x = at::randn({2, 1, 3, 3}, at::kDouble);
  const auto sf = at::tensor({2.0, 5.0}, at::kDouble), st = at::tensor({1.5, 4.0}, at::kDouble);
  const auto y =
      heun_step([&](const at::Tensor& v, const at::Tensor&) { return a * v; }, x, sf, st);
  for (int i = 0; i < 2; ++i) {
    const double f = sf[i].item<double>(), t = st[i].item<double>(), h = t - f;
    const double euler = 1 + h * k / f;
    const double factor = 1 + h * (k / f + k * euler / t) / 2;
    EXPECT_TRUE(at::allclose(y[i], x[i] * factor, 1e-12, 1e-12)) << i;
  }
  // D = 0: dx/dσ = x/σ, solved exactly by Heun (x·σt/σf).
  const auto exact =
      heun_step([](const at::Tensor& v, const at::Tensor&) { return 0 * v; }, x, sf, st);
  EXPECT_TRUE(at::allclose(exact, x * (st / sf).reshape({-1, 1, 1, 1}), 1e-12, 1e-12));
}

TrainOptions tiny_options(const std::string& dir, const std::string& method) {
  TrainOptions o;
  o.method = method;
  o.data = "fashion-mnist:test";
  o.data_limit = 32;
  o.output_dir = dir;
  o.unet.sample_size = 28;
  o.unet.in_channels = o.unet.out_channels = 1;
  o.unet.block_out_channels = {8, 16};
  o.unet.down_block_types = {"ResnetDownsampleBlock2D", "AttnDownBlock2D"};
  o.unet.up_block_types = {"AttnUpBlock2D", "ResnetUpsampleBlock2D"};
  o.unet.downsample_type = o.unet.upsample_type = "resnet";
  o.unet.layers_per_block = 1;
  o.unet.attention_head_dim = 8;
  o.unet.norm_num_groups = 4;
  o.unet.resnet_time_scale_shift = "scale_shift";
  o.unet.num_class_embeds = 10;
  o.unet.dropout = 0.1;  // exercises the shared dropout masks in resume
  o.batch_size = 4;
  o.lr = 2e-3;
  o.warmup = 2;
  o.ema_rate = 0.9;
  o.checkpoint_every = 0;
  o.sample_every = 0;
  o.log_every = 1;
  return o;
}

class TrainingRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("cm_train_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::map<std::string, at::Tensor> saved_state(const fs::path& run) {
  return read_state_dict((run / "checkpoint" / "training_state.safetensors").string());
}

// A run folder is not overwritten without --resume; a resume must use the run's method; and a
// save interrupted between its two renames (checkpoint/ gone, checkpoint.old/ left) resumes from
// checkpoint.old/.
TEST_F(TrainingRun, RunFoldersAreResumedNotOverwritten) {
  auto o = tiny_options((dir_ / "run").string(), "ct");
  o.total_steps = 4;
  o.stop_after = 2;
  const auto first = train(o);
  EXPECT_EQ(first.step, 2);
  EXPECT_EQ(first.stop, TrainStop::kStepLimit);
  o.stop_after = 0;
  try {
    train(o);
    ADD_FAILURE() << "a second run without --resume overwrote the first";
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
  EXPECT_EQ(checkpoint_step(o.output_dir), 2);
  auto other = o;
  other.method = "ict";
  other.resume = true;
  try {
    train(other);
    ADD_FAILURE() << "a ct run resumed as ict";
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("trained with ct"), std::string::npos) << e.what();
  }
  fs::rename(dir_ / "run" / "checkpoint", dir_ / "run" / "checkpoint.old");
  o.resume = true;
  EXPECT_EQ(train(o).step, 4);  // from step 2: the interrupted save's previous checkpoint
  EXPECT_EQ(checkpoint_step(o.output_dir), 4);
}

TEST_F(TrainingRun, ResumeGivesTheSameWeightsAsAnUnbrokenRun) {
  auto edm = tiny_options((dir_ / "edm").string(), "edm");
  edm.total_steps = 2;
  train(edm);
  for (const char* method : {"ict", "ct", "ect", "sct", "scd"}) {
    SCOPED_TRACE(method);
    auto whole = tiny_options((dir_ / method / "whole").string(), method);
    whole.total_steps = 6;
    if (std::string(method) == "scd") whole.teacher = (dir_ / "edm" / "teacher").string();
    train(whole);
    auto split = tiny_options((dir_ / method / "split").string(), method);
    split.teacher = whole.teacher;
    split.total_steps = 6;
    split.stop_after = 3;
    EXPECT_EQ(train(split).step, 3);
    EXPECT_EQ(checkpoint_step(split.output_dir), 3);
    split.stop_after = 0;
    split.resume = true;
    EXPECT_EQ(train(split).step, 6);
    const auto a = saved_state(whole.output_dir), b = saved_state(split.output_dir);
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [key, value] : a) {
      if (key.rfind("rng.", 0) == 0) continue;
      ASSERT_TRUE(b.count(key)) << key;
      EXPECT_TRUE(at::equal(value, b.at(key))) << key;
    }
  }
}

// sCM's tangent and loss on fixed tensors against NVlabs/FastGen's own _scm_pred_to_loss
// (scripts/sct_reference.py runs it and prints these; r = 0.3: step 3 of a 10-step warm-up).
// FastGen divides its loss by D once more than the paper (docs/training.md): its value, less
// logvar, times D, is ours.
TEST(TrainingSchedules, SctTangentAndLossMatchTheReference) {
  const std::vector<double> kTangent = {
      0.50384521382009151,  -0.3521755080298215, -1.1678522396941158,  -1.309829994785819,
      -0.58749638165102236, 0.62095581036308389, 0.84111512925554377,  0.88224365419223783,
      0.67718944266571479,  0.17243748011790413, -0.44711755644634399, -0.78238485250880574};
  const std::vector<double> kLoss = {0.81583017019335524, -0.31022420025423753};
  const auto k = at::arange(12, at::kDouble).reshape({2, 2, 1, 3});
  const auto f = (0.7 * k + 0.3).sin(), jvp = (0.5 * k).cos() - 0.2;
  const auto x_hat = 0.4 * (1.3 * k - 0.5).sin(), dxt_dt = (0.9 * k + 0.1).cos() * 0.6;
  const auto t = at::tensor(std::vector<double>{0.3, 1.2});
  const auto sigma = 0.5 * t.tan();
  const auto logvar = at::tensor(std::vector<double>{0.2, -0.4});
  const auto g = scm_tangent(f, jvp, x_hat, dxt_dt, t, 0.3, 0.5, 0.1).flatten();
  ASSERT_EQ(g.numel(), static_cast<int64_t>(kTangent.size()));
  for (int64_t i = 0; i < g.numel(); ++i)
    EXPECT_NEAR(g[i].item<double>(), kTangent[i], 1e-12) << "g[" << i << "]";
  const auto loss = scm_loss(f, g.reshape(f.sizes()), logvar, sigma);
  for (int64_t b = 0; b < 2; ++b) {
    const double lv = logvar[b].item<double>();
    EXPECT_NEAR(loss[b].item<double>(), (kLoss[b] - lv) * 6 + lv, 1e-12) << "sample " << b;
  }
}

// The forward-mode JVP of the TrigFlow velocity against float64 central differences on a small
// UNet with every layer kind (resnet down/up blocks with scale-shift time conditioning, attention,
// group norm, class embedding, the sinusoidal time embedding), along x̂, along t and both. The
// step is small (10⁻⁶): the time input 250·ln σ moves the embedding's fastest sinusoid by
// ~300 rad per unit of t here, so a step of 10⁻³ leaves a truncation error of ~3%.
TEST(TrigFlowJvp, ForwardAdEqualsCentralDifferences) {
  auto o = tiny_options("unused", "sct");
  o.unet.sample_size = 16;
  o.unet.dropout = 0;
  torch::manual_seed(2);
  UNet2DModel unet(o.unet);
  unet->to(at::kDouble);
  unet->train();
  auto gen = at::detail::createCPUGenerator(4);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const auto x = at::randn({2, 1, 16, 16}, gen, opts) * 0.5;
  const auto v_x = at::randn({2, 1, 16, 16}, gen, opts);
  const auto t = at::tensor(std::vector<double>{0.4, 1.1});
  const auto labels = at::tensor(std::vector<int64_t>{3, 7});
  const double inf = std::numeric_limits<double>::infinity();
  auto central = [&](const at::Tensor& dx, const at::Tensor& dt, double eps) {
    const at::AutoGradMode plain(true);  // the plain ops, as the JVP takes them
    const auto plus = trigflow_velocity(*unet, x + eps * dx, t + eps * dt, labels, 0.5, inf);
    const auto minus = trigflow_velocity(*unet, x - eps * dx, t - eps * dt, labels, 0.5, inf);
    return ((plus - minus) / (2 * eps)).detach();
  };
  auto relative = [](const at::Tensor& a, const at::Tensor& b) {
    return ((a - b).norm() / b.norm()).item<double>();
  };
  const auto no_dt = at::zeros({2}, opts), dt = at::tensor(std::vector<double>{0.3, -0.7});
  const auto along_x = trigflow_jvp(*unet, x, t, v_x, no_dt, labels, 0.5);
  EXPECT_EQ(along_x.scalar_type(), at::kDouble);
  EXPECT_GT(along_x.norm().item<double>(), 0);
  EXPECT_LT(relative(along_x, central(v_x, no_dt, 1e-6)), 1e-6);
  const auto along_t = trigflow_jvp(*unet, x, t, at::zeros_like(v_x), dt, labels, 0.5);
  EXPECT_LT(relative(along_t, central(at::zeros_like(v_x), dt, 1e-6)), 1e-6);
  const auto both = trigflow_jvp(*unet, x, t, v_x, dt, labels, 0.5);
  EXPECT_LT(relative(both, central(v_x, dt, 1e-6)), 1e-6);
  // Linear in the direction: the two parts add up to the whole.
  EXPECT_LT(relative(along_x + along_t, both), 1e-9);
}

// sCT's two ways to the tangent's derivative give the same gradient: forward-mode AD through the
// float32 network and central differences through a float64 copy. One step with the whole
// tangent (no warm-up) and no dropout; Adam's first moment after it is 0.1·gradient: each
// tensor's agrees to 1e-3 of its norm, and the loss to 1e-5 (the float32 network's rounding is
// what differs).
TEST_F(TrainingRun, SctForwardAdAndFloat64DifferencesGiveTheSameGradient) {
  std::map<std::string, std::map<std::string, at::Tensor>> states;
  std::map<std::string, double> losses;
  for (const char* jvp : {"ad", "fd"}) {
    auto o = tiny_options((dir_ / jvp).string(), "sct");
    o.jvp = jvp;
    o.total_steps = 1;
    o.tangent_warmup = 0;
    o.unet.dropout = 0;
    o.optimizer = "adam";
    train(o, [&](const TrainProgress& p) { losses[jvp] = p.loss; });
    states[jvp] = saved_state(o.output_dir);
  }
  EXPECT_NEAR(losses["ad"], losses["fd"], 1e-5 * std::abs(losses["fd"]));
  // The attention key biases' gradient is 0 but for rounding (softmax ignores a per-row
  // constant): an absolute floor of 1e-6 of the largest tensor's norm covers it.
  double largest = 0;
  for (const auto& [key, value] : states["fd"])
    if (key.rfind("adam.exp_avg.", 0) == 0) largest = std::max(largest, value.norm().item<double>());
  int compared = 0;
  for (const auto& [key, value] : states["fd"]) {
    if (key.rfind("adam.exp_avg.", 0) != 0) continue;
    const double norm = value.norm().item<double>();
    const double diff = (states["ad"].at(key) - value).norm().item<double>();
    EXPECT_LE(diff, 1e-3 * norm + 1e-6 * largest) << key << ": norm " << norm;
    compared += norm > 1e-6 * largest;
  }
  EXPECT_GT(compared, 50);
}

// An sCT run saves a pipeline whose scheduler is diffusers' SCMScheduler (TrigFlow, the run's
// σd and σmax), and keeps the adaptive weighting's head in its training state only.
TEST_F(TrainingRun, SctSavesAnScmSchedulerPipeline) {
  auto o = tiny_options((dir_ / "sct").string(), "sct");
  o.total_steps = 2;
  train(o);
  const fs::path ckpt = dir_ / "sct" / "checkpoint";
  const std::string text = read_text_file((ckpt / "scheduler" / "scheduler_config.json").string());
  EXPECT_EQ(scheduler_class_name(text, "scheduler_config.json"), "SCMScheduler");
  const auto scm = SCMSchedulerConfig::from_json(text, "scheduler_config.json");
  EXPECT_EQ(scm.sigma_data, o.scheduler.sigma_data);
  EXPECT_EQ(scm.sigma_max, o.scheduler.sigma_max);
  EXPECT_NE(read_text_file((ckpt / "model_index.json").string()).find("SCMScheduler"),
            std::string::npos);
  const auto state = saved_state(o.output_dir);
  EXPECT_EQ(state.count("logvar.weight"), 1u);
  EXPECT_EQ(state.count("adam.exp_avg.logvar.weight"), 1u);
  const auto unet = read_state_dict((ckpt / "unet" / "diffusion_pytorch_model.safetensors").string());
  for (const auto& [key, value] : unet) EXPECT_EQ(key.find("logvar"), std::string::npos) << key;
}

// With --ema-warmup the first step keeps a tenth of the initial weights (rate min(0.9, 1/10))
// instead of --ema-rate's nine tenths.
TEST_F(TrainingRun, EmaWarmupKeepsATenthOfTheInitialWeightsAtTheFirstStep) {
  auto o = tiny_options((dir_ / "run").string(), "ict");
  o.total_steps = 4;
  o.ema_warmup = true;
  o.stop_requested = [] { return true; };  // a checkpoint of the initial weights, step 0
  EXPECT_EQ(train(o).step, 0);
  const auto init = saved_state(o.output_dir);
  o.stop_requested = nullptr;
  o.resume = true;
  o.stop_after = 1;
  EXPECT_EQ(train(o).step, 1);
  const auto after = saved_state(o.output_dir);
  int compared = 0;
  for (const auto& [key, ema] : after) {
    if (key.rfind("ema.", 0) != 0) continue;
    const auto name = key.substr(4);
    const auto expected = 0.1 * init.at("online." + name) + 0.9 * after.at("online." + name);
    EXPECT_TRUE(at::allclose(ema, expected, 1e-5, 1e-6)) << key;
    ++compared;
  }
  EXPECT_GT(compared, 10);
}

// Trains with a log line per step: the mean loss of the last 8 steps must be below that of the
// first 8.
void expect_loss_falls(const TrainOptions& o) {
  std::vector<double> losses;
  train(o, [&](const TrainProgress& p) { losses.push_back(p.loss); });
  ASSERT_EQ(losses.size(), static_cast<size_t>(o.total_steps));
  double first = 0, last = 0;
  for (int i = 0; i < 8; ++i) first += losses[i], last += losses[losses.size() - 1 - i];
  EXPECT_LT(last, first) << "first 8: " << first / 8 << ", last 8: " << last / 8;
}

// Training installs no signal handler (the caller's stays, whatever happens): a stop request
// comes through TrainOptions::stop_requested, asked before each step, and ends the run with a
// checkpoint and the reason.
TEST_F(TrainingRun, StopRequestEndsTheRunWithACheckpointAndTheSignalHandlerIsLeftAlone) {
  auto o = tiny_options((dir_ / "run").string(), "ict");
  o.total_steps = 6;
  void (*mine)(int) = [](int) {};
  const auto before = std::signal(SIGINT, mine);
  int asked = 0;
  o.stop_requested = [&] {
    EXPECT_EQ(std::signal(SIGINT, mine), mine);  // not replaced while training runs
    return ++asked > 2;
  };
  const auto p = train(o);
  EXPECT_EQ(p.step, 2);
  EXPECT_EQ(p.stop, TrainStop::kRequested);
  EXPECT_EQ(checkpoint_step(o.output_dir), 2);
  o.stop_requested = nullptr;
  o.resume = true;
  o.stop_after = 1;
  EXPECT_EQ(train(o).stop, TrainStop::kStepLimit);
  o.stop_after = 0;
  EXPECT_THROW(train(o, [](const TrainProgress&) { throw std::runtime_error("stop"); }),
               std::runtime_error);
  EXPECT_EQ(std::signal(SIGINT, before), mine);
  o.max_minutes = 1e-9;
  EXPECT_EQ(train(o).stop, TrainStop::kTimeLimit);
  o.max_minutes = 0;
  const auto done = train(o);
  EXPECT_EQ(done.stop, TrainStop::kCompleted);
  EXPECT_EQ(done.step, 6);
}

TEST_F(TrainingRun, EveryMethodLowersItsLoss) {
  // A fixed noise grid (no curriculum) and a fixed small data set, so the loss is comparable
  // across steps: the mean of the last steps must be below the mean of the first ones.
  auto edm = tiny_options((dir_ / "edm").string(), "edm");
  for (const char* method : {"edm", "ict", "ct", "cd", "ect", "sct", "scd"}) {
    SCOPED_TRACE(method);
    auto o = tiny_options((dir_ / method).string(), method);
    o.total_steps = 40;
    o.data_limit = 8;
    o.unet.dropout = 0;
    o.ict_s0 = o.ict_s1 = 10;
    o.ct_s0 = o.ct_s1 = 10;
    o.cd_scales = 10;
    o.ect_stage_steps = 1000;  // one stage: r(t) fixed
    o.tangent_warmup = 0;      // sct: the whole tangent from the start
    if (std::string(method) == "cd" || std::string(method) == "scd")
      o.teacher = (dir_ / "edm" / "teacher").string();
    expect_loss_falls(o);
    if (std::string(method) == "sct") {
      o.jvp = "fd";
      o.output_dir = (dir_ / "sct_fd").string();
      expect_loss_falls(o);
    }
  }
}

// --init: the run starts from the folder's weights (the step-0 checkpoint holds them exactly, in
// the online and the EMA network), from a UNet folder or a pipeline folder alike; a folder of
// another architecture is refused by name before any step.
TEST_F(TrainingRun, InitStartsFromTheFoldersWeights) {
  auto edm = tiny_options((dir_ / "edm").string(), "edm");
  edm.total_steps = 3;
  train(edm);
  const auto teacher = read_state_dict(
      (dir_ / "edm" / "teacher" / "diffusion_pytorch_model.safetensors").string());
  for (const auto& from : {dir_ / "edm" / "teacher", dir_ / "edm" / "checkpoint"}) {
    SCOPED_TRACE(from.string());
    auto o = tiny_options((dir_ / ("ect_" + from.filename().string())).string(), "ect");
    o.init = from.string();
    o.total_steps = 4;
    o.stop_requested = [] { return true; };  // a checkpoint before the first step
    EXPECT_EQ(train(o).step, 0);
    const auto state = saved_state(o.output_dir);
    const auto& expected =
        from.filename() == "teacher"
            ? teacher
            : read_state_dict((from / "unet" / "diffusion_pytorch_model.safetensors").string());
    int compared = 0;
    for (const auto& [name, value] : expected) {
      EXPECT_TRUE(at::equal(state.at("online." + name), value)) << name;
      EXPECT_TRUE(at::equal(state.at("ema." + name), value)) << name;
      ++compared;
    }
    EXPECT_GT(compared, 20);
  }
  auto other = tiny_options((dir_ / "other").string(), "ect");
  other.init = (dir_ / "edm" / "teacher").string();
  other.unet.block_out_channels = {8, 8};
  try {
    train(other);
    ADD_FAILURE() << "an --init folder of another architecture was accepted";
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--init"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("architecture"), std::string::npos) << e.what();
  }
  other.init = (dir_ / "nowhere").string();
  EXPECT_THROW(train(other), cm::Error);
}

TEST_F(TrainingRun, Bf16AutocastComputesInBfloat16AndStillLearns) {
  auto o = tiny_options((dir_ / "bf16").string(), "ict");
  o.unet.dropout = 0;
  torch::manual_seed(0);
  UNet2DModel unet(o.unet);
  const auto x = at::randn({2, 1, 28, 28});
  const auto t = at::full({2}, 0.5);
  const auto labels = at::tensor({1, 2}, at::kLong);
  const auto f32 = unet->forward(x, t, labels);
  at::Tensor bf16;
  {
    const Bf16Autocast autocast(true);
    bf16 = unet->forward(x, t, labels);
  }
  EXPECT_EQ(f32.scalar_type(), at::kFloat);
  EXPECT_EQ(bf16.scalar_type(), at::kBFloat16);  // the convolutions really ran in bfloat16
  // bfloat16 keeps 8 significant bits, and the error grows layer by layer through the UNet. How
  // much depends on the CPU's kernels: under 5% of the output's range with AVX-512 BF16 (Zen 5),
  // 6.1% measured where oneDNN emulates bfloat16 (AVX2). A computation in the wrong dtype or with
  // a missing policy is off by the whole range.
  const double scale = f32.abs().max().item<double>();
  EXPECT_LT((bf16.to(at::kFloat) - f32).abs().max().item<double>(), 0.1 * scale);

  o.bf16 = true;
  o.total_steps = 40;
  o.data_limit = 8;
  o.ict_s0 = o.ict_s1 = 10;
  expect_loss_falls(o);
  // The weights stay float32: autocast changes the arithmetic, not what is saved.
  EXPECT_EQ(saved_state(o.output_dir).at("online.conv_in.weight").scalar_type(), at::kFloat);
}

TEST_F(TrainingRun, SavedFolderLoadsAsADiffusersPipeline) {
  auto o = tiny_options((dir_ / "run").string(), "ict");
  o.total_steps = 2;
  train(o);
  const fs::path ckpt = dir_ / "run" / "checkpoint";
  for (const char* f :
       {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json"}) {
    EXPECT_TRUE(fs::exists(ckpt / f)) << f;
  }
  auto pipe = ConsistencyModelPipeline::from_pretrained(ckpt.string());
  GenerateOptions g;
  g.batch_size = 2;
  g.class_labels = {3, 7};
  const auto r = pipe(g);
  EXPECT_EQ(r.images.sizes(), (at::IntArrayRef{2, 28, 28, 1}));
  // diffusers' parameter names: the same keys the module itself reports.
  const auto saved =
      read_state_dict((ckpt / "unet" / "diffusion_pytorch_model.safetensors").string());
  EXPECT_EQ(saved.size(), pipe.unet()->state_dict().size());
  EXPECT_TRUE(saved.count("class_embedding.weight"));
  EXPECT_TRUE(saved.count("down_blocks.0.downsamplers.0.conv1.weight"));
}

}  // namespace
}  // namespace cm::test
