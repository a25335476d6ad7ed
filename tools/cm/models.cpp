// cm models: what the Hugging Face cache holds, with sizes.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>

#include "cm/hub.h"
#include "hub_progress.h"
#include "subcommands.h"

namespace cm::cli {

namespace {

int run_models(const std::string& cache_dir_arg) {
  const std::string cache_dir = cache_dir_arg.empty() ? hub_cache_dir() : cache_dir_arg;
  const auto repos = list_cached_models(cache_dir);
  if (repos.empty()) {
    std::cout << "no models in " << cache_dir << std::endl;
    return 0;
  }
  struct Row {
    std::string repo, size, revisions, path;
  };
  std::vector<Row> rows = {{"REPOSITORY", "SIZE", "REVISIONS", "PATH"}};
  uint64_t total = 0;
  for (const auto& r : repos) {
    std::string revisions;
    for (const auto& rev : r.revisions) {
      std::string refs;
      for (const auto& ref : rev.refs) refs += (refs.empty() ? "" : ",") + ref;
      revisions += (revisions.empty() ? "" : " ") + (refs.empty() ? "" : refs + "@") +
                   rev.commit.substr(0, 12);
    }
    rows.push_back(
        {r.repo_id, format_bytes(r.size_bytes), revisions.empty() ? "-" : revisions, r.path});
    total += r.size_bytes;
  }
  size_t w_repo = 0, w_size = 0, w_rev = 0;
  for (const auto& row : rows) {
    w_repo = std::max(w_repo, row.repo.size());
    w_size = std::max(w_size, row.size.size());
    w_rev = std::max(w_rev, row.revisions.size());
  }
  for (const auto& row : rows) {
    std::cout << std::left << std::setw(static_cast<int>(w_repo)) << row.repo << "  " << std::right
              << std::setw(static_cast<int>(w_size)) << row.size << "  " << std::left
              << std::setw(static_cast<int>(w_rev)) << row.revisions << "  " << row.path << "\n";
  }
  std::cout << repos.size() << (repos.size() == 1 ? " model, " : " models, ") << format_bytes(total)
            << " in " << cache_dir << std::endl;
  return 0;
}

}  // namespace

Runner add_models(CLI::App& app) {
  auto cache_dir = std::make_shared<std::string>();
  app.add_option("--cache-dir", *cache_dir,
                 "cache folder (default: HF_HUB_CACHE, else HF_HOME/hub, else "
                 "~/.cache/huggingface/hub)");
  return [cache_dir] { return run_models(*cache_dir); };
}

}  // namespace cm::cli
