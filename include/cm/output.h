// Turning generated images ([B, H, W, C] float in [0, 1]) into files.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cm/image_io.h"

namespace cm {

// round(x * 255) per value, half to even, as diffusers' numpy_to_pil does: a uint8 CPU tensor
// of the same shape, or one image each.
at::Tensor images_to_uint8(const at::Tensor& images);
std::vector<ImageU8> to_uint8_images(const at::Tensor& images);
// Tiles the images left to right, top to bottom; columns <= 0 picks a near-square layout.
ImageU8 make_grid(const std::vector<ImageU8>& images, int columns = 0);
// float32 NHWC, like diffusers' output_type="np".
NpyArray images_to_npy(const at::Tensor& images);
// The original repository's sample file: arr_0 uint8 NHWC, arr_1 int64 labels (when any).
void write_samples_npz(const std::string& path, const at::Tensor& images,
                       const std::vector<int64_t>& labels);

}  // namespace cm
