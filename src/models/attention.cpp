#include "models/attention.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <torch/nn/modules/dropout.h>
#include <torch/version.h>

#include "kernels/norm_act.h"
#include "kernels/softmax.h"

namespace cm::models {

namespace {

// softmax(scale·q·kᵀ)·v for each of the [B·heads] slices, softmax in float32 (diffusers'
// upcast_softmax), β = 0 and α = scale inside the GEMM as diffusers' AttnProcessor does.
//
// Without gradients on the CPU, each slice is done in blocks of query rows shared out over the
// threads: a block's scores (≤ 256 KB) stay in cache from the GEMM through the softmax to the
// second GEMM, instead of a [slices, tokens, tokens] block (24 MB at 32×32) going through memory
// three times. Per row it is the same computation. cm runs OpenBLAS single-threaded and oneDNN
// runs single-threaded inside a parallel region, so each thread does whole blocks.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                  int64_t heads) {
  const int64_t slices = q.size(0), tokens = q.size(1);
  const auto type = q.scalar_type();
#if TORCH_VERSION_MAJOR >= 2
  // On a GPU, LibTorch 2.x's fused attention (flash or memory-efficient kernels, float32 math
  // inside): diffusers' AttnProcessor2_0 does the same there. [B·heads, tokens, d] is viewed as
  // [B, heads, tokens, d], the layout those kernels take.
  if (q.is_cuda()) {
    const int64_t b = slices / heads, d = q.size(2);
    auto view = [&](const at::Tensor& t) { return t.reshape({b, heads, tokens, t.size(2)}); };
    return at::scaled_dot_product_attention(view(q), view(k), view(v), {}, 0.0, false, scale)
        .reshape({slices, tokens, d});
  }
#else
  (void)heads;
#endif
  if (at::GradMode::is_enabled() || !q.is_cpu() || (type != at::kFloat && type != at::kBFloat16)) {
    auto scores = at::baddbmm(at::empty({slices, tokens, tokens}, q.options()), q,
                              k.transpose(1, 2), /*beta=*/0, /*alpha=*/scale);
    // diffusers' upcast_softmax: at least float32 (a float64 model stays float64).
    auto probs = scores.to(at::promote_types(at::kFloat, type)).softmax(-1).to(type);
    return at::bmm(probs, v);
  }
  // 64 rows at 32×32 (1024 tokens); tried against whole slices and 16 rows: median of three
  // cm bench runs each, 66% of peak against 61% and 57% (float32 ImageNet-64).
  const int64_t rows = std::clamp<int64_t>(65536 / tokens, 16, tokens);
  const int64_t blocks = (tokens + rows - 1) / rows;
  const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  auto out = at::empty({slices, tokens, v.size(2)}, q.options());
  at::parallel_for(0, slices * blocks, 1, [&](int64_t begin, int64_t end) {
    auto buffer = at::empty({rows, tokens}, q.options());
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / blocks, r0 = item % blocks * rows;
      const int64_t n = std::min(rows, tokens - r0);
      auto scores = buffer.narrow(0, 0, n);
      at::addmm_out(scores, scores, qc[i].narrow(0, r0, n), kc[i].t(), /*beta=*/0,
                    /*alpha=*/scale);
      // float32: ATen's softmax, as the batched path; bfloat16: one pass in float32 math.
      const auto probs =
          type == at::kFloat ? scores.softmax(-1) : kernels::softmax_last_dim(scores);
      auto o = out[i].narrow(0, r0, n);
      at::mm_out(o, probs, vc[i]);
    }
  });
  return out;
}

}  // namespace

AttentionImpl::AttentionImpl(int64_t channels, int64_t head_dim, double eps,
                             std::optional<int64_t> norm_groups, double rescale_output_factor)
    : heads_(channels / head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(head_dim))),
      rescale_output_factor_(rescale_output_factor) {
  if (norm_groups) {
    group_norm = register_module(
        "group_norm",
        torch::nn::GroupNorm(torch::nn::GroupNormOptions(*norm_groups, channels).eps(eps)));
  }
  const int64_t inner = heads_ * head_dim;
  to_q = register_module("to_q", Linear(channels, inner));
  to_k = register_module("to_k", Linear(channels, inner));
  to_v = register_module("to_v", Linear(channels, inner));
  to_out = register_module("to_out", torch::nn::ModuleList(Linear(inner, channels),
                                                           torch::nn::Dropout(0.0)));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), hgt = x.size(2), wid = x.size(3);
  const int64_t tokens = hgt * wid;
  at::Tensor h = x;
  if (group_norm) {
    const int64_t groups = group_norm->options.num_groups();
    // The fused kernel keeps NHWC, so the tokens below need no transpose copy.
    h = kernels::group_norm_act_supported(x, groups)
            ? kernels::group_norm_act(x, groups, group_norm->weight, group_norm->bias,
                                      group_norm->options.eps(), /*silu=*/false)
            : apply_group_norm(*group_norm, x.reshape({b, c, tokens}));
  }
  h = h.reshape({b, c, tokens}).transpose(1, 2);  // [B, tokens, C], a view for NHWC

  // [B, tokens, heads*d] -> [B*heads, tokens, d]
  auto split_heads = [&](const at::Tensor& t) {
    const int64_t d = t.size(2) / heads_;
    return t.reshape({b, tokens, heads_, d}).permute({0, 2, 1, 3}).reshape({b * heads_, tokens, d});
  };
  auto q = split_heads(to_q(h));
  auto k = split_heads(to_k(h));
  auto v = split_heads(to_v(h));

  // Softmax in float32 whatever the model dtype (diffusers' upcast_softmax); β = 0 and α = scale
  // inside the GEMM, as diffusers' AttnProcessor does.
  auto o = attend(q, k, v, scale_, heads_);
  const int64_t d = o.size(2);
  o = o.reshape({b, heads_, tokens, d}).permute({0, 2, 1, 3}).reshape({b, tokens, heads_ * d});
  o = to_out[0]->as<Linear>()->forward(o);
  o = o.transpose(1, 2).reshape({b, c, hgt, wid});
  o = o + x;
  if (rescale_output_factor_ != 1.0) o = o / rescale_output_factor_;
  return o;
}

}  // namespace cm::models
