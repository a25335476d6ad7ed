// The Hugging Face cache of one repository, as huggingface_hub lays it out:
//   <cache>/models--org--name/blobs/<etag>              the files' bytes, named by etag
//                            /refs/<revision>           the commit hash a branch or tag points at
//                            /snapshots/<commit>/<path> relative symlinks into blobs/
//                            /.no_exist/<commit>/<path> markers of files the Hub doesn't have
//   <cache>/.locks/models--org--name/<etag>.lock        one writer per blob
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace cm::hub {

// "org/name" -> "models--org--name".
std::string repo_folder_name(const std::string& repo_id);
// A full commit hash: 40 lower-case hex digits.
bool is_commit_hash(const std::string& text);
// A revision usable as a refs/ file name: no empty or ".." part, no leading '/', no backslash.
void validate_revision(const std::string& revision);
// An etag usable as a blobs/ file name (the server chooses it, so it is checked).
bool is_safe_etag(const std::string& etag);

class RepoCache {
 public:
  RepoCache(const std::string& cache_dir, const std::string& repo_id);

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path snapshot_dir(const std::string& commit) const;
  // snapshots/<commit>/<path>; cm::Error when `path` would leave the snapshot.
  std::filesystem::path pointer_path(const std::string& commit, const std::string& path) const;
  std::filesystem::path blob_path(const std::string& etag) const;
  std::filesystem::path lock_path(const std::string& etag) const;

  std::optional<std::string> read_ref(const std::string& revision) const;
  // Written only when it changes, atomically (a reader never sees half a hash).
  void write_ref(const std::string& revision, const std::string& commit) const;

  bool has_file(const std::string& commit, const std::string& path) const;  // follows the link
  bool known_absent(const std::string& commit, const std::string& path) const;
  void mark_absent(const std::string& commit, const std::string& path) const;  // best effort
  // Points snapshots/<commit>/<path> at blobs/<etag>: a relative symlink, or a copy of the blob
  // where the file system has no symlinks.
  void link_blob(const std::string& etag, const std::string& commit, const std::string& path) const;

 private:
  std::filesystem::path cache_dir_;
  std::string folder_;
  std::filesystem::path root_;
};

// An exclusive advisory lock (flock) held for the object's lifetime.
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace cm::hub
