// Measuring generation speed against the machine's own peak, in the style of llama-bench.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cm/config.h"

namespace cm {

// Multiply-adds ×2 of one UNet forward for one image, counted from the config.
struct FlopCount {
  double conv = 0;       // convolutions (3×3, strided, 1×1 shortcuts)
  double linear = 0;     // time embedding, time projections, attention projections
  double attention = 0;  // the two attention matmuls (QKᵀ and PV)
  double total() const { return conv + linear + attention; }
};
FlopCount count_unet_flops(const UNetConfig& config);

// Built-in architectures: "imagenet64", "lsun256", "tiny_cond", "tiny_uncond" (the golden ones).
std::vector<std::string> bench_architectures();
// One of those by name, or the UNet config of a model folder (a pipeline or a bare UNet folder):
// whatever `cm bench -m` takes.
UNetConfig bench_architecture(const std::string& name);
// Writes a random-weight pipeline folder of that architecture (to measure loading).
void save_random_pipeline(const UNetConfig& config, const std::string& dir, uint64_t seed = 0);

struct BenchOptions {
  std::vector<std::string> models = {"imagenet64"};  // names above or pipeline folders
  std::vector<int> batch_sizes = {1};
  std::vector<int> steps = {1};
  std::vector<std::string> dtypes = {"float32"};
  std::vector<int> threads = {0};          // 0: adaptive (cm/tuning.h: the cores others leave free)
  int repetitions = 5;                     // timed runs after one warm-up; the median is reported
  std::string device = "cpu";              // "cuda" or "cuda:N": the GPU grid (CUDA builds)
  std::vector<int64_t> timesteps;          // explicit descending timesteps instead of `steps`
  std::vector<bool> cuda_graphs = {true};  // CUDA: rows with graphs on and/or off
  // CPU: rows timed while a sibling process keeps one core busy (cm bench --contended runs each
  // row idle, then contended).
  std::vector<bool> contended = {false};
  // CPU float32: rows with LoadOptions::winograd off and/or on (cm bench --winograd: both).
  std::vector<bool> winograd = {false};
  // Called before each model is loaded or built, and once it is ready (weights packed): a program
  // can tune its allocator for each phase (cm does, cm/tuning.h).
  std::function<void()> before_load, after_load;
};

struct BenchRow {
  std::string model, dtype;
  std::string device = "cpu";
  int batch = 1, steps = 1;
  int threads = 1;                 // 0: adaptive, up to every core
  bool contended = false;          // timed next to a busy sibling process
  bool winograd = false;           // LoadOptions::winograd asked for (and supported)
  std::vector<int64_t> timesteps;  // when given explicitly
  bool cuda_graphs = false;
  double process_start_s = -1;  // from the process's start to the benchmark's (loading LibTorch)
  double load_s = -1;           // reading the folder and packing the weights (built in memory:
                                // packing only)
  double first_call_s = 0;      // first pipeline call (allocations, primitives for new shapes)
  double ms_per_image = 0;      // median steady state
  double images_per_s = 0;
  double gflop_per_image = 0;  // UNet forwards only: steps × one forward
  double achieved_gflops = 0;
  double peak_gflops = 0;       // large 3×3 convolution, same dtype and threads, same run: median
                                // of one sample after each timed call
  double fraction_of_peak = 0;  // median over the timed calls of (that call's GFLOP/s / the
                                // peak sampled right after it)
  double peak_rss_mb = 0;       // process peak resident memory after this row
  double peak_gpu_mem_mb = 0;   // CUDA: the caching allocator's peak during this row
};

// Peak of the convolution backend: a 256→256 3×3 NHWC convolution on 64×64, median of six
// samples (each the best of three calls) after a warm-up.
double measure_conv_peak_gflops(const std::string& dtype, int threads);
// The GPU's matrix-multiply peak in that dtype (an 8192³ GEMM, TF32 off for float32), GFLOP/s.
double measure_gpu_matmul_peak_gflops(const std::string& dtype, const std::string& device);
std::vector<BenchRow> run_bench(const BenchOptions& options);
std::string bench_markdown(const std::vector<BenchRow>& rows);
std::string bench_json(const std::vector<BenchRow>& rows);

// Each hand-fused CPU kernel against the plain ATen ops it replaces, on activation shapes of the
// built-in architectures (cm bench --kernels): medians of alternating timed calls in one run.
struct KernelBenchRow {
  std::string kernel, shape, dtype, isa;  // isa: the instruction set the kernels ran with
  int threads = 1;
  double plain_ms = 0, fused_ms = 0;
  double plain_error = 0, fused_error = 0;  // largest difference from a float64 computation
};
std::vector<KernelBenchRow> run_kernel_bench(const std::vector<std::string>& dtypes, int threads,
                                             int repetitions);
std::string kernel_bench_markdown(const std::vector<KernelBenchRow>& rows);
std::string kernel_bench_json(const std::vector<KernelBenchRow>& rows);

}  // namespace cm
