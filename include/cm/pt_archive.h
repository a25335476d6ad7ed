// Reading a state dict saved by torch.save (PyTorch's zip format: a pickle and one raw file per
// tensor storage) without PyTorch and without Python. Torch-free.
//
// The file is untrusted input: every zip offset and size, every storage extent and every tensor's
// reach into its storage is checked, and the pickle is run by a restricted interpreter that knows
// only containers, numbers, strings, tensor rebuilds and OrderedDict. Any other global is refused
// by name before anything would use it; nothing is ever executed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cm/safetensors.h"

namespace cm {

// One tensor, copied out of its storage into a contiguous row-major little-endian buffer.
struct PtTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

// The state dict's tensors in the order the file lists them.
using PtStateDict = std::vector<std::pair<std::string, PtTensor>>;

// Parses a whole checkpoint held in memory; `source` names it in errors. Throws cm::Error (one
// line) on anything that is not a torch.save'd mapping of names to tensors. Meant also as the
// entry point for fuzzing: it never reads outside [data, data + size).
PtStateDict parse_pt_state_dict(const uint8_t* data, std::size_t size, const std::string& source);

// Reads the file and parses it.
PtStateDict read_pt_state_dict(const std::string& path);

}  // namespace cm
