// The Hub client's network half when the build has none (cmake -DCM_HUB=OFF: no libcurl or
// OpenSSL, e.g. on a machine without network). Local folders and the cache listing still work;
// a repository id gets a one-line error saying why.
#include "cm/error.h"
#include "cm/hub.h"

namespace cm {

std::string download(const std::string& repo_id, const std::string& revision,
                     const HubOptions& options) {
  (void)options;
  throw Error(repo_id + "@" + revision +
              ": this cm was built without the Hugging Face Hub client (CM_HUB=OFF); pass a "
              "local pipeline folder");
}

}  // namespace cm
