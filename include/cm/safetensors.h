// Reading and writing the safetensors format (https://github.com/huggingface/safetensors).
// Torch-free on purpose: the model code converts views to tensors itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cm {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// The name the format uses ("F32", "BF16", ...).
const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);

// One tensor: its bytes, little-endian and row-major, as they lie in the file (or in caller memory
// when writing).
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::size_t nbytes = 0;
};

// A safetensors file, memory-mapped read-only and validated as the reference implementation does.
// Throws cm::Error naming the file (and the tensor, where there is one) on any malformed input.
class SafeTensorsFile {
 public:
  explicit SafeTensorsFile(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(SafeTensorsFile&& other) noexcept;
  SafeTensorsFile& operator=(SafeTensorsFile&& other) noexcept;
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In order of their offsets in the file.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(std::string_view name) const;
  // Takes the pages of this file's tensor out of the process (the page cache keeps them, so a later
  // read still finds them): for a loader that has copied the tensor and should not hold the file
  // and the copy resident at once. Reading the view again afterwards is allowed, just slower.
  void release(const TensorView& view) const;
  // The optional "__metadata__" string map.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes the tensors (sorted by name, as the reference writer does) to a temporary file next to
// `path` and renames it into place, so a failure never leaves a half-written file.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace cm
