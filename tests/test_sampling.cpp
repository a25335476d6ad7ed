// cm generate at scale, run as a user would: -n beyond --chunk-size in one process and under a
// torchrun-style environment with two processes on 127.0.0.1 give the same .npz, and chunk k is
// exactly a plain run with seed S + k (the documented draw).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cm/image_io.h"
#include "free_port.h"
#include "golden.h"
#include "io/state_dict.h"
#include "run_cm.h"
#include "temp_dir_test.h"

namespace cm::test {
namespace {

namespace fs = std::filesystem;

const std::string kCond = std::string(CM_GOLDEN_DIR) + "/tiny_cond";

std::string generate_args(const std::string& flags, const std::string& out) {
  return "generate -m " + kCond + "/model --steps 1 -t 1 " + flags + " -o " + out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class Sampling : public TempDirTest {
 protected:
  // Two ranks of `cm <args>`: rank 1 in the background, rank 0 in front. Each rank's stdout and
  // stderr land in rank<r>.out / rank<r>.err; returns the exit status of rank 0 and of rank 1.
  std::pair<int, int> run_pair(const std::string& args0, const std::string& args1) {
    const int port = free_port();
    EXPECT_GT(port, 0);
    const std::string env =
        "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2 ";
    const std::string cm = std::string(CM_BINARY) + " ";
    const auto r =
        run_shell("RANK=1 " + env + cm + args1 + " > " + path("rank1.out") + " 2> " +
                  path("rank1.err") + " & RANK=0 " + env + cm + args0 + " > " + path("rank0.out") +
                  " 2> " + path("rank0.err") + "; s0=$?; wait $!; s1=$?; echo $s0 $s1");
    int s0 = -1, s1 = -1;
    std::sscanf(r.output.c_str(), "%d %d", &s0, &s1);
    return {s0, s1};
  }
  std::string logs() const {
    return "rank 0 out: " + read_text(path("rank0.out")) +
           "rank 0 err: " + read_text(path("rank0.err")) +
           "rank 1 out: " + read_text(path("rank1.out")) +
           "rank 1 err: " + read_text(path("rank1.err"));
  }
};

// Rows [first, first + count) of an array whose first axis is the image.
std::vector<uint8_t> rows(const NpyArray& a, int64_t first, int64_t count) {
  const size_t row = a.data.size() / static_cast<size_t>(a.shape.at(0));
  return {a.data.begin() + first * row, a.data.begin() + (first + count) * row};
}

#if CM_DISTRIBUTED
TEST_F(Sampling, OneAndTwoProcessesWriteTheSameChunksOfSeedSPlusK) {
  const std::string flags = "-n 10 --chunk-size 4 --seed 5";
  const auto one = run_cm(generate_args(flags, path("one.npz")));
  ASSERT_EQ(one.status, 0) << one.output;
  // One progress line per chunk: 4 + 4 + 2 images.
  EXPECT_NE(one.output.find("chunk 3/3  images 8-9  seed 7  rank 0"), std::string::npos)
      << one.output;

  const auto [s0, s1] =
      run_pair(generate_args(flags, path("two.npz")), generate_args(flags, path("two.npz")));
  ASSERT_EQ(s0, 0) << logs();
  ASSERT_EQ(s1, 0) << logs();
  EXPECT_EQ(read_text(path("rank0.out")), path("two.npz") + "\n");
  EXPECT_EQ(read_text(path("rank1.out")), "");  // other ranks write and print nothing
  EXPECT_NE(read_text(path("rank0.err")).find("chunk 2/3  images 4-7  seed 6  rank 1"),
            std::string::npos)
      << logs();

  const auto a = read_npz(path("one.npz")), b = read_npz(path("two.npz"));
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(a[0].second.shape, (std::vector<int64_t>{10, 32, 32, 3}));
  EXPECT_EQ(a[1].second.shape, (std::vector<int64_t>{10}));
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.descr, b[i].second.descr);
    EXPECT_EQ(a[i].second.shape, b[i].second.shape);
    EXPECT_TRUE(a[i].second.data == b[i].second.data) << a[i].first << " differs";
  }

