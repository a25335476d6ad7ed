// The converted UNet as a diffusers pipeline folder, written whole or not at all.
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "cm/convert.h"
#include "cm/error.h"
#include "io/files.h"

namespace cm {
namespace {

namespace fs = std::filesystem;

// The tensor's values as `dtype` (F32 or F16), from any floating-point storage.
std::vector<uint8_t> to_dtype(const PtTensor& t, DType dtype, const std::string& name) {
  const std::size_t n = t.data.size() / dtype_size(t.dtype);
  if (t.dtype == dtype) return t.data;
  std::vector<float> values(n);
  const uint8_t* p = t.data.data();
  for (std::size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F32:
        std::memcpy(&values[i], p + 4 * i, 4);
        break;
      case DType::F64: {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        values[i] = static_cast<float>(d);
        break;
      }
      case DType::F16: {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        values[i] = half_to_float(h);
        break;
      }
      case DType::BF16: {
        uint32_t b = 0;
        std::memcpy(reinterpret_cast<uint8_t*>(&b) + 2, p + 2 * i, 2);
        std::memcpy(&values[i], &b, 4);
        break;
      }
      default:
        throw Error("tensor '" + name + "' is " + dtype_name(t.dtype) + ", not floating point");
    }
  }
  std::vector<uint8_t> out(n * dtype_size(dtype));
  if (dtype == DType::F32) {
    std::memcpy(out.data(), values.data(), out.size());
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const uint16_t h = float_to_half(values[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

fs::path normalized(const std::string& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

void check_destination(const fs::path& out, bool overwrite) {
  if (fs::exists(out) && !overwrite)
    throw Error(out.string() + ": already exists (pass --overwrite to replace it)");
}

void write_folder(const ConvertedUNet& unet, const ConvertOptions& options, const fs::path& dir) {
  fs::create_directories(dir / "unet");
  fs::create_directories(dir / "scheduler");
  PipelineIndex{}.save(dir.string());
  write_text_file((dir / "unet" / "config.json").string(), unet.config.to_json());
  write_text_file((dir / "scheduler" / "scheduler_config.json").string(),
                  options.scheduler.to_json());
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(unet.weights.size());
  std::vector<TensorView> views;
  for (const auto& [name, t] : unet.weights) {
    buffers.push_back(to_dtype(t, options.dtype, name));
    TensorView v;
    v.name = name;
    v.dtype = options.dtype;
    v.shape = t.shape;
    v.data = buffers.back().data();
    v.nbytes = buffers.back().size();
    views.push_back(std::move(v));
  }
  write_safetensors((dir / "unet" / "diffusion_pytorch_model.safetensors").string(), views,
                    {{"format", "pt"}});
  if (!options.class_names.empty()) write_class_names(dir.string(), options.class_names);
}

}  // namespace

void write_converted_pipeline(const ConvertedUNet& unet, const ConvertOptions& options,
                              const std::string& out_dir) {
  if (options.dtype != DType::F32 && options.dtype != DType::F16)
    throw Error(std::string("weights can be stored as F32 or F16, not ") +
                dtype_name(options.dtype));
  if (!options.class_names.empty()) {
    const int classes = unet.config.num_class_embeds.value_or(0);
    if (static_cast<int>(options.class_names.size()) != classes)
      throw Error(std::to_string(options.class_names.size()) + " class names for a model with " +
                  std::to_string(classes) + " classes");
  }
  options.scheduler.validate("scheduler options");
  const fs::path out = normalized(out_dir);
  check_destination(out, options.overwrite);
  const fs::path tmp = out.parent_path() / (out.filename().string() + temp_suffix());
  fs::remove_all(tmp);
  try {
    write_folder(unet, options, tmp);
    if (fs::exists(out)) fs::remove_all(out);  // only reached with overwrite
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

ConvertedUNet convert_original_checkpoint(const std::string& in_path, const std::string& out_dir,
                                          const ConvertOptions& options) {
  check_destination(normalized(out_dir), options.overwrite);  // before the long read
  ConvertedUNet unet = convert_original_unet(read_pt_state_dict(in_path), options, in_path);
  write_converted_pipeline(unet, options, out_dir);
  return unet;
}

}  // namespace cm
