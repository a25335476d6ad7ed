// Streaming .npy and .npz writers. Every size is known when the file is opened, so each member's
// place in the archive is fixed from the start: data is written where it belongs (pwrite), CRCs
// are accumulated as it comes, and the local headers (which hold the CRCs) and the central
// directory are written last, all in a temporary file renamed into place at the end.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "cm/error.h"
#include "cm/image_io.h"
#include "io/files.h"
#include "io/npy_format.h"

namespace cm {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kMarker32 = 0xffffffffu;  // "the value is in the zip64 record"

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// A temporary file beside `path`, written at explicit offsets; commit() renames it to `path`,
// and destruction before that removes it.
class TempFile {
 public:
  explicit TempFile(const std::string& path) : path_(path) {
    tmp_ = path + temp_suffix();
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) throw Error(path_ + ": cannot create " + tmp_ + ": " + std::strerror(errno));
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

  void write_at(uint64_t offset, const void* data, size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(path_ + ": write failed: " + std::strerror(n < 0 ? errno : ENOSPC));
      p += n;
      size -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
  }
  void write_at(uint64_t offset, const std::string& bytes) {
    write_at(offset, bytes.data(), bytes.size());
  }

  void commit() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error(path_ + ": write failed: " + std::strerror(errno));
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      throw Error(path_ + ": cannot rename " + tmp_ + ": " + std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// One array of the archive, stored (not compressed) as NAME.npy.
struct Member {
  std::string name;     // "arr_0.npy"
  std::string header;   // the .npy header
  uint64_t data_size;   // the array's bytes, after the header
  uint64_t offset = 0;  // of the local header
  uint64_t written = 0;
  uint32_t crc = 0;  // of the header and the bytes written so far

  uint64_t size() const { return header.size() + data_size; }
};

// The local or central record of a member, as write_npz always wrote it (fixed 1980-01-01 date,
// Unix rw-r--r--), with a zip64 extra field holding the sizes of a member of `zip64_from` bytes
// or more and, in the central record, an offset that large.
std::string zip_record(const Member& m, bool central, uint64_t zip64_from) {
  const bool big = m.size() >= zip64_from, far = central && m.offset >= zip64_from;
  std::string extra;
  if (big) {
    put_le(extra, m.size(), 8);  // uncompressed
    put_le(extra, m.size(), 8);  // compressed
  }
  if (far) put_le(extra, m.offset, 8);
  if (!extra.empty()) {
    std::string field;
    put_le(field, 0x0001, 2);  // zip64 extended information
    put_le(field, extra.size(), 2);
    extra = field + extra;
  }
  std::string r;
  put_le(r, central ? kCentralSig : kLocalSig, 4);
  if (central) put_le(r, extra.empty() ? 0x0314 : 0x032d, 2);  // made by Unix, ZIP 2.0 / 4.5
  put_le(r, extra.empty() ? 20 : 45, 2);                       // version needed to extract
  bool utf8 = false;  // Python decodes names without this flag as CP437
  for (unsigned char c : m.name) utf8 = utf8 || c >= 0x80;
  put_le(r, utf8 ? 0x800 : 0, 2);  // flags
  put_le(r, 0, 2);                 // method: stored
  put_le(r, 0, 2);                 // time 00:00
  put_le(r, 0x21, 2);              // date 1980-01-01
  put_le(r, m.crc, 4);
  put_le(r, big ? kMarker32 : m.size(), 4);  // compressed size
  put_le(r, big ? kMarker32 : m.size(), 4);  // uncompressed size
  put_le(r, m.name.size(), 2);
  put_le(r, extra.size(), 2);
  if (central) {
    put_le(r, 0, 6);               // comment length, disk number, internal attributes
    put_le(r, 0100644u << 16, 4);  // external attributes: regular file, rw-r--r--
    put_le(r, far ? kMarker32 : m.offset, 4);
  }
  return r + m.name + extra;
}

uint32_t update_crc(uint32_t crc, const void* data, size_t size) {
  // crc32_z with a null buffer returns the initial value, so empty input must skip it.
  if (size == 0) return crc;
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(data), size));
}

}  // namespace

struct NpzStreamWriter::Impl {
  TempFile file;
  std::vector<Member> members;
  uint64_t zip64_from;
  uint64_t end = 0;  // where the central directory goes
  bool finished = false;

  Impl(const std::string& path, uint64_t limit) : file(path), zip64_from(limit) {}

  uint64_t local_size(const Member& m) const {
    return 30 + m.name.size() + (m.size() >= zip64_from ? 20 : 0);
  }
};

