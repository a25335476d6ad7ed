// bfloat16 autocast for training on the CPU. LibTorch 1.13's CPU autocast has no policy for
// group_norm, so a bfloat16 activation (a convolution's output) meets float32 norm weights and the
// kernel fails ("expected scalar type BFloat16 but found Float"). This adds the policy PyTorch's
// later releases have: group_norm runs in float32.
#pragma once

namespace cm::training {

// Registers the missing AutocastCPU kernels (once per process; later calls do nothing).
void install_autocast_policies();

// Enables bfloat16 autocast on this thread for its lifetime (and clears the cast cache after).
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool enabled);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
};

}  // namespace cm::training
