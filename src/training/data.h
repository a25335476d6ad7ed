// Training data held in memory: Fashion-MNIST (Debian's dataset-fashion-mnist) or a folder of
// images with labels from sub-folder names.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace cm::training {

struct Dataset {
  at::Tensor images;  // [N, C, H, W] float32 in [-1, 1]
  at::Tensor labels;  // [N] int64
  std::vector<std::string> class_names;  // empty: unlabelled (every label 0)
  std::vector<std::string> skipped;      // "file: reason" for each unreadable image left out
  size_t size() const { return images.defined() ? static_cast<size_t>(images.size(0)) : 0; }
};

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
extern const std::vector<std::string> kFashionMnistClasses;

// split: "train" (60,000 images) or "test" (10,000); 28×28 gray. cm::Error naming the file when
// missing or malformed. limit > 0 keeps the first `limit` images.
Dataset load_fashion_mnist(const std::string& dir, const std::string& split, int64_t limit = 0);

// Resolves a --data value: "fashion-mnist" (or "fashion-mnist:test"), or a folder of images read
// at size×size with `channels` channels (see image_folder.h).
Dataset load_dataset(const std::string& spec, int64_t limit = 0, int size = 28, int channels = 1);

}  // namespace cm::training
