// cm bench --device cuda: the model grid on a GPU, with and without CUDA graphs, against the
// GPU's matrix-multiply peak measured in the same run (CUDA builds only).
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/cuda.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include "bench/bench_util.h"
#include "cm/bench.h"
#include "cm/error.h"
#include "cm/pipeline.h"

namespace cm {

namespace fs = std::filesystem;

namespace {

using bench_util::Clock;
using bench_util::dtype_of;
using bench_util::seconds_since;

at::Device gpu_of(const std::string& name) {
  if (!torch::cuda::is_available())
    throw Error("--device " + name + ": no CUDA device is visible to this process");
  try {
    const at::Device d(name);
    if (d.is_cuda()) return d.has_index() ? d : at::Device(at::kCUDA, 0);
  } catch (const std::exception&) {
  }
  throw Error("--device: bad value '" + name + "' (cpu, cuda, cuda:N)");
}

double peak_allocated_mb(const at::Device& d) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
  // Entry 0 is the aggregate over pool types (StatType::AGGREGATE, whose namespace moved
  // between LibTorch releases).
  return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20);
}

}  // namespace

double measure_gpu_matmul_peak_gflops(const std::string& dtype, const std::string& device) {
  const auto d = gpu_of(device);
  const c10::cuda::CUDAGuard guard(d);
  const bool tf32 = at::globalContext().allowTF32CuBLAS();
  at::globalContext().setAllowTF32CuBLAS(false);
  const int64_t n = 8192;
  const auto opts = at::TensorOptions().dtype(dtype_of(dtype)).device(d);
  const auto a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  auto c = at::matmul(a, b);
  torch::cuda::synchronize(d.index());
  std::vector<double> samples;
  for (int s = 0; s < 5; ++s) {
    const auto t = Clock::now();
    for (int i = 0; i < 4; ++i) c = at::matmul(a, b);
    torch::cuda::synchronize(d.index());
    samples.push_back(4 * 2.0 * n * n * n / seconds_since(t) / 1e9);
  }
  at::globalContext().setAllowTF32CuBLAS(tf32);
  return bench_util::median(samples);
}

std::vector<BenchRow> run_cuda_bench(const BenchOptions& o) {
  const auto device = gpu_of(o.device);
  std::vector<BenchRow> rows;
  for (const auto& model : o.models) {
    for (const auto& dtype : o.dtypes) {
      const double peak = measure_gpu_matmul_peak_gflops(dtype, o.device);
      LoadOptions load;
      load.dtype = dtype_of(dtype);
      load.device = device;
      auto [pipe, load_s] = bench_util::load_bench_pipeline(model, load);
      const double gflop = count_unet_flops(pipe->unet()->config()).total() / 1e9;
      for (int batch : o.batch_sizes) {
        for (int steps : bench_util::step_counts(o)) {
          for (const bool graphs : o.cuda_graphs) {
            GenerateOptions g;
            g.batch_size = batch;
            g.num_inference_steps = steps;
            g.timesteps = o.timesteps;
            g.cuda_graphs = graphs;
            g.seed = 0;
            BenchRow r;
            r.model = model;
            r.device = device.str();
            r.dtype = dtype;
            r.batch = batch;
            r.steps = steps;
            r.timesteps = o.timesteps;
            r.cuda_graphs = graphs;
            r.threads = at::get_num_threads();
            r.load_s = load_s;
            c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
            auto t = Clock::now();
            (*pipe)(g);  // the call returns images on the CPU: it has synchronised
            r.first_call_s = seconds_since(t);
            (*pipe)(g);  // a second warm-up: cuDNN's and the allocator's steady state
            std::vector<double> times;
            for (int i = 0; i < std::max(1, o.repetitions); ++i) {
              t = Clock::now();
              (*pipe)(g);
              times.push_back(seconds_since(t));
            }
            const double per_batch = bench_util::median(times);
            r.ms_per_image = per_batch / batch * 1e3;
            r.images_per_s = batch / per_batch;
            r.gflop_per_image = gflop * steps;
            r.achieved_gflops = r.gflop_per_image * r.images_per_s;
            r.peak_gflops = peak;
            r.fraction_of_peak = r.achieved_gflops / peak;
            r.peak_gpu_mem_mb = peak_allocated_mb(device);
            rows.push_back(r);
          }
        }
      }
    }
  }
  return rows;
}

}  // namespace cm
