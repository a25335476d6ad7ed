#pragma once
// A 2-D convolution called on oneDNN directly (the same libdnnl LibTorch uses), with its weight
// reordered once into the layout the chosen kernel wants. Through LibTorch 1.13 an NHWC
// convolution either reorders a plain weight on every call or, given a prepacked weight, goes
// through NCHW and blocked activations; here activations stay NHWC (or NCHW) end to end. Same
// oneDNN kernels, so the same numbers as at::conv2d (bit for bit in the isolation runs of
// docs/performance.md; tests/test_layers.cpp compares them to rounding).
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace cm::kernels {

// Whether oneDNN has a float32 Winograd convolution for this CPU (AVX-512 in oneDNN 2.x).
bool winograd_available();

class PackedConv2d {
 public:
  // weight: [out, in, k, k] float32 or bfloat16 on the CPU, contiguous or channels-last; it is
  // copied into the layout oneDNN picks for `first_input` (another input shape that wants
  // another layout reorders it again). Zero padding, dilation 1, one group.
  // winograd: float32 3×3 stride-1 convolutions run oneDNN's Winograd kernel where this CPU has
  // one, on activations reordered into the blocked layout it needs and back. Fewer
  // multiplications, so faster, but not the direct convolution's numbers (tests/test_layers.cpp
  // states the bound). Every other case stays direct, and so do calls with fewer than
  // kWinogradMinTiles 4×4 output tiles, where the F(4×4, 3×3) kernel is slower, and batches
  // whose kernel wants another weight layout than a batch of kWinogradLayoutBatch: one Winograd
  // copy of the weight per image size (4x its size for F(4×4, 3×3)) beside the direct one.
  PackedConv2d(const at::Tensor& weight, int64_t stride, int64_t padding,
               const at::Tensor& first_input, const at::Tensor& bias, bool winograd = false);
  static constexpr int64_t kWinogradMinTiles = 32;
  static constexpr int64_t kWinogradLayoutBatch = 8;
  ~PackedConv2d();
  PackedConv2d(const PackedConv2d&) = delete;
  PackedConv2d& operator=(const PackedConv2d&) = delete;

  // True where forward takes x: a 4-d CPU tensor of the weight's dtype, contiguous or
  // channels-last, with the weight's input channels.
  bool accepts(const at::Tensor& x) const;
  // conv2d(x, weight, bias), bias may be undefined; channels-last if x or the weight was, as
  // at::conv2d does.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias);
  // oneDNN's name for the kernel forward(x, bias) runs ("jit_wino_4x3:avx512_core",
  // "brgconv:avx512_core", ...).
  std::string kernel_name(const at::Tensor& x, const at::Tensor& bias);
  // The bytes the weight's copies take (direct and Winograd layouts).
  size_t weight_bytes() const;
  // The oneDNN primitives made so far: one per input shape, layout and caller's OpenMP thread
  // count (a primitive runs on as many threads as there were when it was made).
  size_t primitive_count() const;
  // The weight back as a plain tensor in `format`, bit for bit.
  at::Tensor dense(at::MemoryFormat format) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cm::kernels
