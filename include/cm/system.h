// What this build of the library is and what it sees: LibTorch, CUDA, cuDNN, the GPUs and the
// CPU kernels' instruction set (`cm info`, `cm --version`).
#pragma once

#include <string>
#include <vector>

namespace cm {

struct GpuInfo {
  int index = 0;
  std::string name;
  double memory_gib = 0;
  int compute_major = 0, compute_minor = 0;
};

struct SystemInfo {
  std::string cm_version;
  std::string libtorch_version;
  bool cuda_compiled = false;  // built against a LibTorch with CUDA
  std::string cuda_version;    // the CUDA runtime's, "" without CUDA
  std::string cudnn_version;   // "" without cuDNN
  std::vector<GpuInfo> gpus;   // what the CUDA runtime sees (none on a machine without a GPU)
  std::string cpu_kernels;     // instruction set of the hand-fused CPU kernels
  bool onednn_direct = false;  // CPU convolutions call oneDNN directly (LibTorch 1.13 builds)
  std::string blas;            // the BLAS in use, its kernels and threads (cm/tuning.h)
};

SystemInfo system_info();
// A few lines of "key: value", as `cm info` prints them.
std::string describe(const SystemInfo& info);
// One line: "cm 0.1.0 (LibTorch 2.11.0, CUDA 13.0)".
std::string version_line();

}  // namespace cm
