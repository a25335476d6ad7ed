// NumPy .npy (format 1.0) and uncompressed .npz (a stored ZIP of .npy members), byte for byte
// as numpy.save and numpy.savez lay them out. Readers trust no length in the file: every one is
// checked against the bytes actually there before it is used.
#include "cm/image_io.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

#include "cm/error.h"
#include "io/files.h"
#include "io/npy_format.h"

namespace cm {
namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes, then major and minor version
constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;




// ZIP and NPY integers are little-endian whatever the host.
void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}
uint32_t get_le(const uint8_t* p, int bytes) {
  uint32_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}
uint64_t get_le64(const uint8_t* p) {
  return get_le(p, 4) | static_cast<uint64_t>(get_le(p + 4, 4)) << 32;
}

// Item size from a descr such as "<f4": byte order, kind, then the size in bytes.
size_t item_size(const std::string& where, const std::string& descr) {
  static const std::set<std::string> kKnown = {"b1", "i1", "i2", "i4", "i8", "u1", "u2",
                                               "u4", "u8", "f2", "f4", "f8", "c8", "c16"};
  if (descr.size() < 3 || std::strchr("<>|=", descr[0]) == nullptr ||
      kKnown.count(descr.substr(1)) == 0)
    throw Error(where + ": unsupported dtype descr '" + descr + "'");
  return std::stoul(descr.substr(2));
}

// Bytes the data of (descr, shape) must have; rejects negative dims and overflow.
uint64_t data_size(const std::string& where, const std::string& descr,
                   const std::vector<int64_t>& shape) {
  uint64_t total = item_size(where, descr);
  for (int64_t dim : shape)
    if (dim < 0 || __builtin_mul_overflow(total, static_cast<uint64_t>(dim), &total))
      throw Error(where + ": invalid array shape");
  return total;
}

std::string shape_repr(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");  // Python spells a 1-tuple "(n,)"
}

}  // namespace

// Magic, version 1.0, length and the dict, padded as numpy pads it: 21 - digits(shape[0])
// spare spaces so the first axis can grow in place, then spaces and '\n' to a 64-byte boundary.
std::string npy_header_of(const std::string& where, const std::string& descr,
                          const std::vector<int64_t>& shape) {
  npy_data_size(where, descr, shape);  // validates descr and shape
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " +
                     shape_repr(shape) + ", }";
  if (!shape.empty()) dict.append(21 - std::to_string(shape[0]).size(), ' ');
  const size_t pad = 64 - (10 + dict.size() + 1) % 64;
  dict.append(pad, ' ');
  dict.push_back('\n');
  if (dict.size() > 0xffff) throw Error(where + ": array has too many dimensions for .npy 1.0");
  std::string header(kMagic, 6);
  header += std::string("\x01\x00", 2);
  put_le(header, dict.size(), 2);
  return header + dict;
}

uint64_t npy_data_size(const std::string& where, const std::string& descr,
                       const std::vector<int64_t>& shape) {
  return data_size(where, descr, shape);
}

namespace {

// The .npy header of an array whose data size was already checked.
std::string npy_header(const std::string& where, const NpyArray& array) {
  const uint64_t need = data_size(where, array.descr, array.shape);
  if (array.data.size() != need)
    throw Error(where + ": array has " + std::to_string(array.data.size()) + " bytes, " +
                array.descr + " " + shape_repr(array.shape) + " needs " + std::to_string(need));
  return npy_header_of(where, array.descr, array.shape);
}

// Just enough of a Python literal parser for the header dict numpy writes.
struct DictParser {
  const std::string& where;
  const std::string& s;
  size_t pos = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(where + ": invalid .npy header: " + what);
  }
  void skip_space() {
    while (pos < s.size() && std::strchr(" \t\r\n", s[pos]) != nullptr) ++pos;
  }
  bool accept(char c) {
    skip_space();
    if (pos < s.size() && s[pos] == c) return ++pos, true;
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "'");
  }
  std::string string_literal() {
    skip_space();
    const char quote = pos < s.size() ? s[pos] : 0;
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    const size_t end = s.find(quote, pos + 1);
    if (end == std::string::npos) fail("unterminated string");
    std::string value = s.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    return value;
  }
  int64_t integer() {
    skip_space();
    int64_t value = 0;
    const size_t start = pos;
    for (; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos)
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, s[pos] - '0', &value))
        fail("shape dimension too large");
    if (pos == start) fail("expected an integer in shape");
    if (pos < s.size() && s[pos] == 'L') ++pos;  // Python 2 longs
    return value;
  }
};

