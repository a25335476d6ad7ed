#include "models/attention.h"

#include <cmath>
#include <torch/nn/modules/dropout.h>

namespace cm::models {

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
  auto h = x.reshape({b, c, tokens});  // a view for NCHW and NHWC alike
  if (group_norm) h = group_norm(h);
  h = h.transpose(1, 2);  // [B, tokens, C]

  // [B, tokens, heads*d] -> [B*heads, tokens, d]
  auto split_heads = [&](const at::Tensor& t) {
    const int64_t d = t.size(2) / heads_;
    return t.reshape({b, tokens, heads_, d}).permute({0, 2, 1, 3}).reshape({b * heads_, tokens, d});
  };
  auto q = split_heads(to_q(h));
  auto k = split_heads(to_k(h));
  auto v = split_heads(to_v(h));

  // Softmax in float32 whatever the model dtype (diffusers' upcast_softmax).
  // baddbmm with beta 0 scales inside the GEMM, as diffusers' AttnProcessor does.
  auto scores = at::baddbmm(at::empty({q.size(0), tokens, tokens}, q.options()), q,
                            k.transpose(1, 2), /*beta=*/0, /*alpha=*/scale_);
  auto probs = scores.to(at::kFloat).softmax(-1).to(q.scalar_type());
  auto o = at::bmm(probs, v);
  const int64_t d = o.size(2);
  o = o.reshape({b, heads_, tokens, d}).permute({0, 2, 1, 3}).reshape({b, tokens, heads_ * d});
  o = to_out[0]->as<Linear>()->forward(o);
  o = o.transpose(1, 2).reshape({b, c, hgt, wid});
  o = o + x;
  if (rescale_output_factor_ != 1.0) o = o / rescale_output_factor_;
  return o;
}

}  // namespace cm::models
