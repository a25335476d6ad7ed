// Between safetensors files and named torch tensors.
#pragma once

#include <map>
#include <string>
#include <torch/types.h>

#include "cm/safetensors.h"

namespace cm {

at::ScalarType to_scalar_type(DType dtype, const std::string& context);
DType to_dtype(at::ScalarType type);

// Every tensor of a safetensors file, copied out of the mapping onto the CPU in its stored dtype.
std::map<std::string, at::Tensor> read_state_dict(const std::string& path);
// Writes CPU copies of the tensors (any device, made contiguous) atomically.
void write_state_dict(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace cm
