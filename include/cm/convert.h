// Converting a checkpoint of the original consistency-models repository (openai/consistency_models:
// a torch.save'd state dict of its UNetModel, e.g. cd_imagenet64_l2.pt or a model*.pt / ema_*.pt
// of its training code) into a diffusers pipeline folder. The architecture is read from the
// weights' names and shapes, not from the file name. Torch-free.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cm/config.h"
#include "cm/pt_archive.h"

namespace cm {

struct ConvertOptions {
  // The UNet's sample size. The weights do not say it; when absent it is taken from the original
  // repository's default channel multipliers per image size (64: 1,2,3,4; 256: 1,1,2,2,4,4; ...)
  // if the weights follow one, and is an error otherwise.
  std::optional<int> image_size;
  // The width of one attention head. The weights do not say it either; the default is 64 (every
  // released checkpoint's --num_head_channels), or a quarter of the narrowest attention layer
  // when that is less (the original's default of four heads).
  std::optional<int> num_head_channels;
  SchedulerConfig scheduler;  // CD checkpoints: 40 timesteps; CT ImageNet-64: 201; CT LSUN: 151
  DType dtype = DType::F32;   // F32 or F16, for the stored weights
  std::vector<std::string> class_names;  // written as class_names.json when not empty
  bool overwrite = false;                // replace an existing output folder
};

// A UNet2DModel config with its state dict under diffusers' names.
struct ConvertedUNet {
  UNetConfig config;
  std::vector<std::pair<std::string, PtTensor>> weights;
  int num_head_channels = 0;
  bool image_size_inferred = false;
};

// Infers the architecture of the original UNetModel whose state dict is `original` and renames
// (and splits, for attention) its tensors into diffusers' UNet2DModel. `source` names the file in
// errors: a missing key, an unexpected key (the first one, in file order), or a shape that does
// not fit the architecture.
ConvertedUNet convert_original_unet(PtStateDict original, const ConvertOptions& options,
                                    const std::string& source);

// Writes model_index.json, unet/ (config.json, diffusion_pytorch_model.safetensors), scheduler/
// and, when there are class names, class_names.json into a temporary folder beside `out_dir` and
// renames it into place: a failure never leaves a half-written folder.
void write_converted_pipeline(const ConvertedUNet& unet, const ConvertOptions& options,
                              const std::string& out_dir);

// read_pt_state_dict + convert_original_unet + write_converted_pipeline.
ConvertedUNet convert_original_checkpoint(const std::string& in_path, const std::string& out_dir,
                                          const ConvertOptions& options);

// IEEE half precision, rounding to nearest even (as torch's .half() does).
uint16_t float_to_half(float value);
float half_to_float(uint16_t bits);

}  // namespace cm
