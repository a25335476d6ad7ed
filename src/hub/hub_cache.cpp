#include "hub/hub_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "cm/error.h"
#include "io/files.h"

namespace cm::hub {

namespace fs = std::filesystem;

std::string repo_folder_name(const std::string& repo_id) {
  std::string out = "models";
  size_t start = 0;
  while (true) {
    const size_t end = repo_id.find('/', start);
    out += "--" + repo_id.substr(start, end == std::string::npos ? end : end - start);
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

bool is_commit_hash(const std::string& text) {
  return text.size() == 40 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

void validate_revision(const std::string& revision) {
  auto fail = [&] {
    throw Error("revision '" + revision + "' is not a valid branch, tag or commit");
  };
  if (revision.empty() || revision[0] == '/' || revision.find('\\') != std::string::npos ||
      revision.find('\0') != std::string::npos)
    fail();
  std::istringstream parts(revision);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty() || part == "." || part == "..") fail();
  }
  if (revision.back() == '/') fail();
}

bool is_safe_etag(const std::string& etag) {
  if (etag.empty() || etag.size() > 200 || etag == "." || etag == "..") return false;
  return std::all_of(etag.begin(), etag.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

RepoCache::RepoCache(const std::string& cache_dir, const std::string& repo_id)
    : cache_dir_(fs::absolute(cache_dir)),
      folder_(repo_folder_name(repo_id)),
      root_(cache_dir_ / folder_) {}

fs::path RepoCache::snapshot_dir(const std::string& commit) const {
  return root_ / "snapshots" / commit;
}

fs::path RepoCache::pointer_path(const std::string& commit, const std::string& path) const {
  const fs::path p = (snapshot_dir(commit) / path).lexically_normal();
  const fs::path rel = p.lexically_relative(snapshot_dir(commit));
  if (path.empty() || path[0] == '/' || rel.empty() || *rel.begin() == "..")
    throw Error("'" + path + "' is not a file path inside the repository");
  return p;
}

fs::path RepoCache::blob_path(const std::string& etag) const {
  return root_ / "blobs" / etag;
}

fs::path RepoCache::lock_path(const std::string& etag) const {
  return cache_dir_ / ".locks" / folder_ / (etag + ".lock");
}

std::optional<std::string> RepoCache::read_ref(const std::string& revision) const {
  std::ifstream in(root_ / "refs" / revision, std::ios::binary);
  if (!in) return std::nullopt;
  std::string commit((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back())))
    commit.pop_back();
  if (!is_commit_hash(commit)) return std::nullopt;
  return commit;
}

void RepoCache::write_ref(const std::string& revision, const std::string& commit) const {
  if (revision == commit || read_ref(revision) == commit) return;
  const fs::path ref = root_ / "refs" / revision;
  fs::create_directories(ref.parent_path());
  // A temporary name unique per process and call, then a rename: a concurrent reader or writer
  // never sees half a hash. huggingface_hub writes the hash with no newline.
  const fs::path tmp = ref.string() + temp_suffix();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << commit;
    if (!out.flush()) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error(ref.string() + ": cannot write the ref");
    }
  }
  std::error_code ec;
  fs::rename(tmp, ref, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(ref.string() + ": cannot put the ref in place");
  }
}

bool RepoCache::has_file(const std::string& commit, const std::string& path) const {
  std::error_code ec;
  return fs::is_regular_file(pointer_path(commit, path), ec);
}

bool RepoCache::known_absent(const std::string& commit, const std::string& path) const {
  std::error_code ec;
  return fs::exists(root_ / ".no_exist" / commit / path, ec);
}

void RepoCache::mark_absent(const std::string& commit, const std::string& path) const {
  // A marker is only a shortcut for later offline runs: failing to write one is no error.
  std::error_code ec;
  const fs::path marker = root_ / ".no_exist" / commit / path;
  if (fs::exists(marker, ec)) return;
  fs::create_directories(marker.parent_path(), ec);
  if (!ec) std::ofstream(marker, std::ios::binary);
}

void RepoCache::link_blob(const std::string& etag, const std::string& commit,
                          const std::string& path) const {
  const fs::path blob = blob_path(etag);
  const fs::path pointer = pointer_path(commit, path);
  fs::create_directories(pointer.parent_path());
  // Built under a temporary name and renamed over the pointer, so a reader sees either no file
  // or the whole one.
  const fs::path tmp = pointer.string() + temp_suffix();
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(blob.lexically_relative(pointer.parent_path()), tmp, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(blob, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(pointer.string() + ": cannot link or copy the blob (" + ec.message() + ")");
  }
  fs::rename(tmp, pointer, ec);
  if (ec) {
    fs::remove(tmp);
    throw Error(pointer.string() + ": cannot put the file in place (" + ec.message() + ")");
  }
}

FileLock::FileLock(const fs::path& path) {
  fs::create_directories(path.parent_path());
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path.string() + ": cannot create the lock file");
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno != EINTR) break;  // no locking on this file system: go on without it
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

}  // namespace cm::hub
