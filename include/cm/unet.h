// UNet2DModel: diffusers' module tree and parameter names, so a diffusers state dict loads one to
// one and what this library saves diffusers can load.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include "cm/config.h"

namespace cm {

namespace models {
class Conv2dImpl;
class GaussianFourierProjectionImpl;
class TimestepEmbeddingImpl;
class MidBlockImpl;
}  // namespace models

// Receives (module name, output) for conv_in, time_embedding, class_embedding, each down block,
// mid_block, each up block and conv_out: the activations diffusers' forward hooks would see.
using ActivationHook = std::function<void(const std::string&, const at::Tensor&)>;

// kRandom: torch::nn's default initialisation (training, random-weight benchmarks). kSkip: the
// convolution and linear weights are left uninitialised, for a caller about to overwrite them all.
enum class WeightInit { kRandom, kSkip };

class UNet2DModelImpl : public torch::nn::Module {
 public:
  explicit UNet2DModelImpl(const UNetConfig& config, WeightInit init = WeightInit::kRandom);

  // sample [B, C, H, W]; timestep a scalar or one value per sample (any dtype, as in diffusers);
  // class_labels [B] integer labels when the model is class-conditional (or embeddings for the
  // "identity" class embedding).
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& timestep,
                     const std::optional<at::Tensor>& class_labels = std::nullopt,
                     const ActivationHook& hook = nullptr);

  const UNetConfig& config() const { return config_; }
  // Stores the convolution weights NHWC; forward then runs NHWC end to end (same numbers to
  // float rounding).
  void to_channels_last();
  // Lets gradient-free CPU inference move convolution weights into oneDNN's blocked layout (see
  // models::Conv2dImpl), without a second copy. state_dict() still returns every weight, plain;
  // parameters() leaves packed weights out until unpack_weights() (training, to(), to_channels_last()
  // and load_state_dict() unpack first). Bit-for-bit the same weights; outputs differ by float
  // rounding. The pipeline turns this on for CPU models.
  void allow_weight_prepacking(bool allow);
  // With prepacking allowed: packs every convolution now, for calls of `batch` samples at the
  // configured sample_size, instead of in the first call (one forward of an empty batch, which
  // computes nothing). Returns false where nothing was packed (not allowed, a GPU, no oneDNN).
  bool prepack_weights(int64_t batch = 1);
  // With prepacking: float32 3×3 stride-1 convolutions by oneDNN's Winograd kernels where this
  // CPU has them (LoadOptions::winograd): faster, not bit-exact. Set before the first call.
  void use_winograd(bool winograd);
  void unpack_weights();
  bool is_class_conditional() const { return class_embedding_ != nullptr; }

  // Copies a state dict in (converting dtypes). Throws cm::Error listing every missing, unexpected
  // and mis-shaped tensor at once; `source` names the file in the message. `on_copied`, if given,
  // hears each state-dict name as soon as its tensor has been copied.
  void load_state_dict(const std::map<std::string, at::Tensor>& state, const std::string& source,
                       const std::function<void(const std::string&)>& on_copied = nullptr);
  std::map<std::string, at::Tensor> state_dict() const;

 private:
  UNetConfig config_;
  std::shared_ptr<models::Conv2dImpl> conv_in_, conv_out_;
  std::shared_ptr<models::GaussianFourierProjectionImpl> fourier_proj_;
  std::shared_ptr<models::TimestepEmbeddingImpl> time_embedding_;
  std::shared_ptr<torch::nn::Module> class_embedding_;
  torch::nn::ModuleList down_blocks_{nullptr}, up_blocks_{nullptr};
  std::shared_ptr<models::MidBlockImpl> mid_block_;
  torch::nn::GroupNorm conv_norm_out_{nullptr};
};
TORCH_MODULE(UNet2DModel);

// Loads unet/config.json and the weights of a diffusers UNet folder, in `dtype` on `device`
// (converted from the stored dtype): diffusion_pytorch_model[.variant].safetensors, or the shards
// listed by diffusion_pytorch_model.safetensors.index[.variant].json. A variant ("fp16") that is
// absent is an error, never a silent fallback. The file is mapped and each tensor copied once,
// straight into its parameter in `dtype`, on `device`, with 4-d weights in `weight_format`.
UNet2DModel load_unet(const std::string& unet_dir, at::ScalarType dtype = at::kFloat,
                      const at::Device& device = at::kCPU, const std::string& variant = "",
                      at::MemoryFormat weight_format = at::MemoryFormat::Contiguous);
// Writes a diffusers UNet folder: config.json and diffusion_pytorch_model.safetensors.
void save_unet(UNet2DModel& unet, const std::string& unet_dir);

}  // namespace cm
