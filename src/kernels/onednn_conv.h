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

class PackedConv2d {
 public:
  // weight: [out, in, k, k] float32 or bfloat16 on the CPU, contiguous or channels-last; it is
  // copied into the layout oneDNN picks for `first_input` (another input shape that wants
  // another layout reorders it again). Zero padding, dilation 1, one group.
  PackedConv2d(const at::Tensor& weight, int64_t stride, int64_t padding,
               const at::Tensor& first_input, const at::Tensor& bias);
  ~PackedConv2d();
  PackedConv2d(const PackedConv2d&) = delete;
  PackedConv2d& operator=(const PackedConv2d&) = delete;

  // True where forward takes x: a 4-d CPU tensor of the weight's dtype, contiguous or
  // channels-last, with the weight's input channels.
  bool accepts(const at::Tensor& x) const;
  // conv2d(x, weight, bias), bias may be undefined; channels-last if x or the weight was, as
  // at::conv2d does.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias);
  // The weight back as a plain tensor in `format`, bit for bit.
  at::Tensor dense(at::MemoryFormat format) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cm::kernels