NpyArray parse_npy(const std::string& where, const uint8_t* p, size_t size) {
  if (size < 10 || std::memcmp(p, kMagic, 6) != 0) throw Error(where + ": not a .npy file");
  const int major = p[6];
  if (major < 1 || major > 3)
    throw Error(where + ": unsupported .npy version " + std::to_string(major));
  const size_t prefix = major == 1 ? 10 : 12;  // 2.0 and 3.0 have a 4-byte header length
  if (size < prefix) throw Error(where + ": truncated .npy header");
  const uint64_t header_end = prefix + get_le(p + 8, major == 1 ? 2 : 4);
  if (header_end > size) throw Error(where + ": truncated .npy header");
  const std::string text(reinterpret_cast<const char*>(p) + prefix, header_end - prefix);

  NpyArray array;
  DictParser parser{where, text};
  bool have_descr = false, have_order = false, have_shape = false;
  parser.expect('{');
  while (!parser.accept('}')) {
    const std::string key = parser.string_literal();
    parser.expect(':');
    if (key == "descr") {
      array.descr = parser.string_literal();
      have_descr = true;
    } else if (key == "fortran_order") {
      parser.skip_space();
      if (text.compare(parser.pos, 5, "False") == 0) {
        parser.pos += 5;
      } else if (text.compare(parser.pos, 4, "True") == 0) {
        throw Error(where + ": Fortran-order arrays are not supported");
      } else {
        parser.fail("fortran_order must be True or False");
      }
      have_order = true;
    } else if (key == "shape") {
      parser.expect('(');
      while (!parser.accept(')')) {
        array.shape.push_back(parser.integer());
        if (!parser.accept(',')) {
          parser.expect(')');
          break;
        }
      }
      have_shape = true;
    } else {
      parser.fail("unknown key '" + key + "'");
    }
    if (!parser.accept(',')) {
      parser.expect('}');
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape) parser.fail("missing descr, order or shape");

  const uint64_t need = data_size(where, array.descr, array.shape);
  const uint64_t have = size - header_end;
  if (have != need)
    throw Error(where + ": has " + std::to_string(have) + " data bytes, " + array.descr + " " +
                shape_repr(array.shape) + " needs " + std::to_string(need));
  array.data.assign(p + header_end, p + size);
  return array;
}

}  // namespace

void write_npy(const std::string& path, const NpyArray& array) {
  const std::string header = npy_header(path, array);
  write_atomically(path, [&](std::FILE* file) {
    write_bytes(file, path, header.data(), header.size());
    write_bytes(file, path, array.data.data(), array.data.size());
  });
}

NpyArray read_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  return parse_npy(path, bytes.data(), bytes.size());
}

void write_npz(const std::string& path,
               const std::vector<std::pair<std::string, NpyArray>>& arrays) {
  // Every array is checked before any file exists.
  std::vector<std::pair<std::string, NpySpec>> specs;
  for (const auto& [key, array] : arrays) {
    npy_header(path + ": array '" + key + "'", array);
    specs.emplace_back(key, NpySpec{array.descr, array.shape});
  }
  NpzStreamWriter writer(path, specs);
  for (size_t i = 0; i < arrays.size(); ++i)
    writer.append(i, arrays[i].second.data.data(), arrays[i].second.data.size());
  writer.finish();
}

