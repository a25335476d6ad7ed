// The key torch::optim files a parameter's state under: its TensorImpl's address, as a string in
// LibTorch 1.x and as the pointer itself in 2.x.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/version.h>

#include <string>

namespace cm::training {

inline auto optimizer_state_key(const at::Tensor& p) {
#if TORCH_VERSION_MAJOR >= 2
  return static_cast<void*>(p.unsafeGetTensorImpl());
#else
  return c10::guts::to_string(p.unsafeGetTensorImpl());
#endif
}

}  // namespace cm::training
