#include "hub/hub_fetch.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "hub/sha256.h"

namespace cm::hub {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxRedirects = 10;

std::string short_commit(const std::string& commit) {
  return commit.substr(0, 12);
}

bool retryable_status(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

void back_off(const HubOptions& o, int attempt, const HttpResponse* r) {
  double delay = o.retry_delay_s * std::pow(2.0, std::min(attempt, 3));
  // A server that says when to come back is believed, within reason.
  if (r && !r->header("retry-after").empty())
    delay = parse_retry_after(r->header("retry-after"), 60.0).value_or(delay);
  if (delay > 0) std::this_thread::sleep_for(std::chrono::duration<double>(delay));
}

// One request, retried on timeouts, dropped connections, 408, 429 and 5xx. A host that can't be
// reached at all is reported at once: waiting won't bring the network back.
HttpResponse send_with_retries(Session& s, const std::string& method, const std::string& url,
                               int max_retries) {
  for (int attempt = 0;; ++attempt) {
    HttpResponse r = s.http.send(method, url);
    if (!(r.transport_failed() || retryable_status(r.status)) || r.unreachable ||
        attempt >= max_retries)
      return r;
    back_off(s.options, attempt, &r);
  }
}

// What a user can do about an HTTP error, in one line.
[[noreturn]] void throw_http_error(const Session& s, const HttpResponse& r, const std::string& url,
                                   const std::string& revision, const std::string& path) {
  const std::string code = r.header("x-error-code");
  const std::string status = "HTTP " + std::to_string(r.status);
  const std::string& repo = s.repo_id;
  const std::string token_hint = s.http.has_token()
                                     ? "the token given (HF_TOKEN or the token file) cannot read it"
                                     : "set HF_TOKEN to a token that can read it";
  if (code == "RepoNotFound")
    throw Error(repo + ": repository not found on " + s.http.endpoint() + " (" + status +
                ", RepoNotFound); check the name" +
                (s.http.has_token() ? "" : ", or set HF_TOKEN if it is private or gated"));
  if (code == "RevisionNotFound")
    throw Error(repo + ": revision '" + revision + "' not found (" + status +
                ", RevisionNotFound)");
  if (code == "EntryNotFound")
    throw Error(repo + "@" + revision + ": file '" + path + "' not found in the repository (" +
                status + ", EntryNotFound)");
  if (code == "GatedRepo")
    throw Error(repo + ": gated repository (" + status +
                ", GatedRepo): accept its conditions on the Hub, then " + token_hint);
  if (r.status == 401 || r.status == 403)
    throw Error(repo + ": access denied (" + status + "): the repository is private or gated; " +
                token_hint);
  if (retryable_status(r.status))
    throw NetworkError(repo + ": " + url + " answered " + status + " after " +
                       std::to_string(s.options.max_retries) + " retries");
  throw Error(repo + ": " + url + " answered " + status);
}

// Transport failures and exhausted retries are the network's fault; other statuses the request's.
void check_response(const Session& s, const HttpResponse& r, const std::string& url,
                    const std::string& revision, const std::string& path) {
  if (r.transport_failed())
    throw NetworkError(s.repo_id + ": cannot reach " + url_netloc(url) + " (" + r.curl_error + ")");
  if (r.status >= 400 || r.status < 100) throw_http_error(s, r, url, revision, path);
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

[[noreturn]] void throw_write_error(const fs::path& file, int err) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    throw Error("disk full: cannot write " + file.string() + " (" + std::strerror(err) + ")");
  throw Error(file.string() + ": write error (" + std::strerror(err) + ")");
}

// Refuses early rather than failing at 90% of a large file.
void check_disk_space(const fs::path& dir, uint64_t needed, const std::string& what) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return;
  const uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (free_bytes < needed)
    throw Error("disk full: " + what + " needs " + std::to_string(needed) + " bytes, " +
                dir.string() + " has " + std::to_string(free_bytes) + " free");
}

struct FileHead {
  std::string location;  // where the bytes are: the resolve URL or a CDN's
  std::string etag;
  uint64_t size = 0;
};

FileHead head_file(Session& s, const std::string& commit, const std::string& path) {
  std::string url = s.http.endpoint() + "/" + s.repo_id + "/resolve/" + commit + "/" +
                    url_quote(path, /*keep_slash=*/true);
  const std::string what = s.repo_id + "@" + short_commit(commit) + ": " + path;
  HttpResponse r;
  for (int hop = 0;; ++hop) {
    r = send_with_retries(s, "HEAD", url, s.options.max_retries);
    if (r.header("x-error-code") == "EntryNotFound") s.cache.mark_absent(commit, path);
    check_response(s, r, url, commit, path);
    if (r.status < 300 || r.status >= 400) break;
    const std::string location = r.header("location");
    if (location.empty())
      throw Error(what + ": redirect (HTTP " + std::to_string(r.status) +
                  ") without a Location from " + url);
    // An absolute redirect points at the bytes (a CDN); a relative one (a renamed repository)
    // is followed here, with the token.
    if (is_absolute_url(location)) break;
    if (hop >= kMaxRedirects) throw Error(what + ": too many redirects from " + url);
    url = resolve_location(url, location);
  }
  const bool redirected = r.status >= 300;
  const std::string served = r.header("x-repo-commit");
  if (served.empty())
    throw Error(what + ": " + s.http.endpoint() +
                " is not a Hugging Face Hub (no X-Repo-Commit header); check HF_ENDPOINT");
  if (served != commit)
    throw Error(what + ": the Hub served commit " + served + " for commit " + commit);
  FileHead head;
  head.location = redirected ? resolve_location(url, r.header("location")) : url;
  head.etag = normalize_etag(!r.header("x-linked-etag").empty() ? r.header("x-linked-etag")
                                                                : r.header("etag"));
  if (!is_safe_etag(head.etag))
    throw Error(what + ": missing or unusable ETag '" + head.etag + "' from " + url);
  // A redirect's Content-Length is the redirect's own; only X-Linked-Size then says the size.
  const std::string size = !r.header("x-linked-size").empty()
                               ? r.header("x-linked-size")
                               : (redirected ? "" : r.header("content-length"));
  const auto bytes = parse_file_size(size);
  if (!bytes) throw Error(what + ": no file size (X-Linked-Size or Content-Length) from " + url);
  head.size = *bytes;
  return head;
}

// The bytes of one file into blobs/<etag>: appended to <etag>.incomplete (resumed with Range after
// a dropped transfer, or from an earlier run), then size- and SHA-256-checked and renamed.
void download_blob(Session& s, const FileHead& head, const fs::path& blob, const std::string& path,
                   const std::string& what) {
  const fs::path part = blob.string() + ".incomplete";
  fs::create_directories(blob.parent_path());
  std::error_code ec;
  uint64_t have = fs::exists(part, ec) ? fs::file_size(part, ec) : 0;
  if (ec || have > head.size) {
    fs::remove(part, ec);
    have = 0;
  }
  check_disk_space(blob.parent_path(), head.size - have, what);
  const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw_write_error(part, errno);
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) ::close(fd);
    }
  } closer{fd};

  DownloadProgress progress{s.repo_id, path, have, head.size, have, false};
  auto report = [&] {
    progress.bytes_done = have;
    if (s.options.progress) s.options.progress(progress);
  };
  report();
  std::string url = head.location;
  int failures = 0, hops = 0;
  while (have < head.size) {
    const uint64_t start = have;
    int write_errno = 0;
    bool bad_range = false;
    bool first_chunk = true;
    const BodySink sink = [&](const HttpResponse& answer, const char* data, size_t n) {
      if (first_chunk) {
        first_chunk = false;
        if (start > 0 && answer.status == 200) {
          // The server ignored the Range: it sends the whole file, so start the file over.
          if (::ftruncate(fd, 0) != 0) {
            write_errno = errno;
            return false;
          }
          have = 0;
        } else if (answer.status == 206 &&
                   answer.header("content-range")
                           .rfind("bytes " + std::to_string(start) + "-", 0) != 0) {
          bad_range = true;
          return false;
        }
      }
      while (n > 0) {
        const ssize_t w = ::write(fd, data, n);
        if (w < 0) {
          if (errno == EINTR) continue;
          write_errno = errno;
          return false;
        }
        data += w;
        n -= static_cast<size_t>(w);
        have += static_cast<uint64_t>(w);
      }
      report();
      return true;
    };
    std::vector<std::string> headers;
    if (have > 0) headers.push_back("Range: bytes=" + std::to_string(have) + "-");
    const HttpResponse r = s.http.send("GET", url, headers, sink);

    if (write_errno != 0) {
      ::close(fd);
      closer.fd = -1;
      fs::remove(part, ec);  // frees the space; nothing half-written is left behind
      throw_write_error(part, write_errno);
    }
    if (bad_range || r.status == 416) {
      // The part on disk and the server disagree about where it ends: start over.
      if (::ftruncate(fd, 0) != 0) throw_write_error(part, errno);
      have = 0;
      if (++failures > s.options.max_retries)
        throw Error(what + ": the server would not resume the transfer (bad Range answer)");
      continue;
    }
    if (r.transport_failed()) {
      if (have > start) failures = 0;  // it moves: keep going as long as it does
      if (++failures > s.options.max_retries || r.unreachable)
        throw NetworkError(what + ": transfer interrupted at " + std::to_string(have) + " of " +
                           std::to_string(head.size) + " bytes (" + r.curl_error +
                           "); run again to resume");
      back_off(s.options, failures - 1, nullptr);
      continue;
    }
    if (r.status >= 300 && r.status < 400 && !r.header("location").empty()) {
      if (++hops > kMaxRedirects) throw Error(what + ": too many redirects from " + url);
      url = resolve_location(url, r.header("location"));  // the token follows only to the endpoint
      continue;
    }
    if (retryable_status(r.status)) {
      if (++failures > s.options.max_retries) throw_http_error(s, r, url, "", path);
      back_off(s.options, failures - 1, &r);
      continue;
    }
    if (r.status != 200 && r.status != 206) throw_http_error(s, r, url, "", path);
    // A complete answer that doesn't end at the announced size: the transfer can't be trusted.
    if (have != head.size) {
      ::close(fd);
      closer.fd = -1;
      fs::remove(part, ec);
      throw Error(what + ": corrupted download: the Hub announced " + std::to_string(head.size) +
                  " bytes but " + std::to_string(have) + " arrived; run again");
    }
  }
  if (::fsync(fd) != 0 && errno != EINVAL) throw_write_error(part, errno);
  closer.fd = -1;
  if (::close(fd) != 0) throw_write_error(part, errno);

  if (is_sha256_hex(head.etag)) {
    const std::string digest = sha256_file_hex(part.string());
    if (digest != head.etag) {
      fs::remove(part, ec);
      throw Error(what + ": corrupted download: SHA-256 " + digest + " instead of " + head.etag +
                  "; run again");
    }
  }
  fs::rename(part, blob, ec);
  if (ec)
    throw Error(blob.string() + ": cannot move the download into place (" + ec.message() + ")");
  progress.finished = true;
  report();
}

}  // namespace

