// The real cm binary, run as a user would: exact pixels against diffusers' golden images, and a
// one-line error with a non-zero exit for bad input.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "temp_dir_test.h"

#include <sys/wait.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cm/config.h"
#include "cm/image_io.h"
#include "free_port.h"
#include "golden.h"
#include "io/state_dict.h"
#include "run_cm.h"

namespace cm {
namespace {

namespace fs = std::filesystem;

using test::run_cm;
using test::RunResult;

class CliTest : public test::TempDirTest {};

const std::string kCond = CM_GOLDEN_DIR "/tiny_cond";
const std::string kShippedModel = CM_MODELS_DIR "/fmnist-cm";

TEST_F(CliTest, OneStepPngHasExactlyTheGoldenPixels) {
  const auto r =
      run_cm("generate -m " + kCond + "/model --seed 0 --steps 1 --class 3 -o " + path("x.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  TextChunks text;
  const ImageU8 img = read_png(path("x.png"), &text);
  const auto golden = read_state_dict(kCond + "/cases.safetensors");
  const at::Tensor& expected = golden.at("pipeline.0.uint8");  // [1, 32, 32, 3]
  ASSERT_EQ(img.height, expected.size(1));
  ASSERT_EQ(img.width, expected.size(2));
  ASSERT_EQ(img.channels, expected.size(3));
  const auto* want = expected.data_ptr<uint8_t>();
  size_t differ = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i) differ += img.pixels[i] != want[i];
  EXPECT_EQ(differ, 0u);
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].first, "parameters");
  EXPECT_NE(text[0].second.find("seed: 0"), std::string::npos) << text[0].second;
  EXPECT_NE(text[0].second.find("class: 3"), std::string::npos) << text[0].second;
  EXPECT_NE(text[0].second.find("steps: 1"), std::string::npos) << text[0].second;
  EXPECT_NE(text[0].second.find("dtype: float32"), std::string::npos) << text[0].second;
}

// --winograd: where it runs (the LibTorch 1.13 build on an AVX-512 CPU) the PNG says so and the
// pixels stay within one level of diffusers' float32 ones; elsewhere one line says it cannot,
// and the image is the exact one.
TEST_F(CliTest, WinogradIsNamedInThePngAndStaysCloseToTheGoldenPixels) {
  const auto r = run_cm("generate -m " + kCond +
                        "/model --seed 0 --steps 1 --class 3 --winograd -o " + path("w.png"));
  ASSERT_EQ(r.status, 0) << r.output;
#if CM_ONEDNN_DIRECT
  const bool runs = __builtin_cpu_supports("avx512bw");
#else
  const bool runs = false;
#endif
  EXPECT_EQ(r.output.find("--winograd: no Winograd kernel here") == std::string::npos, runs)
      << r.output;
  TextChunks text;
  const ImageU8 img = read_png(path("w.png"), &text);
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].second.find("convolution: winograd") != std::string::npos, runs)
      << text[0].second;
  const auto golden = read_state_dict(kCond + "/cases.safetensors");
  const at::Tensor& expected = golden.at("pipeline.0.uint8");
  ASSERT_EQ(static_cast<int64_t>(img.pixels.size()), expected.numel());
  const auto* want = expected.data_ptr<uint8_t>();
  int worst = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i)
    worst = std::max(worst, std::abs(int(img.pixels[i]) - int(want[i])));
  EXPECT_LE(worst, runs ? 1 : 0);
}

