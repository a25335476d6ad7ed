// Conv2d and Linear with torch::nn's parameter names, forward and random initialisation, but
// whose initialisation can be skipped: loading a checkpoint overwrites every weight, and drawing
// ~300M random numbers first took longer than reading the file (docs/performance.md).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <atomic>
#include <memory>
#include <mutex>

namespace cm::kernels {
class PackedConv2d;
}

namespace cm::models {

// Hands freed heap pages back to the system (glibc's malloc_trim; nothing elsewhere). glibc keeps
// pages freed between live blocks resident; replacing a model's weights leaves many such holes.
void return_freed_heap_pages();

// While one lives, Conv2d and Linear constructed on this thread leave their parameters
// uninitialised (at::empty) and draw nothing from the global generator.
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool previous_;
};

// While one lives, a Conv2d that may prepack and is given an empty batch on this thread packs its
// weight for inputs of that shape with `batch` samples and returns the empty output without
// computing anything: one forward of an empty batch then packs a whole model for the shapes its
// real calls will see (UNet2DModel::prepack_weights).
class PrepackScope {
 public:
  explicit PrepackScope(int64_t batch);
  ~PrepackScope();
  PrepackScope(const PrepackScope&) = delete;
  PrepackScope& operator=(const PrepackScope&) = delete;

 private:
  int64_t previous_;
};

// While one lives, forward-mode automatic differentiation runs through the UNet on this thread:
// group norm (apply_group_norm) is then written in elementary ops, since LibTorch 1.13's
// native_group_norm has no usable forward derivative. The caller keeps grad mode on, which is
// what selects LibTorch's plain differentiable ops over the inference-only fused kernels.
class ForwardAdScope {
 public:
  ForwardAdScope();
  ~ForwardAdScope();
  ForwardAdScope(const ForwardAdScope&) = delete;
  ForwardAdScope& operator=(const ForwardAdScope&) = delete;

 private:
  bool previous_;
};

// m(x), or inside a ForwardAdScope the same normalization in elementary ops.
at::Tensor apply_group_norm(torch::nn::GroupNormImpl& m, const at::Tensor& x);

// torch::nn::Conv2d(Conv2dOptions(in, out, kernel).stride(stride).padding(padding)): zero
// padding, bias, the same kaiming-uniform draws in the same order.
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1,
             int64_t padding = 0);
  at::Tensor forward(const at::Tensor& x);

  // Inference on the CPU: through LibTorch an NHWC convolution reorders its plain weight into
  // oneDNN's layout on every call, or with a prepacked weight detours through NCHW. When allowed,
  // the first gradient-free float32/bfloat16 call moves the weight into a kernels::PackedConv2d
  // (oneDNN called directly, the weight reordered once, activations left in their layout; same
  // numbers). Moves, not copies: a second copy would double a model's memory. While packed,
  // the weight is not a parameter (parameters() and named_parameters() leave it out, as they do
  // an absent bias) and `weight` is an empty tensor, so nothing reads stale or zeroed values by
  // mistake; dense_weight() gives the values back, and unpack() — which a forward with
  // gradients, to() and the UNet's load_state_dict call — restores the same parameter tensor.
  void allow_prepack(bool allow) { allow_prepack_ = allow; }
  // Packed float32 3×3 stride-1 convolutions by oneDNN's Winograd kernels where this CPU has
  // them (kernels::PackedConv2d): faster, not bit-exact. Changing it unpacks (the next call packs
  // again); not while other threads run the layer.
  void set_winograd(bool winograd);
  bool winograd() const { return winograd_; }
  bool is_prepacked() const { return std::atomic_load(&packed_) != nullptr; }
  at::Tensor dense_weight() const;
  void unpack();

  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  at::Tensor weight, bias;

 private:
  bool should_prepack(const at::Tensor& x) const;
  at::Tensor pack_and_run(const at::Tensor& x);
  void pack_locked(const at::Tensor& x);                // under pack_mutex_
  at::Tensor pack_only(const at::Tensor& empty_batch);  // PrepackScope

  int64_t out_channels_, kernel_, stride_, padding_;
  bool allow_prepack_ = false;
  bool winograd_ = false;
  std::atomic<bool> cannot_pack_{false};  // oneDNN had no kernel for it on this CPU
  at::MemoryFormat dense_format_ = at::MemoryFormat::Contiguous;
  std::shared_ptr<kernels::PackedConv2d> packed_;  // read with std::atomic_load
  std::shared_ptr<std::mutex> pack_mutex_ = std::make_shared<std::mutex>();
};
TORCH_MODULE(Conv2d);

// torch::nn::Linear(in, out) with bias.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

}  // namespace cm::models
