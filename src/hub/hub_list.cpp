// What the Hugging Face cache holds: model repositories, their snapshots and refs, their size.
#include <algorithm>
#include <filesystem>
#include <set>

#include "cm/hub.h"
#include "hub/hub_cache.h"

namespace cm {

namespace fs = std::filesystem;

namespace {

// "models--org--name" -> "org/name".
std::string repo_id_of(const std::string& folder) {
  std::string rest = folder.substr(std::string("models--").size());
  std::string out;
  size_t start = 0;
  while (true) {
    const size_t pos = rest.find("--", start);
    out += rest.substr(start, pos == std::string::npos ? pos : pos - start);
    if (pos == std::string::npos) return out;
    out += '/';
    start = pos + 2;
  }
}

}  // namespace

std::vector<CachedRepo> list_cached_models(const std::string& cache_dir) {
  const fs::path root = cache_dir.empty() ? hub_cache_dir() : cache_dir;
  std::vector<CachedRepo> repos;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return repos;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("models--", 0) != 0 || !entry.is_directory(ec)) continue;
    CachedRepo repo;
    repo.repo_id = repo_id_of(name);
    repo.path = entry.path().string();
    // Each stored file once: blobs, and snapshot files that are copies rather than links.
    std::set<fs::path> counted;
    auto count = [&](const fs::path& file) {
      std::error_code e;
      const fs::path real = fs::canonical(file, e);
      if (e || !fs::is_regular_file(real, e) || !counted.insert(real).second) return;
      if (real.extension() == ".incomplete") return;  // a transfer still under way
      repo.size_bytes += fs::file_size(real, e);
    };
    for (const auto& blob : fs::directory_iterator(entry.path() / "blobs", ec)) count(blob.path());
    ec.clear();
    for (const auto& snap : fs::directory_iterator(entry.path() / "snapshots", ec)) {
      if (!snap.is_directory()) continue;
      CachedRevision rev;
      rev.commit = snap.path().filename().string();
      rev.path = snap.path().string();
      for (const auto& f : fs::recursive_directory_iterator(snap.path(), ec)) {
        std::error_code e;
        if (fs::is_regular_file(f.path(), e)) {
          ++rev.files;
          count(f.path());
        }
      }
      repo.revisions.push_back(std::move(rev));
    }
    ec.clear();
    const fs::path refs = entry.path() / "refs";
    hub::RepoCache cache(root.string(), repo.repo_id);
    for (const auto& ref : fs::recursive_directory_iterator(refs, ec)) {
      if (!ref.is_regular_file()) continue;
      const std::string name_of_ref = ref.path().lexically_relative(refs).string();
      const auto commit = cache.read_ref(name_of_ref);
      for (auto& rev : repo.revisions) {
        if (commit && rev.commit == *commit) rev.refs.push_back(name_of_ref);
      }
    }
    ec.clear();
    std::sort(repo.revisions.begin(), repo.revisions.end(),
              [](const CachedRevision& a, const CachedRevision& b) { return a.commit < b.commit; });
    for (auto& rev : repo.revisions) std::sort(rev.refs.begin(), rev.refs.end());
    repos.push_back(std::move(repo));
  }
  std::sort(repos.begin(), repos.end(),
            [](const CachedRepo& a, const CachedRepo& b) { return a.repo_id < b.repo_id; });
  return repos;
}

}  // namespace cm