std::vector<std::pair<std::string, NpyArray>> read_npz(const std::string& path) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  const uint8_t* p = bytes.data();
  const uint64_t size = bytes.size();
  // The end record is the last 22 bytes unless an archive comment (up to 64 KiB) follows it.
  uint64_t end = 0;
  bool found = false;
  for (uint64_t back = 22; back <= size && back <= 22 + 0xffff && !found; ++back) {
    end = size - back;
    found = get_le(p + end, 4) == kEndSig && end + 22 + get_le(p + end + 20, 2) <= size;
  }
  if (!found) throw Error(path + ": not a zip archive (no end of central directory)");
  uint64_t count = get_le(p + end + 10, 2);
  uint64_t cd_size = get_le(p + end + 12, 4), cd_offset = get_le(p + end + 16, 4);
  // A zip64 end record, found through the locator just before the plain one, holds the counts
  // and offsets that do not fit there.
  if (end >= 20 && get_le(p + end - 20, 4) == kZip64LocatorSig) {
    const uint64_t at = get_le64(p + end - 12);
    if (at > end - 20 || end - 20 - at < 56 || get_le(p + at, 4) != kZip64EndSig)
      throw Error(path + ": corrupt zip64 end of central directory");
    count = get_le64(p + at + 32);
    cd_size = get_le64(p + at + 40);
    cd_offset = get_le64(p + at + 48);
    end = at;
  }
  if (cd_offset > end || cd_size > end - cd_offset)
    throw Error(path + ": corrupt zip central directory");

  std::vector<std::pair<std::string, NpyArray>> arrays;
  uint64_t at = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    if (at + 46 > cd_offset + cd_size || get_le(p + at, 4) != kCentralSig)
      throw Error(path + ": corrupt zip central directory");
    const uint32_t flags = get_le(p + at + 8, 2), method = get_le(p + at + 10, 2);
    const uint32_t crc = get_le(p + at + 16, 4);
    uint64_t csize = get_le(p + at + 20, 4), usize = get_le(p + at + 24, 4);
    const uint64_t name_len = get_le(p + at + 28, 2), extra_len = get_le(p + at + 30, 2);
    uint64_t local = get_le(p + at + 42, 4);
    const uint64_t next = at + 46 + name_len + extra_len + get_le(p + at + 32, 2);
    if (next > cd_offset + cd_size) throw Error(path + ": corrupt zip central directory");
    const std::string name(reinterpret_cast<const char*>(p + at + 46), name_len);
    const std::string where = path + ": member '" + name + "'";
    // Fields set to 0xffffffff are in the zip64 extra field, in this order.
    std::vector<uint64_t*> wide;
    for (uint64_t* field : {&usize, &csize, &local})
      if (*field == 0xffffffffu) wide.push_back(field);
    if (!wide.empty()) {
      bool found64 = false;
      for (uint64_t e = at + 46 + name_len; e + 4 <= at + 46 + name_len + extra_len;) {
        const uint64_t id = get_le(p + e, 2), len = get_le(p + e + 2, 2);
        if (e + 4 + len > at + 46 + name_len + extra_len) break;
        if (id == 1 && len >= 8 * wide.size()) {
          for (size_t k = 0; k < wide.size(); ++k) *wide[k] = get_le64(p + e + 4 + 8 * k);
          found64 = true;
          break;
        }
        e += 4 + len;
      }
      if (!found64) throw Error(where + ": missing zip64 sizes");
    }
    at = next;
    if (flags & 1) throw Error(where + " is encrypted");
    if (method != 0)
      throw Error(where + " is compressed (method " + std::to_string(method) +
                  "); only stored archives as numpy.savez writes are supported");
    if (csize != usize) throw Error(where + ": inconsistent sizes");
    if (name.size() < 5 || name.compare(name.size() - 4, 4, ".npy") != 0)
      throw Error(where + " is not a .npy file");
    if (local > size || size - local < 30 || get_le(p + local, 4) != kLocalSig)
      throw Error(where + ": corrupt local header");
    // The local header may carry its own extra field (numpy writes a zip64 one); skip it.
    const uint64_t data = local + 30 + get_le(p + local + 26, 2) + get_le(p + local + 28, 2);
    if (data > size || usize > size - data)
      throw Error(where + ": data runs past the end of the file");
    if (crc32_z(0L, p + data, usize) != crc) throw Error(where + ": bad CRC-32");
    arrays.emplace_back(name.substr(0, name.size() - 4), parse_npy(where, p + data, usize));
  }
  return arrays;
}

}  // namespace cm
