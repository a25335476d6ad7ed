// cm download: a model from the Hugging Face Hub into the cache; prints the snapshot folder.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "cm/error.h"
#include "cm/hub.h"
#include "hub_progress.h"
#include "subcommands.h"

namespace cm::cli {

namespace {

struct DownloadArgs {
  std::string repo;
  std::string variant;
  std::string cache_dir;
  bool quiet = false;
};

int run_download(const DownloadArgs& a) {
  const auto spec = parse_repo_spec(a.repo);
  if (!spec) throw Error("'" + a.repo + "' is not a repository id (org/name or org/name@revision)");
  HubOptions options = hub_options(a.variant, a.quiet);
  options.cache_dir = a.cache_dir;
  std::cout << download(spec->repo_id, spec->revision, options) << std::endl;
  return 0;
}

}  // namespace

Runner add_download(CLI::App& app) {
  auto args = std::make_shared<DownloadArgs>();
  app.add_option("repo", args->repo, "repository id: org/name or org/name@revision")->required();
  app.add_option("--variant", args->variant,
                 "weights variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)");
  app.add_option("--cache-dir", args->cache_dir,
                 "cache folder (default: HF_HUB_CACHE, else HF_HOME/hub, else "
                 "~/.cache/huggingface/hub)");
  app.add_flag("-q,--quiet", args->quiet, "no progress output on stderr");
  return [args] { return run_download(*args); };
}

}  // namespace cm::cli
