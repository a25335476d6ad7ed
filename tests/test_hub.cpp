// Models by name: the Hugging Face cache and downloads, against tests/fake_hub.py serving the
// golden models on 127.0.0.1 (redirects, dropped transfers, lies, errors on demand).
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <csignal>
#include <filesystem>

#include "cm/error.h"
#include "cm/hub.h"
#include "cm/pipeline.h"
#include "hub_fixture.h"
#include "hub/hub_cache.h"
#include "hub/sha256.h"
#include "io/weights_index.h"

namespace cm {
namespace {

namespace fs = std::filesystem;
using namespace cm::test;  // NOLINT: the fixture and its helpers

// ---------------------------------------------------------------------------------------------
// Names and the environment

TEST(HubNames, RepoSpecsAndPaths) {
  auto s = parse_repo_spec("org/name");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->repo_id, "org/name");
  EXPECT_EQ(s->revision, "main");
  s = parse_repo_spec("openai/diffusers-cd_imagenet64_l2@refs/pr/1");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->repo_id, "openai/diffusers-cd_imagenet64_l2");
  EXPECT_EQ(s->revision, "refs/pr/1");
  EXPECT_TRUE(parse_repo_spec("gpt2"));
  for (const char* path : {"/abs/model", "./model", "../model", "a/b/c", "org/-name", "org//x",
                           "org/na--me", "org/name.git", "~/model", ""})
    EXPECT_FALSE(parse_repo_spec(path)) << path;
  EXPECT_THROW(parse_repo_spec("org/name@../../etc"), Error);
  EXPECT_EQ(hub::repo_folder_name("org/name"), "models--org--name");
}

TEST_F(HubTest, CacheFolderFollowsHuggingfaceHubPrecedence) {
  const std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  EXPECT_EQ(hub_cache_dir(), cache());
  ::unsetenv("HF_HUB_CACHE");
  ::setenv("HUGGINGFACE_HUB_CACHE", "/tmp/legacy", 1);
  EXPECT_EQ(hub_cache_dir(), "/tmp/legacy");
  ::unsetenv("HUGGINGFACE_HUB_CACHE");
  EXPECT_EQ(hub_cache_dir(), (dir_ / "hf_home" / "hub").string());
  ::unsetenv("HF_HOME");
  ::setenv("HOME", "/home/someone", 1);
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(hub_cache_dir(), "/home/someone/.cache/huggingface/hub");
  ::setenv("HF_HUB_OFFLINE", "yes", 1);
  EXPECT_TRUE(hub_offline_from_env());
  ::setenv("HF_HUB_OFFLINE", "0", 1);
  EXPECT_FALSE(hub_offline_from_env());
  ::setenv("HF_ENDPOINT", "http://mirror.example/", 1);
  EXPECT_EQ(hub_endpoint(), "http://mirror.example");
  ::setenv("HF_HOME", (dir_ / "hf_home").c_str(), 1);
  write_bytes(dir_ / "hf_home" / "token", "hf_fromfile\n");
  EXPECT_EQ(hub_token(), "hf_fromfile");
  ::setenv("HF_TOKEN", "hf_fromenv", 1);
  EXPECT_EQ(hub_token(), "hf_fromenv");
  ::setenv("HOME", home.c_str(), 1);
}

TEST(WeightsIndex, ShardNamesThatEscapeTheFolderAreRejected) {
  for (const char* bad : {"../x.safetensors", "/etc/x.safetensors", "a/../../x.safetensors", "..",
                          "x.bin", "a\\..\\x.safetensors", ""}) {
    const std::string json = nlohmann::json{{"weight_map", {{"w", bad}}}}.dump();
    const std::string msg = error_of([&] { parse_weights_index(json, "index.json"); });
    EXPECT_NE(msg.find("index.json"), std::string::npos) << bad << ": " << msg;
  }
  const auto index = parse_weights_index(
      R"({"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors", "c": "m-1.safetensors"}})",
      "i.json");
  EXPECT_EQ(index.shards, (std::vector<std::string>{"m-1.safetensors", "m-2.safetensors"}));
  EXPECT_THROW(validate_variant("../fp16"), Error);
}

// ---------------------------------------------------------------------------------------------
// Downloads and the cache

