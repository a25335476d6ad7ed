// Talking to the Hub for one repository: its commit and file list, and single files into the
// cache, with retries, resume and checks.
#pragma once

#include <string>

#include "cm/error.h"
#include "cm/hub.h"
#include "hub/hub_cache.h"
#include "hub/hub_http.h"

namespace cm::hub {

// The Hub could not be reached, or kept failing (timeouts, 429, 5xx) past the retries: the cache
// may still have what is needed.
class NetworkError : public Error {
 public:
  using Error::Error;
};

// One repository's download: the options with the environment's defaults filled in.
struct Session {
  Session(const HubOptions& options, const std::string& repo_id);

  HubOptions options;
  std::string repo_id;
  HttpClient http;
  RepoCache cache;
};

// GET /api/models/{repo} (or /revision/{rev}): the commit a revision names and its files.
RepoInfo fetch_repo_info(Session& s, const std::string& revision, int max_retries);

// Makes snapshots/<commit>/<path> hold the file: HEAD /{repo}/resolve/{commit}/{path} for its
// etag, size and location, then GET into blobs/<etag> (resumed, size- and SHA-256-checked).
void fetch_file(Session& s, const std::string& commit, const std::string& path);

}  // namespace cm::hub