Session::Session(const HubOptions& o, const std::string& id)
    : options(o),
      repo_id(id),
      http(o.endpoint.empty() ? hub_endpoint() : o.endpoint, o.token ? o.token : hub_token(),
           o.connect_timeout_s),
      cache(o.cache_dir.empty() ? hub_cache_dir() : o.cache_dir, id) {}

RepoInfo fetch_repo_info(Session& s, const std::string& revision, int max_retries) {
  std::string url = s.http.endpoint() + "/api/models/" + s.repo_id;
  if (revision != "main") url += "/revision/" + url_quote(revision, /*keep_slash=*/false);
  HttpResponse r;
  for (int hop = 0;; ++hop) {
    r = send_with_retries(s, "GET", url, max_retries);
    check_response(s, r, url, revision, "");
    if (r.status < 300 || r.status >= 400 || r.header("location").empty()) break;
    if (hop >= kMaxRedirects) throw Error(s.repo_id + ": too many redirects from " + url);
    url = resolve_location(url, r.header("location"));
  }
  return parse_repo_info(r.body, s.repo_id + ": " + url + " did not answer with a model's info");
}

void fetch_file(Session& s, const std::string& commit, const std::string& path) {
  if (s.cache.has_file(commit, path)) return;
  const std::string what = s.repo_id + "@" + short_commit(commit) + ": " + path;
  const FileHead head = head_file(s, commit, path);
  const fs::path blob = s.cache.blob_path(head.etag);
  {
    // Two processes fetching the same blob would append to the same .incomplete file.
    FileLock lock(s.cache.lock_path(head.etag));
    if (!fs::exists(blob)) download_blob(s, head, blob, path, what);
  }
  s.cache.link_blob(head.etag, commit, path);
}

}  // namespace cm::hub