TEST_F(HubTest, FirstDownloadThenCachedRunWithTheServerStopped) {
  start({});
  std::vector<DownloadProgress> finished;
  HubOptions o = options();
  o.progress = [&](const DownloadProgress& p) {
    if (p.finished) finished.push_back(p);
  };
  const std::string snapshot = resolve_model("org/tiny", o);
  const std::string commit = fs::path(snapshot).filename().string();
  EXPECT_TRUE(hub::is_commit_hash(commit));
  EXPECT_EQ(fs::path(snapshot), repo_root() / "snapshots" / commit);
  // Laid out as huggingface_hub lays it out.
  EXPECT_EQ(read_bytes(repo_root() / "refs" / "main"), commit);
  for (const char* file : {"model_index.json", "scheduler/scheduler_config.json",
                           "unet/config.json", "unet/diffusion_pytorch_model.safetensors"}) {
    const fs::path pointer = fs::path(snapshot) / file;
    ASSERT_TRUE(fs::is_symlink(pointer)) << file;
    const fs::path target = fs::read_symlink(pointer);
    EXPECT_TRUE(target.is_relative()) << target;
    EXPECT_EQ(fs::canonical(pointer).parent_path(), fs::canonical(repo_root() / "blobs"));
    EXPECT_EQ(read_bytes(pointer), read_bytes(golden_file(file))) << file;
  }
  const std::string sha = sha256_file_hex(golden_file(kWeights));
  EXPECT_TRUE(fs::exists(repo_root() / "blobs" / sha));  // an LFS file is named by its SHA-256
  EXPECT_EQ(finished.size(), 4u);
  for (const auto& p : finished) EXPECT_EQ(p.bytes_done, p.bytes_total) << p.file;
  EXPECT_TRUE(at::allclose(images_of(snapshot), golden_images(), 0, 1e-4));

  hub_->stop();
  EXPECT_EQ(resolve_model("org/tiny", options()), snapshot);
  HubOptions offline = options();
  offline.offline = true;
  EXPECT_EQ(resolve_model("org/tiny", offline), snapshot);
}

// A progress callback runs inside libcurl's write callback: its exception must reach the caller
// intact (not unwind through libcurl's C frames), and the next run picks the download up.
TEST_F(HubTest, ExceptionFromTheProgressCallbackReachesTheCaller) {
  start({});
  struct Stop {};
  HubOptions o = options();
  int calls_with_bytes = 0;
  o.progress = [&](const DownloadProgress& p) {
    if (p.bytes_done > 0 && !p.finished && ++calls_with_bytes == 1) throw Stop{};
  };
  EXPECT_THROW(download("org/tiny", "main", o), Stop);
  EXPECT_EQ(calls_with_bytes, 1);
  const std::string snapshot = download("org/tiny", "main", options());
  EXPECT_TRUE(at::allclose(images_of(snapshot), golden_images(), 0, 1e-4));
}

TEST_F(HubTest, CachedCommitHashNeedsNoNetworkCall) {
  auto& hub = start({});
  const std::string snapshot = download("org/tiny", "main", options());
  const std::string commit = fs::path(snapshot).filename().string();
  hub.clear_log();
  EXPECT_EQ(resolve_model("org/tiny@" + commit, options()), snapshot);
  EXPECT_TRUE(hub.requests().empty());
  // A branch name asks the Hub which commit it is now, then finds every file cached.
  EXPECT_EQ(resolve_model("org/tiny@main", options()), snapshot);
  EXPECT_EQ(requests("/api/models/").size(), 1u);
  EXPECT_EQ(requests("/resolve/").size(), 0u);
}

TEST_F(HubTest, CommitHashNotYetCachedIsDownloaded) {
  start({});
  const std::string commit = fs::path(download("org/tiny", "main", options())).filename().string();
  fs::remove_all(cache());
  const std::string snapshot = download("org/tiny", commit, options());
  EXPECT_EQ(fs::path(snapshot).filename(), commit);
  EXPECT_EQ(requests("/api/models/org/tiny/revision/" + commit).size(), 1u);
  EXPECT_FALSE(fs::exists(repo_root() / "refs" / commit));  // a hash needs no ref
}

TEST_F(HubTest, RelativeRedirectIsFollowedWithTheToken) {
  start({"--repo", "org/tiny=" + repos().plain, "--rename", "org/old-name=org/tiny",
         "--require-token", "hf_secret"});
  HubOptions o = options();
  o.token = "hf_secret";
  const std::string snapshot = resolve_model("org/old-name", o);
  EXPECT_EQ(fs::path(snapshot).parent_path().parent_path(), repo_root("models--org--old-name"));
  EXPECT_EQ(read_bytes(fs::path(snapshot) / kWeights), read_bytes(golden_file(kWeights)));
  const auto renamed = requests("/org/tiny/resolve/");
  ASSERT_FALSE(renamed.empty());
  for (const auto& r : renamed) EXPECT_EQ(r["authorization"], "Bearer hf_secret") << r.dump();
  EXPECT_FALSE(requests("/org/old-name/resolve/").empty());
}

