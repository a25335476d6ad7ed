#include <sstream>
#include <torch/version.h>

#include "cm/system.h"
#include "cm/tuning.h"
#include "cm/version.h"
#include "kernels/isa.h"
#include "runtime/version_line.h"

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
  const BlasInfo blas = blas_info();
  info.blas = blas.library.empty() ? "not OpenBLAS (left as it is)"
                                   : blas.library + ", " + blas.core + " kernels, " +
                                         std::to_string(blas.threads) +
                                         (blas.threads == 1 ? " thread" : " threads");
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
  s << "BLAS: " << info.blas << "\n";
  s << "CPU convolutions: " << (info.onednn_direct ? "oneDNN, called directly" : "LibTorch's")
    << "\n";
  return s.str();
}

std::string version_line() { return detail::version_line(); }

}  // namespace cm
