// The safetensors format: an 8-byte little-endian header length, a JSON header, then the raw
// tensor bytes. Validation follows the reference implementation (huggingface/safetensors) so that
// every file it rejects is rejected here too, with a message naming the file and the tensor.
#include "cm/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "cm/error.h"

namespace cm {
namespace {

using nlohmann::json;

// The reference refuses larger headers so that a corrupt length cannot make it allocate wildly.
constexpr std::uint64_t kMaxHeaderSize = 100'000'000;
// Indexed by DType, in the order the enum declares them.
struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {{DType::F64, "F64", 8}, {DType::F32, "F32", 4},
                                 {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
                                 {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
                                 {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
                                 {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1}};
constexpr bool dtype_table_in_enum_order() {
  for (int i = 0; i < 10; ++i) {
    if (static_cast<int>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(dtype_table_in_enum_order());

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& path, const std::string& name,
                              const std::string& what) {
  fail(path, "tensor '" + name + "': " + what);
}

std::string sys_error() { return std::strerror(errno); }

// Number of bytes the shape holds, multiplied left to right with overflow checks exactly as the
// reference does (so [0, huge, huge] is fine but [huge, huge, 0] overflows).
std::optional<std::size_t> byte_size(const std::vector<int64_t>& shape, DType dtype) {
  std::size_t n = 1;
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(n, static_cast<std::size_t>(dim), &n)) return {};
  }
  if (__builtin_mul_overflow(n, dtype_size(dtype), &n)) return {};
  return n;
}

// RFC 3629 UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), as Rust's from_utf8.
bool is_valid_utf8(const unsigned char* s, std::size_t n) {
  std::size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // Allowed range of the first continuation byte.
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return false;
    }
    i += len;
  }
  return true;
}

// nlohmann keeps one value silently when an object repeats a key; the reference treats a repeated
// tensor name as an error, so track the keys of every open object while parsing.
json parse_header_json(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  int duplicate_depth = 0;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && duplicate.empty() &&
               !open_objects.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
      duplicate_depth = depth;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (duplicate_depth == 1) fail_tensor(path, duplicate, "appears twice in the header");
  if (!duplicate.empty()) fail(path, "header repeats the key '" + duplicate + "'");
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& value) {
  if (!value.is_object()) fail(path, "\"__metadata__\" is not an object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) fail(path, "\"__metadata__\" value of '" + key + "' is not a string");
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// The JSON integers the reference reads as usize; floats and negatives are rejected.
std::size_t parse_size(const std::string& path, const std::string& name, const json& value,
                       const char* field) {
  if (!value.is_number_unsigned()) {
    fail_tensor(path, name, std::string("\"") + field + "\" must hold non-negative integers");
  }
  return value.get<std::size_t>();
}

struct Entry {
  TensorView view;
  std::size_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& path, const std::string& name, const json& value) {
  if (!value.is_object()) fail_tensor(path, name, "entry is not an object");
  for (const auto& [key, item] : value.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      fail_tensor(path, name, "unknown key '" + key + "'");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(key)) fail_tensor(path, name, std::string("missing \"") + key + "\"");
  }
  Entry entry;
  entry.view.name = name;
  const json& dtype = value["dtype"];
  if (!dtype.is_string()) fail_tensor(path, name, "\"dtype\" is not a string");
  auto parsed = dtype_from_name(dtype.get<std::string>());
  if (!parsed) fail_tensor(path, name, "unknown dtype '" + dtype.get<std::string>() + "'");
  entry.view.dtype = *parsed;
  const json& shape = value["shape"];
  if (!shape.is_array()) fail_tensor(path, name, "\"shape\" is not an array");
  for (const json& dim : shape) {
    std::size_t d = parse_size(path, name, dim, "shape");
    if (d > static_cast<std::size_t>(INT64_MAX)) fail_tensor(path, name, "shape overflows");
    entry.view.shape.push_back(static_cast<int64_t>(d));
  }
  const json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail_tensor(path, name, "\"data_offsets\" is not a [begin, end] pair");
  }
  entry.begin = parse_size(path, name, offsets[0], "data_offsets");
  entry.end = parse_size(path, name, offsets[1], "data_offsets");
  return entry;
}

void parse_file(const std::string& path, const unsigned char* bytes, std::size_t file_size,
                std::vector<TensorView>& tensors, std::map<std::string, std::string>& metadata) {
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderSize) {
    fail(path, "header length " + std::to_string(header_size) + " exceeds the 100000000 limit");
  }
  if (8 + header_size > file_size) {
    fail(path, "header length " + std::to_string(header_size) + " runs past the end of the " +
                   std::to_string(file_size) + "-byte file");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  if (!is_valid_utf8(bytes + 8, header_size)) fail(path, "header is not valid UTF-8");
  if (header_size == 0 || header_begin[0] != '{') fail(path, "header does not start with '{'");
  json header = parse_header_json(path, header_begin, header_begin + header_size);
  if (!header.is_object()) fail(path, "header is not a JSON object");

  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      metadata = parse_metadata(path, value);
    } else {
      entries.push_back(parse_entry(path, name, value));
    }
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::make_pair(a.begin, a.end) < std::make_pair(b.begin, b.end);
  });

  const std::size_t buffer_size = file_size - 8 - header_size;
  const unsigned char* buffer = bytes + 8 + header_size;
  std::size_t expected_begin = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    Entry& entry = entries[i];
    const std::string& name = entry.view.name;
    if (entry.end < entry.begin) fail_tensor(path, name, "data_offsets end before they begin");
    if (entry.begin != expected_begin) {
      std::string at = std::to_string(entry.begin), want = std::to_string(expected_begin);
      if (i == 0) fail_tensor(path, name, "first data offset is " + at + ", not 0");
      fail_tensor(path, name,
                  std::string("data begins at ") + at + ", expected " + want +
                      (entry.begin < expected_begin ? " (overlap)" : " (gap)"));
    }
    expected_begin = entry.end;
    auto nbytes = byte_size(entry.view.shape, entry.view.dtype);
    if (!nbytes) fail_tensor(path, name, "shape size overflows");
    if (*nbytes != entry.end - entry.begin) {
      fail_tensor(path, name,
                  "holds " + std::to_string(entry.end - entry.begin) + " bytes but " +
                      "its dtype and shape need " + std::to_string(*nbytes));
    }
    if (entry.end > buffer_size) {
      fail_tensor(path, name,
                  "data ends at " + std::to_string(entry.end) + ", past the " +
                      std::to_string(buffer_size) + "-byte data (truncated file?)");
    }
    entry.view.nbytes = *nbytes;
    entry.view.data = buffer + entry.begin;
  }
  if (expected_begin != buffer_size) {
    fail(path, "tensors cover " + std::to_string(expected_begin) + " bytes but the data is " +
                   std::to_string(buffer_size) + " bytes");
  }
  for (Entry& entry : entries) tensors.push_back(std::move(entry.view));
}

