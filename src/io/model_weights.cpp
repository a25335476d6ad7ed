#include "io/model_weights.h"

#include <filesystem>

#include "cm/config.h"
#include "cm/error.h"
#include "io/state_dict.h"
#include "io/weights_index.h"

namespace cm {

namespace fs = std::filesystem;

std::map<std::string, at::Tensor> read_model_weights(const std::string& dir,
                                                     const std::string& variant,
                                                     std::string* source) {
  const auto probe = [&](const std::string& name) {
    return fs::exists(fs::path(dir) / name) ? FileState::kPresent : FileState::kAbsent;
  };
  const WeightsChoice choice = *choose_weights(probe, "", variant, dir);
  const std::string path = (fs::path(dir) / choice.file).string();
  if (source) *source = path;
  if (!choice.sharded) return read_state_dict(path);

  const WeightsIndex index = parse_weights_index(read_text_file(path), path);
  std::map<std::string, at::Tensor> merged;
  for (const std::string& shard : index.shards) {
    const fs::path shard_path = fs::path(dir) / shard;
    if (!fs::exists(shard_path)) throw Error(path + ": shard '" + shard + "' not found");
    for (auto& [name, tensor] : read_state_dict(shard_path.string())) {
      // The index is the contract: a tensor it doesn't place in this shard, or one that two
      // shards both hold, means the checkpoint was assembled wrongly.
      const auto it = index.weight_map.find(name);
      if (it == index.weight_map.end() || it->second != shard)
        throw Error(path + ": tensor '" + name + "' is in shard '" + shard +
                    "' but the index places it " +
                    (it == index.weight_map.end() ? "nowhere" : "in '" + it->second + "'"));
      merged.emplace(name, std::move(tensor));
    }
  }
  for (const auto& [name, shard] : index.weight_map) {
    if (!merged.count(name))
      throw Error(path + ": tensor '" + name + "' is missing from shard '" + shard + "'");
  }
  return merged;
}

}  // namespace cm
