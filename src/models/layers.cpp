#include "models/layers.h"

#include <cmath>
#include <torch/nn/init.h>

namespace cm::models {
namespace {

thread_local bool t_skip_init = false;

// torch::nn's default: kaiming-uniform weights with a = sqrt(5), and a bias uniform in
// ±1/sqrt(fan_in). Same calls in the same order, so a seed gives the same model as before.
void default_init(at::Tensor& weight, at::Tensor& bias) {
  if (t_skip_init) return;
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const int64_t fan_in = weight.numel() / weight.size(0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::nn::init::uniform_(bias, -bound, bound);
}

}  // namespace

SkipInitGuard::SkipInitGuard() : previous_(t_skip_init) { t_skip_init = true; }
SkipInitGuard::~SkipInitGuard() { t_skip_init = previous_; }

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                       int64_t padding)
    : stride_(stride), padding_(padding) {
  weight = register_parameter("weight", at::empty({out_channels, in_channels, kernel, kernel}));
  bias = register_parameter("bias", at::empty({out_channels}));
  default_init(weight, bias);
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  return at::conv2d(x, weight, bias, stride_, padding_);
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", at::empty({out_features, in_features}));
  bias = register_parameter("bias", at::empty({out_features}));
  default_init(weight, bias);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

}  // namespace cm::models
