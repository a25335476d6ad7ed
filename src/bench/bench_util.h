#pragma once
// Small helpers shared by cm bench's model grids (bench.cpp, cuda_bench.cpp) and its kernel rows
// (kernel_bench.cpp).
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cm/bench.h"
#include "cm/dtype.h"
#include "cm/error.h"
#include "cm/pipeline.h"

namespace cm::bench_util {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

inline c10::ScalarType dtype_of(const std::string& name) {
  return parse_dtype(name);
}

// The step counts of the grid: explicit timesteps make one schedule of their length.
inline std::vector<int> step_counts(const BenchOptions& o) {
  if (!o.timesteps.empty()) return {static_cast<int>(o.timesteps.size())};
  return o.steps;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// --threads 0 means every core.
inline int resolve_threads(int t) {
  return t > 0 ? t : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// A row's model: a folder is loaded with `load`; an architecture name (bench_architecture) is
// built with random weights drawn from seed 0, on load.device in load.dtype. load_s is the time to
// a runnable pipeline, weights packed: reading the folder and packing, or the packing alone.
struct BenchPipeline {
  std::unique_ptr<ConsistencyModelPipeline> pipe;
  double load_s = 0;
};
BenchPipeline load_bench_pipeline(const std::string& model, const LoadOptions& load);

}  // namespace cm::bench_util
