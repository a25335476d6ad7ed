// The line `cm --version` prints. Header-only, so that the `cm` launcher prints it without
// loading LibTorch (tools/cm/launcher.cpp); cm::version_line() returns the same.
#pragma once

#include <torch/version.h>

#include <string>

#include "cm/version.h"

namespace cm::detail {

inline std::string version_line() {
#if CM_CUDA
  const char* build = "CUDA";
#else
  const char* build = "CPU only";
#endif
  return std::string("cm ") + CM_VERSION + " (LibTorch " + TORCH_VERSION + ", " + build + ")";
}

}  // namespace cm::detail
