// The cm binary with models by name: `cm generate -m org/name`, `cm download`, `cm models`, with
// HF_ENDPOINT pointing at the fake Hub.
#include <gtest/gtest.h>

#include <filesystem>

#include "cm/image_io.h"
#include "hub_fixture.h"
#include "run_cm.h"

namespace cm {
namespace {

namespace fs = std::filesystem;
using namespace cm::test;  // NOLINT: the fixture and its helpers

struct CmRun {
  int status = -1;
  std::string out, err;
};

// Runs cm with the test's environment (HF_HUB_CACHE, HF_HOME) plus `env` ("NAME=value ..."),
// keeping stdout and stderr apart.
CmRun run_cm(const std::string& env, const std::string& args, const fs::path& dir) {
  const fs::path err = dir / "stderr.txt";
  const RunResult r = run_shell(env + " " + CM_BINARY + " " + args + " 2>" + err.string());
  return {r.status, r.output, read_bytes(err)};
}

class HubCliTest : public HubTest {
 protected:
  std::string endpoint_env() const { return "HF_ENDPOINT=" + hub_->endpoint(); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

TEST_F(HubCliTest, GenerateByRepositoryIdGivesTheSamePixelsAsTheLocalFolder) {
  start();
  const std::string common = " --seed 0 --steps 1 --class 3 -o ";
  auto by_name = run_cm(endpoint_env(), "generate -m org/tiny" + common + path("hub.png"), dir_);
  ASSERT_EQ(by_name.status, 0) << by_name.err;
  // Not a terminal: one line per downloaded file.
  EXPECT_NE(by_name.err.find("downloaded unet/diffusion_pytorch_model.safetensors: 4.9 MiB"),
            std::string::npos)
      << by_name.err;
  const auto local =
      run_cm("", "generate -m " + std::string(kGoldenModel) + common + path("local.png"), dir_);
  ASSERT_EQ(local.status, 0) << local.err;
  const ImageU8 a = read_png(path("hub.png"));
  const ImageU8 b = read_png(path("local.png"));
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.pixels, b.pixels);

  // Once cached, the Hub isn't needed.
  hub_->stop();
  auto again = run_cm(endpoint_env(), "generate -m org/tiny" + common + path("again.png"), dir_);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(read_png(path("again.png")).pixels, b.pixels);
  EXPECT_EQ(again.err.find("downloaded"), std::string::npos) << again.err;
}

TEST_F(HubCliTest, Fp16VariantByName) {
  start({"--repo", "org/variants=" + repos().variants});
  const auto r = run_cm(
      endpoint_env(),
      "generate -m org/variants --variant fp16 --seed 0 --class 3 -q -o " + path("x.png"), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(requests(kWeights).empty());
  EXPECT_FALSE(requests("diffusion_pytorch_model.fp16.safetensors").empty());
}

TEST_F(HubCliTest, DownloadPrintsTheSnapshotAndModelsListsIt) {
  start();
  const auto d = run_cm(endpoint_env(), "download org/tiny", dir_);
  ASSERT_EQ(d.status, 0) << d.err;
  const std::string snapshot = d.out.substr(0, d.out.find('\n'));
  EXPECT_EQ(fs::path(snapshot).parent_path(), repo_root() / "snapshots");
  EXPECT_TRUE(fs::exists(fs::path(snapshot) / kWeights));
  const std::string commit = fs::path(snapshot).filename().string();

  const auto m = run_cm("", "models", dir_);
  ASSERT_EQ(m.status, 0) << m.err;
  EXPECT_NE(m.out.find("org/tiny"), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("main@" + commit.substr(0, 12)), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("4.9 MiB"), std::string::npos) << m.out;
  EXPECT_NE(m.out.find(repo_root().string()), std::string::npos) << m.out;
}

TEST_F(HubCliTest, ErrorsAreOneLine) {
  start();
  struct Case {
    std::string env, args, expect;
  };
  const std::vector<Case> cases = {
      {endpoint_env(), "generate -m org/nothing -o " + path("x.png"), "RepoNotFound"},
      {endpoint_env(), "generate -m org/tiny@v2 -o " + path("x.png"), "RevisionNotFound"},
      {endpoint_env(), "generate -m org/tiny --variant fp16 -o " + path("x.png"),
       "no 'fp16' variant"},
      {endpoint_env() + " HF_HUB_OFFLINE=1", "download org/tiny", "HF_HUB_OFFLINE"},
      {endpoint_env(), "download /not/a/repo", "not a repository id"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cm(c.env, c.args, dir_);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    const std::string rest = r.err.substr(std::min(r.err.size(), r.err.find("error: ")));
    EXPECT_LE(std::count(rest.begin(), rest.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(path("x.png")));
  }
}

}  // namespace
}  // namespace cm
