// Between safetensors files and named torch tensors.
#pragma once

#include <map>
#include <string>
#include <torch/types.h>
#include <vector>

#include "cm/safetensors.h"

namespace cm {

at::ScalarType to_scalar_type(DType dtype, const std::string& context);
DType to_dtype(at::ScalarType type);

// Every tensor of a safetensors file, copied out of the mapping onto the CPU in its stored dtype.
std::map<std::string, at::Tensor> read_state_dict(const std::string& path);
// The tensors of one or more safetensors files as views into their read-only mappings: nothing is
// copied until a caller copies a view out. Views must not be written to (the pages are read-only)
// and must not outlive this object.
class MappedStateDict {
 public:
  // Adds every tensor of `file`; a name already present keeps its first tensor.
  void add(SafeTensorsFile file);
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }
  // Drops the named tensor's pages from memory once it has been copied (SafeTensorsFile::release).
  void release(const std::string& name) const;

 private:
  std::vector<SafeTensorsFile> files_;
  std::map<std::string, at::Tensor> tensors_;
  std::map<std::string, std::pair<size_t, const TensorView*>> views_;  // file index, view
};

// Writes CPU copies of the tensors (any device, made contiguous) atomically.
void write_state_dict(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace cm