NpzStreamWriter::NpzStreamWriter(const std::string& path,
                                 const std::vector<std::pair<std::string, NpySpec>>& arrays,
                                 uint64_t zip64_from) {
  // Everything is checked before the temporary file exists.
  std::vector<Member> members;
  std::set<std::string> names;
  for (const auto& [key, spec] : arrays) {
    const std::string name = key + ".npy";
    if (key.empty() || key.find('\0') != std::string::npos || !names.insert(name).second)
      throw Error(path + ": invalid or duplicate array name '" + key + "'");
    const std::string where = path + ": array '" + key + "'";
    Member m{name, npy_header_of(where, spec.descr, spec.shape),
             npy_data_size(where, spec.descr, spec.shape)};
    m.crc = update_crc(0, m.header.data(), m.header.size());
    members.push_back(std::move(m));
  }
  if (members.size() >= 0xffff) throw Error(path + ": too many arrays for one archive");
  impl_ = std::make_unique<Impl>(path, zip64_from);
  impl_->members = std::move(members);
  uint64_t offset = 0;
  for (Member& m : impl_->members) {
    m.offset = offset;
    // The local header is rewritten with its CRC by finish(); the .npy header is final now.
    impl_->file.write_at(offset + impl_->local_size(m), m.header);
    offset += impl_->local_size(m) + m.size();
  }
  impl_->end = offset;
}

NpzStreamWriter::~NpzStreamWriter() = default;

void NpzStreamWriter::append(size_t array, const void* data, size_t size) {
  if (impl_->finished) throw Error(impl_->file.path() + ": append after finish");
  if (array >= impl_->members.size())
    throw Error(impl_->file.path() + ": no array number " + std::to_string(array));
  Member& m = impl_->members[array];
  if (size > m.data_size - m.written)
    throw Error(impl_->file.path() + ": more data than " + m.name + "'s shape holds (" +
                std::to_string(m.data_size) + " bytes)");
  impl_->file.write_at(m.offset + impl_->local_size(m) + m.header.size() + m.written, data, size);
  m.crc = update_crc(m.crc, data, size);
  m.written += size;
}

void NpzStreamWriter::finish() {
  Impl& s = *impl_;
  if (s.finished) return;
  for (const Member& m : s.members)
    if (m.written != m.data_size)
      throw Error(s.file.path() + ": " + m.name + " got " + std::to_string(m.written) + " of its " +
                  std::to_string(m.data_size) + " bytes");
  std::string central;
  for (const Member& m : s.members) {
    s.file.write_at(m.offset, zip_record(m, false, s.zip64_from));
    central += zip_record(m, true, s.zip64_from);
  }
  const uint64_t count = s.members.size(), cd_size = central.size(), cd_offset = s.end;
  const bool cd_big = cd_size >= s.zip64_from, cd_far = cd_offset >= s.zip64_from;
  if (cd_big || cd_far) {
    // Zip64 end of central directory record, then its locator.
    put_le(central, kZip64EndSig, 4);
    put_le(central, 44, 8);      // size of the rest of this record
    put_le(central, 0x032d, 2);  // made by Unix, ZIP 4.5
    put_le(central, 45, 2);      // version needed to extract
    put_le(central, 0, 8);       // this disk, disk with the central directory
    put_le(central, count, 8);
    put_le(central, count, 8);
    put_le(central, cd_size, 8);
    put_le(central, cd_offset, 8);
    put_le(central, kZip64LocatorSig, 4);
    put_le(central, 0, 4);  // disk with the zip64 end record
    put_le(central, cd_offset + cd_size, 8);
    put_le(central, 1, 4);  // number of disks
  }
  put_le(central, kEndSig, 4);
  put_le(central, 0, 4);  // this disk, disk with the central directory
  put_le(central, count, 2);
  put_le(central, count, 2);
  put_le(central, cd_big ? kMarker32 : cd_size, 4);
  put_le(central, cd_far ? kMarker32 : cd_offset, 4);
  put_le(central, 0, 2);  // comment length
  s.file.write_at(cd_offset, central);
  s.file.commit();
  s.finished = true;
}

struct NpyStreamWriter::Impl {
  TempFile file;
  uint64_t header_size, data_size, written = 0;
  bool finished = false;

  Impl(const std::string& path, uint64_t header, uint64_t data)
      : file(path), header_size(header), data_size(data) {}
};

NpyStreamWriter::NpyStreamWriter(const std::string& path, const NpySpec& spec) {
  const std::string header = npy_header_of(path, spec.descr, spec.shape);
  impl_ = std::make_unique<Impl>(path, header.size(), npy_data_size(path, spec.descr, spec.shape));
  impl_->file.write_at(0, header);
}

NpyStreamWriter::~NpyStreamWriter() = default;

void NpyStreamWriter::append(const void* data, size_t size) {
  Impl& s = *impl_;
  if (s.finished) throw Error(s.file.path() + ": append after finish");
  if (size > s.data_size - s.written)
    throw Error(s.file.path() + ": more data than the array's shape holds (" +
                std::to_string(s.data_size) + " bytes)");
  s.file.write_at(s.header_size + s.written, data, size);
  s.written += size;
}

void NpyStreamWriter::finish() {
  Impl& s = *impl_;
  if (s.finished) return;
  if (s.written != s.data_size)
    throw Error(s.file.path() + ": got " + std::to_string(s.written) + " of the array's " +
                std::to_string(s.data_size) + " bytes");
  s.file.commit();
  s.finished = true;
}

}  // namespace cm
