// Which weight files a diffusers model folder holds: the plain or variant safetensors file, or a
// sharded checkpoint through its index json. Torch-free, so the Hub download and the loader pick
// the same files by the same rules.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cm {

// What is known about a file: there, known to be absent, or not known (a file the cache hasn't
// fetched and has no ".no_exist" marker for).
enum class FileState { kPresent, kAbsent, kUnknown };
using FileProbe = std::function<FileState(const std::string& path)>;

// "" or a plain name such as "fp16"; cm::Error naming the value otherwise (a dot or a slash could
// make a file name escape the folder).
void validate_variant(const std::string& variant);

// diffusers' names: diffusion_pytorch_model[.fp16].safetensors and
// diffusion_pytorch_model.safetensors.index[.fp16].json.
std::string weights_file_name(const std::string& variant);
std::string weights_index_name(const std::string& variant);

struct WeightsChoice {
  std::string file;  // the safetensors file, or the index json when sharded
  bool sharded = false;
};

// The weights of the model folder `dir` ("" or "unet/"; probed as dir + name) for `variant`: the
// single file, else the sharded index. No fallback to another variant. std::nullopt when the
// answer depends on a file whose state is unknown; cm::Error (naming `where`) when none exists.
std::optional<WeightsChoice> choose_weights(const FileProbe& probe, const std::string& dir,
                                            const std::string& variant, const std::string& where);

// A diffusers/transformers shard index: {"weight_map": {"tensor": "shard file", ...}}.
struct WeightsIndex {
  std::vector<std::string> shards;                // unique, in order of first mention
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file
};

// Parses and checks an index: every shard a relative .safetensors path inside the index's folder
// (no "..", no absolute path). `source` names the file in errors.
WeightsIndex parse_weights_index(const std::string& json_text, const std::string& source);

}  // namespace cm
