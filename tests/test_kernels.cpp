// src/kernels against plain ATen computed in float64, on every instruction set this CPU runs:
// odd channel counts and sizes (vector tails), both layouts, per-sample affines and offsets, a
// mean far from zero (the statistics' precision), float32 and bfloat16.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "kernels/norm_act.h"
#include "kernels/softmax.h"

namespace cm::test {
namespace {

using kernels::Isa;

std::vector<Isa> runnable_isas() {
  std::vector<Isa> isas{Isa::kGeneric};
  if (kernels::best_isa() != Isa::kGeneric) isas.push_back(Isa::kAvx2);
  if (kernels::best_isa() == Isa::kAvx512) isas.push_back(Isa::kAvx512);
  return isas;
}

struct NormCase {
  int64_t n, c, groups, h, w;
  double mean;          // of the input
  bool nhwc, per_sample, offset, silu;
  at::ScalarType dtype;
};

std::string describe(const NormCase& k, Isa isa) {
  std::ostringstream s;
  s << kernels::isa_name(isa) << " " << k.n << "x" << k.c << "x" << k.h << "x" << k.w << " g"
    << k.groups << " mean " << k.mean << (k.nhwc ? " nhwc" : " nchw")
    << (k.per_sample ? " per-sample" : "") << (k.offset ? " offset" : "")
    << (k.silu ? " silu " : " ") << k.dtype;
  return s.str();
}

void check_group_norm(const NormCase& k, Isa isa) {
  SCOPED_TRACE(describe(k, isa));
  at::Tensor x = (at::randn({k.n, k.c, k.h, k.w}) * 2 + k.mean).to(k.dtype);
  if (k.nhwc) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const auto wshape = k.per_sample ? std::vector<int64_t>{k.n, k.c} : std::vector<int64_t>{k.c};
  const auto weight = at::rand(wshape) + 0.5;
  const auto bias = at::rand(wshape) - 0.5;
  const std::optional<at::Tensor> offset =
      k.offset ? std::optional<at::Tensor>(at::randn({k.n, k.c})) : std::nullopt;

  torch::NoGradGuard no_grad;
  const auto y = kernels::group_norm_act(x, k.groups, weight, bias, 1e-5, k.silu, offset, isa);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_EQ(y.strides(), x.strides());
  EXPECT_EQ(y.scalar_type(), x.scalar_type());

  // Reference in float64: normalise, then the per-sample affine, then SiLU.
  auto xd = x.to(at::kDouble).contiguous();
  if (offset) xd = xd + offset->to(at::kDouble).reshape({k.n, k.c, 1, 1});
  const auto normed = at::group_norm(xd, k.groups, {}, {}, 1e-5);
  const auto wd = weight.to(at::kDouble).reshape({-1, k.c, 1, 1});
  const auto bd = bias.to(at::kDouble).reshape({-1, k.c, 1, 1});
  auto ref = normed * wd + bd;
  if (k.silu) ref = at::silu(ref);

  // float32 rounds x·a + b once or twice, with |x·a| up to |x|/std·|w|; bfloat16 then rounds the
  // result to 8 bits.
  const double magnitude = (xd.abs().max().item<double>() / 2 + 1) * 1.5 + 0.5;
  const double tol = 4 * std::ldexp(1.0, -24) * magnitude + 1e-6;
  const auto err = (y.to(at::kDouble) - ref).abs();
  if (k.dtype == at::kBFloat16) {
    const auto excess = err - ref.abs() * std::ldexp(1.0, -8);
    EXPECT_LE(excess.max().item<double>(), tol);
  } else {
    EXPECT_LE(err.max().item<double>(), tol);
  }
}

TEST(Kernels, GroupNormActMatchesFloat64Reference) {
  at::set_num_threads(2);
  torch::manual_seed(0);
  for (const Isa isa : runnable_isas()) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const bool nhwc : {false, true}) {
        // 40 channels in 8 groups: vectors of 16 or 32 lanes end in a tail; 7x9 pixels too.
        check_group_norm({2, 40, 8, 7, 9, 0.0, nhwc, true, true, true, dtype}, isa);
        check_group_norm({2, 40, 8, 7, 9, 0.0, nhwc, false, false, false, dtype}, isa);
        // Far from zero: E[x²] - E[x]² in float32 would lose the variance.
        check_group_norm({1, 64, 32, 16, 16, 300.0, nhwc, false, true, true, dtype}, isa);
        check_group_norm({1, 256, 32, 33, 31, 0.5, nhwc, true, false, true, dtype}, isa);
        check_group_norm({3, 6, 3, 1, 1, 0.0, nhwc, false, true, false, dtype}, isa);
        // Large: LibTorch 1.13's own channels-last bfloat16 group norm is off by 1.6 at 192×64×64
        // (cm bench --kernels); statistics here must hold at any size.
        check_group_norm({1, 64, 32, 128, 128, 1.0, nhwc, false, false, true, dtype}, isa);
      }
    }
  }
}

TEST(Kernels, GroupNormActTakesThreeDimensionalInput) {
  torch::manual_seed(1);
  const auto x = at::randn({2, 32, 50});
  const auto w = at::rand({32}), b = at::rand({32});
  torch::NoGradGuard no_grad;
  const auto y = kernels::group_norm_act(x, 8, w, b, 1e-6, false);
  const auto ref = at::group_norm(x, 8, w, b, 1e-6);
  EXPECT_TRUE(at::allclose(y, ref, 1e-5, 1e-5)) << (y - ref).abs().max().item<double>();
}

TEST(Kernels, GroupNormActRefusesWhatItCannotDo) {
  const auto x = at::randn({1, 32, 4, 4});
  EXPECT_FALSE(kernels::group_norm_act_supported(x, 32));  // gradients on
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(kernels::group_norm_act_supported(x, 32));
  EXPECT_FALSE(kernels::group_norm_act_supported(x, 5));  // 32 channels in 5 groups
  EXPECT_FALSE(kernels::group_norm_act_supported(x.to(at::kDouble), 8));
  EXPECT_FALSE(kernels::group_norm_act_supported(x.transpose(2, 3), 8));  // neither layout
}

TEST(Kernels, SoftmaxMatchesFloat64Reference) {
  at::set_num_threads(2);
  torch::manual_seed(2);
  for (const Isa isa : runnable_isas()) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const int64_t len : {1, 7, 77, 1024}) {
        SCOPED_TRACE(std::string(kernels::isa_name(isa)) + " len " + std::to_string(len) + " " +
                     c10::toString(dtype));
        const auto x = (at::randn({3, 5, len}) * 8 + 40).to(dtype);
        const auto y = kernels::softmax_last_dim(x, isa);
        EXPECT_EQ(y.sizes(), x.sizes());
        EXPECT_EQ(y.scalar_type(), dtype);
        const auto ref = at::softmax(x.to(at::kDouble), -1);
        const auto err = (y.to(at::kDouble) - ref).abs();
        const double rel = dtype == at::kFloat ? 4e-6 : std::ldexp(1.0, -8);
        EXPECT_LE((err - ref * rel).max().item<double>(), 1e-9);
      }
    }
  }
}

}  // namespace
}  // namespace cm::test