TEST_F(HubTest, CrossHostRedirectDoesNotCarryTheToken) {
  auto& hub = start({"--repo", "org/tiny=" + repos().plain, "--cdn-host", "localhost",
                     "--require-token", "hf_secret"});
  HubOptions o = options();
  o.token = "hf_secret";
  const std::string snapshot = resolve_model("org/tiny", o);
  EXPECT_EQ(read_bytes(fs::path(snapshot) / kWeights), read_bytes(golden_file(kWeights)));
  const auto cdn = requests("/cdn/");
  ASSERT_EQ(cdn.size(), 1u);
  EXPECT_EQ(cdn[0]["host"], "localhost:" + std::to_string(hub.port()));
  EXPECT_TRUE(cdn[0]["authorization"].is_null()) << cdn[0].dump();
  for (const auto& r : requests("/org/tiny/resolve/"))
    EXPECT_EQ(r["authorization"], "Bearer hf_secret") << r.dump();
  for (const auto& r : requests("/api/")) EXPECT_EQ(r["authorization"], "Bearer hf_secret");
}

TEST_F(HubTest, TransferCutHalfWayResumesWithRange) {
  start({"--repo", "org/tiny=" + repos().plain, "--cut", "diffusion_pytorch_model"});
  const std::string snapshot = download("org/tiny", "main", options());
  EXPECT_EQ(read_bytes(fs::path(snapshot) / kWeights), read_bytes(golden_file(kWeights)));
  const auto cdn = requests("/cdn/");
  ASSERT_EQ(cdn.size(), 2u);
  EXPECT_TRUE(cdn[0]["range"].is_null());
  const auto size = fs::file_size(golden_file(kWeights));
  EXPECT_EQ(cdn[1]["range"], "bytes=" + std::to_string(size / 2) + "-");
}

TEST_F(HubTest, StalledTransferTimesOutAndIsRetried) {
  start({"--repo", "org/tiny=" + repos().plain, "--stall", "diffusion_pytorch_model"});
  HubOptions o = options();
  o.connect_timeout_s = 1;  // also the stall limit
  const std::string snapshot = download("org/tiny", "main", o);
  EXPECT_EQ(read_bytes(fs::path(snapshot) / kWeights), read_bytes(golden_file(kWeights)));
  EXPECT_EQ(requests("/cdn/").size(), 2u);  // the stalled one, then the retry
}

TEST_F(HubTest, InterruptedDownloadResumesInTheNextRun) {
  start({"--repo", "org/tiny=" + repos().plain, "--cut", "diffusion_pytorch_model"});
  HubOptions o = options();
  o.max_retries = 0;
  const std::string msg = error_of([&] { download("org/tiny", "main", o); });
  expect_one_line_mentioning(msg, {kWeights, "interrupted", "run again"});
  const std::string sha = sha256_file_hex(golden_file(kWeights));
  const fs::path blob = repo_root() / "blobs" / sha;
  EXPECT_FALSE(fs::exists(blob));  // never a half-written blob under the final name
  ASSERT_TRUE(fs::exists(blob.string() + ".incomplete"));
  const auto part = fs::file_size(blob.string() + ".incomplete");
  EXPECT_GT(part, 0u);

  const std::string snapshot = download("org/tiny", "main", o);
  const auto cdn = requests("/cdn/");
  ASSERT_EQ(cdn.size(), 2u);
  EXPECT_EQ(cdn[1]["range"], "bytes=" + std::to_string(part) + "-");
  EXPECT_EQ(sha256_file_hex((fs::path(snapshot) / kWeights).string()), sha);
  EXPECT_FALSE(fs::exists(blob.string() + ".incomplete"));
}

TEST_F(HubTest, SizeMismatchIsACorruptedDownloadAndLeavesNoBlob) {
  start({"--repo", "org/tiny=" + repos().plain, "--lie-size", "diffusion_pytorch_model"});
  const std::string msg = error_of([&] { download("org/tiny", "main", options()); });
  expect_one_line_mentioning(msg, {kWeights, "corrupted", "5145672"});
  const fs::path blob = repo_root() / "blobs" / sha256_file_hex(golden_file(kWeights));
  EXPECT_FALSE(fs::exists(blob));
  EXPECT_FALSE(fs::exists(blob.string() + ".incomplete"));
  const std::string commit = read_bytes(repo_root() / "refs" / "main");
  EXPECT_FALSE(fs::exists(repo_root() / "snapshots" / commit / kWeights));
}