// Writes all of `data`, retrying short writes and interrupted calls.
bool write_all(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EIO;  // A zero-byte write sets no errno of its own.
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

const char* dtype_name(DType dtype) { return kDTypes[static_cast<int>(dtype)].name; }

std::size_t dtype_size(DType dtype) { return kDTypes[static_cast<int>(dtype)].size; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) return info.dtype;
  }
  return std::nullopt;
}

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + sys_error());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const auto file_size = static_cast<std::size_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(path, "file is " + std::to_string(file_size) + " bytes, too short for a header length");
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // The mapping stays valid without the descriptor.
  if (mapping == MAP_FAILED) fail(path, "cannot mmap: " + sys_error());
  mapping_ = mapping;
  mapping_size_ = file_size;
  try {
    parse_file(path_, static_cast<const unsigned char*>(mapping_), mapping_size_, tensors_,
               metadata_);
  } catch (...) {
    // The destructor does not run when a constructor throws.
    ::munmap(mapping_, mapping_size_);
    throw;
  }
}

void SafeTensorsFile::release(const TensorView& view) const {
  // Only whole pages inside the tensor: the partial pages at its ends may hold its neighbours.
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(view.data);
  const std::uintptr_t first = (begin + page - 1) / page * page;
  const std::uintptr_t last = (begin + view.nbytes) / page * page;
  // Advice on a read-only private mapping never loses data, so a failure is harmless.
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

SafeTensorsFile::~SafeTensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

SafeTensorsFile::SafeTensorsFile(SafeTensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_size_(std::exchange(other.mapping_size_, 0)),
      tensors_(std::move(other.tensors_)),
      metadata_(std::move(other.metadata_)) {}

SafeTensorsFile& SafeTensorsFile::operator=(SafeTensorsFile&& other) noexcept {
  if (this != &other) {
    if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
    path_ = std::move(other.path_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

const TensorView* SafeTensorsFile::find(std::string_view name) const {
  for (const TensorView& view : tensors_) {
    if (view.name == name) return &view;
  }
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorView*> sorted;
  for (const TensorView& view : tensors) sorted.push_back(&view);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorView* a, const TensorView* b) { return a->name < b->name; });

  // ordered_json keeps "__metadata__" first and the tensors in name order, as written.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    const TensorView& view = *sorted[i];
    if (view.name == "__metadata__") fail_tensor(path, view.name, "name is reserved");
    if (i > 0 && sorted[i - 1]->name == view.name) {
      fail_tensor(path, view.name, "appears twice in the tensor list");
    }
    auto nbytes = byte_size(view.shape, view.dtype);
    if (!nbytes || *nbytes != view.nbytes) {
      fail_tensor(path, view.name,
                  "nbytes " + std::to_string(view.nbytes) + " does not match its dtype and shape");
    }
    if (view.nbytes > 0 && view.data == nullptr) fail_tensor(path, view.name, "data is null");
    header[view.name] = {{"dtype", dtype_name(view.dtype)},
                         {"shape", view.shape},
                         {"data_offsets", {offset, offset + view.nbytes}}};
    offset += view.nbytes;
  }
  std::string header_text = header.dump();
  // Spaces pad the header so that the data starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));

  // A unique temporary beside `path`, so the final rename stays within one filesystem.
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(path, "cannot create a temporary file: " + sys_error());
  bool ok = ::fchmod(fd, 0644) == 0 && write_all(fd, length, sizeof length) &&
            write_all(fd, header_text.data(), header_text.size());
  for (std::size_t i = 0; ok && i < sorted.size(); ++i) {
    ok = write_all(fd, sorted[i]->data, sorted[i]->nbytes);
  }
  ok = ok && ::fsync(fd) == 0;
  std::string reason = ok ? std::string() : sys_error();
  if (::close(fd) != 0 && ok) {
    ok = false;
    reason = sys_error();
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    reason = sys_error();
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    fail(path, "cannot write: " + reason);
  }
}

}  // namespace cm
