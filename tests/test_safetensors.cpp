// Tests for the safetensors reader and writer: round trips, the real golden checkpoint, and one
// malformed file per rule the reference implementation enforces.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "cm/error.h"
#include "cm/safetensors.h"

namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cm_safetensors_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // A file with the given header text (length prefix computed) and `data_size` zero bytes after.
  std::string write_raw(const std::string& header, std::size_t data_size,
                        const std::string& name = "bad.safetensors") const {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
    return write_bytes(bytes + header + std::string(data_size, '\0'), name);
  }

  std::string write_bytes(const std::string& bytes,
                          const std::string& name = "bad.safetensors") const {
    std::string path = file(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // Asserts that opening `path` throws a one-line cm::Error naming the file and holding every
  // fragment (the tensor name, the reason).
  static void expect_error(const std::string& path, std::initializer_list<const char*> fragments) {
    try {
      cm::SafeTensorsFile f(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const cm::Error& e) {
      std::string message = e.what();
      EXPECT_NE(message.find(path), std::string::npos) << message;
      for (const char* fragment : fragments) {
        EXPECT_NE(message.find(fragment), std::string::npos) << fragment << " in " << message;
      }
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  }

  fs::path dir_;
};

// A header with one tensor entry, for the malformed-file tests.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  std::size_t begin, std::size_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

TEST_F(SafetensorsTest, RoundTripSeveralDtypes) {
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  std::vector<double> f64 = {3.141592653589793, -1e300};
  std::vector<int64_t> i64 = {-1, INT64_MAX, 42};
  std::vector<uint16_t> bf16 = {0x3F80, 0xC000};
  std::vector<uint8_t> flags = {1, 0, 1};
  std::vector<cm::TensorView> views = {
      {"weight", cm::DType::F32, {2, 3}, f32.data(), f32.size() * 4},
      {"alpha", cm::DType::F64, {2}, f64.data(), 16},
      {"steps", cm::DType::I64, {3}, i64.data(), 24},
      {"half", cm::DType::BF16, {1, 2}, bf16.data(), 4},
      {"mask", cm::DType::BOOL, {3}, flags.data(), 3},
      {"empty", cm::DType::F16, {0, 4}, nullptr, 0},
      {"scalar", cm::DType::I32, {}, i64.data(), 4},
  };
  std::string path = file("round.safetensors");
  cm::write_safetensors(path, views, {{"format", "pt"}, {"note", "round trip"}});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);

  cm::SafeTensorsFile st(path);
  EXPECT_EQ(st.path(), path);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.metadata().at("note"), "round trip");
  ASSERT_EQ(st.tensors().size(), views.size());
  // Written in name order, so the offset order is the name order.
  for (std::size_t i = 1; i < st.tensors().size(); ++i) {
    EXPECT_LT(st.tensors()[i - 1].name, st.tensors()[i].name);
  }
  for (const cm::TensorView& want : views) {
    const cm::TensorView* got = st.find(want.name);
    ASSERT_NE(got, nullptr) << want.name;
    EXPECT_EQ(got->dtype, want.dtype) << want.name;
    EXPECT_EQ(got->shape, want.shape) << want.name;
    ASSERT_EQ(got->nbytes, want.nbytes) << want.name;
    if (want.nbytes > 0) {
      EXPECT_EQ(std::memcmp(got->data, want.data, want.nbytes), 0) << want.name;
    }
  }
  EXPECT_EQ(st.find("missing"), nullptr);

  // Data starts 8-byte aligned because the header is padded.
  std::ifstream in(path, std::ios::binary);
  uint64_t header_size = 0;
  in.read(reinterpret_cast<char*>(&header_size), 8);
  EXPECT_EQ(header_size % 8, 0u);

  // Moving transfers the mapping: the views stay valid in the new owner.
  cm::SafeTensorsFile moved(std::move(st));
  cm::SafeTensorsFile assigned(file("round.safetensors"));
  assigned = std::move(moved);
  EXPECT_EQ(std::memcmp(assigned.find("weight")->data, f32.data(), 24), 0);
}

TEST_F(SafetensorsTest, WriteRejectsBadInput) {
  float x[4] = {};
  std::string path = file("out.safetensors");
  auto expect_write_error = [&](const std::vector<cm::TensorView>& views, const char* name) {
    try {
      cm::write_safetensors(path, views);
      ADD_FAILURE() << "no error";
    } catch (const cm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
    EXPECT_TRUE(fs::is_empty(dir_));
  };
  expect_write_error({{"a", cm::DType::F32, {2, 2}, x, 12}}, "a");
  expect_write_error({{"b", cm::DType::F32, {4}, x, 16}, {"b", cm::DType::F32, {4}, x, 16}}, "b");
  // Unwritable location: the temp file cannot be created.
  try {
    cm::write_safetensors(file("no/such/dir.safetensors"), {});
    ADD_FAILURE() << "no error";
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir.safetensors"), std::string::npos);
  }
}

TEST_F(SafetensorsTest, ReadsGoldenUnet) {
  cm::SafeTensorsFile st(CM_GOLDEN_DIR "/tiny_cond/model/unet/diffusion_pytorch_model.safetensors");
  ASSERT_FALSE(st.tensors().empty());
  const cm::TensorView* conv_in = st.find("conv_in.weight");
  ASSERT_NE(conv_in, nullptr);
  EXPECT_EQ(conv_in->dtype, cm::DType::F32);
  EXPECT_EQ(conv_in->shape, (std::vector<int64_t>{32, 3, 3, 3}));
  EXPECT_EQ(conv_in->nbytes, 32u * 3 * 3 * 3 * 4);
  const char* previous_end = static_cast<const char*>(st.tensors().front().data);
  for (const cm::TensorView& view : st.tensors()) {
    EXPECT_EQ(view.dtype, cm::DType::F32) << view.name;
    EXPECT_EQ(view.data, previous_end) << view.name;  // Offset order, contiguous.
    previous_end = static_cast<const char*>(view.data) + view.nbytes;
  }
}

TEST_F(SafetensorsTest, DtypeNames) {
  for (const char* name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}) {
    auto dtype = cm::dtype_from_name(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_STREQ(cm::dtype_name(*dtype), name);
  }
  EXPECT_FALSE(cm::dtype_from_name("F8").has_value());
  EXPECT_EQ(cm::dtype_size(cm::DType::BF16), 2u);
  EXPECT_EQ(cm::dtype_size(cm::DType::I64), 8u);
  EXPECT_EQ(cm::dtype_size(cm::DType::BOOL), 1u);
}

TEST_F(SafetensorsTest, AcceptsZeroElementTensorAndPadding) {
  std::string header =
      "{" + entry("z", "F32", "[0,3]", 0, 0) + "," + entry("w", "U8", "[2]", 0, 2) + "}   ";
  cm::SafeTensorsFile st(write_raw(header, 2));
  ASSERT_EQ(st.tensors().size(), 2u);
  EXPECT_EQ(st.tensors()[0].name, "z");
  EXPECT_EQ(st.tensors()[0].nbytes, 0u);
}

TEST_F(SafetensorsTest, RejectsTruncatedData) {
  std::string path = file("cut.safetensors");
  float x[6] = {};
  cm::write_safetensors(path, {{"weight", cm::DType::F32, {6}, x, sizeof x}});
  fs::resize_file(path, fs::file_size(path) - 4);
  expect_error(path, {"'weight'", "truncated"});
}

TEST_F(SafetensorsTest, RejectsFileUnderEightBytes) {
  expect_error(write_bytes(std::string("\x02\0\0", 3)), {"too short"});
}

TEST_F(SafetensorsTest, RejectsOversizedHeaderLength) {
  std::string bytes = std::string("\x00\xe2\xf5\x05\0\0\0\0", 8) + "{}";  // 100,000,256
  expect_error(write_bytes(bytes), {"limit"});
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEnd) {
  expect_error(write_bytes(std::string("\x40\0\0\0\0\0\0\0", 8) + "{}"), {"past the end"});
}

TEST_F(SafetensorsTest, RejectsNonJsonHeader) {
  expect_error(write_raw("{not json", 0), {"not valid JSON"});
}

TEST_F(SafetensorsTest, RejectsNonObjectHeader) {
  expect_error(write_raw("[1, 2]", 0), {"'{'"});
  expect_error(write_raw("{\"a\":1} {}", 0), {"not valid JSON"});
  expect_error(write_raw("{\"a\":1}", 0), {"'a'", "not an object"});
}

TEST_F(SafetensorsTest, RejectsUnknownDtype) {
  expect_error(write_raw("{" + entry("t", "F8_E4M3", "[2]", 0, 2) + "}", 2), {"'t'", "F8_E4M3"});
}

TEST_F(SafetensorsTest, RejectsUnknownEntryKey) {
  std::string header = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}";
  expect_error(write_raw(header, 1), {"'t'", "'x'"});
}

TEST_F(SafetensorsTest, RejectsOverlappingOffsets) {
  std::string header =
      "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}";
  expect_error(write_raw(header, 12), {"'b'", "overlap"});
}

TEST_F(SafetensorsTest, RejectsGapInOffsets) {
  std::string header =
      "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}";
  expect_error(write_raw(header, 12), {"'b'", "gap"});
}

TEST_F(SafetensorsTest, RejectsOffsetsNotStartingAtZero) {
  expect_error(write_raw("{" + entry("a", "F32", "[1]", 4, 8) + "}", 8), {"'a'", "not 0"});
}

TEST_F(SafetensorsTest, RejectsWrongByteSize) {
  expect_error(write_raw("{" + entry("a", "F32", "[3]", 0, 8) + "}", 8), {"'a'", "need 12"});
}

TEST_F(SafetensorsTest, RejectsBufferLongerThanLastOffset) {
  expect_error(write_raw("{" + entry("a", "F32", "[2]", 0, 8) + "}", 12), {"12 bytes"});
}

TEST_F(SafetensorsTest, RejectsDuplicateKey) {
  std::string header =
      "{" + entry("dup", "U8", "[1]", 0, 1) + "," + entry("dup", "U8", "[1]", 1, 2) + "}";
  expect_error(write_raw(header, 2), {"'dup'", "twice"});
}

TEST_F(SafetensorsTest, RejectsShapeProductOverflow) {
  std::string shape = "[4294967296,4294967296,0]";
  expect_error(write_raw("{" + entry("big", "U8", shape, 0, 0) + "}", 0), {"'big'", "overflow"});
}

TEST_F(SafetensorsTest, RejectsInvalidUtf8) {
  expect_error(write_raw("{\"a\xff\":{}}", 0), {"UTF-8"});
  expect_error(write_raw("{\"\xed\xa0\x80\":{}}", 0), {"UTF-8"});  // An encoded surrogate.
}

TEST_F(SafetensorsTest, RejectsBadMetadata) {
  expect_error(write_raw("{\"__metadata__\":{\"k\":1}}", 0), {"__metadata__"});
}

}  // namespace
