#pragma once
// Small helpers shared by cm bench's model grid (bench.cpp) and its kernel rows
// (kernel_bench.cpp).
#include <algorithm>
#include <thread>
#include <vector>

namespace cm::bench_util {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// --threads 0 means every core.
inline int resolve_threads(int t) {
  return t > 0 ? t : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace cm::bench_util
