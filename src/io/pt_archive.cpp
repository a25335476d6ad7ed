// torch.save's zip layout: <prefix>/data.pkl (the pickle), <prefix>/data/<key> (one raw storage per
// key, little-endian), <prefix>/version, and since PyTorch 1.13 <prefix>/byteorder. Each tensor is
// pickled as a call of torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...), whose
// storage is a persistent id ('storage', torch.<Type>Storage, key, location, numel).
#include "cm/pt_archive.h"

#include <cstring>
#include <limits>

#include "cm/error.h"
#include "io/files.h"
#include "io/restricted_pickle.h"
#include "io/zip_reader.h"

namespace cm {
namespace {

using Kind = PickleValue::Kind;

struct StorageType {
  const char* name;
  DType dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"torch.FloatStorage", DType::F32}, {"torch.DoubleStorage", DType::F64},
    {"torch.HalfStorage", DType::F16},  {"torch.BFloat16Storage", DType::BF16},
    {"torch.LongStorage", DType::I64},  {"torch.IntStorage", DType::I32},
    {"torch.ShortStorage", DType::I16}, {"torch.CharStorage", DType::I8},
    {"torch.ByteStorage", DType::U8},   {"torch.BoolStorage", DType::BOOL}};

const StorageType* storage_type(const std::string& name) {
  for (const auto& t : kStorageTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

bool allowed_global(const std::string& name) {
  return name == "collections.OrderedDict" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_parameter" || storage_type(name) != nullptr;
}

// The legacy (before PyTorch 1.6) format starts with a pickled magic number.
bool is_legacy_torch(const uint8_t* data, std::size_t size) {
  static const uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                   0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return size >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0;
}

class TensorBuilder {
 public:
  TensorBuilder(ZipArchive& zip, std::string prefix) : zip_(zip), prefix_(std::move(prefix)) {}

  PtTensor build(const PickleValue& v, const std::string& key) {
    key_ = &key;
    if (v.kind != Kind::kCall)
      fail("holds a " + std::string(pickle_kind_name(v.kind)) + ", not a tensor");
    if (v.s == "torch._utils._rebuild_parameter") {
      if (v.items.empty()) fail("a Parameter without its tensor");
      return build(*v.items[0], key);
    }
    if (v.s != "torch._utils._rebuild_tensor_v2") fail("is a call of " + v.s + ", not a tensor");
    if (v.items.size() < 4)
      fail("a tensor rebuild with " + std::to_string(v.items.size()) + " arguments");
    const Storage st = storage(*v.items[0]);
    const int64_t offset = integer(*v.items[1], "storage offset");
    const std::vector<int64_t> size = int_tuple(*v.items[2], "size");
    const std::vector<int64_t> stride = int_tuple(*v.items[3], "stride");
    if (size.size() != stride.size()) fail("size and stride of different lengths");
    return gather(st, offset, size, stride);
  }

 private:
  struct Storage {
    DType dtype;
    const uint8_t* data;
    int64_t numel;
  };

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(zip_.source() + ": tensor '" + *key_ + "': " + what);
  }

  int64_t integer(const PickleValue& v, const char* what) const {
    if (v.kind != Kind::kInt || v.i < 0) fail(std::string("bad ") + what);
    return v.i;
  }
  std::vector<int64_t> int_tuple(const PickleValue& v, const char* what) const {
    if (v.kind != Kind::kTuple || v.items.size() > 16) fail(std::string("bad ") + what);
    std::vector<int64_t> out;
    for (const auto& item : v.items) out.push_back(integer(*item, what));
    return out;
  }

  Storage storage(const PickleValue& pid) {
    if (pid.kind != Kind::kPersistentId || pid.items.size() != 5 ||
        pid.items[0]->kind != Kind::kString || pid.items[0]->s != "storage" ||
        pid.items[1]->kind != Kind::kGlobal || pid.items[2]->kind != Kind::kString)
      fail("its storage is not a ('storage', type, key, location, numel) record");
    const StorageType* type = storage_type(pid.items[1]->s);
    if (!type) fail("storage of unsupported type " + pid.items[1]->s);
    const std::string& key = pid.items[2]->s;
    const int64_t numel = integer(*pid.items[4], "storage size");
    const std::string entry = prefix_ + "data/" + key;
    const ZipEntry* e = zip_.find(entry);
    if (!e) fail("its storage '" + entry + "' is missing from the archive");
    const uint64_t elem = dtype_size(type->dtype);
    if (static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / elem ||
        e->size != static_cast<uint64_t>(numel) * elem)
      fail("storage '" + entry + "' holds " + std::to_string(e->size) + " bytes, not " +
           std::to_string(numel) + " x " + dtype_name(type->dtype));
    const auto [it, added] = storage_dtypes_.emplace(key, type->dtype);
    if (!added && it->second != type->dtype) fail("storage '" + entry + "' read as two types");
    const std::string_view bytes = zip_.read(entry);
    return {type->dtype, reinterpret_cast<const uint8_t*>(bytes.data()), numel};
  }

  PtTensor gather(const Storage& st, int64_t offset, const std::vector<int64_t>& size,
                  const std::vector<int64_t>& stride) const {
    PtTensor t;
    t.dtype = st.dtype;
    t.shape = size;
    for (const int64_t n : size) {
      if (n == 0) return t;
    }
    // Sizes and strides are non-negative (checked), so the last element reached is offset +
    // sum((size - 1) * stride); it and the element count must stay inside the storage. Checking
    // after every term keeps the 128-bit sums far from overflow.
    const auto limit = static_cast<uint64_t>(st.numel);
    unsigned __int128 numel = 1;
    unsigned __int128 last = static_cast<uint64_t>(offset);
    for (std::size_t d = 0; d < size.size(); ++d) {
      numel *= static_cast<uint64_t>(size[d]);
      last += static_cast<unsigned __int128>(size[d] - 1) * static_cast<uint64_t>(stride[d]);
      if (numel > limit) fail("holds more elements than its storage");
      if (last >= limit)
        fail("reaches past the end of its " + std::to_string(st.numel) + "-element storage");
    }
    if (last >= limit)
      fail("reaches past the end of its " + std::to_string(st.numel) + "-element storage");
    const std::size_t elem = dtype_size(st.dtype);
    t.data.resize(static_cast<std::size_t>(numel) * elem);
    // Row-major contiguous tensors (nearly all of a state dict) are one copy.
    bool contiguous = true;
    int64_t expected = 1;
    for (std::size_t d = size.size(); d-- > 0;) {
      if (size[d] != 1 && stride[d] != expected) contiguous = false;
      expected *= size[d];
    }
    const uint8_t* base = st.data + static_cast<std::size_t>(offset) * elem;
    if (contiguous) {
      std::memcpy(t.data.data(), base, t.data.size());
      return t;
    }
    std::vector<int64_t> index(size.size(), 0);
    for (std::size_t n = 0; n < static_cast<std::size_t>(numel); ++n) {
      int64_t at = 0;
      for (std::size_t d = 0; d < size.size(); ++d) at += index[d] * stride[d];
      std::memcpy(t.data.data() + n * elem, base + static_cast<std::size_t>(at) * elem, elem);
      for (std::size_t d = size.size(); d-- > 0;) {
        if (++index[d] < size[d]) break;
        index[d] = 0;
      }
    }
    return t;
  }

  ZipArchive& zip_;
  std::string prefix_;
  const std::string* key_ = nullptr;
  std::map<std::string, DType> storage_dtypes_;
};

// The folder every entry sits in ("archive/" from recent PyTorch, the file's stem from older).
std::string find_prefix(const ZipArchive& zip) {
  std::string prefix;
  for (const auto& [name, entry] : zip.entries()) {
    const auto slash = name.find('/');
    if (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (!prefix.empty()) throw Error(zip.source() + ": the zip holds more than one data.pkl");
      prefix = name.substr(0, slash + 1);
    }
  }
  if (prefix.empty())
    throw Error(zip.source() + ": not a PyTorch checkpoint (the zip archive holds no data.pkl)");
  if (zip.find(prefix + "constants.pkl"))
    throw Error(zip.source() +
                ": a TorchScript archive (torch.jit.save), not a state dict saved "
                "with torch.save");
  return prefix;
}

}  // namespace

PtStateDict parse_pt_state_dict(const uint8_t* data, std::size_t size, const std::string& source) {
  if (!looks_like_zip(data, size)) {
    if (is_legacy_torch(data, size))
      throw Error(source +
                  ": PyTorch's legacy (before 1.6) checkpoint format; load and save it "
                  "again with a recent PyTorch");
    throw Error(source + ": not a PyTorch checkpoint (no zip signature at the start)");
  }
  ZipArchive zip(data, size, source);
  const std::string prefix = find_prefix(zip);
  if (zip.find(prefix + "byteorder")) {
    const std::string_view order = zip.read(prefix + "byteorder");
    if (order != "little")
      throw Error(source + ": tensors stored " + std::string(order.substr(0, 16)) +
                  "-endian; only little-endian checkpoints are read");
  }
  PtStateDict out;
  TensorBuilder builder(zip, prefix);
  unpickle(zip.read(prefix + "data.pkl"), allowed_global, source + " (" + prefix + "data.pkl)",
           [&](const PickleValue& top) {
             if (top.kind != Kind::kDict)
               throw Error(source + ": holds a " + std::string(pickle_kind_name(top.kind)) +
                           ", not a state dict (a mapping of names to tensors)");
             for (const auto& [k, v] : top.entries) {
               if (k->kind != Kind::kString)
                 throw Error(source + ": a state dict key is a " +
                             std::string(pickle_kind_name(k->kind)) + ", not a name");
               if (v->kind == Kind::kDict)
                 throw Error(source + ": '" + k->s +
                             "' holds a nested dict: not a plain state "
                             "dict (save model.state_dict() itself)");
               out.emplace_back(k->s, builder.build(*v, k->s));
             }
           });
  return out;
}

PtStateDict read_pt_state_dict(const std::string& path) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  return parse_pt_state_dict(bytes.data(), bytes.size(), path);
}

}  // namespace cm
