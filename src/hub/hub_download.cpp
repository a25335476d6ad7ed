// Repository ids to local folders: which files a pipeline needs, taken from the cache when it
// has them all, else from the Hub.
#include <filesystem>

#include "cm/config.h"
#include "cm/error.h"
#include "cm/hub.h"
#include "hub/hub_fetch.h"
#include "io/weights_index.h"

namespace cm {

namespace fs = std::filesystem;
using hub::RepoCache;

namespace {

// Where the needed files come from: the cache alone, or the Hub's file list and downloads.
class FileSource {
 public:
  virtual ~FileSource() = default;
  virtual FileState probe(const std::string& path) = 0;
  // Puts `path` in the snapshot; false when that can't be done (not cached, offline).
  virtual bool need(const std::string& path) = 0;
};

class CacheSource : public FileSource {
 public:
  CacheSource(const RepoCache& cache, std::string commit)
      : cache_(cache), commit_(std::move(commit)) {}
  FileState probe(const std::string& path) override {
    if (cache_.has_file(commit_, path)) return FileState::kPresent;
    return cache_.known_absent(commit_, path) ? FileState::kAbsent : FileState::kUnknown;
  }
  bool need(const std::string& path) override { return cache_.has_file(commit_, path); }

 private:
  const RepoCache& cache_;
  std::string commit_;
};

class HubSource : public FileSource {
 public:
  HubSource(hub::Session& s, hub::RepoInfo info) : s_(s), info_(std::move(info)) {}
  FileState probe(const std::string& path) override {
    if (info_.files.count(path)) return FileState::kPresent;
    // Remembered as huggingface_hub does, so an offline run later knows it isn't missing.
    s_.cache.mark_absent(info_.commit, path);
    return FileState::kAbsent;
  }
  bool need(const std::string& path) override {
    hub::fetch_file(s_, info_.commit, path);
    return true;
  }

 private:
  hub::Session& s_;
  hub::RepoInfo info_;
};

// Gets what a consistency-model pipeline (or a bare UNet) needs from `src` into `snapshot`:
// model_index.json, the scheduler and UNet configs, the chosen weights (every shard of an index).
// Returns what the source could not provide.
std::vector<std::string> gather(FileSource& src, const fs::path& snapshot,
                                const std::string& variant, const std::string& where) {
  std::vector<std::string> missing;
  auto require = [&](const std::string& path) {
    if (!src.need(path)) missing.push_back(path);
    return missing.empty();
  };
  std::string unet_dir;
  switch (src.probe("model_index.json")) {
    case FileState::kPresent: {
      if (!require("model_index.json")) return missing;
      unet_dir = "unet/";
      const std::string sched = "scheduler/scheduler_config.json";
      const FileState state = src.probe(sched);
      if (state == FileState::kPresent) require(sched);
      if (state == FileState::kUnknown) missing.push_back(sched);
      break;
    }
    case FileState::kAbsent: {
      const FileState state = src.probe("config.json");
      if (state == FileState::kAbsent)
        throw Error(where +
                    ": neither a diffusers pipeline (model_index.json) nor a UNet "
                    "(config.json)");
      if (state == FileState::kUnknown) return {"model_index.json or config.json"};
      break;
    }
    case FileState::kUnknown:
      return {"model_index.json"};
  }
  const FileState config = src.probe(unet_dir + "config.json");
  if (config == FileState::kAbsent) throw Error(where + ": " + unet_dir + "config.json not found");
  if (config == FileState::kUnknown || !require(unet_dir + "config.json")) {
    if (config == FileState::kUnknown) missing.push_back(unet_dir + "config.json");
    return missing;
  }
  const auto probe = [&](const std::string& path) { return src.probe(path); };
  const auto choice = choose_weights(probe, unet_dir, variant, where);
  if (!choice) {
    missing.push_back(unet_dir + weights_file_name(variant));
    return missing;
  }
  if (!require(choice->file) || !choice->sharded) return missing;
  const fs::path index_path = snapshot / choice->file;
  const WeightsIndex index =
      parse_weights_index(read_text_file(index_path.string()), where + ": " + choice->file);
  for (const std::string& shard : index.shards) require(unet_dir + shard);
  return missing;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

std::string download(const std::string& repo_id, const std::string& revision,
                     const HubOptions& options) {
  const auto spec = parse_repo_spec(repo_id);
  if (!spec || spec->repo_id != repo_id)
    throw Error("'" + repo_id + "' is not a Hub repository id (org/name)");
  hub::validate_revision(revision);
  validate_variant(options.variant);
  hub::Session s(options, repo_id);
  const std::string where = repo_id + "@" + revision;
  const bool offline = options.offline || hub_offline_from_env();

  // The cache answers alone for a commit hash, offline, or when the Hub can't be reached.
  const std::optional<std::string> cached = hub::is_commit_hash(revision)
                                                ? std::optional<std::string>(revision)
                                                : s.cache.read_ref(revision);
  std::string not_cached;  // why the cache can't answer
  auto from_cache = [&]() -> std::optional<std::string> {
    if (!cached) {
      not_cached = "no ref '" + revision + "' under " + s.cache.root().string();
      return std::nullopt;
    }
    const fs::path snapshot = s.cache.snapshot_dir(*cached);
    CacheSource src(s.cache, *cached);
    const auto missing = gather(src, snapshot, options.variant, where);
    if (missing.empty()) return snapshot.string();
    not_cached = "snapshot " + snapshot.string() + " lacks " + join(missing);
    return std::nullopt;
  };
  if (hub::is_commit_hash(revision) || offline) {
    if (auto path = from_cache()) return *path;
    if (offline)
      throw Error(where +
                  " is not in the cache and offline mode (HF_HUB_OFFLINE) forbids "
                  "downloading it: " +
                  not_cached);
  }

  hub::RepoInfo info;
  try {
    info = hub::fetch_repo_info(s, revision, /*max_retries=*/0);
  } catch (const hub::NetworkError&) {
    if (auto path = from_cache()) return *path;
    try {
      info = hub::fetch_repo_info(s, revision, options.max_retries);
    } catch (const hub::NetworkError& e) {
      throw Error(std::string(e.what()) + ", and " + where + " is not cached: " + not_cached);
    }
  }
  s.cache.write_ref(revision, info.commit);
  const fs::path snapshot = s.cache.snapshot_dir(info.commit);
  HubSource src(s, info);
  const auto missing = gather(src, snapshot, options.variant, where);
  if (!missing.empty()) throw Error(where + ": could not fetch " + join(missing));
  return snapshot.string();
}

}  // namespace cm
