// The weights of a diffusers model folder as one state dict: a single safetensors file or the
// shards of an index, for a variant (fp16, ...), mapped rather than read: tensors keep their stored
// dtype and layout, and the model converts them as it copies them in, in one pass.
#pragma once

#include <torch/types.h>
#include <string>

#include "io/state_dict.h"

namespace cm {

// `source` receives the file named in later errors (the weights file or the index).
MappedStateDict map_model_weights(const std::string& dir, const std::string& variant,
                                  std::string* source = nullptr);

}  // namespace cm
