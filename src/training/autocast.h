// bfloat16 autocast for training, on the CPU or a GPU. LibTorch 1.13's CPU autocast has no policy
// for group_norm, so a bfloat16 activation (a convolution's output) meets float32 norm weights and
// the kernel fails ("expected scalar type BFloat16 but found Float"). On 1.13 this adds the policy
// PyTorch's later releases have (group_norm in float32); LibTorch 2.x registers it itself.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace cm::training {

// Registers the missing AutocastCPU kernels on LibTorch 1.x (once per process; later calls and
// LibTorch 2.x do nothing).
void install_autocast_policies();

// Enables bfloat16 autocast for `device`'s kind on this thread for its lifetime, then restores
// the state it found (enabled or not, and the autocast dtype) and clears the cast cache.
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool enabled, c10::DeviceType device = c10::DeviceType::CPU);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  c10::DeviceType device_;
  bool was_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::BFloat16;
};

}  // namespace cm::training
