// The torch.save reader on the golden original-format checkpoints and on hand-made archives: every
// malformed input is a one-line cm::Error naming the fault, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cm/error.h"
#include "cm/pt_archive.h"

namespace cm {
namespace {

const std::string kImagenet = CM_GOLDEN_DIR "/original/imagenet_like/model.pt";

uint32_t crc32_of(const std::string& s) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : s) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A zip of stored entries, as torch.save writes it (without its 64-byte alignment padding).
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, dir;
  for (const auto& [name, data] : entries) {
    const uint64_t offset = out.size();
    put(out, 0x04034b50, 4);
    put(out, 20, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0, 4);
    put(out, crc32_of(data), 4), put(out, data.size(), 4), put(out, data.size(), 4);
    put(out, name.size(), 2), put(out, 0, 2);
    out += name + data;
    put(dir, 0x02014b50, 4);
    put(dir, 20, 2), put(dir, 20, 2), put(dir, 0, 2), put(dir, 0, 2), put(dir, 0, 4);
    put(dir, crc32_of(data), 4), put(dir, data.size(), 4), put(dir, data.size(), 4);
    put(dir, name.size(), 2), put(dir, 0, 2), put(dir, 0, 2), put(dir, 0, 2), put(dir, 0, 2);
    put(dir, 0, 4), put(dir, offset, 4);
    dir += name;
  }
  const uint64_t dir_offset = out.size();
  out += dir;
  put(out, 0x06054b50, 4), put(out, 0, 2), put(out, 0, 2);
  put(out, entries.size(), 2), put(out, entries.size(), 2);
  put(out, dir.size(), 4), put(out, dir_offset, 4), put(out, 0, 2);
  return out;
}

// Pickle pieces (protocol 2).
std::string str(const std::string& s) {
  std::string out = "X";
  put(out, s.size(), 4);
  return out + s;
}
std::string global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
std::string small_int(int v) {
  return "K" + std::string(1, static_cast<char>(v));
}
std::string tuple_of(const std::vector<int>& v) {
  std::string out = "(";
  for (int x : v) out += small_int(x);
  return out + "t";
}

// OrderedDict({name: tensor}) whose tensor views storage "0" (FloatStorage of `numel`).
std::string state_dict_pickle(const std::string& name, int numel, const std::vector<int>& size,
                              const std::vector<int>& stride, int offset = 0,
                              const std::string& storage_type = "FloatStorage") {
  std::string p = "\x80\x02" + global("collections", "OrderedDict") + ")R(" + str(name);
  p += global("torch._utils", "_rebuild_tensor_v2") + "((" + str("storage") +
       global("torch", storage_type) + str("0") + str("cpu") + small_int(numel) + "tQ";
  p += small_int(offset) + tuple_of(size) + tuple_of(stride) + "\x89" +
       global("collections", "OrderedDict") + ")Rt" + "R" + "u.";
  return p;
}

std::string floats(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    const float f = static_cast<float>(i);
    out.append(reinterpret_cast<const char*>(&f), 4);
  }
  return out;
}

std::string checkpoint(const std::string& pickle, const std::string& storage) {
  return make_zip({{"archive/data.pkl", pickle},
                   {"archive/byteorder", "little"},
                   {"archive/data/0", storage},
                   {"archive/version", "3\n"}});
}

PtStateDict parse(const std::string& bytes) {
  return parse_pt_state_dict(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.pt");
}

// The error's message, which must be one line; "" when there is none.
std::string error_of(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  }
  return "";
}

TEST(PtArchive, ReadsTheGoldenOriginalCheckpoint) {
  const PtStateDict sd = read_pt_state_dict(kImagenet);
  ASSERT_EQ(sd.size(), 307u);  // len(torch.load(...)) in Python
  EXPECT_EQ(sd.front().first, "time_embed.0.weight");
  EXPECT_EQ(sd.back().first, "out.2.bias");
  const PtTensor& t = sd.front().second;
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{128, 32}));
  ASSERT_EQ(t.data.size(), 128u * 32u * 4u);
  float first[3];
  std::memcpy(first, t.data.data(), sizeof first);
  // The storage's first floats, read with Python's zipfile and struct.
  EXPECT_FLOAT_EQ(first[0], -0.0851919949054718f);
  EXPECT_FLOAT_EQ(first[1], -0.08419163525104523f);
  EXPECT_FLOAT_EQ(first[2], -0.04620349407196045f);
  const PtTensor& w2 = sd[2].second;  // time_embed.2.weight
  float last[2];
  std::memcpy(last, w2.data.data() + w2.data.size() - 8, 8);
  EXPECT_FLOAT_EQ(last[0], 0.0539180263876915f);
  EXPECT_FLOAT_EQ(last[1], -0.021978450939059258f);
}

