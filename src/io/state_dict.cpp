#include "io/state_dict.h"

#include "cm/error.h"

namespace cm {

at::ScalarType to_scalar_type(DType dtype, const std::string& context) {
  switch (dtype) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::BOOL: return at::kBool;
  }
  throw Error(context + ": unsupported dtype");
}

DType to_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::F64;
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kLong: return DType::I64;
    case at::kInt: return DType::I32;
    case at::kShort: return DType::I16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kBool: return DType::BOOL;
    default: throw Error(std::string("no safetensors dtype for ") + c10::toString(type));
  }
}

std::map<std::string, at::Tensor> read_state_dict(const std::string& path) {
  SafeTensorsFile file(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& view : file.tensors()) {
    const auto type = to_scalar_type(view.dtype, path + ": tensor '" + view.name + "'");
    // from_blob does not own the mapping, which is unmapped when `file` goes out of scope.
    auto t = at::from_blob(const_cast<void*>(view.data), view.shape,
                           at::TensorOptions().dtype(type))
                 .clone();
    out.emplace(view.name, std::move(t));
  }
  return out;
}

void MappedStateDict::add(SafeTensorsFile file) {
  files_.push_back(std::move(file));
  const size_t index = files_.size() - 1;
  const SafeTensorsFile& added = files_.back();
  for (const auto& view : added.tensors()) {
    const auto type = to_scalar_type(view.dtype, added.path() + ": tensor '" + view.name + "'");
    auto t = at::from_blob(const_cast<void*>(view.data), view.shape,
                           at::TensorOptions().dtype(type));
    if (tensors_.emplace(view.name, std::move(t)).second)
      views_.emplace(view.name, std::make_pair(index, &view));
  }
}

void MappedStateDict::release(const std::string& name) const {
  const auto it = views_.find(name);
  if (it != views_.end()) files_[it->second.first].release(*it->second.second);
}

void write_state_dict(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // owns the CPU copies while the views point at them
  std::vector<TensorView> views;
  keep.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    keep.push_back(tensor.detach().to(at::kCPU).contiguous());
    const auto& t = keep.back();
    TensorView v;
    v.name = name;
    v.dtype = to_dtype(t.scalar_type());
    v.shape = t.sizes().vec();
    v.data = t.data_ptr();
    v.nbytes = t.numel() * t.element_size();
    views.push_back(std::move(v));
  }
  write_safetensors(path, views, metadata);
}

}  // namespace cm
