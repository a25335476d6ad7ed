// The central directory of a zip archive held in memory, for PyTorch's checkpoint format: every
// offset and size is checked against the buffer, and only stored (uncompressed) entries are
// accepted, which is all torch.save writes. Zip64 records are followed, since checkpoints over
// 4 GiB need them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace cm {

struct ZipEntry {
  const uint8_t* data = nullptr;  // inside the archive's buffer
  std::size_t size = 0;
  uint32_t crc32 = 0;
  bool crc_checked = false;  // set once the data has been compared with crc32
};

class ZipArchive {
 public:
  // The buffer must outlive the archive. `source` names the file in errors (cm::Error).
  ZipArchive(const uint8_t* data, std::size_t size, std::string source);

  const std::map<std::string, ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // The entry's bytes after checking them against the CRC-32 of the central directory (once).
  std::string_view read(const std::string& name);
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, ZipEntry> entries_;
};

// Whether the buffer starts like a zip archive (a local file header).
bool looks_like_zip(const uint8_t* data, std::size_t size);

}  // namespace cm
