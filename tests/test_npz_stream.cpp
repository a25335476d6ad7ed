// The streaming .npz/.npy writers: data appended piecewise reads back whole, zip64 records (forced
// by a low threshold) are what Python's zipfile expects, and no partial file gets the final name.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cm/error.h"
#include "cm/image_io.h"
#include "io/files.h"

namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

uint64_t le(const std::vector<uint8_t>& b, size_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | b.at(at + i);
  return v;
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no cm::Error thrown; expected one containing " << needle;
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Five 4x4 RGB "images" and five labels, as a sampling run would append them in chunks.
struct Samples {
  cm::NpyArray images{"|u1", {5, 4, 4, 3}, {}};
  cm::NpyArray labels{"<i8", {5}, {}};
  Samples() {
    for (int i = 0; i < 5 * 4 * 4 * 3; ++i) images.data.push_back(static_cast<uint8_t>(i * 7 + 3));
    for (int64_t l : std::vector<int64_t>{7, 999, 0, -2, int64_t{1} << 40}) {
      const auto* p = reinterpret_cast<const uint8_t*>(&l);
      labels.data.insert(labels.data.end(), p, p + 8);
    }
  }
  // Chunks of 2, 2 and 1 images, each followed by its labels.
  void append_to(cm::NpzStreamWriter& w) const {
    const size_t image = 4 * 4 * 3;
    for (size_t first : {0, 2, 4}) {
      const size_t n = std::min<size_t>(2, 5 - first);
      w.append(0, images.data.data() + first * image, n * image);
      w.append(1, labels.data.data() + first * 8, n * 8);
    }
  }
};

std::vector<std::pair<std::string, cm::NpySpec>> specs(const Samples& s) {
  return {{"arr_0", {s.images.descr, s.images.shape}}, {"arr_1", {s.labels.descr, s.labels.shape}}};
}

class NpzStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("cm_npz_stream_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  size_t file_count() const {
    return static_cast<size_t>(
        std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }
  // Each member's bytes as Python's zipfile reads them (after testzip() checked every CRC), or
  // nothing when python3 is missing.
  std::vector<std::vector<uint8_t>> python_members(const std::string& zip,
                                                   const std::vector<std::string>& names) {
    std::vector<std::vector<uint8_t>> out;
    if (std::system("python3 -c 'import zipfile' >/dev/null 2>&1") != 0) return out;
    std::string cmd =
        "python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
        "assert z.testzip() is None\nfor n in sys.argv[2:]: open(n + \".out\", \"wb\").write("
        "z.read(n.rsplit(\"/\", 1)[1]))' " +
        zip;
    for (const auto& name : names) cmd += " " + path(name);
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    for (const auto& name : names) {
      out.push_back(read_bytes(path(name) + ".out"));
      fs::remove(path(name) + ".out");
    }
    return out;
  }
  fs::path dir_;
};

TEST_F(NpzStreamTest, ChunkedAppendsReadBackWhole) {
  const Samples s;
  cm::NpzStreamWriter w(path("s.npz"), specs(s));
  s.append_to(w);
  EXPECT_FALSE(fs::exists(path("s.npz")));  // nothing under the final name before finish()
  w.finish();
  const auto back = cm::read_npz(path("s.npz"));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].first, "arr_0");
  EXPECT_EQ(back[0].second.shape, s.images.shape);
  EXPECT_EQ(back[0].second.data, s.images.data);
  EXPECT_EQ(back[1].first, "arr_1");
  EXPECT_EQ(back[1].second.descr, "<i8");
  EXPECT_EQ(back[1].second.data, s.labels.data);
  EXPECT_EQ(file_count(), 1u);  // no temporary file left

  // Below the threshold nothing is zip64: the plain end record holds the real values.
  const auto zip = read_bytes(path("s.npz"));
  EXPECT_EQ(le(zip, zip.size() - 22, 4), 0x06054b50u);
  EXPECT_NE(le(zip, zip.size() - 6, 4), 0xffffffffu);
  EXPECT_NE(le(zip, zip.size() - 42, 4), 0x07064b50u);
}