  // Chunk k is the plain single call -n <its size> --seed 5+k (random labels included).
  const int64_t sizes[] = {4, 4, 2};
  for (int64_t k = 0; k < 3; ++k) {
    const std::string plain = path("plain" + std::to_string(k) + ".npz");
    const auto r = run_cm(generate_args(
        "-q -n " + std::to_string(sizes[k]) + " --seed " + std::to_string(5 + k), plain));
    ASSERT_EQ(r.status, 0) << r.output;
    const auto p = read_npz(plain);
    ASSERT_EQ(p.size(), 2u);
    EXPECT_TRUE(rows(a[0].second, 4 * k, sizes[k]) == p[0].second.data) << "images of chunk " << k;
    EXPECT_TRUE(rows(a[1].second, 4 * k, sizes[k]) == p[1].second.data) << "labels of chunk " << k;
  }
  // The chunks differ from each other: the seeds really advance.
  EXPECT_FALSE(rows(a[0].second, 0, 2) == rows(a[0].second, 4, 2));
}
#endif

#if CM_DISTRIBUTED
TEST_F(Sampling, OneChunkUnderTwoProcessesIsDiffusersSingleCall) {
  // Golden case pipeline.1: batch 2, timesteps 22,0, seed 42, labels 3,7, computed by diffusers.
  const std::string args = "generate -m " + kCond +
                           "/model -t 1 -n 2 --timesteps 22,0 "
                           "--seed 42 --class 3,7 --chunk-size 4 -o " +
                           path("g.npz");
  const auto [s0, s1] = run_pair(args, args);
  ASSERT_EQ(s0, 0) << logs();
  ASSERT_EQ(s1, 0) << logs();
  const auto arrays = read_npz(path("g.npz"));
  ASSERT_EQ(arrays.size(), 2u);
  const auto golden = read_state_dict(kCond + "/cases.safetensors");
  const at::Tensor& expected = golden.at("pipeline.1.uint8");
  ASSERT_EQ(arrays[0].second.shape, expected.sizes().vec());
  const auto got = at::from_blob(const_cast<uint8_t*>(arrays[0].second.data.data()),
                                 arrays[0].second.shape, at::kByte);
  EXPECT_TRUE(uint8_match(got, expected, golden.at("pipeline.1.images")));
  const std::vector<int64_t> labels{3, 7};
  EXPECT_EQ(std::memcmp(arrays[1].second.data.data(), labels.data(), 16), 0);
}
#endif

TEST_F(Sampling, ChunkedPngAndNpyFollowTheSameDraw) {
  auto r = run_cm(generate_args("-q -n 5 --chunk-size 2 --seed 9 --class 4", path("s.npz")));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto npz = read_npz(path("s.npz"));
  ASSERT_EQ(npz.size(), 2u);
  // PNGs are numbered over the whole run.
  r = run_cm(generate_args("-q -n 5 --chunk-size 2 --seed 9 --class 4", path("p_%d.png")));
  ASSERT_EQ(r.status, 0) << r.output;
  for (int i = 0; i < 5; ++i) {
    TextChunks text;
    const ImageU8 png = read_png(path("p_" + std::to_string(i) + ".png"), &text);
    EXPECT_TRUE(png.pixels == rows(npz[0].second, i, 1)) << "image " << i;
    ASSERT_EQ(text.size(), 1u);
    EXPECT_NE(text[0].second.find("seed: " + std::to_string(9 + i / 2)), std::string::npos)
        << text[0].second;
  }
  // .npy holds the float images: chunk 1 equals a plain run with seed 10.
  r = run_cm(generate_args("-q -n 5 --chunk-size 2 --seed 9 --class 4", path("f.npy")));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cm(generate_args("-q -n 2 --seed 10 --class 4", path("c1.npy")));
  ASSERT_EQ(r.status, 0) << r.output;
  const NpyArray f = read_npy(path("f.npy")), c1 = read_npy(path("c1.npy"));
  EXPECT_EQ(f.shape, (std::vector<int64_t>{5, 32, 32, 3}));
  EXPECT_TRUE(rows(f, 2, 2) == c1.data);
}

TEST_F(Sampling, BadChunkSizeAndBadLabelCountAreOneLineErrors) {
  auto r = run_cm(generate_args("-n 3 --chunk-size 0", path("x.npz")));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--chunk-size: must be at least 1, got 0"), std::string::npos)
      << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  r = run_cm(generate_args("-n 5 --chunk-size 2 --class 1,2", path("x.npz")));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("2 given for 5 images"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("x.npz")));
}

#if CM_DISTRIBUTED
TEST_F(Sampling, AFailingRankStopsTheOtherAndIsNamed) {
  // Rank 1 is given a label the model lacks: it fails on its first chunk, after the rendezvous.
  const std::string good = generate_args("-n 6 --chunk-size 2 --seed 1 --class 3", path("f.npz"));
  const std::string bad = generate_args("-n 6 --chunk-size 2 --seed 1 --class 5000", path("f.npz"));
  const auto start = std::chrono::steady_clock::now();
  const auto [s0, s1] = run_pair(good, bad);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(s0, 0) << logs();
  EXPECT_NE(s1, 0) << logs();
  EXPECT_LT(seconds, 60) << "rank 0 waited for a timeout instead of noticing";
  const std::string err0 = read_text(path("rank0.err")), err1 = read_text(path("rank1.err"));
  EXPECT_NE(err1.find("rank 1 of 2: class label 5000 is out of range"), std::string::npos) << err1;
  EXPECT_NE(err0.find("rank 1"), std::string::npos) << err0;
  EXPECT_FALSE(fs::exists(path("f.npz")));
  for (const auto& e : fs::directory_iterator(dir_))  // no temporary file left behind either
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}
#else
// A build without c10d (CM_DISTRIBUTED=OFF) says so when started as one of several processes.
TEST_F(Sampling, SeveralProcessesNeedADistributedBuild) {
  const auto r = test::run_shell("WORLD_SIZE=2 RANK=0 " + std::string(CM_BINARY) + " " +
                                 generate_args("-q -n 2", path("x.npz")) + " 2>&1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("WORLD_SIZE=2: this build runs one process only"), std::string::npos)
      << r.output;
}
#endif

}  // namespace
}  // namespace cm::test
