// Zip's layout (PKWARE APPNOTE): local headers with the data, then the central directory, then the
// end-of-central-directory record (with a zip64 record and locator before it for large archives).
// The central directory is trusted over the local headers, as torch's reader (miniz) does; the
// local header is only used to find where the data starts.
#include "io/zip_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "cm/error.h"

namespace cm {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfCentralDir = 0x06054b50;
constexpr uint32_t kZip64EndOfCentralDir = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr std::size_t kEndRecordSize = 22;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kLocalHeaderSize = 30;

uint64_t le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A bounds-checked view of [begin, end) of the buffer.
class Cursor {
 public:
  Cursor(const uint8_t* base, std::size_t size, const std::string& source)
      : base_(base), size_(size), source_(source) {}
  // Reads `bytes` little-endian bytes at absolute offset `at`.
  uint64_t at(uint64_t offset, int bytes, const char* what) const {
    need(offset, static_cast<uint64_t>(bytes), what);
    return le(base_ + offset, bytes);
  }
  void need(uint64_t offset, uint64_t length, const char* what) const {
    if (offset > size_ || length > size_ - offset)
      throw Error(source_ + ": truncated or corrupt zip archive (" + what + " at byte " +
                  std::to_string(offset) + " runs past the end of the " + std::to_string(size_) +
                  "-byte file)");
  }
  const uint8_t* ptr(uint64_t offset) const { return base_ + offset; }
  std::size_t size() const { return size_; }

 private:
  const uint8_t* base_;
  std::size_t size_;
  const std::string& source_;
};

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

Directory find_directory(const Cursor& c, const std::string& source) {
  if (c.size() < kEndRecordSize) throw Error(source + ": truncated zip archive (no end record)");
  // The record ends the file unless a comment (at most 65535 bytes) follows it.
  const std::size_t lowest =
      c.size() > kEndRecordSize + 0xffff ? c.size() - kEndRecordSize - 0xffff : 0;
  std::size_t pos = c.size() - kEndRecordSize;
  for (;; --pos) {
    if (c.at(pos, 4, "end record") == kEndOfCentralDir &&
        pos + kEndRecordSize + c.at(pos + 20, 2, "end record") == c.size())
      break;
    if (pos == lowest)
      throw Error(source + ": truncated or not a zip archive (no end-of-central-directory record)");
  }
  Directory d;
  d.entries = c.at(pos + 10, 2, "end record");
  d.size = c.at(pos + 12, 4, "end record");
  d.offset = c.at(pos + 16, 4, "end record");
  const bool zip64 = d.entries == 0xffff || d.size == 0xffffffff || d.offset == 0xffffffff;
  if (zip64) {
    if (pos < 20 || c.at(pos - 20, 4, "zip64 locator") != kZip64Locator)
      throw Error(source + ": corrupt zip archive (zip64 locator missing)");
    const uint64_t record = c.at(pos - 20 + 8, 8, "zip64 locator");
    if (c.at(record, 4, "zip64 end record") != kZip64EndOfCentralDir)
      throw Error(source + ": corrupt zip archive (bad zip64 end record at byte " +
                  std::to_string(record) + ")");
    d.entries = c.at(record + 32, 8, "zip64 end record");
    d.size = c.at(record + 40, 8, "zip64 end record");
    d.offset = c.at(record + 48, 8, "zip64 end record");
  }
  c.need(d.offset, d.size, "central directory");
  // Each entry takes at least the fixed header: a count beyond that is a lie.
  if (d.entries > d.size / kCentralHeaderSize)
    throw Error(source + ": corrupt zip archive (" + std::to_string(d.entries) +
                " entries cannot fit a " + std::to_string(d.size) + "-byte central directory)");
  return d;
}

// The zip64 extended-information extra field replaces, in this order, whichever of the 32-bit
// fields were saturated.
void apply_zip64_extra(const Cursor& c, uint64_t extra, uint64_t extra_len, uint64_t& usize,
                       uint64_t& csize, uint64_t& offset, const std::string& source,
                       const std::string& name) {
  uint64_t p = extra;
  const uint64_t end = extra + extra_len;
  while (p + 4 <= end) {
    const uint64_t id = c.at(p, 2, "extra field");
    const uint64_t len = c.at(p + 2, 2, "extra field");
    if (p + 4 + len > end) break;
    if (id == 0x0001) {
      uint64_t q = p + 4;
      const uint64_t qend = q + len;
      for (uint64_t* field : {&usize, &csize, &offset}) {
        if (*field != 0xffffffff) continue;
        if (q + 8 > qend)
          throw Error(source + ": corrupt zip archive (short zip64 field for '" + name + "')");
        *field = c.at(q, 8, "zip64 field");
        q += 8;
      }
      return;
    }
    p += 4 + len;
  }
}

}  // namespace

