// Models by name: Hugging Face Hub repository ids ("org/name", "org/name@revision") resolved
// through the local Hugging Face cache, laid out exactly as huggingface_hub lays it out (so
// either tool reads what the other wrote), and downloaded from the Hub when missing. Only the
// files a consistency-model pipeline needs are fetched. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cm {

// One update on one file's transfer.
struct DownloadProgress {
  std::string repo_id;
  std::string file;            // path inside the repository, e.g. "unet/config.json"
  uint64_t bytes_done = 0;     // on disk so far, resumed bytes included
  uint64_t bytes_total = 0;    // the file's size as the Hub announced it
  uint64_t bytes_resumed = 0;  // already on disk (an interrupted earlier transfer) at the start
  bool finished = false;       // the last update of this file (complete and checked)
};
using ProgressCallback = std::function<void(const DownloadProgress&)>;

struct HubOptions {
  std::string endpoint;              // empty: $HF_ENDPOINT, else https://huggingface.co
  std::optional<std::string> token;  // unset: $HF_TOKEN, else the token file; "": send none
  std::string cache_dir;             // empty: hub_cache_dir()
  bool offline = false;              // never touch the network (HF_HUB_OFFLINE=1 does the same)
  std::string variant;               // weights variant ("fp16"); empty: the plain weights
  ProgressCallback progress;         // called from the downloading thread
  int max_retries = 5;               // after 408/429/5xx, timeouts and dropped transfers
  double retry_delay_s = 1.0;        // first back-off; doubled after each retry, 8x at most
  long connect_timeout_s = 10;       // also the seconds without any byte before a transfer stalls
};

// The environment, read as huggingface_hub reads it.
// $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::string hub_cache_dir();
std::string hub_endpoint();   // $HF_ENDPOINT without a trailing '/', or the public Hub
bool hub_offline_from_env();  // HF_HUB_OFFLINE is 1/ON/YES/TRUE
// $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH or $HF_HOME/token.
std::optional<std::string> hub_token();

struct RepoSpec {
  std::string repo_id;            // "org/name" (or a legacy "name")
  std::string revision = "main";  // branch, tag or commit hash
};
// "org/name" or "org/name@rev" as a Hub repository id; std::nullopt when `spec` can't be one
// (a path such as "/x/y", "./m" or "a/b/c").
std::optional<RepoSpec> parse_repo_spec(const std::string& spec);

// A local folder for `spec`: an existing path as it is; else a repository id resolved through the
// cache (and the Hub, unless offline) to its snapshot folder, snapshots/<commit>. cm::Error with
// one line a user can act on (unknown repository or revision, missing file, access denied, no
// network and nothing cached, disk full, corrupted download).
std::string resolve_model(const std::string& spec, const HubOptions& options = {});

// Fills the cache with what the pipeline needs of repo_id@revision (model_index.json, the
// configs, the chosen weights) and returns the snapshot folder. A 40-hex revision already cached
// is returned without any network call.
std::string download(const std::string& repo_id, const std::string& revision = "main",
                     const HubOptions& options = {});

// What the cache holds.
struct CachedRevision {
  std::string commit;
  std::vector<std::string> refs;  // branch or tag names pointing at it
  std::string path;               // snapshots/<commit>
  int files = 0;
};
struct CachedRepo {
  std::string repo_id;
  std::string path;         // models--org--name
  uint64_t size_bytes = 0;  // every blob (and plain snapshot file) once
  std::vector<CachedRevision> revisions;
};
// The model repositories of the cache (empty: hub_cache_dir()), sorted by id.
std::vector<CachedRepo> list_cached_models(const std::string& cache_dir = "");

}  // namespace cm
