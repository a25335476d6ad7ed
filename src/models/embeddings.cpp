#include "models/embeddings.h"

#include <cmath>

namespace cm::models {

at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              double downscale_freq_shift, at::ScalarType compute) {
  TORCH_CHECK(timesteps.dim() == 1, "timesteps must be a 1-d tensor");
  const int64_t half = dim / 2;
  // Same float32 operations in the same order as diffusers, so the embedding matches bit for bit.
  auto exponent = -std::log(10000.0) *
                  at::arange(0, half, timesteps.options().dtype(compute));
  exponent = exponent / (static_cast<double>(half) - downscale_freq_shift);
  auto freqs = at::exp(exponent);
  auto emb = timesteps.unsqueeze(1).to(compute) * freqs.unsqueeze(0);
  emb = at::cat({at::sin(emb), at::cos(emb)}, -1);
  if (flip_sin_to_cos) {
    emb = at::cat({emb.slice(1, half), emb.slice(1, 0, half)}, -1);
  }
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1, 0, 0});
  return emb;
}

GaussianFourierProjectionImpl::GaussianFourierProjectionImpl(int64_t embedding_size) {
  weight = register_parameter("weight", at::zeros({embedding_size}), /*requires_grad=*/false);
}

at::Tensor GaussianFourierProjectionImpl::forward(const at::Tensor& t) {
  auto x = at::log(t);
  auto proj = x.unsqueeze(1) * weight.unsqueeze(0) * 2 * M_PI;
  return at::cat({at::sin(proj), at::cos(proj)}, -1);
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim) {
  linear_1 = register_module("linear_1", Linear(in_channels, time_embed_dim));
  linear_2 = register_module("linear_2", Linear(time_embed_dim, time_embed_dim));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& x) {
  return linear_2(at::silu(linear_1(x)));
}

}  // namespace cm::models