TEST_F(CliTest, MultistepNpyMatchesGoldenImages) {
  // pipeline.1 of tiny_cond: batch 2, timesteps [22, 0], seed 42, classes 3 and 7.
  const auto r = run_cm("generate -m " + kCond + "/model --seed 42 --timesteps 22,0 -n 2 " +
                        "--class 3,7 --quiet -o " + path("x.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  const NpyArray a = read_npy(path("x.npy"));
  EXPECT_EQ(a.descr, "<f4");
  const auto golden = read_state_dict(kCond + "/cases.safetensors");
  const at::Tensor& expected = golden.at("pipeline.1.images");
  ASSERT_EQ(a.shape, expected.sizes().vec());
  const auto got = at::from_blob(const_cast<uint8_t*>(a.data.data()), a.shape, at::kFloat);
  EXPECT_LE((got - expected).abs().max().item<float>(), 1e-4);
}

TEST_F(CliTest, NpzHoldsUint8SamplesAndLabels) {
  const auto r = run_cm("generate -m " + kCond +
                        "/model --seed 7 --steps 3 -n 2 --class 1,2 -q -o " + path("s.npz"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto arrays = read_npz(path("s.npz"));
  ASSERT_EQ(arrays.size(), 2u);
  EXPECT_EQ(arrays[0].first, "arr_0");
  EXPECT_EQ(arrays[0].second.descr, "|u1");
  const auto golden = read_state_dict(kCond + "/cases.safetensors");
  const at::Tensor& expected = golden.at("pipeline.2.uint8");
  ASSERT_EQ(arrays[0].second.shape, expected.sizes().vec());
  // Equal but for values within 1e-3 of a rounding boundary: the golden README's tolerance.
  const auto got = at::from_blob(const_cast<uint8_t*>(arrays[0].second.data.data()),
                                 arrays[0].second.shape, at::kByte);
  EXPECT_TRUE(test::uint8_match(got, expected, golden.at("pipeline.2.images")));
  EXPECT_EQ(arrays[1].first, "arr_1");
  EXPECT_EQ(arrays[1].second.shape, (std::vector<int64_t>{2}));
}

TEST_F(CliTest, BatchWritesNumberedFilesOrOneGrid) {
  auto r = run_cm("generate -m " + kCond + "/model -s 1 -n 3 -q -o " + path("img_%d.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(fs::exists(path("img_" + std::to_string(i) + ".png")));
  r = run_cm("generate -m " + kCond + "/model -s 1 -n 4 --grid -q -o " + path("grid.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  const ImageU8 grid = read_png(path("grid.png"));
  EXPECT_EQ(grid.width, 64);
  EXPECT_EQ(grid.height, 64);
}

TEST_F(CliTest, BadArgumentsGiveOneLineErrors) {
  const std::string model = "-m " + kCond + "/model -q -o " + path("bad.png");
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"generate " + model + " -n -1", "batch-size"},
      {"generate " + model + " --timesteps 0,22", "descending"},
      {"generate " + model + " --class 1000", "out of range"},
      {"generate " + model + " --class x", "--class"},
      {"generate " + model + " --dtype float8", "float8"},
      {"generate -m /nonexistent/model -o " + path("bad.png"), "/nonexistent/model"},
      {"generate " + model + " --steps 0", "--steps"},
      {"generate " + model + " --devices 0", "--devices"},
      {"generate " + model + " --device tpu", "tpu"},
      {"bench -m tiny_cond --device cuda:0 -r 1", "cuda"},
      // The command line itself: no subcommand, an unknown flag, a value of the wrong type.
      {"", "error: A subcommand is required"},
      {"generate --bogus", "--bogus"},
      {"generate -s abc", "abc"},
      // Values that crashed, hung or were accepted silently (issue 15).
      {"generate " + model + " -t 100000", "--threads"},
      {"generate " + model + " -t -1", "--threads"},
      {"generate " + model + " --per-class 0", "--per-class"},
      // The scheduler's own name for it once stood alone.
      {"generate " + model + " --steps 100000", "--steps"},
#if CM_TRAINING
      // plot-log wrote PNG bytes into any name.
      {"plot-log " + path("none.csv") + " -o " + path("loss.gif"), "-o " + path("loss.gif")},
      {"train --log-every 0 -q -o " + path("run"), "--log-every"},
      {"train --ema-rate 2 -q -o " + path("run"), "--ema-rate"},
      {"train --ict-s0 0 -q -o " + path("run"), "--ict-s0"},
      {"train --cd-scales 0 --method cd -q -o " + path("run"), "--cd-scales"},
      {"train --warmup -5 -q -o " + path("run"), "--warmup"},
      {"train --stop-after 0 -q -o " + path("run"), "--stop-after"},
      {"train --num-classes -1 -q -o " + path("run"), "--num-classes"},
      {"train --method ect --init " + path("none") + " -q -o " + path("run"), "--init"},
      {"train --init " + kShippedModel + " --channels 8,8 -q -o " + path("run"), "--channels"},
      {"train --method ect --ect-q 1 -q -o " + path("run"), "--ect-q"},
      {"train --method ect --ect-weighting sqrt -q -o " + path("run"), "--ect-weighting"},
      {"train --method sct --tangent-norm-c 0 -q -o " + path("run"), "--tangent-norm-c"},
      {"train --method sct --sct-p-std -1 -q -o " + path("run"), "--sct-p-std"},
      {"train-classifier -n 0 -o " + path("cls"), "--batch-size"},
      {"train-classifier --epochs 0 -o " + path("cls"), "--epochs"},
      {"eval --per-class 0", "--per-class"},
      {"eval --real-limit -5", "--real-limit"},
#endif
      {"bench -m tiny_cond -r 0", "--repetitions"},
      // Empty values were silently no value; a seed past 64 bits was saturated; float16 on the
      // CPU failed at the first call with ATen's message (LibTorch 1.13 has no such kernels).
      {"generate " + model + " --class ''", "--class"},
      {"generate " + model + " --timesteps ''", "--timesteps"},
      {"generate -m '' -q -o " + path("bad.png"), "--model"},
      {"edit " + model + " --class ''", "--class"},
      {"generate " + model + " -s 99999999999999999999999", "--seed"},
      {"generate " + model + " --dtype float16", "dtype float16: this LibTorch"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cm(c.args);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
    // The error itself is one line (a random seed may be announced before it).
    const auto pos = r.output.find("error: ");
    if (pos != std::string::npos) {
      const auto rest = r.output.substr(pos);
      EXPECT_LE(std::count(rest.begin(), rest.end(), '\n'), 1) << r.output;
    }
    EXPECT_FALSE(fs::exists(path("bad.png")));
  }
}

// The shipped Fashion-MNIST model is the default: a labelled grid, one row per class.
TEST_F(CliTest, NoModelUsesTheShippedModel) {
  const auto r = run_cm("generate --per-class 3 -s 0 -o " + path("grid.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  TextChunks text;
  const ImageU8 grid = read_png(path("grid.png"), &text);
  EXPECT_EQ(grid.width, 3 * 28);
  EXPECT_EQ(grid.height, 10 * 28);
  EXPECT_EQ(grid.channels, 1);
  EXPECT_NE(r.output.find("row 7: sneaker"), std::string::npos) << r.output;
  // Class names work as labels.
  // As people write them: "Sneaker", "T-Shirt" (case, spaces, '-' and '_' ignored).
  const auto named = run_cm("generate --class Sneaker -s 0 -q -o " + path("s.png"));
  ASSERT_EQ(named.status, 0) << named.output;
  const auto numbered = run_cm("generate --class 7 -s 0 -q -o " + path("n.png"));
  ASSERT_EQ(numbered.status, 0) << numbered.output;
  EXPECT_EQ(read_png(path("s.png")).pixels, read_png(path("n.png")).pixels);
  const auto shirt = run_cm("generate --class T-Shirt,tshirt -n 2 -s 0 -q -o " + path("t.npz"));
  ASSERT_EQ(shirt.status, 0) << shirt.output;
  const auto unknown = run_cm("generate --class spaceship -q -o " + path("x.png"));
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(unknown.output.find("spaceship"), std::string::npos) << unknown.output;
}

#if CM_TRAINING
// Real test images against themselves: distance ~0 and the classifier's own test accuracy.
TEST_F(CliTest, EvalOfRealImagesAgainstThemselves) {
  const auto r = run_cm("eval -q");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto pos = r.output.find("classifier test accuracy: ");
  ASSERT_NE(pos, std::string::npos) << r.output;
  const double accuracy = std::stod(r.output.substr(pos + 26));
  EXPECT_GT(accuracy, 0.85) << r.output;
  const auto row = r.output.find("| test vs test | 10000 | ");
  ASSERT_NE(row, std::string::npos) << r.output;
  const double distance = std::stod(r.output.substr(row + 24));
  EXPECT_LT(std::abs(distance), 1e-6) << r.output;
  const auto acc_cell = r.output.find(" | ", row + 24);
  EXPECT_NEAR(std::stod(r.output.substr(acc_cell + 3)), accuracy, 1e-4) << r.output;
}

// --timesteps adds a row per explicit schedule: the shipped model's own two-step schedule (the
// scheduler's indices n/2 and 0 for n training steps) gives the "2 steps" row's numbers exactly,
// another intermediate time other ones; a bad schedule is refused naming the option.
TEST_F(CliTest, EvalOfExplicitSchedules) {
  const int n =
      SchedulerConfig::load(kShippedModel + "/scheduler/scheduler_config.json").num_train_timesteps;
  const std::string own = std::to_string(n / 2) + ",0", other = std::to_string(n * 3 / 4) + ",0";
  const auto r = run_cm("eval -q -m " + kShippedModel +
                        " --per-class 3 --real-limit 300 --steps 2 --timesteps " + own +
                        " --timesteps " + other);
  ASSERT_EQ(r.status, 0) << r.output;
  auto cells = [&](const std::string& what) {
    const auto row = r.output.find("| " + what + " | 30 | ");
    EXPECT_NE(row, std::string::npos) << what << "\n" << r.output;
    if (row == std::string::npos) return std::string();
    return r.output.substr(row + what.size() + 9, r.output.find('\n', row) - row - what.size() - 9);
  };
  const auto two = cells("2 steps"), same = cells("timesteps " + own),
             different = cells("timesteps " + other);
  ASSERT_FALSE(two.empty());
  EXPECT_EQ(two, same);
  EXPECT_NE(two, different);
  const auto bad = run_cm("eval -q -m " + kShippedModel + " --per-class 1 --timesteps 0,5");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("timesteps"), std::string::npos) << bad.output;
}
#endif

// --dtype auto: bfloat16 only on a CPU with bfloat16 instructions (the kernel's flags say which),
// recorded resolved in the PNG text; bfloat16 asked for on a CPU without them is warned about.
TEST_F(CliTest, DtypeAutoAndTheEmulatedBfloat16Warning) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool bf16 = false;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      bf16 = line.find(" avx512_bf16") != std::string::npos ||
             line.find(" amx_bf16") != std::string::npos;
      break;
    }
  }
  const std::string model = "-m " + kCond + "/model -s 0 --class 1 ";
  const auto a = run_cm("generate " + model + "--dtype auto -o " + path("auto.png"));
  ASSERT_EQ(a.status, 0) << a.output;
  TextChunks text;
  read_png(path("auto.png"), &text);
  ASSERT_FALSE(text.empty());
  EXPECT_NE(text[0].second.find(bf16 ? "dtype: bfloat16" : "dtype: float32"), std::string::npos)
      << text[0].second;
  EXPECT_EQ(a.output.find("warning:"), std::string::npos) << a.output;
  const auto b = run_cm("generate " + model + "--dtype bfloat16 -o " + path("bf16.png"));
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_EQ(b.output.find("warning: this CPU has no bfloat16 instructions") != std::string::npos,
            !bf16)
      << b.output;
}

// `cm bench -m` takes a model folder; --flops once refused one. The golden tiny_cond folder holds
// the built-in tiny_cond architecture, so the two counts agree.
TEST_F(CliTest, BenchFlopsTakesAModelFolder) {
  const auto folder = run_cm("bench --flops -m " + kCond + "/model");
  ASSERT_EQ(folder.status, 0) << folder.output;
  const auto builtin = run_cm("bench --flops -m tiny_cond");
  ASSERT_EQ(builtin.status, 0) << builtin.output;
  const auto count = [](const std::string& s) { return s.substr(s.find(": ")); };
  EXPECT_EQ(count(folder.output), count(builtin.output));
  EXPECT_NE(folder.output.find("GFLOP"), std::string::npos) << folder.output;
}

#if CM_TRAINING
// The default output was the shipped classifier's folder, overwritten without a word (issue 15).
TEST_F(CliTest, TrainClassifierRefusesToOverwrite) {
  fs::create_directories(path("cls"));
  { std::ofstream(path("cls/model.safetensors")) << "precious"; }
  const auto r = run_cm("train-classifier --epochs 1 -o " + path("cls"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--overwrite"), std::string::npos) << r.output;
  std::ifstream in(path("cls/model.safetensors"));
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "precious");
}

// plot-log: labelled axes (text left of the value axis and under the step axis, where only the
// axis lines were before), the evaluation panels when the log has them, JPEG by extension.
TEST_F(CliTest, PlotLogDrawsLabelsEvaluationsAndJpeg) {
  {
    std::ofstream log(path("train_log.csv"));
    log << "step,loss,num_scales,target_ema,lr,images_per_second,frechet_1step,accuracy_1step,"
           "frechet_2steps,accuracy_2steps\n";
    for (int s = 10; s <= 200; s += 10) {
      log << s << "," << 20.0 / s << ",11,0,1e-4,40";
      if (s % 100 == 0) log << "," << 3000.0 / s << "," << 0.4 + s / 1000.0 << "," << 2000.0 / s
                            << "," << 0.5 + s / 1000.0 << "\n";
      else log << ",,,,\n";
    }
  }
  const auto r = run_cm("plot-log " + path("train_log.csv") + " -o " + path("loss.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("2 evaluations"), std::string::npos) << r.output;
  const ImageU8 with_eval = read_png(path("loss.png"));
  // A log without the evaluation columns (the format before --eval-every) is one panel.
  {
    std::ofstream log(path("old_log.csv"));
    log << "step,loss,num_scales,target_ema,lr,images_per_second\n10,2,11,0,1e-4,40\n"
           "20,1,11,0,1e-4,40\n30,0.5,11,0,1e-4,40\n";
  }
  const auto old = run_cm("plot-log " + path("old_log.csv") + " -o " + path("old.png"));
  ASSERT_EQ(old.status, 0) << old.output;
  const ImageU8 plain = read_png(path("old.png"));
  EXPECT_GT(with_eval.height, plain.height + 300);  // two panels of evaluations below
  // Dark pixels in the margins: tick labels. The axes themselves sit at x = 80 and at the
  // bottom of the panel; look left of x = 70 and below the axis.
  auto dark_in = [&](int x0, int x1, int y0, int y1) {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) n += plain.pixels[(static_cast<size_t>(y) * plain.width + x) * 3] < 100;
    return n;
  };
  EXPECT_GT(dark_in(0, 70, 30, 350), 20);                  // value labels
  EXPECT_GT(dark_in(90, plain.width, 346, plain.height), 20);  // step labels
  const auto jpeg = run_cm("plot-log " + path("train_log.csv") + " -o " + path("loss.jpg"));
  ASSERT_EQ(jpeg.status, 0) << jpeg.output;
  const ImageU8 j = read_jpeg(path("loss.jpg"));
  EXPECT_EQ(j.width, with_eval.width);
  EXPECT_EQ(j.height, with_eval.height);
}

// sCT end to end: it trains with evaluations (one- and two-step samples by SCMScheduler), its
// checkpoint generates, and the commands that do not take TrigFlow models yet say so in one line.
TEST_F(CliTest, SctTrainsEvaluatesAndGenerates) {
  const auto r = run_cm(
      "train --method sct --data fashion-mnist:test --data-limit 64 --channels 8,16 "
      "--layers-per-block 1 --head-dim 8 --norm-groups 4 --checkpoint-every 0 --sample-every 2 "
      "--log-every 1 --seed 3 -n 4 -t 2 --steps 2 --eval-every 2 --eval-per-class 3 -o " +
      path("sct"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("eval: 1 step Fréchet"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(path("sct/samples/step_0000002.png")));
  const std::string model = path("sct/checkpoint");
  const auto g = run_cm("generate -m " + model + " --steps 2 -s 1 -q -o " + path("g.png"));
  ASSERT_EQ(g.status, 0) << g.output;
  EXPECT_EQ(read_png(path("g.png")).width, 28);
  const int port = cm::test::free_port();
  ASSERT_GT(port, 0);
  for (const std::string& command :
       {"edit -m " + model + " --task interpolate -q -o " + path("e.png"),
        "serve -q -m " + model + " --port " + std::to_string(port)}) {
    const auto e = run_cm(command);
    EXPECT_NE(e.status, 0) << command;
    const auto at = e.output.find("error: ");
    ASSERT_NE(at, std::string::npos) << e.output;
    EXPECT_NE(e.output.find("TrigFlow (SCMScheduler)"), std::string::npos) << e.output;
    EXPECT_EQ(e.output.find('\n', at), e.output.size() - 1) << e.output;  // one line, the last
  }
}

// --eval-every: the evaluated steps' rows carry one- and two-step Fréchet distance and accuracy
// (finite, in range), the others leave those cells empty, and plot-log draws them.
TEST_F(CliTest, TrainEvalEveryWritesEvaluationColumns) {
  const auto r = run_cm(
      "train --data fashion-mnist:test --data-limit 64 --channels 8,16 --layers-per-block 1 "
      "--head-dim 8 --norm-groups 4 --checkpoint-every 0 --sample-every 0 --log-every 1 "
      "--seed 3 -n 4 -t 2 --steps 4 --eval-every 2 --eval-per-class 3 -o " + path("run"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("eval: 1 step Fréchet"), std::string::npos) << r.output;
  std::ifstream log(path("run/train_log.csv"));
  std::string line;
  std::getline(log, line);
  EXPECT_EQ(line,
            "step,loss,num_scales,target_ema,lr,images_per_second,frechet_1step,accuracy_1step,"
            "frechet_2steps,accuracy_2steps,images");
  int evaluated = 0, rows = 0;
  while (std::getline(log, line)) {
    ++rows;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    if (line.back() == ',') cells.emplace_back();
    ASSERT_EQ(cells.size(), 11u) << line;
    const int step = std::stoi(cells[0]);
    EXPECT_EQ(cells[10], std::to_string(step * 4)) << line;  // images seen: step × batch
    if (step % 2 != 0) {
      for (int i = 6; i < 10; ++i) EXPECT_TRUE(cells[i].empty()) << line;
      continue;
    }
    ++evaluated;
    for (int i : {6, 8}) {
      const double frechet = std::stod(cells[i]);
      EXPECT_TRUE(std::isfinite(frechet) && frechet >= 0) << line;
    }
    for (int i : {7, 9}) {
      const double accuracy = std::stod(cells[i]);
      EXPECT_TRUE(accuracy >= 0 && accuracy <= 1) << line;
    }
  }
  EXPECT_EQ(rows, 4);
  EXPECT_EQ(evaluated, 2);
  const auto plot = run_cm("plot-log " + path("run/train_log.csv") + " -o " + path("run.png"));
  ASSERT_EQ(plot.status, 0) << plot.output;
  EXPECT_NE(plot.output.find("2 evaluations"), std::string::npos) << plot.output;
  // A model that is not Fashion-MNIST-shaped is refused before training starts.
  const auto rgb = run_cm("train --sample-size 32 --in-channels 3 --eval-every 2 --steps 2 -q -o " +
                          path("rgb"));
  EXPECT_EQ(rgb.status, 1) << rgb.output;
  EXPECT_NE(rgb.output.find("--eval-every"), std::string::npos) << rgb.output;
}

// plot-log with several logs: their evaluations against images seen, each run shifted by the
// images it saw before (pretraining); a log from before the images column needs its batch.
TEST_F(CliTest, PlotLogComparesRunsAgainstImagesSeen) {
  {
    std::ofstream old(path("old.csv"));  // no images column, batch 64
    old << "step,loss,num_scales,target_ema,lr,images_per_second,frechet_1step,accuracy_1step,"
           "frechet_2steps,accuracy_2steps\n"
           "100,1,11,0,1e-4,40,30,0.8,20,0.85\n200,0.5,11,0,1e-4,40,20,0.85,10,0.9\n";
    std::ofstream now(path("new.csv"));
    now << "step,loss,num_scales,target_ema,lr,images_per_second,frechet_1step,accuracy_1step,"
           "frechet_2steps,accuracy_2steps,images\n"
           "10,1,0,0,1e-4,40,,,,,320\n20,1,0,0,1e-4,40,9,0.9,5,0.91,640\n"
           "30,1,0,0,1e-4,40,8,0.91,4,0.92,960\n";
  }
  const std::string both = "plot-log " + path("old.csv") + " " + path("new.csv") + " -o " +
                           path("cmp.png") + " --label iCT,ECT";
  const auto r = run_cm(both + " --batch 64,0 --images-before 0,20000");
  ASSERT_EQ(r.status, 0) << r.output;
  // 2 × 4 evaluation cells + 2 × 4; the last: 20000 + 960.
  EXPECT_NE(r.output.find("16 evaluations of 2 runs against images seen (up to 20960)"),
            std::string::npos)
      << r.output;
  const ImageU8 chart = read_png(path("cmp.png"));
  EXPECT_EQ(chart.width, 800);
  EXPECT_GT(chart.height, 4 * 200);  // four panels
  const auto no_batch = run_cm(both);
  EXPECT_EQ(no_batch.status, 1) << no_batch.output;
  EXPECT_NE(no_batch.output.find("--batch"), std::string::npos) << no_batch.output;
  const auto miscount = run_cm(both + " --batch 64");
  EXPECT_EQ(miscount.status, 1) << miscount.output;
  EXPECT_NE(miscount.output.find("--batch: 1 values for 2 logs"), std::string::npos)
      << miscount.output;
}

// --init takes the folder's architecture and weights (here the shipped model's, as a pipeline
// folder) and --dropout over it; the saved UNet has the folder's config but for dropout.
TEST_F(CliTest, TrainInitTakesTheFoldersArchitecture) {
  const auto r = run_cm("train --method ect --init " + kShippedModel +
                        " --dropout 0.2 --data fashion-mnist:test --data-limit 16 -n 2 --steps 1 "
                        "--checkpoint-every 0 --sample-every 0 -t 1 -q -o " + path("run"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto theirs = UNetConfig::load(kShippedModel + "/unet/config.json");
  const auto ours = UNetConfig::load(path("run") + "/checkpoint/unet/config.json");
  EXPECT_EQ(ours.dropout, 0.2);
  theirs.dropout = 0.2;
  EXPECT_EQ(ours.to_json(), theirs.to_json());
}

// A planned stop is a success that says how to go on; Ctrl-C keeps the shell's 130; both leave a
// checkpoint that --resume continues.
TEST_F(CliTest, PlannedStopExitsZeroAndCtrlCExits130) {
  const std::string train =
      "train --data fashion-mnist:test --data-limit 64 --channels 8,16 --layers-per-block 1 "
      "--head-dim 8 --norm-groups 4 --checkpoint-every 0 --sample-every 0 --log-every 1 "
      "--seed 3 -n 4 -t 1 ";
  const auto planned = run_cm(train + "--steps 3 --stop-after 1 -q -o " + path("run"));
  EXPECT_EQ(planned.status, 0) << planned.output;
  EXPECT_NE(planned.output.find("stopped at step 1 of 3 (--stop-after); continue with the same "
                                "command and --resume"),
            std::string::npos)
      << planned.output;
  const auto resumed = run_cm(train + "--steps 3 --resume -q -o " + path("run"));
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(resumed.output.find("stopped at"), std::string::npos) << resumed.output;

  // Ctrl-C once the first step is logged: a checkpoint, then 130.
  const auto interrupted = test::run_shell(
      std::string(CM_BINARY) + " " + train + "--steps 100000 -o " + path("long") + " > " +
      path("long.log") + " 2>&1 & pid=$!; for i in $(seq 600); do grep -q '^step 1/' " +
      path("long.log") + " && break; sleep 0.1; done; kill -INT $pid; wait $pid; echo exit=$?; " +
      "cat " + path("long.log"));
  EXPECT_NE(interrupted.output.find("exit=130"), std::string::npos) << interrupted.output;
  EXPECT_NE(interrupted.output.find("(Ctrl-C); continue with the same command and --resume"),
            std::string::npos)
      << interrupted.output;
  EXPECT_TRUE(fs::exists(path("long") + "/checkpoint/training_state.safetensors"));
}
#endif

// Ctrl-C while cm generate writes PNGs: it stops at the next image (not after all of them), with
// 130, and leaves whole files only. A second Ctrl-C would end it at once.
TEST_F(CliTest, CtrlCStopsGenerateBetweenImages) {
  // --foreground: otherwise timeout passes the SIGINT on to cm and to its whole process group, so
  // cm can see it twice, and a second Ctrl-C means "exit now" (a CI run failed that way).
  const auto r = test::run_shell(
      "timeout --foreground 120 " + std::string(CM_BINARY) + " generate -n 100000 --chunk-size 1 -s 0 -q -o " +
      path("p_%d.png") + " > " + path("out.log") + " 2>&1 & pid=$!; for i in $(seq 600); do " +
      "[ -e " + path("p_3.png") + " ] && break; sleep 0.05; done; kill -INT $pid; wait $pid; " +
      "echo exit=$?; cat " + path("out.log"));
  EXPECT_NE(r.output.find("exit=130"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("interrupted (Ctrl-C)"), std::string::npos) << r.output;
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;  // nothing half-written
    if (e.path().extension() == ".png") {
      ++pngs;
      EXPECT_NO_THROW(read_png(e.path().string())) << name;
    }
  }
  EXPECT_GE(pngs, 4);
  EXPECT_LT(pngs, 5000);
}

TEST_F(CliTest, VersionPrints) {
  const auto r = run_cm("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("cm "), std::string::npos);
  EXPECT_NE(r.output.find("LibTorch " TORCH_VERSION), std::string::npos) << r.output;
}

// cm info: the build (LibTorch, CUDA compiled in or not) and the GPUs the runtime sees.
TEST_F(CliTest, InfoNamesTheBuildAndTheGpus) {
  const auto r = run_cm("info");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("LibTorch: " TORCH_VERSION), std::string::npos) << r.output;
#if CM_CUDA
  EXPECT_NE(r.output.find("CUDA: 13."), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cuDNN: 9."), std::string::npos) << r.output;
#else
  EXPECT_NE(r.output.find("CUDA: not compiled in"), std::string::npos) << r.output;
#endif
  const auto gpus = torch::cuda::device_count();
  EXPECT_NE(r.output.find("GPUs: " + std::to_string(gpus)), std::string::npos) << r.output;
#if !CM_CUDA
  // cm tunes OpenBLAS in its own process, without re-executing itself (cm/tuning.h): one thread,
  // and AVX-512 kernels on an AVX-512 CPU.
  EXPECT_NE(r.output.find(" kernels, 1 thread\n"), std::string::npos) << r.output;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    const bool avx512 = r.output.find("BLAS: OpenBLAS, SkylakeX") != std::string::npos ||
                        r.output.find("BLAS: OpenBLAS, Cooperlake") != std::string::npos ||
                        r.output.find("BLAS: OpenBLAS, SapphireRapids") != std::string::npos;
    EXPECT_TRUE(avx512) << r.output;
  }
#endif
}

}  // namespace
}  // namespace cm
