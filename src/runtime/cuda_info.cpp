// The CUDA side of cm::system_info(): runtime and cuDNN versions, the GPUs the runtime sees.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <cuda_runtime_api.h>

#include <string>

#include "cm/system.h"

namespace cm {

namespace {

std::string dotted(long v, long major_div, long minor_div, long minor_mod) {
  return std::to_string(v / major_div) + "." + std::to_string(v / minor_div % minor_mod);
}

}  // namespace

void fill_cuda_info(SystemInfo& info) {
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess && runtime > 0)
    info.cuda_version = dotted(runtime, 1000, 10, 100);  // 13000 → "13.0"
  const auto& hooks = at::detail::getCUDAHooks();
  if (hooks.hasCuDNN()) {
    const long v = hooks.versionCuDNN();  // 9xxyy since cuDNN 9 (major·10000 + minor·100 + patch)
    if (v > 0) info.cudnn_version = v >= 90000 ? dotted(v, 10000, 100, 100) : dotted(v, 1000, 100, 10);
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: clear the error, report none
    return;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    GpuInfo g;
    g.index = i;
    g.name = p.name;
    g.memory_gib = static_cast<double>(p.totalGlobalMem) / (1ull << 30);
    g.compute_major = p.major;
    g.compute_minor = p.minor;
    info.gpus.push_back(g);
  }
}

}  // namespace cm