TEST_F(HubTest, ChecksumMismatchIsACorruptedDownloadAndLeavesNoBlob) {
  start({"--repo", "org/tiny=" + repos().plain, "--corrupt", "diffusion_pytorch_model"});
  const std::string msg = error_of([&] { download("org/tiny", "main", options()); });
  expect_one_line_mentioning(msg, {kWeights, "corrupted", "SHA-256"});
  const fs::path blob = repo_root() / "blobs" / sha256_file_hex(golden_file(kWeights));
  EXPECT_FALSE(fs::exists(blob));
  EXPECT_FALSE(fs::exists(blob.string() + ".incomplete"));
}

TEST_F(HubTest, RateLimitAndServerErrorsAreRetried) {
  start({"--repo", "org/tiny=" + repos().plain, "--fail", "unet/config.json:429:2", "--fail",
         "model_index.json:500:1", "--fail", "/cdn/:503:1", "--fail", "/api/:500:1"});
  const std::string snapshot = download("org/tiny", "main", options());
  EXPECT_EQ(read_bytes(fs::path(snapshot) / kWeights), read_bytes(golden_file(kWeights)));
  auto heads = [&](const std::string& part) {
    size_t n = 0;
    for (const auto& r : requests(part)) n += r["method"] == "HEAD";
    return n;
  };
  EXPECT_EQ(heads("unet/config.json"), 3u);  // 429, 429, 200
  EXPECT_EQ(heads("model_index.json"), 2u);  // 500, 200
  EXPECT_EQ(requests("/cdn/").size(), 2u);   // 503, 200
  EXPECT_EQ(requests("/api/").size(), 2u);   // 500, 200
}

TEST_F(HubTest, PersistentServerErrorsGiveUpAfterTheRetries) {
  start({"--repo", "org/tiny=" + repos().plain, "--fail", "/resolve/:503:1000"});
  const std::string msg = error_of([&] { download("org/tiny", "main", options()); });
  expect_one_line_mentioning(msg, {"org/tiny", "503", "3 retries"});
  EXPECT_EQ(requests("/resolve/").size(), 4u);
}

TEST_F(HubTest, ErrorsSayWhatToDo) {
  start({"--repo", "org/tiny=" + repos().plain, "--missing", "unet/config.json"});
  expect_one_line_mentioning(error_of([&] { download("org/nothing", "main", options()); }),
                             {"org/nothing", "not found", "RepoNotFound", "HF_TOKEN"});
  expect_one_line_mentioning(error_of([&] { resolve_model("org/tiny@v9", options()); }),
                             {"org/tiny", "'v9'", "RevisionNotFound"});
  expect_one_line_mentioning(error_of([&] { download("org/tiny", "main", options()); }),
                             {"org/tiny", "unet/config.json", "EntryNotFound"});
  const std::string commit = read_bytes(repo_root() / "refs" / "main");
  EXPECT_TRUE(fs::exists(repo_root() / ".no_exist" / commit / "unet/config.json"));

  start({"--repo", "org/tiny=" + repos().plain, "--require-token", "hf_right"});
  expect_one_line_mentioning(error_of([&] { download("org/tiny", "main", options()); }),
                             {"org/tiny", "401", "set HF_TOKEN"});
  HubOptions wrong = options();
  wrong.token = "hf_wrong";
  expect_one_line_mentioning(error_of([&] { download("org/tiny", "main", wrong); }),
                             {"org/tiny", "401", "cannot read it"});

  start({"--repo", "org/tiny=" + repos().plain, "--gated"});
  expect_one_line_mentioning(error_of([&] { download("org/tiny", "main", options()); }),
                             {"org/tiny", "403", "gated", "HF_TOKEN"});
}

TEST_F(HubTest, TokenComesFromTheEnvironmentOrTheTokenFile) {
  auto& hub = start({"--repo", "org/tiny=" + repos().plain, "--require-token", "hf_file"});
  write_bytes(dir_ / "hf_home" / "token", "hf_file\n");
  EXPECT_NO_THROW(download("org/tiny", "main", options()));
  fs::remove_all(cache());
  hub.clear_log();
  ::setenv("HF_TOKEN", "hf_env", 1);
  EXPECT_THROW(download("org/tiny", "main", options()), Error);  // HF_TOKEN wins over the file
  EXPECT_EQ(requests("/api/")[0]["authorization"], "Bearer hf_env");
}