TEST(PtArchive, GathersAStridedView) {
  // A 2x3 view with strides (1, 2) of the storage 0..5: element (i, j) is storage[i + 2j].
  const auto sd = parse(checkpoint(state_dict_pickle("w", 6, {2, 3}, {1, 2}), floats(6)));
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].first, "w");
  EXPECT_EQ(sd[0].second.shape, (std::vector<int64_t>{2, 3}));
  float v[6];
  std::memcpy(v, sd[0].second.data.data(), sizeof v);
  const float want[6] = {0, 2, 4, 1, 3, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v[i], want[i]) << i;
}

TEST(PtArchive, WrongMagicIsNotACheckpoint) {
  EXPECT_NE(error_of("hello, world; not a zip at all").find("not a PyTorch checkpoint"),
            std::string::npos);
  EXPECT_NE(error_of("").find("not a PyTorch checkpoint"), std::string::npos);
}

TEST(PtArchive, TruncatedArchiveIsAnError) {
  std::ifstream in(kImagenet, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  ASSERT_GT(bytes.size(), 1000u);
  for (const std::size_t keep : {bytes.size() / 2, bytes.size() - 1, std::size_t{100}}) {
    const std::string m = error_of(bytes.substr(0, keep));
    EXPECT_NE(m.find("zip archive"), std::string::npos) << keep << ": " << m;
  }
}

TEST(PtArchive, TamperedStorageFailsItsChecksum) {
  std::string zip = checkpoint(state_dict_pickle("w", 6, {6}, {1}), floats(6));
  const auto at = zip.find(floats(6));
  ASSERT_NE(at, std::string::npos);
  zip[at + 5] ^= 0x40;
  EXPECT_NE(error_of(zip).find("CRC-32"), std::string::npos);
}

TEST(PtArchive, RefusesAnyOtherGlobal) {
  const std::string evil = "\x80\x02" + global("os", "system") + "(" + str("echo pwned") + "tR.";
  const std::string m = error_of(checkpoint(evil, floats(6)));
  EXPECT_NE(m.find("refuses global 'os.system'"), std::string::npos) << m;
  // Also when the name comes from the stack (protocol 4's STACK_GLOBAL).
  const std::string evil4 =
      "\x80\x04" + str("builtins") + str("eval") + "\x93" + "(" + str("1") + "tR.";
  const std::string m4 = error_of(checkpoint(evil4, floats(6)));
  EXPECT_NE(m4.find("refuses global 'builtins.eval'"), std::string::npos) << m4;
}

TEST(PtArchive, TensorOutsideItsStorageIsAnError) {
  const std::string too_long = error_of(checkpoint(state_dict_pickle("w", 6, {7}, {1}), floats(6)));
  EXPECT_NE(too_long.find("tensor 'w'"), std::string::npos) << too_long;
  const std::string offset =
      error_of(checkpoint(state_dict_pickle("w", 6, {3}, {1}, /*offset=*/4), floats(6)));
  EXPECT_NE(offset.find("past the end"), std::string::npos) << offset;
  const std::string stride =
      error_of(checkpoint(state_dict_pickle("w", 6, {2, 2}, {5, 1}), floats(6)));
  EXPECT_NE(stride.find("past the end"), std::string::npos) << stride;
  // The persistent id claims 8 floats, the archive holds 6.
  const std::string storage = error_of(checkpoint(state_dict_pickle("w", 8, {6}, {1}), floats(6)));
  EXPECT_NE(storage.find("holds 24 bytes, not 8 x F32"), std::string::npos) << storage;
}

TEST(PtArchive, NotAStateDictIsAnError) {
  const std::string list = "\x80\x02]" + str("a") + "a.";
  EXPECT_NE(error_of(checkpoint(list, floats(6))).find("not a state dict"), std::string::npos);
  const std::string no_pickle = make_zip({{"archive/version", "3\n"}});
  EXPECT_NE(error_of(no_pickle).find("no data.pkl"), std::string::npos);
  const std::string truncated_pickle = state_dict_pickle("w", 6, {6}, {1}).substr(0, 40);
  EXPECT_NE(error_of(checkpoint(truncated_pickle, floats(6))).find("pickle byte"),
            std::string::npos);
}

// Every prefix and many single-byte changes of a small checkpoint either parse or give a one-line
// cm::Error: a cheap stand-in for fuzzing.
TEST(PtArchive, DamagedSmallCheckpointsNeverCrash) {
  const std::string good = checkpoint(state_dict_pickle("w", 6, {2, 3}, {3, 1}), floats(6));
  ASSERT_EQ(error_of(good), "");
  for (std::size_t n = 0; n < good.size(); ++n) EXPECT_NE(error_of(good.substr(0, n)), "") << n;
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (const uint8_t flip : {0x01, 0x80, 0xff}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      error_of(bad);
    }
  }
}

}  // namespace
}  // namespace cm
