#include <sstream>
#include <torch/version.h>

#include "cm/system.h"
#include "kernels/isa.h"

namespace cm {

#if CM_CUDA
// src/runtime/cuda_info.cpp: the CUDA half (the CUDA headers stay out of CPU builds).
void fill_cuda_info(SystemInfo& info);
#endif

SystemInfo system_info() {
  SystemInfo info;
  info.cm_version = CM_VERSION;
  info.libtorch_version = TORCH_VERSION;
  info.cpu_kernels = kernels::isa_name(kernels::best_isa());
#if CM_ONEDNN_DIRECT
  info.onednn_direct = true;
#endif
#if CM_CUDA
  info.cuda_compiled = true;
  fill_cuda_info(info);
#endif
  return info;
}

std::string describe(const SystemInfo& info) {
  std::ostringstream s;
  s << "cm: " << info.cm_version << "\n";
  s << "LibTorch: " << info.libtorch_version << "\n";
  s << "CUDA: "
    << (info.cuda_compiled ? (info.cuda_version.empty() ? "compiled in" : info.cuda_version)
                           : "not compiled in")
    << "\n";
  if (info.cuda_compiled)
    s << "cuDNN: " << (info.cudnn_version.empty() ? "none" : info.cudnn_version) << "\n";
  s << "GPUs: " << info.gpus.size() << "\n";
  for (const auto& g : info.gpus) {
    s.precision(3);
    s << "  cuda:" << g.index << ": " << g.name << ", " << g.memory_gib << " GiB, compute "
      << g.compute_major << "." << g.compute_minor << "\n";
  }
  s << "CPU kernels: " << info.cpu_kernels << "\n";
  s << "CPU convolutions: " << (info.onednn_direct ? "oneDNN, called directly" : "LibTorch's")
    << "\n";
  return s.str();
}

std::string version_line() {
  std::string line = std::string("cm ") + CM_VERSION + " (LibTorch " + TORCH_VERSION;
#if CM_CUDA
  line += ", CUDA";
#else
  line += ", CPU only";
#endif
  return line + ")";
}

}  // namespace cm
