// The Hub client's network half when the build has none (cmake -DCM_HUB=OFF: no libcurl or
// OpenSSL, e.g. on a machine without network). Local folders and the cache listing still work;
// a repository id gets a one-line error saying why.
#include <filesystem>

#include "cm/error.h"
#include "cm/hub.h"

namespace cm {

namespace fs = std::filesystem;

std::string download(const std::string& repo_id, const std::string& revision,
                     const HubOptions& options) {
  (void)options;
  throw Error(repo_id + "@" + revision +
              ": this cm was built without the Hugging Face Hub client (CM_HUB=OFF); pass a "
              "local pipeline folder");
}

std::string resolve_model(const std::string& spec, const HubOptions& options) {
  std::error_code ec;
  if (fs::exists(spec, ec)) return spec;
  const auto repo = parse_repo_spec(spec);
  if (!repo) return spec;  // a path after all: the loader says that it doesn't exist
  return download(repo->repo_id, repo->revision, options);
}

}  // namespace cm
