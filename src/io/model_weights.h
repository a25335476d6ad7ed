// The weights of a diffusers model folder as one state dict: a single safetensors file or the
// shards of an index, for a variant (fp16, ...). Tensors keep their stored dtype; the model
// converts them as it copies them in.
#pragma once

#include <torch/types.h>
#include <map>
#include <string>

namespace cm {

// `source` receives the file named in later errors (the weights file or the index).
std::map<std::string, at::Tensor> read_model_weights(const std::string& dir,
                                                     const std::string& variant,
                                                     std::string* source = nullptr);

}  // namespace cm