TEST_F(HubTest, OfflineModeUsesTheCacheAndNeverTheNetwork) {
  auto& hub = start({});
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  const std::string msg = error_of([&] { resolve_model("org/tiny", options()); });
  expect_one_line_mentioning(msg, {"org/tiny@main", "offline", "HF_HUB_OFFLINE", "no ref 'main'"});
  EXPECT_TRUE(hub.requests().empty());

  ::unsetenv("HF_HUB_OFFLINE");
  const std::string snapshot = download("org/tiny", "main", options());
  hub.clear_log();
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  EXPECT_EQ(resolve_model("org/tiny", options()), snapshot);
  EXPECT_TRUE(hub.requests().empty());

  // A snapshot missing a file says which.
  fs::remove(fs::path(snapshot) / kWeights);
  expect_one_line_mentioning(error_of([&] { resolve_model("org/tiny", options()); }),
                             {"offline", kWeights});
  // The fp16 variant was never fetched: offline can't know it, and says so.
  HubOptions fp16 = options();
  fp16.variant = "fp16";
  expect_one_line_mentioning(error_of([&] { resolve_model("org/tiny", fp16); }),
                             {"offline", "diffusion_pytorch_model.fp16.safetensors"});
  EXPECT_TRUE(hub.requests().empty());
}

TEST_F(HubTest, NoNetworkAndNothingCached) {
  start({});
  hub_->stop();  // its port now refuses connections
  const std::string msg = error_of([&] { resolve_model("org/tiny", options()); });
  expect_one_line_mentioning(msg, {"org/tiny", "cannot reach", "not cached"});
  EXPECT_FALSE(fs::exists(repo_root() / "snapshots"));
}

TEST_F(HubTest, DiskFullLeavesNoHalfWrittenBlob) {
  start({});
  // A file size limit makes writes past 1 MiB fail (EFBIG) as a full disk would (ENOSPC).
  rlimit old{};
  ::getrlimit(RLIMIT_FSIZE, &old);
  const auto previous = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 1 << 20;
  ::setrlimit(RLIMIT_FSIZE, &small);
  const std::string msg = error_of([&] { download("org/tiny", "main", options()); });
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, previous);
  expect_one_line_mentioning(msg, {"disk full"});
  const fs::path blob = repo_root() / "blobs" / sha256_file_hex(golden_file(kWeights));
  EXPECT_FALSE(fs::exists(blob));
  EXPECT_FALSE(fs::exists(blob.string() + ".incomplete"));
  EXPECT_NO_THROW(download("org/tiny", "main", options()));  // and it works with room again
}

// A cache laid out by hand exactly as huggingface_hub writes it, not by this project.
TEST_F(HubTest, CacheWrittenInTheHuggingfaceHubLayoutIsFound) {
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  const fs::path root = repo_root("models--someone--handmade");
  uint64_t blob_bytes = 0;
  for (const char* file : {"model_index.json", "scheduler/scheduler_config.json",
                           "unet/config.json", "unet/diffusion_pytorch_model.safetensors"}) {
    const std::string data = read_bytes(golden_file(file));
    const std::string etag = sha256_file_hex(golden_file(file));
    write_bytes(root / "blobs" / etag, data);
    blob_bytes += data.size();
    const fs::path pointer = root / "snapshots" / commit / file;
    fs::create_directories(pointer.parent_path());
    fs::create_symlink((root / "blobs" / etag).lexically_relative(pointer.parent_path()), pointer);
  }
  write_bytes(root / "refs" / "main", commit);

  // No Hub at all: a commit hash is served from the cache, and so is a branch when the Hub
  // can't be reached.
  const std::string snapshot = (root / "snapshots" / commit).string();
  EXPECT_EQ(resolve_model("someone/handmade@" + commit, options()), snapshot);
  EXPECT_EQ(resolve_model("someone/handmade", options()), snapshot);
  EXPECT_TRUE(at::allclose(images_of(snapshot), golden_images(), 0, 1e-4));

  const auto cached = list_cached_models();
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_EQ(cached[0].repo_id, "someone/handmade");
  EXPECT_EQ(cached[0].size_bytes, blob_bytes);
  ASSERT_EQ(cached[0].revisions.size(), 1u);
  EXPECT_EQ(cached[0].revisions[0].commit, commit);
  EXPECT_EQ(cached[0].revisions[0].refs, std::vector<std::string>{"main"});
  EXPECT_EQ(cached[0].revisions[0].files, 4);
}