TEST_F(NpzStreamTest, Zip64RecordsReadByPythonAndByReadNpz) {
  const Samples s;
  // 64 bytes: every member, every offset but the first and the central directory are "large".
  cm::NpzStreamWriter w(path("z.npz"), specs(s), 64);
  s.append_to(w);
  w.finish();

  const auto zip = read_bytes(path("z.npz"));
  const size_t end = zip.size() - 22;
  ASSERT_EQ(le(zip, end, 4), 0x06054b50u);
  EXPECT_EQ(le(zip, end + 12, 4), 0xffffffffu);  // central directory size
  EXPECT_EQ(le(zip, end + 16, 4), 0xffffffffu);  // and offset are in the zip64 record
  ASSERT_EQ(le(zip, end - 20, 4), 0x07064b50u);  // zip64 locator
  const uint64_t zip64_end = le(zip, end - 12, 8);
  ASSERT_EQ(le(zip, zip64_end, 4), 0x06064b50u);
  EXPECT_EQ(le(zip, zip64_end + 32, 8), 2u);  // members
  // The first local header carries its sizes in a zip64 extra field (id 1, 16 bytes).
  EXPECT_EQ(le(zip, 18, 4), 0xffffffffu);
  EXPECT_EQ(le(zip, 28, 2), 20u);
  EXPECT_EQ(le(zip, 30 + 9, 2), 1u);

  const auto back = cm::read_npz(path("z.npz"));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].second.data, s.images.data);
  EXPECT_EQ(back[1].second.data, s.labels.data);

  // Python's zipfile, an independent reader, finds members identical to write_npy's files.
  const auto members = python_members(path("z.npz"), {"arr_0.npy", "arr_1.npy"});
  if (members.empty()) GTEST_SKIP() << "python3 not available";
  cm::write_npy(path("i.npy"), s.images);
  cm::write_npy(path("l.npy"), s.labels);
  EXPECT_EQ(members[0], read_bytes(path("i.npy")));
  EXPECT_EQ(members[1], read_bytes(path("l.npy")));
}

TEST_F(NpzStreamTest, PlainArchiveReadByPython) {
  const Samples s;
  cm::NpzStreamWriter w(path("p.npz"), specs(s));
  s.append_to(w);
  w.finish();
  const auto members = python_members(path("p.npz"), {"arr_0.npy", "arr_1.npy"});
  if (members.empty()) GTEST_SKIP() << "python3 not available";
  cm::write_npy(path("i.npy"), s.images);
  EXPECT_EQ(members[0], read_bytes(path("i.npy")));
}

TEST_F(NpzStreamTest, IncompleteOrOverfullDataLeavesNoFile) {
  const Samples s;
  {
    cm::NpzStreamWriter w(path("short.npz"), specs(s));
    w.append(0, s.images.data.data(), s.images.data.size());
    w.append(1, s.labels.data.data(), 8);
    expect_error([&] { w.finish(); }, "arr_1.npy got 8 of its 40 bytes");
    expect_error([&] { w.append(0, s.images.data.data(), 1); }, "more data than arr_0.npy");
    expect_error([&] { w.append(2, s.images.data.data(), 1); }, "no array number 2");
  }
  EXPECT_FALSE(fs::exists(path("short.npz")));
  EXPECT_EQ(file_count(), 0u);  // the temporary file went with the writer

  // A failed rewrite leaves an existing file as it was.
  { std::ofstream(path("old.npz")) << "previous"; }
  {
    cm::NpzStreamWriter w(path("old.npz"), specs(s));
    w.append(0, s.images.data.data(), 10);
  }
  EXPECT_EQ(read_bytes(path("old.npz")),
            std::vector<uint8_t>({'p', 'r', 'e', 'v', 'i', 'o', 'u', 's'}));
  EXPECT_EQ(file_count(), 1u);

  expect_error([&] { cm::NpzStreamWriter(path("bad.npz"), {{"x", {"<U3", {1}}}}); }, "'<U3'");
  expect_error(
      [&] {
        cm::NpzStreamWriter(path("bad.npz"), {{"x", {"|u1", {1}}}, {"x", {"|u1", {1}}}});
      },
      "duplicate");
  EXPECT_EQ(file_count(), 1u);
}

TEST_F(NpzStreamTest, NpyStreamMatchesWriteNpy) {
  const Samples s;
  {
    cm::NpyStreamWriter w(path("s.npy"), {s.images.descr, s.images.shape});
    w.append(s.images.data.data(), 100);
    w.append(s.images.data.data() + 100, s.images.data.size() - 100);
    EXPECT_FALSE(fs::exists(path("s.npy")));
    w.finish();
  }
  cm::write_npy(path("w.npy"), s.images);
  EXPECT_EQ(read_bytes(path("s.npy")), read_bytes(path("w.npy")));
  {
    cm::NpyStreamWriter w(path("cut.npy"), {s.images.descr, s.images.shape});
    w.append(s.images.data.data(), 100);
    expect_error([&] { w.finish(); }, "got 100 of the array's 240 bytes");
  }
  EXPECT_FALSE(fs::exists(path("cut.npy")));
  EXPECT_EQ(file_count(), 2u);
}

}  // namespace

// Temporary names are unique per call, not only per process: two threads writing the same file
// (a server's requests, the Hub cache's parallel downloads) never share one.
TEST(TempNames, UniqueAcrossThreads) {
  std::vector<std::vector<std::string>> names(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < names.size(); ++t)
    threads.emplace_back([&names, t] {
      for (int i = 0; i < 200; ++i) names[t].push_back(cm::temp_suffix());
    });
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (const auto& mine : names) all.insert(mine.begin(), mine.end());
  EXPECT_EQ(all.size(), 800u);
  EXPECT_EQ(names[0][0].rfind(".tmp." + std::to_string(::getpid()) + ".", 0), 0u) << names[0][0];
}