bool looks_like_zip(const uint8_t* data, std::size_t size) {
  return size >= 4 && le(data, 4) == kLocalHeader;
}

ZipArchive::ZipArchive(const uint8_t* data, std::size_t size, std::string source)
    : source_(std::move(source)) {
  const Cursor c(data, size, source_);
  const Directory d = find_directory(c, source_);
  uint64_t p = d.offset;
  const uint64_t dir_end = d.offset + d.size;
  for (uint64_t i = 0; i < d.entries; ++i) {
    if (p + kCentralHeaderSize > dir_end || c.at(p, 4, "central directory") != kCentralHeader)
      throw Error(source_ + ": corrupt zip archive (bad central directory entry " +
                  std::to_string(i) + ")");
    const uint64_t flags = c.at(p + 8, 2, "central directory");
    const uint64_t method = c.at(p + 10, 2, "central directory");
    const uint32_t crc = static_cast<uint32_t>(c.at(p + 16, 4, "central directory"));
    uint64_t csize = c.at(p + 20, 4, "central directory");
    uint64_t usize = c.at(p + 24, 4, "central directory");
    const uint64_t name_len = c.at(p + 28, 2, "central directory");
    const uint64_t extra_len = c.at(p + 30, 2, "central directory");
    const uint64_t comment_len = c.at(p + 32, 2, "central directory");
    uint64_t offset = c.at(p + 42, 4, "central directory");
    const uint64_t next = p + kCentralHeaderSize + name_len + extra_len + comment_len;
    if (next > dir_end)
      throw Error(source_ + ": corrupt zip archive (central directory entry " + std::to_string(i) +
                  " runs past the directory)");
    std::string name(reinterpret_cast<const char*>(c.ptr(p + kCentralHeaderSize)), name_len);
    apply_zip64_extra(c, p + kCentralHeaderSize + name_len, extra_len, usize, csize, offset,
                      source_, name);
    if (flags & 0x1) throw Error(source_ + ": zip entry '" + name + "' is encrypted");
    if (method != 0)
      throw Error(source_ + ": zip entry '" + name + "' is compressed (method " +
                  std::to_string(method) +
                  "); PyTorch checkpoints store their entries uncompressed");
    if (csize != usize)
      throw Error(source_ + ": corrupt zip archive (stored entry '" + name + "' has sizes " +
                  std::to_string(csize) + " and " + std::to_string(usize) + ")");
    if (c.at(offset, 4, "local header") != kLocalHeader)
      throw Error(source_ + ": corrupt zip archive (no local header for '" + name + "' at byte " +
                  std::to_string(offset) + ")");
    const uint64_t local_name = c.at(offset + 26, 2, "local header");
    const uint64_t local_extra = c.at(offset + 28, 2, "local header");
    const uint64_t start = offset + kLocalHeaderSize + local_name + local_extra;
    c.need(start, usize, ("data of '" + name + "'").c_str());
    // The data must lie before the central directory, or entries could alias the directory.
    if (start + usize > d.offset)
      throw Error(source_ + ": corrupt zip archive (data of '" + name +
                  "' overlaps the central directory)");
    ZipEntry e;
    e.data = c.ptr(start);
    e.size = static_cast<std::size_t>(usize);
    e.crc32 = crc;
    if (!entries_.emplace(name, e).second)
      throw Error(source_ + ": corrupt zip archive (entry '" + name + "' appears twice)");
    p = next;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  const auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

std::string_view ZipArchive::read(const std::string& name) {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw Error(source_ + ": the archive has no entry '" + name + "'");
  ZipEntry& e = it->second;
  if (!e.crc_checked) {
    // zlib's crc32 takes a uInt length: feed it in pieces.
    uLong crc = crc32(0L, Z_NULL, 0);
    const uint8_t* p = e.data;
    std::size_t left = e.size;
    while (left > 0) {
      const uInt n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
      crc = crc32(crc, p, n);
      p += n;
      left -= n;
    }
    if (static_cast<uint32_t>(crc) != e.crc32)
      throw Error(source_ + ": zip entry '" + name +
                  "' fails its CRC-32 check (tampered or corrupt)");
    e.crc_checked = true;
  }
  return {reinterpret_cast<const char*>(e.data), e.size};
}

}  // namespace cm