TEST_F(HubTest, ListsWhatTheCacheHolds) {
  start({"--repo", "org/tiny=" + repos().plain, "--repo", "org/sharded=" + repos().sharded});
  download("org/tiny", "main", options());
  download("org/sharded", "main", options());
  const auto cached = list_cached_models(cache());
  ASSERT_EQ(cached.size(), 2u);
  EXPECT_EQ(cached[0].repo_id, "org/sharded");
  EXPECT_EQ(cached[1].repo_id, "org/tiny");
  uint64_t expected = 0;
  for (const auto& f : fs::recursive_directory_iterator(kGoldenModel))
    if (f.is_regular_file()) expected += f.file_size();
  EXPECT_EQ(cached[1].size_bytes, expected);
  EXPECT_EQ(cached[1].revisions.at(0).refs, std::vector<std::string>{"main"});
}

// ---------------------------------------------------------------------------------------------
// Which weights

TEST_F(HubTest, Fp16VariantFetchesOnlyItsFileAndMatchesToFp16Tolerance) {
  start({"--repo", "org/variants=" + repos().variants});
  HubOptions o = options();
  o.variant = "fp16";
  const std::string snapshot = resolve_model("org/variants", o);
  EXPECT_TRUE(fs::exists(fs::path(snapshot) / "unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(snapshot) / kWeights));
  EXPECT_TRUE(requests(kWeights).empty());

  const at::Tensor images = images_of(snapshot, "fp16");  // fp16 weights, run in float32
  const double diff = (images - golden_images()).abs().max().item<double>();
  EXPECT_LE(diff, 2e-2);
  EXPECT_GT(diff, 0.0);  // the fp16 weights really were the ones loaded
}

TEST_F(HubTest, MissingVariantIsAnErrorNotAFallback) {
  start({"--repo", "org/tiny=" + repos().plain});
  HubOptions o = options();
  o.variant = "fp16";
  expect_one_line_mentioning(error_of([&] { resolve_model("org/tiny", o); }),
                             {"org/tiny", "no 'fp16' variant", "diffusion_pytorch_model.fp16"});
  EXPECT_TRUE(requests("/cdn/").empty());
  // The same rule for a local folder.
  LoadOptions load;
  load.variant = "fp16";
  expect_one_line_mentioning(
      error_of([&] { ConsistencyModelPipeline::from_pretrained(kGoldenModel, load); }),
      {"no 'fp16' variant"});
}

TEST_F(HubTest, TwoShardCheckpointGivesTheSameImagesAsThePlainFile) {
  start({"--repo", "org/sharded=" + repos().sharded});
  const std::string snapshot = resolve_model("org/sharded", options());
  for (const char* f : {"unet/diffusion_pytorch_model.safetensors.index.json",
                        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
                        "unet/diffusion_pytorch_model-00002-of-00002.safetensors"})
    EXPECT_TRUE(fs::exists(fs::path(snapshot) / f)) << f;
  EXPECT_TRUE(at::equal(images_of(snapshot), images_of(kGoldenModel)));
}

TEST_F(HubTest, ShardIndexThatEscapesTheFolderIsRejectedOnLoad) {
  const fs::path model = dir_ / "evil";
  fs::copy(repos().sharded, model, fs::copy_options::recursive);
  auto index = nlohmann::json::parse(
      read_bytes(model / "unet/diffusion_pytorch_model.safetensors.index.json"));
  index["weight_map"]["conv_in.bias"] = "../../secret.safetensors";
  write_bytes(model / "unet/diffusion_pytorch_model.safetensors.index.json", index.dump());
  expect_one_line_mentioning(
      error_of([&] { ConsistencyModelPipeline::from_pretrained(model.string()); }),
      {"../../secret.safetensors", "escapes"});
}

TEST_F(HubTest, BareUNetRepositoryUsesSchedulerDefaults) {
  start({"--repo", "org/unet-only=" + golden_file("unet")});
  const std::string snapshot = resolve_model("org/unet-only", options());
  EXPECT_TRUE(fs::exists(fs::path(snapshot) / "config.json"));
  EXPECT_TRUE(fs::exists(fs::path(snapshot) / "diffusion_pytorch_model.safetensors"));
  EXPECT_NO_THROW(ConsistencyModelPipeline::from_pretrained(snapshot));
}

}  // namespace
}  // namespace cm
