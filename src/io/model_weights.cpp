#include "io/model_weights.h"

#include <filesystem>

#include "cm/config.h"
#include "cm/error.h"
#include "io/state_dict.h"
#include "io/weights_index.h"

namespace cm {

namespace fs = std::filesystem;

MappedStateDict map_model_weights(const std::string& dir, const std::string& variant,
                                  std::string* source) {
  const auto probe = [&](const std::string& name) {
    return fs::exists(fs::path(dir) / name) ? FileState::kPresent : FileState::kAbsent;
  };
  const WeightsChoice choice = *choose_weights(probe, "", variant, dir);
  const std::string path = (fs::path(dir) / choice.file).string();
  if (source) *source = path;
  MappedStateDict mapped;
  if (!choice.sharded) {
    mapped.add(SafeTensorsFile(path));
    return mapped;
  }

  const WeightsIndex index = parse_weights_index(read_text_file(path), path);
  for (const std::string& shard : index.shards) {
    const fs::path shard_path = fs::path(dir) / shard;
    if (!fs::exists(shard_path)) throw Error(path + ": shard '" + shard + "' not found");
    SafeTensorsFile file(shard_path.string());
    for (const TensorView& view : file.tensors()) {
      const std::string& name = view.name;
      // The index is the contract: a tensor it doesn't place in this shard, or one that two
      // shards both hold, means the checkpoint was assembled wrongly.
      const auto it = index.weight_map.find(name);
      if (it == index.weight_map.end() || it->second != shard)
        throw Error(path + ": tensor '" + name + "' is in shard '" + shard +
                    "' but the index places it " +
                    (it == index.weight_map.end() ? "nowhere" : "in '" + it->second + "'"));
    }
    mapped.add(std::move(file));
  }
  for (const auto& [name, shard] : index.weight_map) {
    if (!mapped.tensors().count(name))
      throw Error(path + ": tensor '" + name + "' is missing from shard '" + shard + "'");
  }
  return mapped;
}

}  // namespace cm
