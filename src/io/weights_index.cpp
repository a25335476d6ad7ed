#include "io/weights_index.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cm/error.h"

namespace cm {

void validate_variant(const std::string& variant) {
  for (char c : variant) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) throw Error("variant '" + variant + "': use letters, digits, '_' or '-' (e.g. fp16)");
  }
}

std::string weights_file_name(const std::string& variant) {
  return variant.empty() ? "diffusion_pytorch_model.safetensors"
                         : "diffusion_pytorch_model." + variant + ".safetensors";
}

std::string weights_index_name(const std::string& variant) {
  return variant.empty() ? "diffusion_pytorch_model.safetensors.index.json"
                         : "diffusion_pytorch_model.safetensors.index." + variant + ".json";
}

std::optional<WeightsChoice> choose_weights(const FileProbe& probe, const std::string& dir,
                                            const std::string& variant, const std::string& where) {
  validate_variant(variant);
  const std::string single = weights_file_name(variant);
  const std::string index = weights_index_name(variant);
  const FileState single_state = probe(dir + single);
  if (single_state == FileState::kPresent) return WeightsChoice{dir + single, false};
  const FileState index_state = probe(dir + index);
  if (index_state == FileState::kPresent) return WeightsChoice{dir + index, true};
  if (single_state == FileState::kUnknown || index_state == FileState::kUnknown)
    return std::nullopt;

  if (!variant.empty()) {
    std::string msg = where + ": no '" + variant + "' variant of the weights (neither " + dir +
                      single + " nor " + dir + index + ")";
    // Say what is there instead, so the fix is obvious; but never load it in its place.
    if (probe(dir + weights_file_name("")) == FileState::kPresent)
      msg += "; the plain " + dir + weights_file_name("") + " is there (no variant)";
    throw Error(msg);
  }
  if (probe(dir + "diffusion_pytorch_model.bin") == FileState::kPresent)
    throw Error(where + ": only a PyTorch .bin checkpoint is present; convert it to safetensors");
  throw Error(where + ": weights file not found (" + dir + single + " or " + dir + index + ")");
}

namespace {

// Rejects a shard name that would leave the index's folder.
void check_shard_name(const std::string& name, const std::string& source) {
  auto fail = [&](const std::string& why) {
    throw Error(source + ": shard '" + name + "' " + why);
  };
  if (name.empty()) fail("is empty");
  if (name[0] == '/' || name[0] == '~') fail("is an absolute path");
  if (name.find('\\') != std::string::npos || name.find('\0') != std::string::npos)
    fail("has a backslash or NUL in its name");
  size_t start = 0;
  while (start <= name.size()) {
    const size_t end = name.find('/', start);
    const std::string part = name.substr(start, end == std::string::npos ? end : end - start);
    if (part == "..") fail("escapes the model folder ('..')");
    if (part.empty() || part == ".") fail("is not a plain relative path");
    if (end == std::string::npos) break;
    start = end + 1;
  }
  const std::string ext = ".safetensors";
  if (name.size() <= ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0)
    fail("is not a .safetensors file");
}

}  // namespace

WeightsIndex parse_weights_index(const std::string& json_text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": invalid JSON (" + std::string(e.what()) + ")");
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(source + ": no \"weight_map\" object");
  WeightsIndex index;
  for (const auto& [tensor, shard] : j["weight_map"].items()) {
    if (!shard.is_string())
      throw Error(source + ": weight_map[\"" + tensor + "\"] is not a file name");
    const std::string name = shard.get<std::string>();
    check_shard_name(name, source);
    if (std::find(index.shards.begin(), index.shards.end(), name) == index.shards.end())
      index.shards.push_back(name);
    index.weight_map.emplace(tensor, name);
  }
  if (index.shards.empty()) throw Error(source + ": \"weight_map\" lists no tensors");
  return index;
}

}  // namespace cm
