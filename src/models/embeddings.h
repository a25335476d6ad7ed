// Time and class embeddings of UNet2DModel (diffusers.models.embeddings).
#pragma once

#include <torch/nn/module.h>

#include "models/layers.h"

namespace cm::models {

// Sinusoidal embedding of (possibly fractional) timesteps: [N] -> [N, dim], in `compute`:
// float32 as diffusers (bit for bit), float64 for a float64 model (nothing rounded to float32).
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              double downscale_freq_shift, at::ScalarType compute = at::kFloat);

// diffusers.Timesteps: no parameters.
struct PositionalProjection {
  int64_t dim;
  bool flip_sin_to_cos;
  double freq_shift;
  at::ScalarType compute = at::kFloat;
  at::Tensor operator()(const at::Tensor& t) const {
    return timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, compute);
  }
};

// diffusers.GaussianFourierProjection(log=True, flip_sin_to_cos=False): parameter "weight".
class GaussianFourierProjectionImpl : public torch::nn::Module {
 public:
  explicit GaussianFourierProjectionImpl(int64_t embedding_size);
  at::Tensor forward(const at::Tensor& t);
  at::Tensor weight;
};
TORCH_MODULE(GaussianFourierProjection);

// diffusers.TimestepEmbedding: linear_1, SiLU, linear_2.
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim);
  at::Tensor forward(const at::Tensor& x);
  Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace cm::models
